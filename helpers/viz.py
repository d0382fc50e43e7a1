"""Turn feature maps (C×H×W activations) into pictures.

Each channel becomes one grey tile; tiles are laid out as torchvision's
``make_grid`` does (``tile_pages``), one *page* of channels at a time. Values are scaled to 0–255
either per channel (every tile uses its full range: shapes are visible even in
weak channels) or per layer (one scale for the whole layer: strong and weak
channels can be compared). With ``symmetric=True`` the scale is centred at 0,
for diverging colormaps on signed values.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

Normalize = Literal["channel", "layer"]
NORMALIZE_MODES = ("channel", "layer")


def n_pages(n_channels: int, page_size: int) -> int:
    """How many pages of ``page_size`` tiles it takes to show ``n_channels``."""
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}.")
    return max(1, math.ceil(n_channels / page_size))


def _sig(value: float, digits: int) -> str:
    text = f"{value:.{digits}g}"
    return "0" if text in ("-0", "0", "-0.0") else text  # pragma: no mutate (only "-0" occurs with "g"; a changed "0" or "-0.0" entry is equivalent)


def fingerprint(values, digits: int = 3) -> str:
    """A one-line summary of what a figure draws: shape, min, max, mean, std to ``digits`` significant figures.

    Notebooks print it under each figure, so a changed picture changes a compared text
    output (nbval skips images). Rounding keeps it stable across CPUs and library versions.
    """
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("fingerprint() got an empty array: nothing is drawn.")
    stats = (array.min(), array.max(), array.mean(), array.std())
    parts = [f"{label} {_sig(v, digits)}" for label, v in zip(("min", "max", "mean", "std"), stats)]
    return "×".join(str(n) for n in array.shape) + ": " + "  ".join(parts)


def as_chw(activation) -> torch.Tensor:
    """A detached float32 C×H×W CPU tensor from a C×H×W map or a 1×C×H×W batch of one."""
    tensor = torch.as_tensor(activation).detach().cpu()
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(
                f"The activation holds a batch of {tensor.shape[0]} samples "
                f"(shape {tuple(tensor.shape)}); pick one, e.g. activation[0]."
            )
        tensor = tensor[0]
    if tensor.dim() != 3:
        raise ValueError(
            f"Expected a C×H×W feature map or a 1×C×H×W batch, got shape {tuple(tensor.shape)}."
        )
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError("The activation contains NaN or infinite values; nothing to draw.")
    return tensor


def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be 'channel' or 'layer', got {normalize!r}.")


def scale_range(chw: torch.Tensor, normalize: Normalize, symmetric: bool):
    """The (low, high) values mapped to 0 and 255: per channel (C×1×1) or per layer (scalars)."""
    _check_normalize(normalize)
    dims = (1, 2) if normalize == "channel" else (0, 1, 2)
    if symmetric:
        high = chw.abs().amax(dim=dims, keepdim=True)
        return -high, high
    return chw.amin(dim=dims, keepdim=True), chw.amax(dim=dims, keepdim=True)


def to_uint8(chw: torch.Tensor, normalize: Normalize = "channel", symmetric: bool = False) -> torch.Tensor:
    """Scale every value to 0–255 (uint8, C×H×W). A constant channel becomes a flat tile.

    A flat tile is 0 (or 128, the middle, when ``symmetric``): dead ReLU
    channels, all zeros, are common in deep layers and must not become NaN.
    """
    low, high = scale_range(chw, normalize, symmetric)
    span = high - low
    flat = span == 0
    scaled = (chw - low) / torch.where(flat, torch.ones_like(span), span)
    scaled = torch.where(flat, torch.full_like(scaled, 0.5 if symmetric else 0.0), scaled)
    return (scaled * 255).round_().clamp_(0, 255).to(torch.uint8)


def page_bounds(n_channels: int, page: int, page_size: int) -> tuple[int, int]:
    """The channel range [first, stop) shown on ``page``; a clear error when out of range."""
    pages = n_pages(n_channels, page_size)
    if not 0 <= page < pages:
        raise IndexError(
            f"Page {page} is out of range: {n_channels} channels in pages of {page_size} "
            f"give pages 0 to {pages - 1}."
        )
    first = page * page_size
    return first, min(first + page_size, n_channels)


def tile_pages(tiles, nrow: int = 8, padding: int = 2, factor: int = 1, pad_value: int = 0) -> np.ndarray:
    """Lay out N×H×W tiles in rows of ``nrow``, each enlarged ``factor``× (nearest neighbour).

    The one tiling of the project (``tile_grid`` and the explorer use it).
    torchvision ``make_grid``'s layout: ``padding`` pixels around every tile,
    ``min(nrow, N)`` columns; unlike ``make_grid`` a lone tile is padded too.
    numpy, in the tiles' dtype: ``make_grid`` first copies grey tiles to three
    RGB channels, three times the work on every explorer redraw.
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 3 or tiles.shape[0] == 0:
        raise ValueError(f"tile_pages() needs N×H×W tiles with N ≥ 1, got shape {tiles.shape}.")
    if nrow < 1 or factor < 1 or padding < 0:
        raise ValueError(f"nrow and factor must be ≥ 1 and padding ≥ 0, got {nrow}, {factor}, {padding}.")
    count, height, width = tiles.shape
    if factor > 1:
        tiles = np.broadcast_to(
            tiles[:, :, None, :, None], (count, height, factor, width, factor)
        ).reshape(count, height * factor, width * factor)
        height, width = height * factor, width * factor
    cols = min(nrow, count)
    rows = -(-count // cols)
    cell_h, cell_w = height + padding, width + padding
    grid = np.full((rows * cell_h + padding, cols * cell_w + padding), pad_value, dtype=tiles.dtype)
    cells = grid[padding:, padding:].reshape(rows, cell_h, cols, cell_w)
    full_rows, rest = divmod(count, cols)
    if full_rows:
        block = tiles[: full_rows * cols].reshape(full_rows, cols, height, width)
        cells[:full_rows, :height, :, :width] = block.transpose(0, 2, 1, 3)
    if rest:
        cells[full_rows, :height, :rest, :width] = tiles[full_rows * cols:].transpose(1, 0, 2)
    return grid


def tile_grid(tiles: torch.Tensor, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """Lay out N×H×W tiles (any dtype) as one H'×W' array, padding 0 (``tile_pages``).

    As torchvision's ``make_grid``, which this once called, a lone tile comes back unpadded.
    """
    if nrow < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}.")
    array = tiles.detach().cpu().numpy() if isinstance(tiles, torch.Tensor) else np.asarray(tiles)
    if array.shape[0] == 1:
        return array[0].copy()
    return tile_pages(array, nrow, padding)


def padding_mask(n_tiles: int, tile_shape: tuple[int, int], nrow: int = 8, padding: int = 2) -> np.ndarray:
    """True where ``tile_grid`` put padding rather than a tile pixel."""
    ones = torch.ones(n_tiles, *tile_shape, dtype=torch.uint8)
    return tile_grid(ones, nrow, padding) == 0


def feature_grid(
    activation,
    page: int = 0,
    page_size: int = 64,
    nrow: int = 8,
    normalize: Normalize = "channel",
    *,
    symmetric: bool = False,
    padding: int = 2,
) -> np.ndarray:
    """One page of channels as a uint8 grey image (H×W), 0–255.

    ``normalize="channel"`` scales each channel to its own range;
    ``"layer"`` uses one range for the whole layer (all pages), so tiles can
    be compared. Padding pixels are 0; see ``padding_mask`` to tell them apart.
    """
    chw = as_chw(activation)
    first, stop = page_bounds(chw.shape[0], page, page_size)
    scaled = to_uint8(chw, normalize, symmetric)
    return tile_grid(scaled[first:stop], nrow, padding)


@lru_cache(maxsize=16)
def colormap_lut(cmap: str) -> np.ndarray:
    """A 256×3 uint8 lookup table of a matplotlib colormap."""
    colors = plt.get_cmap(cmap)(np.linspace(0, 1, 256))[:, :3]
    return (colors * 255).round().astype(np.uint8)


def colorize(grid: np.ndarray, cmap: str = "viridis", mask: np.ndarray | None = None,
             mask_color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Map a uint8 grey grid through a colormap to H×W×3 RGB; masked pixels get ``mask_color``."""
    rgb = colormap_lut(cmap)[grid]
    if mask is not None:
        rgb[mask] = mask_color
    return rgb


def _colormap(cmap: str | Colormap, symmetric: bool) -> Colormap:
    # Padding is drawn as "bad" pixels: white, or grey where white means 0.
    return plt.get_cmap(cmap).with_extremes(bad="0.5" if symmetric else "white")


def show_feature_maps(
    activation,
    name: str | None = None,
    page: int = 0,
    page_size: int = 64,
    nrow: int = 8,
    normalize: Normalize = "channel",
    cmap: str = "viridis",
    symmetric: bool = False,
    figsize: tuple[float, float] | None = None,
    label: str | None = None,
) -> Figure:
    """A matplotlib figure of one page of channels, with a title and a colorbar.

    Per-layer normalisation labels the colorbar in activation units; per-channel
    normalisation can only say "channel minimum to maximum", since every tile
    has its own scale. Use ``symmetric=True`` with a diverging map (``"RdBu_r"``)
    for signed values, such as conv outputs before BatchNorm and ReLU.
    """
    chw = as_chw(activation)
    channels, height, width = chw.shape
    first, stop = page_bounds(channels, page, page_size)
    grid = feature_grid(chw, page, page_size, nrow, normalize, symmetric=symmetric, padding=2)
    mask = padding_mask(stop - first, (height, width), nrow, padding=2)

    if normalize == "layer":
        low, high = (float(v) for v in scale_range(chw, "layer", symmetric))
        if low == high:
            high = low + 1.0
        values = low + grid.astype(np.float32) / 255 * (high - low)
        colorbar_label = "activation value (one scale for the layer)"
    else:
        low, high = (-1.0, 1.0) if symmetric else (0.0, 1.0)
        values = low + grid.astype(np.float32) / 255 * (high - low)
        colorbar_label = ("each channel: −max|x| … 0 … +max|x|" if symmetric
                 else "each channel: its min (0) … its max (1)")

    cols = min(nrow, stop - first)
    rows = math.ceil((stop - first) / nrow)
    if figsize is None:
        figsize = (min(10, 1.2 * cols + 1.5), min(10, 1.2 * rows + 0.8))
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    image = ax.imshow(np.ma.masked_array(values, mask), cmap=_colormap(cmap, symmetric),
                      vmin=low, vmax=high, interpolation="antialiased")
    ax.set_axis_off()
    pages = n_pages(channels, page_size)
    title = f"{name}: " if name else ""
    ax.set_title(
        f"{title}{channels}×{height}×{width}, channels {first}–{stop - 1}"
        f" (page {page + 1} of {pages}), normalised per {normalize}",
        fontsize=10,
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar_label if label is None else label)
    return fig
