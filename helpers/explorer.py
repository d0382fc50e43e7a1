"""Render recorded feature maps fast and small, for the explorer: cached scaling, tiling, encoding.

Nothing here runs a model or needs ipywidgets; ``helpers.widgets`` wires it to controls.

* **Cache.** For each (layer, normalisation, symmetric) the activations are
  scaled once to palette indices (uint8, C×H×W, see ``to_palette_indices``).
  A redraw slices one page out of that cache, lays the tiles out
  (``helpers.viz.tile_pages``) and encodes it: a few ms for the largest
  ResNet34 page, tens of times faster than matplotlib ``imshow`` +
  ``savefig`` (``benchmarks/bench_explorer.py`` measures both).
* **Pixels.** Every layer is shown with tiles of about ``tile_px`` screen
  pixels, but the page is sent at half that size (or the map's own size,
  whichever is larger): the browser doubles it without smoothing (CSS
  ``image-rendering: pixelated``, see ``PAGE_CSS``), so a pixel of the map
  stays a sharp square and the kernel sends a quarter of the pixels.
* **Bytes.** On a remote kernel (Colab, JupyterHub) every redraw crosses the
  internet. ``encoding="auto"`` sends a lossless palette PNG unless a JPEG
  (4:4:4, no chroma smearing of colormapped edges) is much smaller, as for
  noisy conv1 pages of an untrained network; the JPEG's quality steps down
  from 90 until the page fits ``PAGE_BYTES`` (256 KiB).
  ``encoding="png"`` is always lossless.
* **Colours.** Palette index 0 is the padding between tiles; indices 1–255 are
  the colormap. Diverging maps (``RdBu_r``) use a scale centred at 0, so white
  means 0 and red / blue mean positive / negative.
* **Uploads.** ``uploaded_files`` reads a ``FileUpload.value`` of ipywidgets 7
  or 8 as plain data.
"""

from __future__ import annotations

import io
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image

from .hooks import ActivationRecorder
from .viz import as_chw, colormap_lut, n_pages, page_bounds, scale_range, tile_pages, to_uint8

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
# The browser enlarges pages by this factor (CSS, no smoothing); the kernel sends the rest.
BROWSER_ZOOM = 2
PAGE_BYTES = 256 * 2**10
ENCODINGS = ("auto", "png", "jpeg")
# Tried in turn until the JPEG fits PAGE_BYTES. 4:4:4 keeps colour edges sharp; on noisy
# conv1 pages its mean error at quality 60-70 (7 of 255) equals 4:2:0's at quality 85.
JPEG_QUALITIES = (90, 80, 70, 65, 60, 50, 40)
# "auto" keeps the lossless PNG unless the JPEG is smaller by more than this factor.
LOSSLESS_PREMIUM = 1.25
# Style for the page <img>: enlarge without smoothing (crisp-edges for older Firefox).
PAGE_CLASS = "feature-explorer-page"
PAGE_CSS = (f"<style>img.{PAGE_CLASS} {{image-rendering: crisp-edges; "
            "image-rendering: pixelated;}</style>")



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


def page_scale(height: int, width: int, tile_px: int = TILE_PX,
               browser_zoom: int = BROWSER_ZOOM) -> tuple[int, int]:
    """(factor the kernel enlarges tiles by, factor the browser enlarges the page by).

    Their product is ``upscale_factor``: a 7×7 map is sent at 56×56 and shown at 112×112.
    The browser zooms only when it divides ``upscale_factor``: a 37×37 map (factor 3) is
    sent at 111×111 and shown as sent, not at 74×74.
    """
    total = upscale_factor(height, width, tile_px)
    zoom = browser_zoom if total % browser_zoom == 0 else 1
    return total // zoom, zoom


