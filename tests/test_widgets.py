"""The feature explorer's logic, without a browser: pages, scaling, cache, uploads."""

from __future__ import annotations

import datetime
import io
import sys
import types
import warnings

import ipywidgets
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from helpers.hooks import ActivationRecorder
from helpers.viz import colormap_lut, tile_grid
from helpers.explorer import (
    ExplorerState,
    channel_stats,
    render_channel,
    render_page,
    tile_pages,
    to_palette_indices,
    upscale_factor,
    uploaded_files,
)
from helpers.images import MAX_DOWNLOAD_BYTES
from helpers.widgets import FeatureExplorer, feature_explorer
from tests.local_web import serve


def decode(png: bytes) -> np.ndarray:
    """The palette indices of a PNG the explorer made (0 = padding, 1–255 = colormap)."""
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "P"
    return np.asarray(image)


def tile(indices: np.ndarray, row: int, col: int, size: int, padding: int = 2) -> np.ndarray:
    """The pixels of one tile of a grid of size×size tiles."""
    top, left = padding + row * (size + padding), padding + col * (size + padding)
    return indices[top:top + size, left:left + size]


def activations() -> dict[str, torch.Tensor]:
    """Three layers of 64, 100 and 16 channels with distinct random content."""
    generator = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(1, 64, 8, 8, generator=generator),
        "b": torch.randn(1, 100, 4, 4, generator=generator),
        "c": torch.randn(1, 16, 2, 2, generator=generator).relu(),
    }


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 20, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv2(self.relu(self.conv1(x)))


def tiny_preprocess(image: Image.Image) -> torch.Tensor:
    pixels = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def png_bytes(color=(200, 30, 30), size=(24, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def recorded():
    """A real small model, recorded once, and a counter of its forward calls."""
    model = TinyNet().eval()
    photo = Image.new("RGB", (16, 16), (10, 120, 240))
    with ActivationRecorder(model) as recorder, torch.no_grad():
        model(tiny_preprocess(photo))
    calls = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(1))
    yield model, recorder, calls
    handle.remove()


# -- layout and pages -----------------------------------------------------------------


@pytest.mark.parametrize("count, height, width, nrow", [(13, 5, 7, 8), (3, 4, 4, 8), (16, 2, 3, 4), (9, 1, 1, 8)])
def test_tile_pages_matches_viz_tile_grid(count, height, width, nrow):
    tiles = np.random.default_rng(count).integers(1, 256, (count, height, width), dtype=np.uint8)
    expected = tile_grid(torch.from_numpy(tiles), nrow=nrow, padding=2)
    assert np.array_equal(tile_pages(tiles, nrow=nrow, padding=2), expected)


def test_a_single_tile_is_padded_too():
    # make_grid returns a lone tile unpadded; the explorer keeps one layout for every page.
    grid = tile_pages(np.full((1, 3, 3), 7, np.uint8), padding=2)
    assert grid.shape == (7, 7) and (grid[2:5, 2:5] == 7).all() and grid.sum() == 7 * 9


def test_tile_pages_enlarges_with_nearest_neighbour():
    tiles = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3) + 1
    grid = tile_pages(tiles, nrow=8, padding=1, factor=3)
    assert grid.shape == (1 + 6 + 1, 1 + 2 * (9 + 1))
    assert np.array_equal(grid[1:7, 1:10], np.kron(tiles[0], np.ones((3, 3), np.uint8)))
    assert np.array_equal(grid[1:7, 11:20], np.kron(tiles[1], np.ones((3, 3), np.uint8)))
    assert (grid[0] == 0).all() and (grid[:, 10] == 0).all()


def test_upscale_factor_brings_resnet_maps_to_the_same_size():
    assert [upscale_factor(s, s) for s in (112, 56, 28, 14, 7)] == [1, 2, 4, 8, 16]
    assert upscale_factor(300, 300) == 1


