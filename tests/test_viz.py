"""Feature-map pictures: paging, both normalisations, constant channels, clear errors."""

import matplotlib
import numpy as np
import pytest
import torch

from helpers.viz import colorize, feature_grid, fingerprint, n_pages, padding_mask, show_feature_maps, to_uint8

matplotlib.use("Agg")


def ramp_channels(channels=3, size=4):
    """Channel c holds c + (0 … 1) across its pixels, so every channel has its own range."""
    base = torch.linspace(0, 1, size * size).reshape(size, size)
    return torch.stack([base + c for c in range(channels)])


def test_n_pages():
    assert [n_pages(c, 64) for c in (1, 64, 65, 512)] == [1, 1, 2, 8]
    with pytest.raises(ValueError, match="page_size"):
        n_pages(64, 0)


def test_channel_normalisation_gives_every_tile_its_full_range():
    scaled = to_uint8(ramp_channels(), "channel")
    for channel in scaled:
        assert channel.min() == 0 and channel.max() == 255


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
