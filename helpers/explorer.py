"""Render recorded feature maps fast, for the explorer: cached scaling, tiling, palette PNG.

Nothing here runs a model or needs ipywidgets; ``helpers.widgets`` wires it to controls.

* **Cache.** For each (layer, normalisation, symmetric) the activations are
  scaled once to palette indices (uint8, C×H×W, see ``to_palette_indices``).
  A redraw slices one page out of that cache, lays the tiles out and encodes a
  palette PNG with PIL: a few ms for the largest ResNet34 page, about a
  hundred times faster than matplotlib ``imshow`` + ``savefig`` of the same
  page (``benchmarks/bench_explorer.py`` measures both).
* **Pixels.** Small maps are enlarged by an integer factor with nearest
  neighbour (a 7×7 map becomes 112×112 pixels), so every layer gives a picture
  of the same size and a pixel of the map stays a sharp square.
* **Colours.** Palette index 0 is the padding between tiles; indices 1–255 are
  the colormap. Diverging maps (``RdBu_r``) use a scale centred at 0, so white
  means 0 and red / blue mean positive / negative.
* **Uploads.** ``uploaded_files`` reads a ``FileUpload.value`` of ipywidgets 7
  or 8 as plain data.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image

from .hooks import ActivationRecorder
from .viz import as_chw, colormap_lut, n_pages, page_bounds, scale_range, to_uint8

DIVERGING_CMAPS = frozenset(
    name + suffix
    for name in ("RdBu", "RdGy", "RdYlBu", "RdYlGn", "PuOr", "PRGn", "PiYG", "BrBG",
                 "Spectral", "coolwarm", "bwr", "seismic")
    for suffix in ("", "_r")
)
# Padding between tiles: a colour the colormap does not contain.
PAD_COLORS = {"gray": (70, 130, 180)}
DEFAULT_PAD_COLOR = (255, 255, 255)
DIVERGING_PAD_COLOR = (128, 128, 128)
NROW = 8
PADDING = 2
TILE_PX = 112
CACHE_BYTES = 256 * 2**20



def is_diverging(cmap: str) -> bool:
    """True for colormaps meant for signed values (white or light in the middle)."""
    return cmap in DIVERGING_CMAPS


def _symmetric(cmap: str, symmetric: bool | None) -> bool:
    return is_diverging(cmap) if symmetric is None else bool(symmetric)


# -- pure rendering ---------------------------------------------------------------


def to_palette_indices(scaled: torch.Tensor | np.ndarray) -> np.ndarray:
    """Map 0–255 values (``viz.to_uint8``) onto palette indices 1–255; 0 stays free for padding."""
    values = np.asarray(scaled, dtype=np.uint16)
    return (1 + (values * 254 + 127) // 255).astype(np.uint8)


@lru_cache(maxsize=32)
def _palette(cmap: str, pad_color: tuple[int, int, int]) -> bytes:
    """768 bytes: index 0 = pad colour, 1–255 = the colormap from its low to its high end."""
    lut = colormap_lut(cmap)
    colors = np.empty((256, 3), np.uint8)
    colors[0] = pad_color
    colors[1:] = lut[np.linspace(0, 255, 255).round().astype(int)]
    return colors.tobytes()


def pad_color_for(cmap: str) -> tuple[int, int, int]:
    """The padding colour drawn between tiles for ``cmap``."""
    if cmap in PAD_COLORS:
        return PAD_COLORS[cmap]
    return DIVERGING_PAD_COLOR if is_diverging(cmap) else DEFAULT_PAD_COLOR


def upscale_factor(height: int, width: int, tile_px: int = TILE_PX) -> int:
    """The integer factor that brings a map near ``tile_px`` pixels (never below 1)."""
    return max(1, tile_px // max(height, width, 1))


def tile_pages(tiles: np.ndarray, nrow: int = NROW, padding: int = PADDING, factor: int = 1,
               pad_value: int = 0) -> np.ndarray:
    """Lay out N×H×W tiles in rows of ``nrow``, each enlarged ``factor``× (nearest neighbour).

    The same layout as ``helpers.viz.tile_grid`` (torchvision's ``make_grid``):
    ``padding`` pixels around every tile, ``min(nrow, N)`` columns (a lone
    tile is padded too). numpy instead of ``make_grid``, which first copies
    grey tiles to three RGB channels.
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


def encode_palette_png(indices: np.ndarray, cmap: str, compress_level: int = 1,
                       pad_color: tuple[int, int, int] | None = None) -> bytes:
    """A palette PNG of a uint8 index image (0 = padding, 1–255 = ``cmap``), 1 byte per pixel."""
    indices = np.ascontiguousarray(indices, dtype=np.uint8)
    image = Image.frombuffer("P", (indices.shape[1], indices.shape[0]), indices.tobytes(),
                             "raw", "P", 0, 1)
    image.putpalette(_palette(cmap, pad_color or pad_color_for(cmap)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _auto_compress_level(factor: int) -> int:
    """zlib level for a page whose tiles were enlarged ``factor``×.

    Measured here on ResNet34 pages of 64 tiles (914×914 pixels): at level 1,
    conv1's unenlarged tiles shrink by 10 % and layer1's doubled ones by 65 %,
    but encoding takes 30–60 ms instead of the 2 ms of storing them (level 0),
    over the 25 ms a redraw may take. Tiles enlarged 4× or more repeat each
    pixel 16+ times: level 1 shrinks them 10–40× within 5–15 ms.
    """
    return 0 if factor <= 2 else 1


@dataclass(frozen=True)
class ChannelStats:
    """Summary numbers of one channel, in activation units."""

    min: float
    max: float
    mean: float
    zeros_percent: float

    def __str__(self) -> str:
        return (f"min {self.min:.3g}, max {self.max:.3g}, mean {self.mean:.3g}, "
                f"zeros {self.zeros_percent:.1f} %")


def channel_stats(values: torch.Tensor) -> ChannelStats:
    """min, max, mean and the percentage of exact zeros of a tensor."""
    values = values.detach().float()
    return ChannelStats(
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.mean()),
        zeros_percent=100.0 * float((values == 0).sum()) / values.numel(),
    )


def _named_activations(source) -> list[tuple[str, torch.Tensor]]:
    """(name, C×H×W tensor) pairs from a recorder, a mapping or a list of pairs."""
    if isinstance(source, ActivationRecorder):
        if len(source) == 0:
            raise ValueError("The recorder holds nothing yet: run the model inside its with-block first.")
        pairs = list(zip(source.names, source.outputs))
    elif isinstance(source, Mapping):
        pairs = list(source.items())
    elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        pairs = list(source)
        if not all(isinstance(p, Sequence) and len(p) == 2 for p in pairs):
            raise TypeError("A list of activations must hold (name, tensor) pairs.")
    else:
        raise TypeError(
            "feature_explorer() takes an ActivationRecorder, a dict {name: tensor} or a list "
            f"of (name, tensor) pairs, not {type(source).__name__}."
        )
    if not pairs:
        raise ValueError("No activations given: nothing to explore.")
    named = []
    for name, value in pairs:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name!r}: expected a tensor, got {type(value).__name__}.")
        try:
            named.append((str(name), as_chw(value)))
        except ValueError as exc:
            raise ValueError(f"{name!r}: {exc}") from None
    return named


class ExplorerState:
    """Recorded activations plus a cache of their scaled pixels; renders pages as PNG bytes.

    ``layer`` arguments are indices into ``names``. Nothing here runs a model:
    the first render of a layer in a normalisation mode scales the whole layer
    once (tens of ms for conv1); later pages of it only slice and encode.
    """

    def __init__(self, activations, *, nrow: int = NROW, padding: int = PADDING,
                 tile_px: int = TILE_PX, cache_bytes: int = CACHE_BYTES) -> None:
        self.nrow, self.padding, self.tile_px = nrow, padding, tile_px
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[int, str, bool], np.ndarray] = OrderedDict()
        self._channel_pngs: OrderedDict[tuple, bytes] = OrderedDict()
        self._figure: _ChannelFigure | None = None
        self._figure_key: tuple | None = None
        self.scalings = 0  # how many times a layer was scaled (cache misses), for tests
        self.set_activations(activations)

    # -- data -------------------------------------------------------------------
    def set_activations(self, activations) -> None:
        """Replace the recorded activations (e.g. after a new photo) and empty the cache."""
        named = _named_activations(activations)
        self.names = [name for name, _ in named]
        self.tensors = [tensor for _, tensor in named]
        self._cache.clear()
        self._channel_pngs.clear()

    def __len__(self) -> int:
        return len(self.names)

    def index(self, layer: int | str) -> int:
        """The index of a layer given by index or name."""
        if isinstance(layer, str):
            try:
                return self.names.index(layer)
            except ValueError:
                raise KeyError(f"No layer named {layer!r}; recorded: {', '.join(self.names[:4])}, ...") from None
        if not 0 <= layer < len(self.names):
            raise IndexError(f"Layer {layer} is out of range: 0 to {len(self.names) - 1}.")
        return layer

    def shape(self, layer: int | str) -> tuple[int, int, int]:
        """C×H×W of a layer's recorded output."""
        return tuple(self.tensors[self.index(layer)].shape)

    def n_channels(self, layer: int | str) -> int:
        return self.shape(layer)[0]

    def n_pages(self, layer: int | str, page_size: int) -> int:
        """How many pages of ``page_size`` channels the layer fills."""
        return n_pages(self.n_channels(layer), page_size)

    def describe(self, layer: int | str) -> str:
        """'conv1 · output 1×64×112×112' for the label under the layer slider."""
        channels, height, width = self.shape(layer)
        return f"{self.names[self.index(layer)]} · output 1×{channels}×{height}×{width}"

    # -- cache --------------------------------------------------------------------
    def indices(self, layer: int | str, normalize: str = "channel", symmetric: bool = False) -> np.ndarray:
        """The layer scaled to palette indices (C×H×W uint8), computed once and cached."""
        key = (self.index(layer), normalize, bool(symmetric))
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        scaled = to_palette_indices(to_uint8(self.tensors[key[0]], normalize, key[2]))
        self.scalings += 1
        self._cache[key] = scaled
        while len(self._cache) > 1 and sum(a.nbytes for a in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)
        return scaled

    def warm(self, normalize: str = "channel", symmetric: bool = False) -> None:
        """Scale every layer now (for one mode), so that no later redraw pays for it."""
        for layer in range(len(self)):
            self.indices(layer, normalize, symmetric)

    @property
    def cached_keys(self) -> list[tuple[int, str, bool]]:
        return list(self._cache)

    # -- rendering ----------------------------------------------------------------
    def page_grid(self, layer: int | str, page: int = 0, page_size: int = 64,
                  normalize: str = "channel", symmetric: bool = False) -> np.ndarray:
        """One page as a palette-index image (0 = padding), tiles enlarged to about ``tile_px``."""
        channels, height, width = self.shape(layer)
        first, stop = page_bounds(channels, page, page_size)
        tiles = self.indices(layer, normalize, symmetric)[first:stop]
        factor = upscale_factor(height, width, self.tile_px)
        return tile_pages(tiles, self.nrow, self.padding, factor)

    def render_page(self, layer: int | str, page: int = 0, page_size: int = 64,
                    normalize: str = "channel", cmap: str = "viridis",
                    symmetric: bool | None = None, compress_level: int | None = None) -> bytes:
        """PNG bytes of one page of channels: cached scaling, tiling, palette, PNG encoding.

        ``symmetric=None`` centres the scale at 0 for diverging colormaps.
        """
        height, width = self.shape(layer)[1:]
        grid = self.page_grid(layer, page, page_size, normalize, _symmetric(cmap, symmetric))
        if compress_level is None:
            compress_level = _auto_compress_level(upscale_factor(height, width, self.tile_px))
        return encode_palette_png(grid, cmap, compress_level)

    def channel_stats(self, layer: int | str, channel: int) -> ChannelStats:
        return channel_stats(self._channel(layer, channel))

    def _channel(self, layer: int | str, channel: int) -> torch.Tensor:
        tensor = self.tensors[self.index(layer)]
        if not 0 <= channel < tensor.shape[0]:
            raise IndexError(f"Channel {channel} is out of range: 0 to {tensor.shape[0] - 1}.")
        return tensor[channel]

    def render_channel(self, layer: int | str, channel: int, normalize: str = "channel",
                       cmap: str = "viridis", symmetric: bool | None = None,
                       figsize: tuple[float, float] = (4.6, 3.8), dpi: int = 90) -> bytes:
        """PNG bytes of one channel, enlarged, with a colorbar in activation units and its stats.

        The colour range matches the page: the channel's own range (per
        channel) or the whole layer's (per layer); centred at 0 when symmetric.
        """
        if normalize not in ("channel", "layer"):
            raise ValueError(f"normalize must be 'channel' or 'layer', got {normalize!r}.")
        index = self.index(layer)
        values = self._channel(index, channel)
        symmetric = _symmetric(cmap, symmetric)
        key = (index, channel, normalize, cmap, symmetric, figsize, dpi)
        if key in self._channel_pngs:
            self._channel_pngs.move_to_end(key)
            return self._channel_pngs[key]
        source = values if normalize == "channel" else self.tensors[index]
        low, high = (float(v) for v in scale_range(source[None] if source.dim() == 2 else source,
                                                   "layer", symmetric))
        if low == high:  # a constant channel: any non-empty range shows it as one colour
            low, high = (low - 1.0, high + 1.0) if symmetric or low != 0 else (0.0, 1.0)
        title = f"{self.names[index]}, channel {channel}"
        if self._figure is None or self._figure_key != (figsize, dpi):
            self._figure, self._figure_key = _ChannelFigure(figsize, dpi), (figsize, dpi)
        png = self._figure.png(values.numpy(), title, channel_stats(values), cmap, low, high, normalize)
        self._channel_pngs[key] = png
        if len(self._channel_pngs) > 64:
            self._channel_pngs.popitem(last=False)
        return png