def test_page_range_follows_the_layer():
    explorer = feature_explorer(activations(), page_size=64)
    assert explorer.layer_slider.description == "layer" and explorer.page_slider.description == "page"
    assert explorer.layer_slider.max == 2
    assert explorer.page_slider.disabled and explorer.view["page"] == 0  # 64 channels: one page
    assert "a · output 1×64×8×8" in explorer.layer_label.value

    explorer.layer_slider.value = 1  # 100 channels: two pages of 64
    assert not explorer.page_slider.disabled and (explorer.page_slider.min, explorer.page_slider.max) == (1, 2)
    assert explorer.channel_slider.max == 99
    assert "b · output 1×100×4×4" in explorer.layer_label.value

    explorer.page_size_buttons.value = 16  # seven pages of 16
    assert explorer.page_slider.max == 7
    explorer.page_slider.value = 7
    assert explorer.view["page"] == 6
    assert "channels 96–99 of 100 (page 7 of 7)" in explorer.page_label.value

    explorer.layer_slider.value = 2  # 16 channels: one page again, page clamped
    assert explorer.view["page"] == 0 and explorer.page_slider.disabled
    assert explorer.channel_slider.max == 15
    assert "channels 0–15 of 16 (page 1 of 1)" in explorer.page_label.value
    assert explorer.message_text == ""


def test_changing_the_page_size_keeps_the_first_channel_on_screen():
    explorer = feature_explorer(activations(), layer="b", page_size=16)
    explorer.page_slider.value = 6  # page index 5: channels 80–95
    explorer.page_size_buttons.value = 32
    assert explorer.view["page"] == 2  # channels 64–95
    explorer.page_size_buttons.value = 64
    assert explorer.view["page"] == 1


def test_page_bounds_last_page_is_partial_and_out_of_range_is_an_error():
    state = ExplorerState(activations())
    full = decode(state.render_page("b", 0, 64))
    last = decode(state.render_page("b", 1, 64))  # channels 64–99: 36 tiles, 5 rows of 8
    tile_px = 4 * state.page_scale("b")[0]  # sent at half size: the browser doubles it
    assert full.shape == (8 * (tile_px + 2) + 2, 8 * (tile_px + 2) + 2)
    assert last.shape == (5 * (tile_px + 2) + 2, 8 * (tile_px + 2) + 2)
    assert (tile(last, 4, 3, tile_px) > 0).all()  # tile 35 = channel 99 is drawn
    assert (tile(last, 4, 4, tile_px) == 0).all()  # the rest of the last row is padding
    with pytest.raises(IndexError, match="pages 0 to 1"):
        state.render_page("b", 2, 64)
    with pytest.raises(IndexError):
        state.render_page(3, 0, 64)


def test_a_page_shows_the_channels_of_its_range():
    data = {"x": torch.arange(20.0).view(1, 20, 1, 1).expand(1, 20, 3, 3).clone()}
    state = ExplorerState(data, tile_px=3)
    second = decode(state.render_page("x", 1, 16, normalize="layer"))  # channels 16–19
    values = [int(tile(second, 0, col, 3)[0, 0]) for col in range(4)]
    expected = to_palette_indices(np.round(np.arange(16, 20) / 19 * 255))
    assert values == list(expected)


# -- scaling ---------------------------------------------------------------------------


def two_channel_layer() -> dict[str, torch.Tensor]:
    ramp = torch.linspace(0, 1, 16).view(4, 4)
    return {"x": torch.stack([ramp, 10 * ramp]).unsqueeze(0)}  # same shape, 10× the size


def test_per_channel_scaling_gives_every_channel_the_full_range():
    grid = decode(ExplorerState(two_channel_layer(), tile_px=4).render_page("x", normalize="channel"))
    weak, strong = tile(grid, 0, 0, 4), tile(grid, 0, 1, 4)
    assert (weak.min(), weak.max()) == (1, 255)
    assert np.array_equal(weak, strong)


def test_per_layer_scaling_keeps_the_ratio_between_channels():
    grid = decode(ExplorerState(two_channel_layer(), tile_px=4).render_page("x", normalize="layer"))
    weak, strong = tile(grid, 0, 0, 4), tile(grid, 0, 1, 4)
    assert (strong.min(), strong.max()) == (1, 255)
    assert weak.max() == to_palette_indices(np.array([round(255 / 10)]))[0]


