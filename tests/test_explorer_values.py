"""The explorer's pictures against answers known by construction: colours, pages, limits.

Small synthetic layers whose right picture is computed here with a few lines of numpy
and matplotlib's colormaps, independently of ``helpers``: every normalisation,
colormap and symmetric setting; the cache switching modes; which channels land on
which page; the enlarged channel's colour limits. Pages are decoded with PIL.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.explorer import ExplorerState, page_scale, render_page, upscale_factor
from helpers.widgets import feature_explorer

TOLERANCE = 6  # per RGB component: two steps of a 256-colour map (palette and rounding), far below any wrong scale
PAD = {"viridis": (255, 255, 255), "gray": (70, 130, 180), "RdBu_r": (128, 128, 128)}
SIDE = 4  # tiles of 4×4 pixels, padding 2, sent and shown at that size (tile_px=4)


def layer() -> torch.Tensor:
    """Four 4×4 channels: a ramp 0..1, the same ramp ×3, a signed ramp -2..1, a constant 0.5."""
    ramp = torch.linspace(0, 1, SIDE * SIDE).view(SIDE, SIDE)
    return torch.stack([ramp, 3 * ramp, 3 * ramp - 2, torch.full((SIDE, SIDE), 0.5)])


def expected_fractions(values: np.ndarray, normalize: str, symmetric: bool) -> np.ndarray:
    """Where each value sits on the colour scale (0 = low end, 1 = high end), by hand."""
    axes = (1, 2) if normalize == "channel" else None
    if symmetric:
        bound = np.abs(values).max(axis=axes, keepdims=True)
        low, high = -bound, bound
    else:
        low, high = values.min(axis=axes, keepdims=True), values.max(axis=axes, keepdims=True)
    span = np.broadcast_to(high - low, values.shape)
    flat = 0.5 if symmetric else 0.0
    return np.where(span == 0, flat, (values - low) / np.where(span == 0, 1, span))


def tiled(colors: np.ndarray, pad: tuple[int, int, int], nrow: int = 8) -> np.ndarray:
    """N×SIDE×SIDE×3 tile colours laid out in rows of ``nrow``, 2 pixels of ``pad`` around each."""
    count = len(colors)
    cols, rows = min(nrow, count), -(-count // nrow)
    page = np.empty((rows * (SIDE + 2) + 2, cols * (SIDE + 2) + 2, 3))
    page[:] = pad
    for k in range(count):
        top, left = 2 + (k // nrow) * (SIDE + 2), 2 + (k % nrow) * (SIDE + 2)
        page[top:top + SIDE, left:left + SIDE] = colors[k]
    return page


def expected_page(values: np.ndarray, normalize: str, cmap: str, symmetric: bool) -> np.ndarray:
    """The RGB page of C×SIDE×SIDE values, computed with matplotlib's colormap."""
    colors = matplotlib.colormaps[cmap](expected_fractions(values, normalize, symmetric))[..., :3] * 255
    return tiled(colors, PAD[cmap])


def rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float)


def assert_page(data: bytes, expected: np.ndarray, tolerance: float = TOLERANCE) -> None:
    actual = rgb(data)
    assert actual.shape == expected.shape
    error = np.abs(actual - expected)
    worst = np.unravel_index(error.argmax(), error.shape)
    assert error.max() <= tolerance, f"pixel {worst[:2]}: {actual[worst[:2]]} instead of {expected[worst[:2]]}"


MODES = [(normalize, cmap, symmetric) for normalize in ("channel", "layer")
         for cmap in ("viridis", "gray", "RdBu_r") for symmetric in (None, False, True)]


@pytest.mark.parametrize("normalize, cmap, symmetric", MODES)
def test_page_colours_for_every_scale_colormap_and_symmetry(normalize, cmap, symmetric):
    centred = cmap == "RdBu_r" if symmetric is None else symmetric  # None: centred for diverging maps
    data = render_page(layer(), normalize=normalize, cmap=cmap, symmetric=symmetric, tile_px=SIDE)
    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert_page(data, expected_page(layer().numpy(), normalize, cmap, centred))


def test_the_known_colours_themselves():
    """A few pixels spelled out: the ramp's ends are viridis' ends, the signed ramp's 0 is RdBu_r's white."""
    page = rgb(render_page(layer(), normalize="channel", cmap="viridis", tile_px=SIDE))
    assert np.abs(page[2, 2] - (68, 1, 84)).max() <= 2 and np.abs(page[5, 5] - (253, 231, 37)).max() <= 2
    centred = rgb(render_page(layer(), normalize="layer", cmap="RdBu_r", tile_px=SIDE))
    ramp = (3 * np.linspace(0, 1, 16) - 2).reshape(4, 4)  # channel 2; the value closest to 0 is whitest
    i, j = np.unravel_index(np.abs(ramp).argmin(), ramp.shape)
    assert centred[2 + i, 14 + j].min() >= 235


@pytest.mark.parametrize("cmap", ["viridis", "RdBu_r"])
def test_the_lossy_encoding_stays_close_to_the_lossless_page(cmap):
    generator = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 64, 40, 40, generator=generator), 9, 1)[0]
    state = ExplorerState({"x": smooth}, tile_px=32, browser_zoom=1)
    lossless = rgb(state.render_page("x", cmap=cmap, encoding="png"))
    lossy_bytes = state.render_page("x", cmap=cmap, encoding="jpeg")
    assert Image.open(io.BytesIO(lossy_bytes)).format == "JPEG"
    error = np.abs(rgb(lossy_bytes) - lossless)
    # measured here: mean 4.6-5.0, 99th percentile 18 (quality 90, 4:4:4); a wrong colour or scale is 50+
    assert error.mean() <= 6 and np.percentile(error, 99) <= 25, (error.mean(), np.percentile(error, 99))