class _ChannelFigure:
    """One matplotlib figure (no pyplot) reused for every enlarged channel: only data and texts change.

    Building axes and ticks is half the cost of a fresh figure; reusing them
    keeps a channel change near 60-100 ms.
    """

    def __init__(self, figsize: tuple[float, float], dpi: int) -> None:
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=figsize, dpi=dpi)  # fixed axes: a layout engine doubles the time
        self.ax = self.fig.add_axes((0.04, 0.1, 0.68, 0.8))
        cax = self.fig.add_axes((0.74, 0.1, 0.04, 0.8))
        self.image = self.ax.imshow(np.zeros((2, 2)), interpolation="nearest")
        self.ax.set_xticks([])
        self.ax.set_yticks([])
        self.colorbar = self.fig.colorbar(self.image, cax=cax)

    def png(self, values: np.ndarray, title: str, stats: ChannelStats, cmap: str,
            low: float, high: float, normalize: str) -> bytes:
        height, width = values.shape
        self.image.set_data(values)
        self.image.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))
        self.ax.set_xlim(-0.5, width - 0.5)
        self.ax.set_ylim(height - 0.5, -0.5)
        self.image.set_cmap(cmap)
        self.image.set_clim(low, high)
        self.ax.set_title(title, fontsize=10)
        self.ax.set_xlabel(str(stats), fontsize=8)
        scale = "this channel's range" if normalize == "channel" else "the layer's range"
        self.colorbar.set_label(f"activation ({scale})")
        buffer = io.BytesIO()
        self.fig.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
        return buffer.getvalue()