def test_diverging_colormap_centres_zero():
    signed = {"x": torch.tensor([[-2.0, 0.0], [1.0, 2.0]]).view(1, 1, 2, 2)}
    grid = decode(ExplorerState(signed, tile_px=2).render_page("x", cmap="RdBu_r"))
    pixels = tile(grid, 0, 0, 2)
    assert pixels[0, 1] == 128  # the middle of indices 1..255 = white in RdBu_r
    assert (pixels[0, 0], pixels[1, 1]) == (1, 255)
    palette = np.asarray(Image.open(io.BytesIO(render_page(signed["x"], cmap="RdBu_r"))).getpalette())
    palette = palette.reshape(-1, 3)
    lut = colormap_lut("RdBu_r")
    assert np.abs(palette[128].astype(int) - lut[127:129].astype(int)).max() <= 2
    assert tuple(palette[0]) != tuple(palette[128])  # padding is not the colour of zero


def test_constant_channels_are_flat_tiles_without_warnings():
    data = {"x": torch.stack([torch.zeros(5, 5), torch.full((5, 5), 3.0), torch.randn(5, 5)]).unsqueeze(0)}
    state = ExplorerState(data, tile_px=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = decode(state.render_page("x", normalize="channel", cmap="viridis"))
        centred = decode(state.render_page("x", normalize="channel", cmap="RdBu_r"))
        enlarged = [state.render_channel("x", c, "channel", cmap) for c in (0, 1) for cmap in ("gray", "RdBu_r")]
    assert (tile(plain, 0, 0, 5) == 1).all() and (tile(plain, 0, 1, 5) == 1).all()
    assert (tile(centred, 0, 0, 5) == 128).all()
    assert all(Image.open(io.BytesIO(png)).size[0] > 200 for png in enlarged)
    stats = state.channel_stats("x", 0)
    assert (stats.min, stats.max, stats.mean, stats.zeros_percent) == (0.0, 0.0, 0.0, 100.0)


def test_channel_stats():
    stats = channel_stats(torch.tensor([[0.0, 0.0], [1.0, 5.0]]))
    assert (stats.min, stats.max, stats.mean, stats.zeros_percent) == (0.0, 5.0, 1.5, 50.0)
    assert str(stats) == "min 0, max 5, mean 1.5, zeros 50.0 %"


def test_enlarged_channel_is_a_picture_with_stats():
    explorer = feature_explorer(activations(), layer="b")
    first = explorer.channel_image.value
    assert Image.open(io.BytesIO(first)).format == "PNG"
    stats = explorer.state.channel_stats("b", 0)
    assert f"{stats.max:.4g}" in explorer.stats.value and "zeros" in explorer.stats.value
    explorer.channel_slider.value = 7
    assert explorer.channel_image.value != first
    assert f"{explorer.state.channel_stats('b', 7).mean:.4g}" in explorer.stats.value
    with pytest.raises(IndexError, match="0 to 99"):
        render_channel(activations()["b"], 100)


# -- the cache: redraws never run the model ------------------------------------------------


def test_redraws_use_the_cache_and_never_run_the_model(recorded):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder)
    assert explorer.model is model and explorer.state.names == ["conv1", "conv2"]
    assert explorer.cmap_buttons.value == "RdBu_r"  # conv outputs are signed
    pictures = {explorer.image.value}
    for layer in (1, 0, 1):
        explorer.layer_slider.value = layer
        pictures.add(explorer.image.value)
    scalings = explorer.state.scalings
    explorer.page_size_buttons.value = 16
    explorer.page_slider.value = 2
    pictures.add(explorer.image.value)
    explorer.page_slider.value = 1
    assert explorer.state.scalings == scalings  # pages and page sizes reuse the scaled layer
    for cmap in ("viridis", "gray", "RdBu_r"):
        explorer.cmap_buttons.value = cmap
        pictures.add(explorer.image.value)
    explorer.normalize_buttons.value = "layer"
    explorer.channel_slider.value = 3
    pictures.add(explorer.image.value)
    assert calls == [] and explorer.forward_runs == 0
    assert len(pictures) >= 6 and explorer.redraws >= 10
    assert explorer.message_text == ""