def test_switching_mode_after_a_cached_draw_gives_the_new_modes_pixels():
    state = ExplorerState({"x": layer()}, tile_px=SIDE)
    values = layer().numpy()
    for normalize, cmap, symmetric in [("channel", "viridis", False), ("layer", "viridis", False),
                                       ("channel", "RdBu_r", True), ("layer", "RdBu_r", True),
                                       ("channel", "RdBu_r", False), ("channel", "viridis", False)]:
        data = state.render_page("x", normalize=normalize, cmap=cmap, symmetric=symmetric, encoding="png")
        assert_page(data, expected_page(values, normalize, cmap, symmetric))
    assert state.scalings == 4  # each (normalisation, symmetry) scaled once, then reused


@pytest.mark.parametrize("page_size", [3, 8])
def test_every_page_shows_its_own_channels(page_size):
    values = torch.arange(20.0).view(20, 1, 1).expand(20, SIDE, SIDE).clone()  # channel k is k everywhere
    state = ExplorerState({"x": values}, tile_px=SIDE)
    for page in range(state.n_pages("x", page_size)):
        first, stop = page * page_size, min(page * page_size + page_size, 20)
        data = state.render_page("x", page, page_size, normalize="layer", encoding="png")
        # per layer, channel k sits at k/19 of the scale: one flat colour per tile
        colors = matplotlib.colormaps["viridis"](np.arange(first, stop) / 19)[:, :3] * 255
        assert_page(data, tiled(np.broadcast_to(colors[:, None, None], (stop - first, SIDE, SIDE, 3)),
                                PAD["viridis"]))


def test_enlarged_channel_limits_per_channel_per_layer_and_symmetric():
    state = ExplorerState({"x": layer()})
    cases = {  # (channel, normalize, symmetric): the colorbar's ends, by hand
        (1, "channel", False): (0.0, 3.0), (1, "layer", False): (-2.0, 3.0),
        (2, "channel", False): (-2.0, 1.0), (2, "channel", True): (-2.0, 2.0),
        (0, "layer", True): (-3.0, 3.0), (0, "channel", True): (-1.0, 1.0),
        (3, "channel", False): (0.5, 1.5),  # a constant channel: its value at the low end, as on the page
        (3, "channel", True): (-0.5, 0.5),
    }
    for (channel, normalize, symmetric), limits in cases.items():
        assert state.channel_limits("x", channel, normalize, symmetric) == pytest.approx(limits)
        cmap = "RdBu_r" if symmetric else "viridis"
        state.render_channel("x", channel, normalize, cmap, symmetric)
        assert state.channel_figure.image.get_clim() == pytest.approx(limits), (channel, normalize, symmetric)


def test_the_explorers_enlarged_channel_follows_the_scale_buttons():
    explorer = feature_explorer({"x": layer()}, cmap="viridis")
    explorer.channel_slider.value = 1
    assert explorer.state.channel_figure.image.get_clim() == pytest.approx((0.0, 3.0))
    per_channel = explorer.channel_image.value
    explorer.normalize_buttons.value = "layer"
    assert explorer.state.channel_figure.image.get_clim() == pytest.approx((-2.0, 3.0))
    assert explorer.channel_image.value != per_channel


@pytest.mark.parametrize("value", [0.5, -2.0, 0.0])
@pytest.mark.parametrize("normalize", ["channel", "layer"])
@pytest.mark.parametrize("cmap, symmetric", [("viridis", False), ("RdBu_r", True)])
def test_a_constant_channel_has_one_colour_on_the_page_and_enlarged(value, normalize, cmap, symmetric):
    """The page draws a flat range at the low end (or the middle, centred); the enlarged view must agree."""
    state = ExplorerState({"x": torch.full((1, SIDE, SIDE), value)}, tile_px=SIDE, browser_zoom=1)
    page = rgb(state.render_page("x", normalize=normalize, cmap=cmap, symmetric=symmetric, encoding="png"))
    on_page = page[2:2 + SIDE, 2:2 + SIDE].reshape(-1, 3)
    assert (on_page == on_page[0]).all()
    state.render_channel("x", 0, normalize, cmap, symmetric)
    image = state.channel_figure.image
    enlarged = np.asarray(image.cmap(image.norm(value))[:3]) * 255
    # by hand: a flat range sits at the low end; centred at 0, a constant c sits at the end of its sign
    where = 0.5 + 0.5 * float(np.sign(value)) if symmetric else 0.0
    assert float(image.norm(value)) == pytest.approx(where)
    assert np.abs(on_page[0] - enlarged).max() <= TOLERANCE, (on_page[0], enlarged)


def test_page_scale_multiplies_to_the_upscale_factor_for_odd_factors_too():
    assert page_scale(7, 7) == (8, 2) and page_scale(112, 112) == (1, 1)
    assert page_scale(37, 37) == (3, 1)  # factor 3: no zoom of 2 fits, the kernel sends all of it
    assert page_scale(20, 30, tile_px=112, browser_zoom=3) == (1, 3)
    for side in range(1, 120):
        kernel, zoom = page_scale(side, side)
        assert kernel * zoom == upscale_factor(side, side), side