def render_page(activation, page: int = 0, page_size: int = 64, normalize: str = "channel",
                cmap: str = "viridis", symmetric: bool | None = None, *, nrow: int = NROW,
                tile_px: int = TILE_PX, compress_level: int | None = None) -> bytes:
    """PNG bytes of one page of a C×H×W (or 1×C×H×W) activation: what the explorer shows.

    No widgets needed: ``IPython.display.Image(render_page(rec["conv1"]))``.
    """
    state = ExplorerState([("activation", activation)], nrow=nrow, tile_px=tile_px)
    return state.render_page(0, page, page_size, normalize, cmap, symmetric, compress_level)


def render_channel(activation, channel: int, normalize: str = "channel", cmap: str = "viridis",
                   symmetric: bool | None = None, name: str = "activation") -> bytes:
    """PNG bytes of one channel enlarged, with colorbar and stats (matplotlib, no pyplot)."""
    state = ExplorerState([(name, activation)])
    return state.render_channel(0, channel, normalize, cmap, symmetric)


# -- uploads ------------------------------------------------------------------------


def uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file in a ``FileUpload.value``, for ipywidgets 7 and 8.

    * ipywidgets 8: a tuple of dicts ``{"name", "type", "size", "content": memoryview, ...}``.
    * ipywidgets 7 (Colab): a dict ``{name: {"metadata": {"name", ...}, "content": bytes}}``.
    """
    if not value:
        return []
    files = []
    if isinstance(value, Mapping):  # ipywidgets 7
        for key, entry in value.items():
            if not isinstance(entry, Mapping) or "content" not in entry:
                raise ValueError(f"Unexpected upload entry for {key!r}: no 'content'.")
            metadata = entry.get("metadata") or {}
            files.append((str(metadata.get("name", key)), bytes(entry["content"])))
    elif isinstance(value, (tuple, list)):  # ipywidgets 8
        for entry in value:
            if not isinstance(entry, Mapping) or "content" not in entry:
                raise ValueError("Unexpected upload entry: expected a dict with 'name' and 'content'.")
            files.append((str(entry.get("name", "uploaded file")), bytes(entry["content"])))
    else:
        raise TypeError(f"Unexpected FileUpload value of type {type(value).__name__}.")
    return files