def test_every_control_change_redraws_exactly_once():
    # Moved here from notebook 04, which counted 39 redraws for its 38 control moves (now docs/remote-kernels.md).
    explorer = feature_explorer(activations(), layer="a", page_size=64)
    assert explorer.redraws == 1  # the first view
    for layer in ("b", "c", "b"):
        explorer.layer_slider.value = explorer.state.index(layer)
    explorer.page_size_buttons.value = 16
    for page in range(2, explorer.page_slider.max + 1):
        explorer.page_slider.value = page
    explorer.normalize_buttons.value = "layer"
    explorer.cmap_buttons.value = "gray"
    assert explorer.page_slider.max == 7  # 100 channels in pages of 16
    assert explorer.redraws == 1 + 3 + 1 + 6 + 1 + 1


def test_going_back_gives_the_same_bytes():
    explorer = feature_explorer(activations())
    first = explorer.image.value
    explorer.layer_slider.value = 1
    explorer.page_slider.value = 2
    assert explorer.image.value != first
    explorer.page_slider.value = 1
    explorer.layer_slider.value = 0
    assert explorer.image.value == first


# -- uploads ---------------------------------------------------------------------------------


def upload_value_v8(name: str, data: bytes) -> tuple:
    """What ipywidgets 8's FileUpload.value holds after one upload (dicts, content a memoryview)."""
    modified = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
    return ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
             "last_modified": modified},)


def upload_value_v7(name: str, data: bytes) -> dict:
    """What ipywidgets 7's (Colab's) FileUpload.value holds after one upload."""
    metadata = {"name": name, "type": "image/png", "size": len(data), "lastModified": 1700000000000}
    return {name: {"metadata": metadata, "content": data}}


@pytest.mark.parametrize("shape", [upload_value_v7, upload_value_v8])
def test_uploaded_files_reads_both_ipywidgets_shapes(shape):
    assert uploaded_files(shape("cat.png", b"\x89PNG...")) == [("cat.png", b"\x89PNG...")]


def test_uploaded_files_empty_and_malformed():
    assert uploaded_files(()) == [] and uploaded_files({}) == [] and uploaded_files(None) == []
    with pytest.raises(ValueError):
        uploaded_files(({"name": "x.png"},))
    with pytest.raises(TypeError):
        uploaded_files(42)


@pytest.mark.parametrize("shape", [upload_value_v7, upload_value_v8])
@pytest.mark.parametrize("data", [b"this is not a picture", b"", png_bytes()[:40]])
def test_a_bad_upload_gives_a_readable_message_and_changes_nothing(recorded, shape, data):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess)
    before = explorer.image.value
    assert explorer.handle_upload(shape("holiday notes.txt", data)) is False
    message = explorer.message_text
    assert "holiday notes.txt" in message and "Traceback" not in message
    assert any(word in message for word in ("not an image", "empty", "truncated", "damaged"))
    assert explorer.image.value == before and calls == [] and explorer.forward_runs == 0


def test_a_good_upload_runs_the_model_exactly_once(recorded):
    model, recorder, calls = recorded
    kept = [t.clone() for t in recorder.outputs]
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess, photo=Image.new("RGB", (8, 8)))
    before, thumbnail = explorer.image.value, explorer.photo.value
    explorer.layer_slider.value = 1
    # Through the real observer, as the front end would: ipywidgets 8 syncs a tuple into
    # value; ipywidgets 7 (Colab) builds its dict and sets the read-only trait itself.
    if int(ipywidgets.__version__.split(".")[0]) >= 8:
        explorer.upload.value = upload_value_v8("red.png", png_bytes())
    else:
        explorer.upload.set_trait("value", upload_value_v7("red.png", png_bytes()))
    assert len(calls) == 1 and explorer.forward_runs == 1
    assert "red.png" in explorer.message_text and "24×20" in explorer.message_text
    assert explorer.view["layer"] == 1 and explorer.photo.value != thumbnail
    explorer.layer_slider.value = 0
    assert explorer.image.value != before
    explorer.page_size_buttons.value = 16
    assert len(calls) == 1  # redraws after the upload reuse the new record
    assert all(torch.equal(a, b) for a, b in zip(kept, recorder.outputs))  # the user's recorder is untouched
    assert explorer.handle_upload(upload_value_v7("blue.png", png_bytes((0, 0, 250)))) is True
    assert len(calls) == 2


def test_without_a_model_there_is_no_upload_and_use_photo_says_why():
    explorer = feature_explorer(activations())
    widgets_in_tree = list(walk(explorer))
    assert explorer.upload not in widgets_in_tree
    assert explorer.use_photo(png_bytes()) is False
    assert "pass model=" in explorer.message_text