def image_format(data: bytes) -> str:
    """'png' or 'jpeg', from the file's first bytes (what an ipywidgets ``Image.format`` wants)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    raise ValueError("Not a PNG or JPEG file.")


def _palette_image(indices: np.ndarray, cmap: str,
                   pad_color: tuple[int, int, int] | None = None) -> Image.Image:
    indices = np.ascontiguousarray(indices, dtype=np.uint8)
    image = Image.frombuffer("P", (indices.shape[1], indices.shape[0]), indices.tobytes(), "raw", "P", 0, 1)
    image.putpalette(_palette(cmap, pad_color or pad_color_for(cmap)))
    return image


def encode_palette_png(indices: np.ndarray, cmap: str, compress_level: int = 1,
                       pad_color: tuple[int, int, int] | None = None) -> bytes:
    """A palette PNG of a uint8 index image (0 = padding, 1–255 = ``cmap``), 1 byte per pixel: lossless."""
    buffer = io.BytesIO()
    _palette_image(indices, cmap, pad_color).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _jpeg(rgb: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def encode_jpeg(indices: np.ndarray, cmap: str, max_bytes: int = PAGE_BYTES, band_rows: int = 64) -> bytes:
    """A JPEG (4:4:4) of a palette-index image, at the highest ``JPEG_QUALITIES`` entry that fits ``max_bytes``.

    Each quality is first tried on a band of rows (a fraction of the cost), so a
    large noisy page is encoded in full about once rather than once per quality.
    """
    rgb = _palette_image(indices, cmap).convert("RGB")
    height = indices.shape[0]
    if height > 2 * band_rows:
        top = (height - band_rows) // 2
        band = rgb.crop((0, top, rgb.width, top + band_rows))
        for first, quality in enumerate(JPEG_QUALITIES):
            if len(_jpeg(band, quality)) * height / band_rows <= 0.95 * max_bytes:
                break
    else:
        first = 0
    for quality in JPEG_QUALITIES[first:]:
        data = _jpeg(rgb, quality)
        if len(data) <= max_bytes:
            break
    return data


def estimated_png_bytes(indices: np.ndarray, band_rows: int = 64) -> int:
    """About the size of ``encode_palette_png(indices)`` at level 1, from one band of rows (1-2 ms).

    PIL stores palette rows unfiltered, so deflating a contiguous band of raw
    rows and scaling by the row count predicts the PNG within some 10 %.
    """
    height = indices.shape[0]
    if height <= band_rows:
        return len(zlib.compress(np.ascontiguousarray(indices).tobytes(), 1))
    top = (height - band_rows) // 2
    band = np.ascontiguousarray(indices[top:top + band_rows]).tobytes()
    return len(zlib.compress(band, 1)) * height // band_rows


def encode_page(indices: np.ndarray, cmap: str, encoding: str = "auto", compress_level: int = 1,
                max_bytes: int = PAGE_BYTES) -> bytes:
    """Encode a page of palette indices: lossless PNG, JPEG, or (``"auto"``) the smaller of the two.

    "auto" keeps the PNG unless it is over ``max_bytes`` or the JPEG is smaller
    by more than ``LOSSLESS_PREMIUM``; it skips the JPEG when the PNG is
    estimated at under a quarter of ``max_bytes``.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}.")
    if encoding == "png":
        return encode_palette_png(indices, cmap, compress_level)
    if encoding == "jpeg":
        return encode_jpeg(indices, cmap, max_bytes)
    estimate = estimated_png_bytes(indices)
    if estimate <= max_bytes // 4:  # pragma: no mutate (an integer is <= m // 4 exactly when it is <= m / 4: equivalent)
        return encode_palette_png(indices, cmap, compress_level)
    jpeg = encode_jpeg(indices, cmap, max_bytes)
    if estimate > min(len(jpeg) * LOSSLESS_PREMIUM, max_bytes):
        return jpeg
    png = encode_palette_png(indices, cmap, compress_level)
    return png if len(png) <= min(len(jpeg) * LOSSLESS_PREMIUM, max_bytes) else jpeg


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
                 tile_px: int = TILE_PX, cache_bytes: int = CACHE_BYTES,
                 browser_zoom: int = BROWSER_ZOOM) -> None:
        self.nrow, self.padding, self.tile_px = nrow, padding, tile_px
        self.browser_zoom = browser_zoom
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
    def page_scale(self, layer: int | str) -> tuple[int, int]:
        """(kernel factor, browser zoom) of a layer's tiles; see ``page_scale``."""
        height, width = self.shape(layer)[1:]
        return page_scale(height, width, self.tile_px, self.browser_zoom)

    def page_pixels(self, layer: int | str, page: int = 0, page_size: int = 64) -> tuple[int, int]:
        """(height, width) of a page as sent, without drawing it."""
        channels, height, width = self.shape(layer)
        first, stop = page_bounds(channels, page, page_size)
        factor = self.page_scale(layer)[0]
        cols = min(self.nrow, stop - first)
        rows = -(-(stop - first) // cols)
        return (rows * (height * factor + self.padding) + self.padding,
                cols * (width * factor + self.padding) + self.padding)

    def page_grid(self, layer: int | str, page: int = 0, page_size: int = 64,
                  normalize: str = "channel", symmetric: bool = False) -> np.ndarray:
        """One page as a palette-index image (0 = padding), as sent: before the browser's zoom."""
        channels = self.n_channels(layer)
        first, stop = page_bounds(channels, page, page_size)
        tiles = self.indices(layer, normalize, symmetric)[first:stop]
        return tile_pages(tiles, self.nrow, self.padding, self.page_scale(layer)[0])

    def render_page(self, layer: int | str, page: int = 0, page_size: int = 64,
                    normalize: str = "channel", cmap: str = "viridis",
                    symmetric: bool | None = None, compress_level: int | None = None,
                    encoding: str = "auto") -> bytes:
        """PNG or JPEG bytes of one page of channels: cached scaling, tiling, encoding.

        ``symmetric=None`` centres the scale at 0 for diverging colormaps.
        ``encoding``: "auto" (the smaller of lossless PNG and a JPEG that fits
        ``PAGE_BYTES``), "png" (lossless) or "jpeg". Show the page
        ``page_scale(layer)[1]`` times larger, without smoothing.
        """
        grid = self.page_grid(layer, page, page_size, normalize, _symmetric(cmap, symmetric))
        return encode_page(grid, cmap, encoding, 1 if compress_level is None else compress_level)

    def channel_stats(self, layer: int | str, channel: int) -> ChannelStats:
        return channel_stats(self._channel(layer, channel))

    def _channel(self, layer: int | str, channel: int) -> torch.Tensor:
        tensor = self.tensors[self.index(layer)]
        if not 0 <= channel < tensor.shape[0]:
            raise IndexError(f"Channel {channel} is out of range: 0 to {tensor.shape[0] - 1}.")
        return tensor[channel]

    def channel_limits(self, layer: int | str, channel: int, normalize: str = "channel",
                       symmetric: bool = False) -> tuple[float, float]:
        """The values at the two ends of the enlarged channel's colorbar.

        The channel's own range (per channel) or the whole layer's (per
        layer), as on the page; ±max|x| when symmetric. A constant range
        gets a non-empty one that puts its value where the page draws it: at
        the low end (value to value + 1), or in the middle when symmetric (±1).
        """
        if normalize not in ("channel", "layer"):
            raise ValueError(f"normalize must be 'channel' or 'layer', got {normalize!r}.")
        index = self.index(layer)
        values = self._channel(index, channel)
        source = values[None] if normalize == "channel" else self.tensors[index]
        low, high = (float(v) for v in scale_range(source, "layer", symmetric))
        if low == high:  # as viz.to_uint8 draws a flat range: 0 (low end), or 128 when symmetric
            low, high = (low - 1.0, high + 1.0) if symmetric else (low, low + 1.0)
        return low, high

    @property
    def channel_figure(self) -> "_ChannelFigure | None":
        """The matplotlib figure the last enlarged channel was drawn with (its image holds the limits)."""
        return self._figure

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
        low, high = self.channel_limits(index, channel, normalize, symmetric)
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
                tile_px: int = TILE_PX, compress_level: int | None = None,
                encoding: str = "png", browser_zoom: int = 1) -> bytes:
    """Image bytes of one page of a C×H×W (or 1×C×H×W) activation: what the explorer shows.

    No widgets needed: ``IPython.display.Image(render_page(rec["conv1"]))``.
    Lossless PNG, tiles enlarged to about ``tile_px``, by default;
    ``browser_zoom=BROWSER_ZOOM, encoding="auto"`` gives the page as the
    explorer sends it, for the browser to enlarge.
    """
    state = ExplorerState([("activation", activation)], nrow=nrow, tile_px=tile_px,
                          browser_zoom=browser_zoom)
    return state.render_page(0, page, page_size, normalize, cmap, symmetric, compress_level, encoding)


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
