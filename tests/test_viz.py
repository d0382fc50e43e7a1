"""Feature-map pictures: paging, both normalisations, constant channels, clear errors."""

import matplotlib
import numpy as np
import pytest
import torch

from helpers.viz import (
    colorize,
    feature_grid,
    fingerprint,
    n_pages,
    padding_mask,
    show_feature_maps,
    tile_grid,
    tile_pages,
    to_uint8,
)

matplotlib.use("Agg")


def ramp_channels(channels=3, size=4):
    """Channel c holds c + (0 … 1) across its pixels, so every channel has its own range."""
    base = torch.linspace(0, 1, size * size).reshape(size, size)
    return torch.stack([base + c for c in range(channels)])


def test_n_pages():
    assert [n_pages(c, 64) for c in (1, 64, 65, 512)] == [1, 1, 2, 8]
    assert n_pages(5, 1) == 5  # one channel a page
    with pytest.raises(ValueError, match="page_size"):
        n_pages(64, 0)


def test_channel_normalisation_gives_every_tile_its_full_range():
    scaled = to_uint8(ramp_channels(), "channel")
    for channel in scaled:
        assert channel.min() == 0 and channel.max() == 255
    assert torch.equal(to_uint8(ramp_channels()), scaled)  # per channel by default


def test_layer_normalisation_keeps_channels_comparable():
    scaled = to_uint8(ramp_channels(), "layer")
    assert scaled[0].min() == 0 and scaled[2].max() == 255
    assert scaled[0].max() < scaled[1].min() + 1 and scaled[1].max() < scaled[2].min() + 1


def test_constant_and_dead_channels_are_flat_tiles_not_nan():
    chw = torch.zeros(2, 4, 4)
    chw[1] = 3.0
    for mode in ("channel", "layer"):
        scaled = to_uint8(chw, mode)
        for channel in scaled:
            assert channel.unique().numel() == 1
    assert (to_uint8(torch.zeros(1, 3, 3), "channel", symmetric=True) == 128).all()


def test_symmetric_scale_puts_zero_in_the_middle():
    chw = torch.tensor([[[-2.0, 0.0, 1.0]]])
    assert to_uint8(chw, "channel", symmetric=True).flatten().tolist() == [0, 128, 191]


def test_feature_grid_layout_and_paging():
    chw = torch.randn(70, 5, 5)
    grid = feature_grid(chw, page=0, page_size=64, nrow=8)
    assert grid.dtype == np.uint8 and grid.shape == (8 * 7 + 2, 8 * 7 + 2)  # 5×5 tiles, padding 2
    last = feature_grid(chw, page=1, page_size=64, nrow=8)
    assert last.shape == (1 * 7 + 2, 6 * 7 + 2)  # 6 channels left on page 2
    mask = padding_mask(6, (5, 5), nrow=8)
    assert mask.shape == last.shape and mask[:2].all() and not mask[2:7, 2:7].any()
    with pytest.raises(IndexError, match="Page 2 is out of range.*pages 0 to 1"):
        feature_grid(chw, page=2)