def test_a_preprocess_that_does_not_fit_gives_a_message(recorded):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=lambda image: torch.zeros(1, 5, 8, 8))
    assert explorer.use_photo(png_bytes(), name="odd.png") is False
    assert "Could not run the model on 'odd.png'" in explorer.message_text


# -- your own photo: image address, Colab's chooser, empty and oversized uploads ---------------


@pytest.fixture
def web(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")  # a proxy set on this machine must not see 127.0.0.1
    routes = {"/red.png": ("image/png", png_bytes()),
              "/page.html": ("text/html", b"<html><body><img src='red.png'></body></html>")}
    with serve(routes) as base:
        yield base


def test_an_image_address_runs_the_model_once(recorded, web):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess)
    before = explorer.image.value
    assert explorer.url in walk(explorer) and explorer.url_button in walk(explorer)
    explorer.url.value = f"{web}/red.png"
    explorer.url_button.click()
    assert len(calls) == 1 and explorer.forward_runs == 1
    assert "Showing the feature maps of" in explorer.message_text and "24×20" in explorer.message_text
    assert explorer.image.value != before


@pytest.mark.parametrize("address, expected", [("", "Paste an image address"),
                                               ("/page.html", "Copy image address")])
def test_a_bad_image_address_says_what_to_do_and_changes_nothing(recorded, web, address, expected):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess)
    before = explorer.image.value
    explorer.url.value = f"{web}{address}" if address else ""
    explorer.url_button.click()
    assert expected in explorer.message_text
    assert calls == [] and explorer.image.value == before


@pytest.fixture
def colab(monkeypatch):
    """A stand-in for Colab's ``google.colab.files`` (Colab's API does not exist here); returns its upload log."""
    chooser = types.SimpleNamespace(result={}, calls=0, error=None)

    def upload():
        chooser.calls += 1
        if chooser.error:
            raise chooser.error
        return chooser.result

    google, colab_module, files = (types.ModuleType(name) for name in
                                   ("google", "google.colab", "google.colab.files"))
    files.upload = upload
    colab_module.files, google.colab = files, colab_module
    for name, module in (("google", google), ("google.colab", colab_module), ("google.colab.files", files)):
        monkeypatch.setitem(sys.modules, name, module)
    return chooser


def test_the_colab_button_uses_colabs_chooser_and_runs_the_model_once(recorded, colab):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess)
    assert explorer.colab_button in walk(explorer)
    colab.result = {"holiday.png": png_bytes((0, 0, 250), (40, 30))}
    before = explorer.image.value
    explorer.colab_button.click()
    assert colab.calls == 1 and len(calls) == 1
    assert "'holiday.png' (40×30 pixels)" in explorer.message_text
    assert explorer.image.value != before


@pytest.mark.parametrize("result, error, expected", [
    ({}, None, "No file was chosen"),
    ({"x.png": b""}, None, "arrived empty"),
    ({}, RuntimeError("TypeError: Cannot read properties of undefined"), "did not finish"),
    ({"notes.txt": b"shopping list"}, None, "not an image"),
])
def test_the_colab_button_never_fails_silently(recorded, colab, result, error, expected):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess)
    colab.result, colab.error = result, error
    explorer.colab_button.click()
    assert expected in explorer.message_text and calls == []


def test_off_colab_there_is_no_colab_button(recorded):
    model, recorder, calls = recorded
    assert "google.colab" not in sys.modules
    explorer = feature_explorer(recorder)
    assert explorer.colab_button not in walk(explorer) and explorer.upload in walk(explorer)
    assert explorer.upload_from_colab() is False and "Colab only" in explorer.message_text


@pytest.mark.parametrize("shape", [upload_value_v7, upload_value_v8])
def test_an_empty_upload_names_the_likely_cause_and_the_alternatives(recorded, shape):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess)
    assert explorer.handle_upload(shape("phone.jpg", b"")) is False
    message = explorer.message_text
    assert "'phone.jpg'" in message and "arrived empty" in message and "ipywidgets#3452" in message
    assert "image address" in message and calls == []


