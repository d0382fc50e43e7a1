"""An interactive feature-map explorer: sliders for the layer and the channel page.

The model runs once; every redraw works on what was recorded, through the
cached rendering of ``helpers.explorer`` (its docstring explains the cache,
the pixels and the colours).

* **Widgets.** Only the core ipywidgets API shared by 7.7 (Colab) and 8
  (JupyterLab 4): sliders, toggle buttons, ``Image``, ``HTML``, ``Text``,
  ``Button``, ``Output``, ``FileUpload``. The enlarged channel is a small
  matplotlib figure, rendered to PNG bytes without pyplot. No ipympl, no
  custom widget manager. A ``<style>`` in an ``HTML`` widget makes the
  browser enlarge the page without smoothing.
* **Your own photo**, three ways, none failing silently: the upload button
  (JupyterLab; on Colab it loses files of ~1 MB and more, ipywidgets#3452),
  an image address downloaded in the kernel, and on Colab a button that uses
  ``google.colab.files.upload()``.

The pure parts (``ExplorerState``, ``render_page``, ``render_channel``,
``uploaded_files``) live in ``helpers.explorer`` and need no browser and no
widgets; ``FeatureExplorer`` only wires them to controls. ``feature_explorer``
is the entry point.
"""

from __future__ import annotations

import html
import io
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ipywidgets as widgets
import torch
from PIL import Image
from torch import nn

from .explorer import (  # re-exported: the explorer's rendering API
    PAGE_CLASS, PAGE_CSS, ChannelStats, ExplorerState, channel_stats, image_format, is_diverging,
    render_channel, render_page, tile_pages, to_palette_indices, upscale_factor, uploaded_files,
)
from .environment import on_colab
from .hooks import ActivationRecorder
from .images import MAX_DOWNLOAD_BYTES, ImageLoadError, load_image
from .images import preprocess as preprocess_image
from .viz import page_bounds

__all__ = [
    "COLORMAPS",
    "ChannelStats",
    "ExplorerState",
    "FeatureExplorer",
    "NORMALIZE_OPTIONS",
    "PAGE_SIZES",
    "channel_stats",
    "feature_explorer",
    "is_diverging",
    "render_channel",
    "render_page",
    "tile_pages",
    "to_palette_indices",
    "upscale_factor",
    "uploaded_files",
]

PAGE_SIZES = (16, 32, 64)
NORMALIZE_OPTIONS = (("per channel", "channel"), ("per layer", "layer"))
# (label shown on the button, matplotlib colormap name)
COLORMAPS = (("viridis", "viridis"), ("gray", "gray"), ("diverging", "RdBu_r"))
COLORMAP_TOOLTIPS = {"viridis": "dark violet = low, yellow = high", "gray": "black = low, white = high",
                     "RdBu_r": "centred at 0: white = 0, red > 0, blue < 0"}
# Jupyter's server drops WebSocket messages over 10 MiB (tornado's default): larger uploads never arrive.
UPLOAD_LIMIT_TEXT = "up to about 8 MB"
EMPTY_UPLOAD = (
    "The upload arrived empty: the browser said a file was chosen, but no bytes reached the kernel. "
    "On Colab this is a known ipywidgets 7 problem with files of about 1 MB and more "
    "(jupyter-widgets/ipywidgets#3452). Use the Colab upload button or an image address instead, "
    "or shrink the photo below 1 MB."
)