def test_feature_grid_accepts_a_batch_of_one_and_explains_larger_batches():
    chw = torch.randn(4, 3, 3, requires_grad=True) * 1  # still requires grad: must not fail
    assert np.array_equal(feature_grid(chw), feature_grid(chw.unsqueeze(0)))
    with pytest.raises(ValueError, match="batch of 2 samples.*activation\\[0\\]"):
        feature_grid(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="C×H×W"):
        feature_grid(torch.randn(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        feature_grid(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="'channel' or 'layer'"):
        feature_grid(torch.randn(1, 2, 2), normalize="global")


def test_colorize_uses_the_colormap_and_paints_padding():
    grid = np.array([[0, 255]], dtype=np.uint8)
    rgb = colorize(grid, "gray", mask=np.array([[False, True]]), mask_color=(1, 2, 3))
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[0, 1].tolist() == [1, 2, 3]
    viridis = colorize(grid, "viridis")
    assert viridis[0, 0].tolist() == [68, 1, 84]  # viridis starts dark purple


def test_show_feature_maps_has_title_and_colorbar(tmp_path):
    fig = show_feature_maps(torch.randn(1, 64, 8, 8), name="conv1", page=0, page_size=16, normalize="layer")
    title = fig.axes[0].get_title()
    assert "conv1" in title and "64×8×8" in title and "page 1 of 4" in title and "per layer" in title
    assert len(fig.axes) == 2, "expected the image and its colorbar"
    fig.savefig(tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 1000


def test_fingerprint_rounds_to_three_significant_figures():
    values = np.array([[0.0, 1.0], [2.0, 3.0]])  # mean 1.5, std sqrt(1.25) = 1.118...
    assert fingerprint(values) == "2×2: min 0  max 3  mean 1.5  std 1.12"
    assert fingerprint(torch.full((3,), -1e-9)) == "3: min -1e-09  max -1e-09  mean -1e-09  std 0"


# -- answers known by construction: every pixel of a page, every scale, every colour range ------------

# Channel k of this layer is filled with k (0 … 15): per layer, tile k is 17·k, since 255 / 15 = 17.
CHANNEL_NUMBERS = torch.arange(16, dtype=torch.float32)[:, None, None].expand(16, 2, 3).clone()

# Two signed channels, scaled by hand (x ↦ (x − low) / (high − low) · 255, rounded):
SIGNED = torch.tensor([[[-3.0, 0.0, 1.0]], [[-1.0, 0.0, 4.0]]])
SIGNED_SCALED = {
    ("channel", False): [[0, 191, 255], [0, 51, 255]],   # ranges [−3, 1] and [−1, 4]
    ("layer", False): [[0, 109, 146], [73, 109, 255]],   # one range, [−3, 4]
    ("channel", True): [[0, 128, 170], [96, 128, 255]],  # [−3, 3] and [−4, 4]: 0 in the middle
    ("layer", True): [[32, 128, 159], [96, 128, 255]],   # one range, [−4, 4]
}


def drawn_by_hand(tiles: np.ndarray, nrow: int, padding: int = 2) -> np.ndarray:
    """A page laid out without make_grid: tile t at row t // nrow, column t % nrow, 0 in the padding."""
    count, height, width = tiles.shape
    columns = min(nrow, count)
    rows = -(-count // columns)
    page = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding), np.uint8)
    for t, tile in enumerate(tiles):
        top = padding + (t // nrow) * (height + padding)
        left = padding + (t % nrow) * (width + padding)
        page[top:top + height, left:left + width] = tile
    return page


@pytest.mark.parametrize(("normalize", "symmetric"), list(SIGNED_SCALED))
def test_each_scale_by_hand(normalize, symmetric):
    scaled = to_uint8(SIGNED, normalize, symmetric)
    assert scaled[:, 0].tolist() == SIGNED_SCALED[normalize, symmetric]
    grid = feature_grid(SIGNED, normalize=normalize, symmetric=symmetric, nrow=2)
    assert np.array_equal(grid, drawn_by_hand(scaled.numpy(), nrow=2))


@pytest.mark.parametrize(("page", "channels"), [(0, range(0, 6)), (1, range(6, 12)), (2, range(12, 16))])
def test_page_p_shows_its_channels_in_order_on_the_layer_scale(page, channels):
    grid = feature_grid(CHANNEL_NUMBERS, page=page, page_size=6, nrow=4, normalize="layer")
    tiles = np.stack([np.full((2, 3), 17 * k, np.uint8) for k in channels])
    assert np.array_equal(grid, drawn_by_hand(tiles, nrow=4)), f"page {page} should show channels {channels}"


def test_padding_mask_is_exactly_the_pixels_between_tiles():
    expected = drawn_by_hand(np.ones((5, 2, 3), np.uint8), nrow=3) == 0
    assert np.array_equal(padding_mask(5, (2, 3), nrow=3), expected)
    # 2 rows of 3 tiles: 2 + 2·(2 + 2) = 10 rows, 2 + 3·(3 + 2) = 17 columns; the 6th place stays padding.
    assert expected.shape == (10, 17) and expected[6:8, 12:15].all() and not expected[6:8, 7:10].any()


def test_per_channel_grid_gives_every_tile_its_own_range_and_a_dead_channel_a_flat_tile():
    ramp = torch.arange(16, dtype=torch.float32).reshape(4, 4)  # per channel: pixel i ↦ 17·i
    chw = torch.stack([ramp, 0.01 * ramp - 5, -3 * ramp, torch.zeros(4, 4), 1e4 * ramp + 2])
    up = (17 * ramp).to(torch.uint8).numpy()
    tiles = np.stack([up, up, 255 - up, np.zeros((4, 4), np.uint8), up])
    assert np.array_equal(feature_grid(chw, nrow=3), drawn_by_hand(tiles, nrow=3))
    symmetric = feature_grid(torch.zeros(2, 4, 4), nrow=2, symmetric=True)
    assert np.array_equal(symmetric, drawn_by_hand(np.full((2, 4, 4), 128, np.uint8), nrow=2))


def test_layer_scale_is_the_whole_layer_not_the_page():
    # The last page alone holds channels 12 … 15; scaled on its own it would span 0 … 255.
    last = feature_grid(CHANNEL_NUMBERS, page=2, page_size=6, nrow=4, normalize="layer")
    assert sorted(set(last[~padding_mask(4, (2, 3), nrow=4)].tolist())) == [204, 221, 238, 255]
    # Channel k holds 2k − 15 (−15 … 7): one range [−15, 15] for the layer maps it to 17·k. The
    # second page alone (−3 … 7) would get [−7, 7].
    signed = 2 * CHANNEL_NUMBERS[:12] - 15
    symmetric = feature_grid(signed, page=1, page_size=6, nrow=6, normalize="layer", symmetric=True)
    assert [int(symmetric[2, 2 + t * 5]) for t in range(6)] == [17 * k for k in range(6, 12)]


def image_of(fig):
    (image,) = fig.axes[0].get_images()
    return image


@pytest.mark.parametrize(
    ("normalize", "symmetric", "clim", "label"),
    [
        ("layer", False, (0.0, 15.0), "activation value (one scale for the layer)"),
        ("layer", True, (-15.0, 15.0), "activation value (one scale for the layer)"),
        ("channel", False, (0.0, 1.0), "each channel: its min (0) … its max (1)"),
        ("channel", True, (-1.0, 1.0), "each channel: −max|x| … 0 … +max|x|"),
    ],
)
def test_show_feature_maps_colour_range_and_colorbar_label(normalize, symmetric, clim, label):
    import matplotlib.pyplot as plt

    fig = show_feature_maps(CHANNEL_NUMBERS, page=1, page_size=6, nrow=4, normalize=normalize, symmetric=symmetric)
    try:
        image = image_of(fig)
        assert image.get_clim() == clim
        assert image.colorbar.ax.get_ylabel() == label
        assert "channels 6–11 (page 2 of 3)" in fig.axes[0].get_title()
        shown = image.get_array()
        assert np.array_equal(np.ma.getmaskarray(shown), padding_mask(6, (2, 3), nrow=4))
        grid = feature_grid(CHANNEL_NUMBERS, page=1, page_size=6, nrow=4, normalize=normalize, symmetric=symmetric)
        low, high = clim
        expected = low + grid / 255 * (high - low)
        np.testing.assert_allclose(shown.filled(np.nan), np.where(shown.mask, np.nan, expected), atol=1e-5)
        if normalize == "layer":  # one scale: the picture shows the activation values, to within half a grey level
            values = shown[2, 2::5][:4]
            assert values.tolist() == pytest.approx([6, 7, 8, 9], abs=(high - low) / 255 / 2 + 1e-4)
    finally:
        plt.close(fig)


def test_show_feature_maps_of_a_dead_layer_and_a_custom_label():
    import matplotlib.pyplot as plt

    fig = show_feature_maps(torch.zeros(3, 2, 2), normalize="layer", label="my units")
    try:
        image = image_of(fig)
        assert image.get_clim() == (0.0, 1.0) and image.colorbar.ax.get_ylabel() == "my units"
        assert float(image.get_array().max()) == 0.0
    finally:
        plt.close(fig)


def test_fingerprint_computes_in_double_precision():
    # float32 would sum 1e8 + 1 to 1e8 and report a mean of 0; the mean is 1/3
    assert fingerprint(torch.tensor([1e8, 1.0, -1e8])) == "3: min -1e+08  max 1e+08  mean 0.333  std 8.16e+07"


def test_padding_mask_lays_out_rows_of_eight_by_default():
    mask = padding_mask(9, (1, 1))  # 8 tiles in the first row, the 9th alone in the second
    assert np.array_equal(mask, drawn_by_hand(np.ones((9, 1, 1), np.uint8), nrow=8) == 0)
    assert mask.shape == (2 + 2 * 3, 2 + 8 * 3)


@pytest.mark.parametrize(
    ("channels", "kwargs", "size"),
    [
        # 4 tiles left on the last page, one row: 1.2 in a tile + 1.5 wide, 1.2 + 0.8 high
        (16, {"page": 2, "page_size": 6, "nrow": 8}, (1.2 * 4 + 1.5, 1.2 * 1 + 0.8)),
        (6, {"nrow": 4}, (1.2 * 4 + 1.5, 1.2 * 2 + 0.8)),  # two rows of at most 4
        (65, {}, (10.0, 10.0)),  # 8 × 8 tiles would be 11.1 × 10.4 in: capped at 10
        (6, {"figsize": (3.0, 2.0)}, (3.0, 2.0)),  # a size given is kept
    ],
    ids=["last-page", "two-rows", "capped", "given"],
)
def test_show_feature_maps_figure_size_follows_the_tiles(channels, kwargs, size):
    import matplotlib.pyplot as plt

    fig = show_feature_maps(torch.zeros(channels, 1, 1), **kwargs)
    try:
        assert tuple(fig.get_size_inches()) == pytest.approx(size)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("normalize", ["channel", "layer"])
def test_show_feature_maps_defaults_show_64_channels_in_rows_of_8_as_float32(normalize):
    import matplotlib.pyplot as plt

    fig = show_feature_maps(torch.arange(65.0).view(65, 1, 1), normalize=normalize)
    try:
        assert "65×1×1, channels 0–63 (page 1 of 2)" in fig.axes[0].get_title()
        shown = image_of(fig).get_array()
        assert shown.shape == (2 + 8 * 3, 2 + 8 * 3)  # 8 × 8 one-pixel tiles, 2 pixels of padding
        assert shown.dtype == np.float32  # half the memory of float64
    finally:
        plt.close(fig)


def test_feature_grid_defaults_pages_of_64_in_rows_of_8_and_a_lone_tile_unpadded():
    chw = torch.arange(65.0).view(65, 1, 1)
    assert np.array_equal(feature_grid(chw, normalize="layer"),
                          drawn_by_hand(np.round(np.arange(64) * 255 / 64).astype(np.uint8)[:, None, None], nrow=8))
    assert feature_grid(chw, page=1, normalize="layer").tolist() == [[255]]  # channel 64 alone, as make_grid
    assert feature_grid(torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])).tolist() == [[0, 85], [170, 255]]


def test_feature_grid_passes_on_its_padding():
    grid = feature_grid(torch.arange(3.0).view(3, 1, 1).expand(3, 2, 2), normalize="layer", padding=0)
    assert grid.tolist() == [[0, 0, 128, 128, 255, 255]] * 2  # three 2×2 tiles side by side, no gaps


def test_tile_grid_takes_numpy_tiles_in_rows_of_eight_by_default():
    tiles = np.arange(1, 19, dtype=np.uint8).reshape(9, 1, 2)
    assert np.array_equal(tile_grid(tiles), drawn_by_hand(tiles, nrow=8))
    assert tile_grid(tiles[:1]).tolist() == [[1, 2]]


def test_tile_pages_defaults_rows_of_eight_padding_two():
    tiles = np.arange(1, 19, dtype=np.uint8).reshape(9, 1, 2)
    assert np.array_equal(tile_pages(tiles), drawn_by_hand(tiles, nrow=8, padding=2))


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((0, 2, 2), {}, "N×H×W tiles with N ≥ 1"),
        ((2, 2), {}, "N×H×W tiles with N ≥ 1"),
        ((2, 2, 2), {"nrow": 0}, "nrow and factor must be ≥ 1"),
        ((2, 2, 2), {"factor": 0}, "nrow and factor must be ≥ 1"),
    ],
    ids=["no-tiles", "2d", "nrow-0", "factor-0"],
)
def test_tile_pages_explains_bad_input(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tile_pages(np.zeros(shape, np.uint8), **kwargs)