@pytest.mark.skipif("_counter" not in ipywidgets.FileUpload().trait_names(),
                    reason="ipywidgets 7 only; tests/test_ipywidgets7.py runs it under 7.7")
def test_ipywidgets7_counter_without_data_is_reported(recorded):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess)
    explorer.upload._counter = 1  # what Colab's front end syncs when the file itself is lost
    assert "ipywidgets#3452" in explorer.message_text and calls == []


def test_a_too_large_upload_gets_a_clear_message(recorded):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, preprocess=tiny_preprocess)
    huge = png_bytes() + bytes(MAX_DOWNLOAD_BYTES)
    assert explorer.handle_upload(upload_value_v8("scan.png", huge)) is False
    assert "'scan.png' is too large" in explorer.message_text and "25 MB" in explorer.message_text
    assert calls == []


# -- inputs and widgets -------------------------------------------------------------------------


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def test_only_core_widgets_common_to_ipywidgets_7_and_8(recorded):
    model, recorder, calls = recorded
    explorer = feature_explorer(recorder, photo=Image.new("RGB", (8, 8)))
    assert isinstance(explorer, (FeatureExplorer, ipywidgets.VBox))
    kinds = {type(w).__name__ for w in walk(explorer)}
    assert kinds <= {"FeatureExplorer", "VBox", "HBox", "IntSlider", "HTML", "ToggleButtons", "Image", "Text",
                     "Button", "Output",
                     "FileUpload"}
    assert {"IntSlider", "ToggleButtons", "Image", "FileUpload"} <= kinds
    assert all(w.format == "png" for w in walk(explorer) if isinstance(w, ipywidgets.Image))
    sliders = {w.description for w in walk(explorer) if isinstance(w, ipywidgets.IntSlider)}
    assert sliders == {"layer", "page", "channel"}
    assert [v for _, v in explorer.page_size_buttons.options] == [16, 32, 64]
    assert [v for _, v in explorer.normalize_buttons.options] == ["channel", "layer"]
    assert [v for _, v in explorer.cmap_buttons.options] == ["viridis", "gray", "RdBu_r"]



def test_colormap_tooltips_name_the_colours_matplotlib_draws():
    import matplotlib

    explorer = feature_explorer(activations())
    tooltips = dict(zip([v for _, v in explorer.cmap_buttons.options], explorer.cmap_buttons.tooltips))
    assert tooltips["viridis"] == "dark violet = low, yellow = high"
    low, high = matplotlib.colormaps["viridis"](0.0), matplotlib.colormaps["viridis"](1.0)
    assert low[2] > low[0] > 0.2 > low[1]           # #440154: blue and red, no green -> violet, not blue
    assert high[0] > 0.9 and high[1] > 0.85 and high[2] < 0.2   # #fde725: yellow
    assert tooltips["gray"] == "black = low, white = high"

def test_inputs_are_checked():
    with pytest.raises(ValueError, match="'two': .*batch of 2"):
        ExplorerState({"two": torch.zeros(2, 3, 4, 4)})
    with pytest.raises(ValueError, match="nothing yet"):
        ExplorerState(ActivationRecorder(TinyNet()))
    with pytest.raises(TypeError):
        ExplorerState(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="page_size"):
        feature_explorer(activations(), page_size=10)
    state = ExplorerState([("first", torch.ones(3, 4, 4)), ("second", torch.ones(1, 5, 2, 2))])
    assert state.names == ["first", "second"] and state.shape("second") == (5, 2, 2)
    assert feature_explorer({"pos": torch.rand(1, 4, 3, 3)}).cmap_buttons.value == "viridis"


def test_recorded_names_with_repeated_calls_can_be_recorded_again():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).eval()
    relu = nn.ReLU()
    model[3] = relu
    model[1] = relu  # one module called twice: names '1' and '1_1'
    with ActivationRecorder(model, layer_type=nn.ReLU) as recorder, torch.no_grad():
        model(torch.randn(1, 3, 10, 10))
    assert recorder.names == ["1", "1_1"]
    explorer = feature_explorer(dict(zip(recorder.names, recorder.outputs)), model=model,
                                preprocess=lambda image: torch.randn(1, 3, 10, 10))
    assert explorer.use_photo(png_bytes()) is True
    assert explorer.state.names == ["1", "1_1"]