def _module_names(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The modules to record for activations named like ActivationRecorder names them."""
    modules = dict(model.named_modules())
    selected: list[str] = []
    for name in names:
        base = name if name in modules else re.sub(r"_\d+$", "", name)
        if base not in modules:
            raise KeyError(f"The model has no module {name!r}; pass an ActivationRecorder instead.")
        if base not in selected:
            selected.append(base)
    return selected


# -- widgets ------------------------------------------------------------------------


def _thumbnail_png(image: Image.Image, size: int = 160) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return buffer.getvalue()


LABEL_PX = 72


def _label(text: str):
    """A control's name, right-aligned like the sliders' descriptions (core widgets only)."""
    return widgets.HTML(f"<div style='text-align:right; padding-right:10px'>{html.escape(text)}</div>",
                        layout=widgets.Layout(width=f"{LABEL_PX + 8}px", min_width=f"{LABEL_PX + 8}px"))


def _note():
    """A line of text under a slider, aligned with the slider's track."""
    return widgets.HTML(layout=widgets.Layout(margin=f"0 0 0 {LABEL_PX + 12}px"))


def _stats_table(stats: ChannelStats) -> str:
    rows = (("min", f"{stats.min:.4g}"), ("max", f"{stats.max:.4g}"), ("mean", f"{stats.mean:.4g}"),
            ("zeros", f"{stats.zeros_percent:.1f} %"))
    cells = "".join(f"<tr><td>{label}</td><td style='text-align:right; padding-left:1em'>{value}</td></tr>"
                    for label, value in rows)
    return f"<table>{cells}</table>"


class FeatureExplorer(widgets.VBox):
    """The explorer widget (a ``VBox``); build it with ``feature_explorer``.

    Controls: ``layer_slider`` (index into the recorded layers, from 0),
    ``page_slider`` (from 1, as in "page 1 of 8"; ``view["page"]`` counts
    from 0), ``page_size_buttons``, ``normalize_buttons``, ``cmap_buttons``,
    ``channel_slider`` (channel index, from 0), ``upload``, ``url`` and
    ``url_button`` (an image address), ``colab_button`` (on Colab only).
    Outputs: ``image`` (the page), ``channel_image`` and ``stats`` (the
    enlarged channel), ``message`` (errors and notes), ``photo`` (thumbnail).
    ``state`` is the ``ExplorerState`` that renders; ``forward_runs`` counts
    the model calls the explorer made (one per new photo, none per redraw).
    """

    def __init__(self, source, model: nn.Module | None = None, *,
                 preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
                 photo: Image.Image | None = None, layer: int | str = 0, page_size: int = 64,
                 normalize: str = "channel", cmap: str | None = None, upload: bool = True) -> None:
        state = ExplorerState(source)
        if isinstance(source, ActivationRecorder):
            model = source.model if model is None else model
            self._record_names = [name for name, _ in source.layers]
        else:
            self._record_names = list(state.names)
        if page_size not in PAGE_SIZES:
            raise ValueError(f"page_size must be one of {PAGE_SIZES}, got {page_size}.")
        if normalize not in [value for _, value in NORMALIZE_OPTIONS]:
            raise ValueError(f"normalize must be 'channel' or 'layer', got {normalize!r}.")
        if cmap is None:
            cmap = "RdBu_r" if any(bool((t < 0).any()) for t in state.tensors) else "viridis"
        cmap_options = list(COLORMAPS)
        if cmap not in [value for _, value in cmap_options]:
            cmap_options.append((cmap, cmap))

        self.state = state
        self.model = model
        self.preprocess = preprocess
        self.forward_runs = 0
        self.redraws = 0
        self.last_redraw_ms = float("nan")
        self._quiet = False
        self._channel_key: tuple | None = None
        self._generation = 0  # bumped when the activations change (a new photo)
        first = state.index(layer)
        wide = widgets.Layout(width="min(100%, 640px)")
        style = {"description_width": f"{LABEL_PX}px"}

        self.layer_slider = widgets.IntSlider(
            value=first, min=0, max=max(len(state) - 1, 1), description="layer",
            continuous_update=True, layout=wide, style=style)
        self.layer_label = _note()
        # Pages count from 1 on the slider ("page 1 of 8"); view["page"] counts from 0.
        self.page_slider = widgets.IntSlider(
            value=1, min=1, max=2, description="page", continuous_update=True, layout=wide, style=style)
        self.page_label = _note()
        self.page_size_buttons = widgets.ToggleButtons(
            options=[(str(size), size) for size in PAGE_SIZES], value=page_size,
            tooltips=[f"{size} channels per page" for size in PAGE_SIZES],
            style={"button_width": "44px"})
        self.normalize_buttons = widgets.ToggleButtons(
            options=list(NORMALIZE_OPTIONS), value=normalize,
            tooltips=["every tile its own scale (min to max; ±largest |value| if diverging): shapes in weak channels show",
                      "one scale for the whole layer: strong and weak channels compare"],
            style={"button_width": "100px"})
        self.cmap_buttons = widgets.ToggleButtons(
            options=cmap_options, value=cmap,
            tooltips=[COLORMAP_TOOLTIPS.get(value, value) for _, value in cmap_options],
            style={"button_width": "100px"})
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.image.add_class(PAGE_CLASS)
        self.channel_slider = widgets.IntSlider(
            value=0, min=0, max=1, description="channel", continuous_update=False,
            layout=wide, style=style)
        self.channel_image = widgets.Image(format="png")
        self.channel_image.add_class("feature-explorer-channel")
        self.stats = widgets.HTML()
        self.message = widgets.HTML()
        self.photo = widgets.Image(format="png", layout=widgets.Layout(max_width="160px"))
        if photo is not None:
            self.photo.value = _thumbnail_png(photo)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="your photo")
        self.url = widgets.Text(placeholder="https://... (right-click a picture: Copy image address)",
                                description="address", layout=widgets.Layout(width="min(100%, 460px)"),
                                style={"description_width": "60px"})
        self.url_button = widgets.Button(description="load", tooltip="download this image in the kernel",
                                         layout=widgets.Layout(width="60px"))
        self.colab_button = widgets.Button(description="upload (Colab)", icon="upload",
                                           tooltip="google.colab.files.upload(): works for large photos")
        self.colab_output = widgets.Output()  # where Colab's own file chooser appears

        rows = [
            self.layer_slider, self.layer_label, self.page_slider, self.page_label,
            widgets.HBox([_label("per page"), self.page_size_buttons,
                          _label("scale"), self.normalize_buttons]),
            widgets.HBox([_label("colormap"), self.cmap_buttons]),
            self.image,
            widgets.HTML("<b>One channel, enlarged</b> (its number in the layer, from 0)"),
            self.channel_slider, widgets.HBox([self.channel_image, self.stats]),
        ]
        bottom = [self.photo] if photo is not None else []
        if upload and model is not None:
            bottom.append(self._photo_controls())
        if bottom:
            rows.append(widgets.HBox(bottom))
        rows += [self.message, widgets.HTML(PAGE_CSS, layout=widgets.Layout(margin="0"))]
        super().__init__(children=rows)
        self.add_class("feature-explorer")

        self.layer_slider.observe(self._on_layer, names="value")
        for control in (self.page_slider, self.page_size_buttons, self.normalize_buttons,
                        self.cmap_buttons):
            control.observe(self._on_view, names="value")
        self.channel_slider.observe(self._on_channel, names="value")
        self._fit_controls()
        self.redraw()

    # -- what the controls say ---------------------------------------------------------
    @property
    def view(self) -> dict:
        """The current layer, page, page size, scale, colormap and enlarged channel."""
        return {
            "layer": self.layer_slider.value,
            "page": self.page_slider.value - 1,
            "page_size": self.page_size_buttons.value,
            "normalize": self.normalize_buttons.value,
            "cmap": self.cmap_buttons.value,
            "channel": self.channel_slider.value,
        }

    def _fit_controls(self, old_page_size: int | None = None) -> None:
        """Fit the sliders' ranges to the layer, without redrawing in between.

        A slider whose range would be a single value gets a placeholder second
        value and is disabled: not every widget front end draws a zero-width range.
        """
        self._quiet = True
        try:
            self.layer_slider.max = max(len(self.state) - 1, 1)
            self.layer_slider.disabled = len(self.state) == 1
            layer = self.layer_slider.value = min(self.layer_slider.value, len(self.state) - 1)
            size = self.page_size_buttons.value
            pages = self.state.n_pages(layer, size)
            page = self.page_slider.value - 1
            if old_page_size:
                page = page * old_page_size // size  # keep the first shown channel on the page
            self.page_slider.max = max(pages, 2)
            self.page_slider.value = min(page, pages - 1) + 1
            self.page_slider.disabled = pages == 1
            channels = self.state.n_channels(layer)
            self.channel_slider.max = max(channels - 1, 1)
            self.channel_slider.value = min(self.channel_slider.value, channels - 1)
            self.channel_slider.disabled = channels == 1
        finally:
            self._quiet = False
        self.layer_label.value = (f"<code>{html.escape(self.state.describe(layer))}</code>"
                                  f" &nbsp;(index {layer} of 0–{len(self.state) - 1})")

    # -- events ---------------------------------------------------------------------------
    def _on_layer(self, change) -> None:
        if not self._quiet:
            self._fit_controls()
            self.redraw()

    def _on_view(self, change) -> None:
        if self._quiet:
            return
        if change["owner"] is self.page_size_buttons:
            self._fit_controls(old_page_size=change["old"])
        elif change["owner"] is self.page_slider and change["new"] > self.state.n_pages(
                self.layer_slider.value, self.page_size_buttons.value):
            # the disabled placeholder range of a one-page layer
            self._quiet = True
            self.page_slider.value = change["old"]
            self._quiet = False
            return
        self.redraw()

    def _on_channel(self, change) -> None:
        if not self._quiet:
            self.redraw_channel()

    def _photo_controls(self) -> widgets.VBox:
        """The ways to try your own photo; on Colab its own upload button comes first."""
        self.upload.observe(self._on_upload, names="value")
        if "_counter" in self.upload.trait_names():  # ipywidgets 7: the counter moves even when data is lost
            self.upload.observe(self._on_upload_counter, names="_counter")
        self.url_button.on_click(lambda _: self.load_url(self.url.value))
        self.colab_button.on_click(lambda _: self.upload_from_colab())
        upload_note = (f"or upload a photo ({UPLOAD_LIMIT_TEXT}"
                       + ("; on Colab only below 1 MB, use the button above)" if on_colab() else ")"))
        rows = [widgets.HTML("<b>Try your own photo</b>: the model runs once on it.")]
        if on_colab():
            rows += [self.colab_button, self.colab_output]
        rows += [widgets.HBox([self.url, self.url_button]),
                 widgets.HBox([widgets.HTML(upload_note), self.upload])]
        return widgets.VBox(rows)

    def _on_upload(self, change) -> None:
        self.handle_upload(change["new"])

    def _on_upload_counter(self, change) -> None:
        if change["new"] and not self.upload.value:
            self._say(EMPTY_UPLOAD, error=True)

    def handle_upload(self, value) -> bool:
        """Show the photo in a ``FileUpload.value`` (ipywidgets 7 or 8 shape); False if unusable."""
        try:
            files = uploaded_files(value)
        except (TypeError, ValueError) as exc:
            self._say(f"Could not read the upload: {exc}", error=True)
            return False
        if not files:
            return False
        name, data = files[-1]
        if not data:
            self._say(f"'{name}': {EMPTY_UPLOAD}", error=True)
            return False
        return self.use_photo(data, name=name)

    def load_url(self, url: str) -> bool:
        """Download an image address in the kernel and show its feature maps; False (and a message) if not."""
        url = url.strip()
        if not url:
            self._say("Paste an image address (https://...) into the field first.", error=True)
            return False
        self._say(f"Downloading {url} ...")
        return self.use_photo(url, name=url)

    def upload_from_colab(self) -> bool:
        """Colab's own file chooser (``google.colab.files.upload``), then the photo it returns."""
        try:
            from google.colab import files
        except ImportError:
            self._say("This button works on Google Colab only; here, use the upload button or an address.",
                      error=True)
            return False
        self.colab_output.clear_output()
        with self.colab_output:
            try:
                uploaded = files.upload()
            except Exception as exc:  # Colab's chooser raises when the upload is cancelled or fails
                self._say(f"The Colab upload did not finish ({type(exc).__name__}: {exc}). In a new cell, run "
                          "from google.colab import files; name, data = next(iter(files.upload().items())) "
                          "and then explorer.use_photo(data, name=name), or use an image address.", error=True)
                return False
        if not uploaded:
            self._say("No file was chosen.", error=True)
            return False
        name, data = list(uploaded.items())[-1]
        if not data:
            self._say(f"'{name}' arrived empty (0 bytes). Choose the file again.", error=True)
            return False
        return self.use_photo(bytes(data), name=name)

    # -- drawing --------------------------------------------------------------------------
    def redraw(self) -> None:
        """Render the current page into ``image``; refresh the enlarged channel if it changed."""
        view = self.view
        start = time.perf_counter()
        try:
            data = self.state.render_page(
                view["layer"], view["page"], view["page_size"], view["normalize"], view["cmap"])
            width = self.state.page_pixels(view["layer"], view["page"], view["page_size"])[1]
            with self.image.hold_sync():
                self.image.format = image_format(data)
                self.image.value = data
                # The browser enlarges the page (CSS pixelated): shown at the size of tile_px tiles.
                self.image.layout.width = f"{width * self.state.page_scale(view['layer'])[1]}px"
        except Exception as exc:  # a readable line in the widget, not a traceback in a log
            self._say(f"Could not draw this page: {type(exc).__name__}: {exc}", error=True)
            return
        self.last_redraw_ms = (time.perf_counter() - start) * 1000
        self.redraws += 1
        channels = self.state.n_channels(view["layer"])
        first, stop = page_bounds(channels, view["page"], view["page_size"])
        pages = self.state.n_pages(view["layer"], view["page_size"])
        self.page_label.value = (f"channels {first}–{stop - 1} of {channels} "
                                 f"(page {view['page'] + 1} of {pages})")
        self.redraw_channel()

    def redraw_channel(self) -> None:
        """Render the enlarged channel and its stats (skipped when nothing it shows changed)."""
        view = self.view
        key = (view["layer"], view["channel"], view["normalize"], view["cmap"], self._generation)
        if key == self._channel_key:
            return
        try:
            self.channel_image.value = self.state.render_channel(
                view["layer"], view["channel"], view["normalize"], view["cmap"])
            self.stats.value = _stats_table(self.state.channel_stats(view["layer"], view["channel"]))
        except Exception as exc:
            self._say(f"Could not draw the channel: {type(exc).__name__}: {exc}", error=True)
            return
        self._channel_key = key

    def _say(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "inherit"
        self.message.value = f"<span style='color:{color}'>{html.escape(text)}</span>" if text else ""

    @property
    def message_text(self) -> str:
        """The message line as plain text (empty when all is well)."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.message.value))

    # -- a new photo --------------------------------------------------------------------
    def use_photo(self, source, name: str | None = None) -> bool:
        """Load a photo (path, bytes or http(s) URL), run the model on it once and show its feature maps.

        A file that is not a readable image changes nothing and puts a
        readable message in the widget. Returns whether the photo is shown.
        """
        if self.model is None:
            self._say("No model to run: pass model= to feature_explorer().", error=True)
            return False
        if isinstance(source, (bytes, bytearray, memoryview)) and len(source) > MAX_DOWNLOAD_BYTES:
            self._say(f"'{name or 'photo'}' is too large: {len(source) / 2**20:.1f} MB, the explorer takes "
                      f"photos up to {MAX_DOWNLOAD_BYTES / 2**20:.0f} MB. Shrink it first.", error=True)
            return False
        try:
            image = load_image(source, name=name)
        except ImageLoadError as exc:
            self._say(str(exc), error=True)
            return False
        label = name or (Path(source).name if isinstance(source, (str, os.PathLike)) else "photo")
        if len(label) > 60:
            label = label[:40] + "..." + label[-17:]
        try:
            batch = (self.preprocess or preprocess_image)(image)
            parameter = next(self.model.parameters(), None)
            if parameter is not None:
                batch = batch.to(parameter.device)
            names = _module_names(self.model, self._record_names)
            with ActivationRecorder(self.model, names=names) as recorder, torch.no_grad():
                self.forward_runs += 1
                self.model(batch)
            self.state.set_activations(recorder)
        except Exception as exc:  # e.g. a preprocess that does not fit the model
            self._say(f"Could not run the model on '{label}': {type(exc).__name__}: {exc}", error=True)
            return False
        self._generation += 1
        self.photo.value = _thumbnail_png(image)
        self._fit_controls()
        self.redraw()
        self._say(f"Showing the feature maps of '{label}' ({image.width}×{image.height} pixels).")
        return True


def feature_explorer(
    recorder_or_activations,
    model: nn.Module | None = None,
    *,
    preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
    photo: Image.Image | None = None,
    layer: int | str = 0,
    page_size: int = 64,
    normalize: str = "channel",
    cmap: str | None = None,
    upload: bool = True,
) -> FeatureExplorer:
    """An ipywidgets box to browse recorded feature maps: layer, page, scale, colours, one channel.

    ``recorder_or_activations``: an ``ActivationRecorder`` after one forward
    pass, or a dict / list of (name, tensor) pairs, each a batch of one.
    Redraws never run the model. With a ``model`` (the recorder's, unless
    given) an upload button, an image-address field and, on Colab, a button
    for Colab's own file chooser let you try your own photo: it is loaded with
    ``helpers.images.load_image``, made a batch by ``preprocess`` (default
    ``helpers.images.preprocess``) and run through the model once.
    ``photo`` shows a thumbnail of the input. ``cmap=None`` picks the
    diverging map (``RdBu_r``, centred at 0) when some value is negative,
    else viridis.
    """
    return FeatureExplorer(recorder_or_activations, model, preprocess=preprocess, photo=photo,
                           layer=layer, page_size=page_size, normalize=normalize, cmap=cmap,
                           upload=upload)
