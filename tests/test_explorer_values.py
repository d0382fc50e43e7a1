"""The explorer's pictures against answers known by construction: colours, pages, limits.

Small synthetic layers whose right picture is computed here with a few lines of numpy
and matplotlib's colormaps, independently of ``helpers``: every normalisation,
colormap and symmetric setting; the cache switching modes; which channels land on
which page; the enlarged channel's colour limits. Pages are decoded with PIL.
"""

from __future__ import annotations

import io
import zlib

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.explorer import (
    TILE_PX,
    ExplorerState,
    channel_stats,
    encode_jpeg,
    encode_page,
    encode_palette_png,
    estimated_png_bytes,
    image_format,
    page_scale,
    render_channel,
    render_page,
    to_palette_indices,
    upscale_factor,
    uploaded_files,
)
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


# -- the functions without a state: their defaults and the arguments they pass on -----------------


def test_render_page_defaults_viridis_per_channel_pages_of_64_and_tiles_of_about_112_pixels():
    assert_page(render_page(layer(), tile_px=SIDE), expected_page(layer().numpy(), "channel", "viridis", False))
    # 65 channels of 1×1, tiles of 1 pixel: the first page holds 64 in 8 rows, the second the last one
    assert rgb(render_page(torch.zeros(65, 1, 1), tile_px=1)).shape[:2] == (2 + 8 * 3, 2 + 8 * 3)
    assert rgb(render_page(torch.zeros(65, 1, 1), page=1, tile_px=1)).shape[:2] == (5, 5)
    # a 7×7 map is enlarged 112 // 7 = 16 times by the kernel itself (no browser zoom by default)
    assert rgb(render_page(torch.zeros(1, 7, 7))).shape[:2] == (2 + 7 * 16 + 2,) * 2
    assert rgb(render_page(torch.zeros(1, 7, 7), browser_zoom=2)).shape[:2] == (2 + 7 * 8 + 2,) * 2


def test_render_page_passes_on_nrow_compression_and_encoding():
    colors = matplotlib.colormaps["viridis"](expected_fractions(layer().numpy(), "channel", False))[..., :3] * 255
    assert_page(render_page(layer(), nrow=3, tile_px=SIDE), tiled(colors, PAD["viridis"], nrow=3))
    flat = torch.zeros(1, 8, 8)  # one flat 8×8 tile enlarged 14×: 116×116 pixels, 1 byte each
    stored, packed = (render_page(flat, compress_level=level) for level in (0, 9))
    raw_bytes = 116 * (116 + 1)  # a filter byte per row
    assert len(stored) > raw_bytes and len(packed) < raw_bytes / 10  # level 0 stores, level 9 deflates
    assert np.array_equal(rgb(stored), rgb(packed))
    assert Image.open(io.BytesIO(render_page(layer(), tile_px=SIDE, encoding="jpeg"))).format == "JPEG"


def colour_count(png: bytes, cmap: str, fraction: float) -> int:
    """How many pixels of a picture have the colour at ``fraction`` of ``cmap`` (within 2 per component)."""
    colour = np.asarray(matplotlib.colormaps[cmap](fraction)[:3]) * 255
    return int((np.abs(rgb(png) - colour).max(axis=-1) <= 2).sum())


BIG = 10_000  # an enlarged cell covers about 140 × 140 pixels; one colorbar colour about 16 × 1


def test_render_channel_defaults_per_channel_viridis_titled_activation():
    ramp = torch.tensor([[[0.0, 1.0]]])  # per channel: 0 at the low end, 1 at the high end
    png = render_channel(ramp, 0)
    assert colour_count(png, "viridis", 0.0) > BIG and colour_count(png, "viridis", 1.0) > BIG
    assert colour_count(png, "viridis", 0.5) < BIG / 10
    assert png == render_channel(ramp, 0, name="activation") != render_channel(ramp, 0, name="other")


def test_render_channel_passes_on_colormap_and_symmetry():
    signed = torch.tensor([[[-2.0, 1.0]]])  # RdBu_r is centred by default: -2 … 2, so 1 sits at 3/4
    png = render_channel(signed, 0, cmap="RdBu_r")
    assert colour_count(png, "RdBu_r", 0.0) > BIG and colour_count(png, "RdBu_r", 0.75) > BIG
    centred = render_channel(torch.tensor([[[0.0, 1.0]]]), 0, symmetric=True)  # -1 … 1: 0 in the middle
    assert colour_count(centred, "viridis", 0.5) > BIG and colour_count(centred, "viridis", 0.0) < BIG / 10


def test_warm_scales_every_layer_per_channel_so_the_first_page_costs_no_scaling():
    state = ExplorerState({"a": layer(), "b": 2 * layer()}, tile_px=SIDE)
    state.warm()
    assert state.cached_keys == [(0, "channel", False), (1, "channel", False)] and state.scalings == 2
    state.render_page("b")  # viridis, per channel: what warm() prepared
    assert state.scalings == 2


# -- JPEG encoding: a trial band of rows picks the quality, the page is encoded once -----------------


def noise_page(height: int, width: int) -> np.ndarray:
    """Palette indices 1–255 at random: every band of rows compresses alike."""
    return np.random.default_rng(0).integers(1, 256, (height, width), dtype=np.uint8)


def page_rgb(indices: np.ndarray) -> Image.Image:
    """The RGB page that a JPEG of ``indices`` in viridis must show (from the lossless PNG)."""
    return Image.open(io.BytesIO(encode_palette_png(indices, "viridis"))).convert("RGB")


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def recorded_jpeg_saves(monkeypatch) -> list[tuple[int, np.ndarray]]:
    """From now on, (quality, pixels) of every JPEG that PIL writes; PIL still writes them."""
    saves = []
    real_save = Image.Image.save

    def save(image, fp, format=None, **params):
        if str(format).upper() == "JPEG":
            saves.append((params["quality"], np.asarray(image.convert("RGB"))))
        return real_save(image, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", save)
    return saves


def test_a_page_of_up_to_two_bands_is_encoded_whole_from_the_best_quality_down(monkeypatch):
    indices = noise_page(128, 200)  # 2 × 64 rows: no trial band
    page = page_rgb(indices)
    at_70 = jpeg(page, 70)
    saves = recorded_jpeg_saves(monkeypatch)
    assert encode_jpeg(indices, "viridis", max_bytes=len(at_70)) == at_70  # exactly the limit still fits
    assert [quality for quality, _ in saves] == [90, 80, 70]
    assert all(np.array_equal(pixels, np.asarray(page)) for _, pixels in saves)


def test_a_taller_page_tries_the_64_middle_rows_first(monkeypatch):
    indices = noise_page(151, 16)  # (151 - 64) // 2 = 43: rows 43 to 106
    page = np.asarray(page_rgb(indices))
    saves = recorded_jpeg_saves(monkeypatch)
    encode_jpeg(indices, "viridis")  # a few kB: quality 90 fits the 256 kB
    assert [quality for quality, _ in saves] == [90, 90]
    assert np.array_equal(saves[0][1], page[43:107]) and np.array_equal(saves[1][1], page)


def test_a_tall_page_is_encoded_in_full_once_at_the_best_quality_that_fits(monkeypatch):
    indices = noise_page(19 * 64, 128)
    page = page_rgb(indices)
    band = page.crop((0, 576, 128, 640))  # the middle 64 rows
    # the band at 70, scaled to the page, predicts exactly 95 % of the limit: the boundary counts as fitting
    max_bytes = 20 * len(jpeg(band, 70))
    assert len(jpeg(band, 70)) * 19 == 0.95 * max_bytes
    assert len(jpeg(page, 80)) > max_bytes >= len(jpeg(page, 70))  # 70 is the best quality that fits
    saves = recorded_jpeg_saves(monkeypatch)
    assert encode_jpeg(indices, "viridis", max_bytes=max_bytes) == jpeg(page, 70)
    assert [(quality, pixels.shape[0]) for quality, pixels in saves[:4]] == [(90, 64), (80, 64), (70, 64), (70, 1216)]
    assert len(saves) == 5  # and the reference encoding just above
    assert np.array_equal(saves[0][1], np.asarray(band))


# -- uploads ------------------------------------------------------------------------------------------


def test_uploaded_files_names_come_from_the_metadata_then_the_key_then_a_default():
    widgets7 = {
        "upload-1": {"metadata": {"name": "cat.png", "type": "image/png"}, "content": b"ab"},
        "dog.png": {"metadata": {"type": "image/png"}, "content": b"cd"},  # no name in the metadata
        "owl.png": {"metadata": None, "content": b"ef"},
        "bat.png": {"content": b"gh"},  # no metadata at all
    }
    assert uploaded_files(widgets7) == [("cat.png", b"ab"), ("dog.png", b"cd"), ("owl.png", b"ef"), ("bat.png", b"gh")]
    widgets8 = ({"name": "cat.png", "content": memoryview(b"ab")}, {"content": memoryview(b"cd")})
    assert uploaded_files(widgets8) == [("cat.png", b"ab"), ("uploaded file", b"cd")]


@pytest.mark.parametrize("entry", [{"metadata": {"name": "cat.png"}}, b"raw bytes"], ids=["no-content", "not-a-dict"])
def test_uploaded_files_explains_an_entry_without_content(entry):
    with pytest.raises(ValueError, match="Unexpected upload entry for 'cat.png': no 'content'"):
        uploaded_files({"cat.png": entry})


# -- palette indices, page sizes, PNG estimates --------------------------------------------------------


def test_palette_indices_are_uint8_from_1_to_255_with_0_left_for_padding():
    values = np.array([0, 1, 127, 128, 254, 255], np.uint8)
    indices = to_palette_indices(values)
    assert indices.dtype == np.uint8
    # 1 + round(v · 254 / 255): 256 grey levels onto the 255 colours after the padding colour, so the
    # middle two (127 and 128) share one
    assert indices.tolist() == [1 + round(v * 254 / 255) for v in values.tolist()] == [1, 2, 128, 128, 254, 255]


def zlib_level_flag(png: bytes) -> int:
    """FLEVEL of the first IDAT's zlib header (RFC 1950): 0 for the fastest level, 3 for the smallest."""
    start = png.index(b"IDAT") + 4
    assert png[start] == 0x78  # deflate, 32 K window
    return png[start + 1] >> 6


def test_a_state_shows_pages_of_64_at_the_fastest_png_level_by_default():
    state = ExplorerState({"x": torch.arange(65.0).view(65, 1, 1)}, tile_px=1, browser_zoom=1)
    first, last = state.render_page("x", encoding="png"), state.render_page("x", page=1, encoding="png")
    assert rgb(first).shape[:2] == state.page_pixels("x") == state.page_grid("x").shape == (2 + 8 * 3, 2 + 8 * 3)
    assert rgb(last).shape[:2] == state.page_pixels("x", page=1) == (5, 5)  # the 65th alone
    assert rgb(state.render_page("x", page=4, page_size=16)).shape[:2] == state.page_pixels("x", 4, 16) == (5, 5)
    assert zlib_level_flag(first) == 0  # compress_level 1
    assert zlib_level_flag(state.render_page("x", encoding="png", compress_level=9)) == 3


def test_png_estimate_deflates_the_middle_64_rows_and_scales_them_to_the_page():
    page = np.zeros((300, 40), np.uint8)
    page[118:182] = noise_page(64, 40)  # rows 118 to 181 are the middle 64: (300 - 64) // 2 = 118
    estimate = estimated_png_bytes(page)
    assert type(estimate) is int
    assert estimate == len(zlib.compress(page[118:182].tobytes(), 1)) * 300 // 64
    small = noise_page(64, 40)  # 64 rows or fewer: the whole page is deflated
    assert estimated_png_bytes(small) == len(zlib.compress(small.tobytes(), 1))


def test_upscale_factor_of_a_one_pixel_map_and_of_an_empty_one():
    assert upscale_factor(1, 1) == TILE_PX  # e.g. the avgpool output, 512×1×1: one tile of 112 pixels
    assert upscale_factor(0, 0) == TILE_PX  # an empty map does not divide by zero


def test_palette_pngs_take_indices_of_any_integer_type():
    data = encode_palette_png(np.array([[0, 1, 255]]), "viridis")  # int64, as np.array makes them
    assert rgb(data)[0].tolist() == [[255, 255, 255], [68, 1, 84], [253, 231, 37]]  # padding, low end, high end


# -- encode_page: lossless PNG unless a JPEG is much smaller -------------------------------------------


def smooth_page(height: int, width: int) -> np.ndarray:
    """Palette indices 1–255 that vary smoothly: JPEG compresses them far better than a palette PNG."""
    y, x = np.mgrid[0:height, 0:width] / 12.0
    field = np.sin(x) * np.cos(0.7 * y) + np.sin(0.5 * x + 0.9 * y)
    return (1 + (field - field.min()) / (field.max() - field.min()) * 254).round().astype(np.uint8)


def test_encode_page_defaults_to_auto_and_passes_on_the_compression_level():
    flat = np.ones((8, 8), np.uint8)  # far under a quarter of PAGE_BYTES: PNG without trying a JPEG
    assert zlib_level_flag(encode_page(flat, "viridis")) == 0
    assert zlib_level_flag(encode_page(flat, "viridis", compress_level=9)) == 3
    assert zlib_level_flag(encode_page(flat, "viridis", "png", compress_level=9)) == 3


def test_encode_page_of_a_smooth_page_sends_the_jpeg_in_its_colours_and_size_limit():
    page = smooth_page(400, 400)
    assert image_format(encode_page(page, "gray", "png")) == "png"  # "png" is always lossless
    auto = encode_page(page, "gray")
    assert image_format(auto) == "jpeg"  # a quarter of the PNG's size
    pixels = rgb(auto)
    assert np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max() <= 3  # grey: the colormap asked for
    for encoding in ("auto", "jpeg"):
        data = encode_page(page, "gray", encoding, max_bytes=20_000)  # under quality 90's 22 kB
        assert image_format(data) == "jpeg" and len(data) <= 20_000, encoding


def noisy_smooth_page() -> np.ndarray:
    """A smooth page with noise: its JPEG is a little smaller than its PNG, by less than the premium."""
    noise = np.random.default_rng(28).integers(-28, 29, (300, 300))
    return np.clip(smooth_page(300, 300).astype(int) + noise, 1, 255).astype(np.uint8)


def test_encode_page_keeps_the_png_unless_the_jpeg_is_smaller_by_more_than_the_premium():
    page = noisy_smooth_page()
    png = encode_palette_png(page, "viridis_r")
    jpeg = encode_jpeg(page, "viridis_r")
    assert len(jpeg) < len(png) <= 1.25 * len(jpeg)  # LOSSLESS_PREMIUM
    assert encode_page(page, "viridis_r") == png
    assert encode_page(page, "viridis_r", max_bytes=len(png)) == png  # exactly at the limit still fits
    packed = encode_page(page, "viridis_r", compress_level=9)
    assert zlib_level_flag(packed) == 3 and np.array_equal(rgb(packed), rgb(png))


def test_encode_page_checks_the_real_png_when_its_estimate_was_low():
    page = smooth_page(400, 400)
    page[168:232] = 1  # a flat middle band: the estimate (from those rows) is far too low
    estimate = estimated_png_bytes(page)
    assert estimate < len(encode_palette_png(page, "gray")) / 50
    assert image_format(encode_page(page, "gray", max_bytes=2 * estimate)) == "jpeg"  # the PNG is over the limit


def test_encode_page_encodes_the_png_when_its_estimate_is_exactly_the_limit():
    rng = np.random.default_rng(0)
    page = np.kron(rng.integers(1, 256, (100, 100), dtype=np.uint8), np.ones((4, 4), np.uint8))  # 4×4 blocks
    page[168:232] = rng.integers(0, 4, (64, 400)) * 63 + 1  # four-level noise in the middle rows
    limit = estimated_png_bytes(page)  # from the middle rows, far above the whole page's PNG
    png = encode_palette_png(page, "viridis")
    assert len(png) < limit <= 1.25 * len(encode_jpeg(page, "viridis", limit))
    assert encode_page(page, "viridis", max_bytes=limit) == png


# -- the state: its cache of scaled layers, the enlarged channel's figure -----------------------------


def test_the_cache_keeps_recently_used_layers_within_cache_bytes_and_always_the_last():
    layers = {name: torch.rand(2, 4, 4) for name in "abc"}
    one = 2 * 4 * 4  # bytes of one layer's palette indices
    state = ExplorerState(layers, cache_bytes=2 * one)
    state.indices("a"), state.indices("b")
    assert state.cached_keys == [(0, "channel", False), (1, "channel", False)]  # exactly cache_bytes: both kept
    state.indices("a")  # used again: now the most recent
    state.indices("c")
    assert state.cached_keys == [(0, "channel", False), (2, "channel", False)]  # "b" was the least recent
    assert state.scalings == 3
    small = ExplorerState(layers, cache_bytes=one - 1)
    small.indices("a")
    assert small.cached_keys == [(0, "channel", False)]  # over the budget alone, but the last one stays
    small.indices("b")
    assert small.cached_keys == [(1, "channel", False)]


def test_bad_activations_and_layers_get_clear_errors():
    for source in (torch.zeros(2, 3, 3), "conv1", 42):  # a tensor without a name is a common slip
        with pytest.raises(TypeError, match="takes an ActivationRecorder, a dict"):
            ExplorerState(source)
    state = ExplorerState({"a": layer(), "b": layer()})
    with pytest.raises(IndexError, match="Layer 2 is out of range: 0 to 1"):
        state.index(2)


def test_channel_limits_default_to_the_channels_own_range():
    state = ExplorerState({"x": layer()})
    assert state.channel_limits("x", 2) == pytest.approx((-2.0, 1.0))  # not ±2: not centred by default


def test_the_enlarged_channel_figure_defaults_and_labels():
    state = ExplorerState({"x": layer()})
    assert state.channel_figure is None  # nothing enlarged yet
    with matplotlib.rc_context({"savefig.format": "svg"}):  # a user's default format does not matter
        png = state.render_channel("x", 1)
    figure = state.channel_figure
    assert rgb(png).shape[:2] == (342, 414)  # 4.6 × 3.8 inches at 90 dpi
    assert zlib_level_flag(png) == 0  # the fastest level: a channel change is one redraw
    assert figure.image.get_cmap().name == "viridis" and figure.image.get_clim() == pytest.approx((0.0, 3.0))
    assert figure.colorbar.ax.get_ylim() == pytest.approx((0.0, 3.0))  # the colorbar follows the image
    assert figure.ax.get_title() == "x, channel 1"
    assert figure.ax.get_xlabel() == str(channel_stats(layer()[1])) == "min 0, max 3, mean 1.5, zeros 6.2 %"
    assert figure.colorbar.ax.get_ylabel() == "activation (this channel's range)"
    state.render_channel("x", 2, normalize="layer")
    assert state.channel_figure is figure  # one figure, reused
    assert figure.colorbar.ax.get_ylabel() == "activation (the layer's range)"
    assert figure.colorbar.ax.get_ylim() == pytest.approx((-2.0, 3.0))
    assert rgb(state.render_channel("x", 2, figsize=(2.0, 1.0), dpi=50)).shape[:2] == (50, 100)
    assert state.channel_figure is not figure  # a new size needs a new figure


def test_the_enlarged_channel_is_drawn_left_of_its_colorbar():
    state = ExplorerState({"x": torch.full((1, 1, 1), 0.5)})  # one value: at the low end of 0.5 … 1.5
    page = rgb(state.render_channel("x", 0))
    height, width = page.shape[:2]
    colour = matplotlib.colormaps["viridis"]
    # the map's square fills the image axes (x from 4 % to 72 % of the width) at their centre
    assert np.abs(page[height // 2, int(0.38 * width)] - np.asarray(colour(0.0)[:3]) * 255).max() <= 2
    # the colorbar (x from 74 % to 78 %, y from 10 % to 90 %) runs from the low end at the bottom to the top
    column = int(0.76 * width)
    for y_fraction, value in [(0.5, 0.5), (0.85, 0.06), (0.15, 0.94)]:
        expected = np.asarray(colour(value)[:3]) * 255
        assert np.abs(page[int(y_fraction * height), column] - expected).max() <= 12, y_fraction
    # and it ends there: right of it are only its tick labels and label, black on white
    right = page[height // 2, int(0.80 * width):]
    assert (np.abs(right - np.asarray(colour(0.5)[:3]) * 255).max(axis=-1) > 40).all()


def test_the_enlarged_channel_shows_each_value_as_a_sharp_square_of_its_colour():
    state = ExplorerState({"wide": torch.zeros(1, 1, 3), "quadrants": torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])})
    state.render_channel("wide", 0)  # a map of another shape first: the figure must not keep its limits
    page = rgb(state.render_channel("quadrants", 0))
    # the square map fills 273.6 pixels (80 % of 342) at the centre of the image axes (x from 4 % to 72 %)
    left, top, side = 0.04 * 414 + (0.68 * 414 - 0.8 * 342) / 2, 0.1 * 342, 0.8 * 342
    for (row, column), value in {(0, 0): 0.0, (0, 1): 1.0, (1, 0): 2.0, (1, 1): 3.0}.items():
        y, x = int(top + side * (0.35 + 0.3 * row)), int(left + side * (0.35 + 0.3 * column))  # near the centre
        expected = np.asarray(matplotlib.colormaps["viridis"](value / 3)[:3]) * 255
        assert np.abs(page[y, x] - expected).max() <= 2, (row, column)


def test_the_enlarged_channel_is_not_smoothed():
    # 112×112 pixels drawn on about 270: matplotlib's default ("auto") would smooth them; nearest keeps them
    checkerboard = (torch.arange(112)[:, None] + torch.arange(112)[None, :]) % 2
    page = rgb(render_channel(checkerboard[None].float(), 0))
    inside = page[60:280, 40:280].reshape(-1, 3)
    ends = np.asarray([matplotlib.colormaps["viridis"](end)[:3] for end in (0.0, 1.0)]) * 255
    off = np.abs(inside[:, None, :] - ends[None]).max(axis=-1).min(axis=-1)
    assert (off <= 2).mean() > 0.99  # every pixel one of the two end colours
