"""Values known by construction where the suite was blind (issue 19; docs/mutation-testing.md).

Each test pins what a student sees with inputs that hide nothing: non-square images,
several colour channels, batch sizes that differ from the channel count, all-zero
channels, figure properties beyond the image array, the last branch of the page
encoder, cleanup when a forward pass raises, and the training helpers' seeds.
Tiny models only: the whole file runs in a few seconds.
"""

from __future__ import annotations

import copy
import functools
import io
import math
import re
import warnings
from collections import OrderedDict

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from helpers.attribution import cam_weights, grad_cam, grad_cam_for, normalize_map, overlay, top_k  # noqa: E402
from helpers.explorer import (LOSSLESS_PREMIUM, ExplorerState, encode_jpeg, encode_page,  # noqa: E402
                              encode_palette_png,
                              estimated_png_bytes, image_format)
from helpers.hooks import ActivationRecorder, FiringEvent, HookEntry, firing_trace, format_trace, hooks_on  # noqa: E402
from helpers.images import load_image, to_displayable  # noqa: E402
from helpers.sanity import cascading_randomization, randomize_, rank_rows, ranks, spearman, spearman_rows  # noqa: E402
from helpers.stats import (as_columns, depth_statistics, depth_statistics_from, plot_depth_statistics,  # noqa: E402
                           tensor_stats)
from helpers.toydata import (displayable, gabor_patches, initialize, patch_parameters, small_cnn,  # noqa: E402
                             train_and_test)
from helpers.training import (TrainingRecorder, accuracy, fit, plot_dead_fraction, plot_histograms,  # noqa: E402
                              plot_mean_std, summarize)
from helpers.models import imagenet_categories  # noqa: E402
from helpers.viz import (colorize, feature_grid, fingerprint, padding_mask, show_feature_maps, tile_grid,  # noqa: E402
                         tile_pages, to_uint8)
from tests.test_training import recorded  # noqa: E402  (a recorder of known outputs, one per step)


class Boom(nn.Module):
    """Raises in its forward pass: the hooks registered before it must still be removed."""

    def forward(self, x):
        raise RuntimeError("boom")


def failing_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), Boom())


# -- cleanup on error, in every helper that registers hooks ------------------------------

def test_every_hook_registering_helper_removes_its_hooks_when_forward_raises():
    model, x = failing_net(), torch.zeros(1, 1, 4, 5)
    with pytest.raises(RuntimeError, match="boom"):
        firing_trace(model, x)
    assert hooks_on(model) == []
    with pytest.raises(RuntimeError, match="boom"):
        depth_statistics(model, x)
    assert hooks_on(model) == []
    with pytest.raises(RuntimeError, match="boom"):
        grad_cam_for(model, x, layer="0")
    assert hooks_on(model) == []
    with pytest.raises(RuntimeError, match="boom"):
        with TrainingRecorder(model, names=["0", "1"]):
            fit(model, x, torch.zeros(1, dtype=torch.long), steps=1, batch_size=1)
    assert hooks_on(model) == [] and model.training
    with pytest.raises(RuntimeError, match="boom"):
        with ActivationRecorder(model, gradients=True):
            model(x.requires_grad_(True))
    assert hooks_on(model) == []


def test_firing_trace_on_a_non_square_input_records_shapes_and_repeated_calls():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), relu, nn.Conv2d(2, 2, 1), relu)
    events = firing_trace(model, torch.zeros(1, 1, 3, 7))
    assert [(e.order, e.name, e.call) for e in events] == [(0, "0", 1), (1, "1", 1), (2, "2", 1), (3, "1", 2)]
    assert events[0].input_shapes == ((1, 1, 3, 7),) and events[0].output_shape == (1, 2, 3, 7)
    assert [e.name for e in firing_trace(model, torch.zeros(1, 1, 3, 7), names=["2"])] == ["2"]
    assert hooks_on(model) == []


# -- non-square images, several channels ------------------------------------------------

def test_grad_cam_for_a_non_square_image_has_the_image_size():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 3)).eval()
    result = grad_cam_for(model, torch.randn(1, 3, 5, 9), layer="1", target=2)
    assert result.cam.shape == (5, 9) and result.raw.shape == (3, 5) and result.weights.shape == (4,)
    assert result.target == 2 and result.layer == "1" and result.logits.shape == (1, 3)
    assert float(result.cam.max()) == pytest.approx(1.0) and float(result.cam.min()) == 0.0


def test_grad_cam_for_defaults_to_layer4_and_the_top_class_and_takes_one_image_only():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([("conv", nn.Conv2d(3, 4, 3, padding=1)), ("layer4", nn.ReLU()),
                                       ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
                                       ("fc", nn.Linear(4, 5))])).eval()
    image = torch.randn(1, 3, 6, 6)
    result = grad_cam_for(model, image)
    logits = model(image).detach()
    assert result.layer == "layer4" and result.target == int(logits[0].argmax())
    assert result.score == pytest.approx(float(logits[0].max()), abs=1e-6)
    torch.testing.assert_close(result.logits, logits)
    for bad in (torch.randn(2, 3, 6, 6), torch.randn(3, 6, 6)):
        with pytest.raises(ValueError, match="takes one image"):
            grad_cam_for(model, bad)


def test_recorded_gradients_are_copies_that_a_later_in_place_change_cannot_reach():
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh())

    def zero_later(module, args, output):  # registered after the recorder's hook: its tensor hook runs later
        output.register_hook(lambda grad: grad.zero_())

    with ActivationRecorder(model, layer_type=nn.Linear, gradients=True) as rec:
        handle = model[0].register_forward_hook(zero_later)
        try:
            model(torch.ones(1, 2)).sum().backward()
        finally:
            handle.remove()
    assert rec.gradient("0").abs().sum() > 0


def test_an_empty_recorder_says_that_nothing_was_recorded_yet():
    with pytest.raises(KeyError, match=re.escape("Recorded: nothing yet (run the model inside the with-block).")):
        ActivationRecorder(nn.Sequential(nn.Conv2d(1, 1, 1)))["0"]


def test_firing_trace_by_layer_type_and_format_trace_of_two_inputs():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 1))
    assert [e.name for e in firing_trace(model, torch.zeros(1, 1, 4, 4), layer_type=nn.Conv2d)] == ["0", "2"]
    table = format_trace([FiringEvent(0, "add", 1, ((1, 2), (1, 3)), (1, 2))])
    assert table.splitlines() == ["order  module  call  input     output", "0      add     1     1×2, 1×3  1×2"]


def test_displayable_keeps_rows_and_columns_of_a_non_square_image():
    image = torch.arange(6.0).view(1, 1, 2, 3)  # row 0: 0 1 2, row 1: 3 4 5
    shown = displayable(image)
    assert shown.shape == (2, 3, 3)
    np.testing.assert_allclose(shown[..., 0], [[0, 0.2, 0.4], [0.6, 0.8, 1.0]])
    assert (shown[..., 0] == shown[..., 2]).all()
    assert (displayable(torch.full((4, 2), 7.0)) == 0).all()  # constant: black, not NaN
    with pytest.raises(ValueError, match="one grey image"):
        displayable(torch.zeros(2, 1, 3, 3))


def test_to_displayable_of_a_non_square_image_puts_height_first():
    pixels = torch.rand(3, 2, 5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    shown = to_displayable((pixels - mean) / std)
    assert shown.shape == (2, 5, 3)
    np.testing.assert_allclose(shown, pixels.permute(1, 2, 0).numpy(), atol=1e-6)


def test_feature_grid_of_non_square_tiles():
    chw = torch.zeros(3, 2, 4)
    chw[1, 0, 3] = 1.0
    grid = feature_grid(chw, nrow=2, normalize="layer")
    assert grid.shape == (2 * 4 + 2, 2 * 6 + 2)  # 2 rows of (2 + 2), 2 columns of (4 + 2)
    assert grid[2, 2 + 6 + 3] == 255 and grid.sum() == 255  # channel 1, row 0, column 3


# -- batch size ≠ channel count, all-zero channels --------------------------------------

def test_dead_fraction_counts_channels_not_samples():
    x = torch.zeros(3, 4, 2, 2)  # 3 samples, 4 channels; channels 0 and 2 fire somewhere
    x[1, 0, 0, 1] = 1.0
    x[2, 2, 1, 1] = 2.0
    row = summarize(x, low=0.0, high=4.0, bins=2, near_zero=0.01)
    assert row[3] == pytest.approx(2 / 4)
    assert row[2] == pytest.approx(46 / 48)
    assert row[4:].tolist() == [47.0, 1.0]


def test_all_zero_channels_are_zero_everywhere_they_are_summarised():
    zeros = torch.zeros(2, 3, 3)
    assert (to_uint8(zeros, "channel") == 0).all() and (to_uint8(zeros, "layer") == 0).all()
    stats = tensor_stats(torch.zeros(2, 3, 4, 5))
    assert (stats.channels, stats.height, stats.width) == (3, 4, 5)
    assert (stats.mean, stats.std, stats.zero_fraction) == (0.0, 0.0, 1.0)
    features = tensor_stats(torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]]), "fc")
    assert (features.name, features.channels, features.height, features.width) == ("fc", 3, 1, 1)
    assert features.zero_fraction == pytest.approx(0.5) and features.mean == pytest.approx(1.0)
    row = summarize(torch.zeros(2, 3), low=-1.0, high=1.0, bins=4, near_zero=0.0)
    assert row[:4].tolist() == [0.0, 0.0, 1.0, 1.0] and row[4:].tolist() == [0.0, 0.0, 6.0, 0.0]


# -- figure properties beyond the image array -------------------------------------------

@pytest.mark.parametrize("cmap, symmetric, bad", [("viridis", False, (1.0, 1.0, 1.0, 1.0)),
                                                  ("RdBu_r", True, (0.5, 0.5, 0.5, 1.0))])
def test_padding_is_the_colormaps_bad_colour_white_or_grey_where_white_means_zero(cmap, symmetric, bad):
    fig = show_feature_maps(torch.randn(3, 2, 4), cmap=cmap, symmetric=symmetric)
    try:
        (image,) = fig.axes[0].get_images()
        assert image.cmap.get_bad() == pytest.approx(bad)
        assert image.cmap.name.startswith(cmap)
        assert image.get_array().mask[0, 0] and not image.get_array().mask[2, 2]
    finally:
        plt.close(fig)


def test_histogram_panels_share_one_colour_scale_up_to_the_largest_count():
    small, big = recorded([torch.zeros(1, 2)]), recorded([torch.zeros(1, 9), torch.full((1, 9), 3.5)])
    fig = plot_histograms({"small": small, "big": big})
    try:
        images = [ax.images[0] for ax in fig.axes if ax.images]
        assert len(images) == 2
        assert all(image.norm.vmin == 0.0 and image.norm.vmax == pytest.approx(np.log1p(9)) for image in images)
        assert images[0].get_extent() == pytest.approx((0, 1, 0.0, 4.0))
        assert images[1].get_extent() == pytest.approx((0, 2, 0.0, 4.0))
        assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["small\nactivation value", "big\nactivation value"]
        assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["", "step"]
    finally:
        plt.close(fig)


def test_each_depth_panel_plots_its_own_column():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), relu, nn.Conv2d(2, 4, 3, stride=2, padding=1), relu)
    torch.manual_seed(0)
    rows = depth_statistics(model, torch.randn(2, 1, 8, 6))
    assert [(r.name, r.relu, r.channels, r.height, r.width) for r in rows] == [
        ("0", "1", 2, 8, 6), ("2", "1_1", 4, 4, 3)]
    fig = plot_depth_statistics({"a": rows})
    try:
        ax_mean, ax_std, ax_zero, ax_relu, ax_size, ax_chan = fig.axes
        for ax, key in ((ax_mean, "mean"), (ax_std, "std"), (ax_zero, "zeros_after_relu"), (ax_relu, "relu_mean")):
            (line,) = [line for line in ax.get_lines() if line.get_label() == "a"]
            np.testing.assert_allclose(line.get_ydata(), [getattr(r, key) for r in rows], err_msg=key)
        np.testing.assert_allclose(ax_size.get_lines()[0].get_ydata(), [8, 4])
        np.testing.assert_allclose(ax_chan.get_lines()[0].get_ydata(), [2, 4])
        assert [t.get_text() for t in ax_size.get_yticklabels()] == ["4×4", "8×8"]
        assert ax_std.get_yscale() == "log" and ax_zero.get_ylim() == (0, 1)
        for ax in fig.axes:  # one tick per stage at its centre, a margin either side
            assert list(ax.get_xticks()) == [0.0, 1.0] and ax.get_xlim() == pytest.approx((-0.8, 1.8))
        assert fig.get_suptitle() == "Activation statistics across depth (one forward pass)"
    finally:
        plt.close(fig)


def test_depth_plot_marks_each_stage_and_scales_its_axes():
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 2, 3, padding=1)), ("relu", nn.ReLU()),
        ("layer1", nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.ReLU())),
        ("layer2", nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU()))]))
    torch.manual_seed(0)
    rows = depth_statistics(model, torch.randn(1, 1, 8, 8))
    assert [r.name for r in rows] == ["conv1", "layer1.0", "layer1.2", "layer2.0"]
    fig = plot_depth_statistics(rows)  # one run, no label
    try:
        ax_mean, ax_std, ax_zero, ax_relu, ax_size, ax_chan = fig.axes
        for ax in fig.axes:  # a dotted line between stages: before layer1 (index 1) and layer2 (index 3)
            stage_lines = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
            assert stage_lines == [0.5, 2.5]
        for ax in fig.axes[3:]:  # the bottom row names the stages (the top row shares its x axis)
            assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "layer1", "layer2"]
        assert ax_mean.get_lines()[0].get_label().startswith("_")  # an unlabelled run adds no legend entry
        assert ax_relu.get_yscale() == "log" and ax_relu.get_title() == "mean after the ReLU"
        for ax in (ax_size, ax_chan):
            assert ax.get_yscale() == "log" and ax.yaxis.get_transform().base == 2
        assert [t.get_text() for t in ax_chan.get_yticklabels()] == ["2", "4"]
        assert [ax.get_xlabel() for ax in fig.axes] == [""] * 3 + ["4 conv layers in firing order"] * 3
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="^conv1 is empty"):
        depth_statistics(model, torch.zeros(0, 1, 8, 8))


def test_each_argument_of_the_enlarged_channel_reaches_the_picture_through_the_cache():
    """Change one argument at a time on the same explorer: a cache key missing one would return a stale picture."""
    values = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6) - 30.0
    values[1] *= 3.0
    state = ExplorerState({"a": values, "b": -values})
    base = dict(layer="a", channel=0, normalize="channel", cmap="viridis", symmetric=False)
    first = state.render_channel(**base)
    for change in ({"cmap": "magma"}, {"cmap": "gray"}, {"channel": 1}, {"layer": "b"}, {"normalize": "layer"},
                   {"symmetric": True}, {"figsize": (5.0, 4.0)}):
        assert state.render_channel(**{**base, **change}) != first, change
    assert state.render_channel(**base) == first  # and the cache still returns the first picture for the first key


# -- encode_page("auto"): the final PNG-or-JPEG choice ---------------------------------

def noisy_page(seed: int, height: int = 200, width: int = 240) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return generator.integers(1, 256, size=(height, width), dtype=np.uint8)


def test_auto_encoding_sends_the_jpeg_when_it_is_much_smaller():
    # A smooth ramp with a little noise, as in conv1 pages: unfiltered palette rows deflate badly, the JPEG well.
    ramp = np.add.outer(np.linspace(0, 100, 200), np.linspace(0, 120, 240))
    indices = np.clip(ramp + np.random.default_rng(0).normal(0, 2, ramp.shape) + 20, 1, 255).astype(np.uint8)
    max_bytes = 2 * estimated_png_bytes(indices)  # the estimate is half the budget: "auto" compares both
    chosen = encode_page(indices, "viridis", "auto", max_bytes=max_bytes)
    png, jpeg = encode_palette_png(indices, "viridis"), encode_jpeg(indices, "viridis", max_bytes)
    assert len(jpeg) * LOSSLESS_PREMIUM < len(png)  # noise: the JPEG wins by far
    assert chosen == jpeg and image_format(chosen) == "jpeg"


def test_auto_encoding_keeps_the_png_unless_the_jpeg_wins_by_the_premium():
    # Smooth bands: the PNG is small; a budget 3.5 times its estimate skips the early return.
    indices = np.repeat(np.linspace(1, 255, 240).astype(np.uint8)[None], 200, axis=0)
    estimate = estimated_png_bytes(indices)
    max_bytes = int(3.5 * estimate)
    chosen = encode_page(indices, "viridis", "auto", max_bytes=max_bytes)
    png, jpeg = encode_palette_png(indices, "viridis"), encode_jpeg(indices, "viridis", max_bytes)
    expected = png if len(png) <= min(len(jpeg) * LOSSLESS_PREMIUM, max_bytes) else jpeg
    assert chosen == expected
    assert image_format(chosen) == "png"
    assert encode_page(indices, "viridis", "auto", max_bytes=4 * estimate) == png  # early return: PNG
    with pytest.raises(ValueError, match="encoding must be one of"):
        encode_page(indices, "viridis", "webp")


def test_estimated_png_bytes_is_near_the_real_size():
    for indices in (noisy_page(1, 300, 200), np.repeat(np.arange(1, 201, dtype=np.uint8)[None], 300, axis=0)):
        real = len(encode_palette_png(indices, "viridis"))
        assert 0.7 * real <= estimated_png_bytes(indices) <= 1.3 * real


def test_the_jpeg_steps_down_in_quality_until_it_fits():
    indices = noisy_page(2, 300, 300)
    best = encode_jpeg(indices, "viridis", max_bytes=10**9)
    small = encode_jpeg(indices, "viridis", max_bytes=len(best) - 1)
    assert len(small) < len(best) and image_format(small) == "jpeg"
    assert encode_jpeg(indices, "viridis", max_bytes=10**9, band_rows=1000) == best  # no band: same first try


# -- resampling quality ---------------------------------------------------------------

def test_a_large_file_is_shrunk_with_an_averaging_filter_not_nearest_neighbour(tmp_path):
    # A 1-pixel checkerboard over 1 MB (uncompressed BMP): shrunk 11-fold, LANCZOS gives mid grey
    # everywhere; NEAREST would give black and white pixels.
    side = 1100
    board = ((np.indices((side, side)).sum(axis=0) % 2) * 255).astype(np.uint8)
    path = tmp_path / "board.bmp"
    Image.fromarray(board).save(path)
    assert path.stat().st_size > 1_000_000
    image = load_image(path, max_side=100)
    assert image.size == (100, 100)
    pixels = np.asarray(image, dtype=float)[5:-5, 5:-5]
    assert abs(pixels.mean() - 127.5) < 8 and pixels.std() < 20


# -- training helpers pinned directly --------------------------------------------------

def tiny_data(n: int = 12):
    generator = torch.Generator().manual_seed(5)
    return torch.randn(n, 3, generator=generator), torch.randint(0, 2, (n,), generator=generator)


def test_fit_is_sgd_with_momentum_on_batches_drawn_from_its_seed():
    images, labels = tiny_data()
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    by_hand = copy.deepcopy(model)
    losses = fit(model, images, labels, steps=4, lr=0.1, batch_size=5, seed=3)
    generator = torch.Generator().manual_seed(3)
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=0.1, momentum=0.9)
    expected = []
    for _ in range(4):
        batch = torch.randint(0, 12, (5,), generator=generator)
        loss = F.cross_entropy(by_hand(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        expected.append(float(loss.detach()))
    assert losses == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(model.weight, by_hand.weight)
    again = copy.deepcopy(by_hand)
    other = copy.deepcopy(by_hand)
    assert fit(again, images, labels, steps=3, seed=1) != fit(other, images, labels, steps=3, seed=2)
    with pytest.raises(ValueError, match="12 images but 11 labels"):
        fit(model, images, labels[:11], steps=1)


def test_fit_leaves_eval_mode_and_grad_mode_as_found():
    images, labels = tiny_data()
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5)).eval()
    with torch.no_grad():
        losses = fit(model, images, labels, steps=2, batch_size=4)
        assert not torch.is_grad_enabled()
    assert len(losses) == 2 and not model.training


def test_randomize_redraws_convs_like_initialize_and_resets_batchnorm():
    model = small_cnn(batchnorm=True)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.fill_(3.0)
                module.bias.fill_(-2.0)
                module.running_mean.fill_(5.0)
                module.running_var.fill_(7.0)
    reference = initialize(copy.deepcopy(model), "kaiming", seed=4)
    assert randomize_(model, seed=4) is model
    for (name, got), (_, expected) in zip(model.named_modules(), reference.named_modules()):
        if isinstance(got, (nn.Conv2d, nn.Linear)):
            torch.testing.assert_close(got.weight, expected.weight, msg=name)
        if isinstance(got, nn.BatchNorm2d):
            assert (got.weight == 1).all() and (got.bias == 0).all(), name
            assert (got.running_mean == 0).all() and (got.running_var == 1).all(), name


def test_initialize_scales_by_fan_in_or_uses_the_given_std():
    model = small_cnn()
    initialize(model, "kaiming", seed=0)
    conv = model.block1[0]  # 1 input channel, 5×5 kernel: fan-in 25, bias zeroed
    expected = torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)) * np.sqrt(2 / 25)
    torch.testing.assert_close(conv.weight, expected)
    assert (conv.bias == 0).all()
    initialize(model, "normal", std=0.5, seed=0)
    torch.testing.assert_close(conv.weight, expected / np.sqrt(2 / 25) * 0.5)
    with pytest.raises(ValueError, match="scheme"):
        initialize(model, "xavier")


# -- the sanity check's helpers ------------------------------------------------------

def test_one_of_each_class_and_a_layer_of_one_output_are_valid():
    assert len(patch_parameters(4, 0).radius) == 4  # the smallest balanced set: one image per class
    single = initialize(nn.Conv2d(3, 1, 5), "kaiming", seed=0)  # fan-in 3·5·5 = 75, from the only filter
    assert float(single.weight.detach().std()) == pytest.approx(math.sqrt(2 / 75), rel=0.25)


def test_ranks_of_a_tensor_that_requires_grad_and_spearman_of_two_values():
    values = torch.tensor([3.0, 1.0, 2.0, 1.0], requires_grad=True)
    np.testing.assert_array_equal(ranks(values), [4.0, 1.5, 3.0, 1.5])
    assert spearman([1, 2], [3, 4]) == 1.0 and spearman([1, 2], [4, 3]) == -1.0  # tiny spread, still defined
    with pytest.raises(ValueError, match="same size"):
        spearman([1, 2, 3], [1, 2])


def test_default_seeds_of_randomize_and_cascading_randomization_are_zero():
    model = initialize(small_cnn(batchnorm=True), "normal", std=0.5, seed=9)
    expected = initialize(copy.deepcopy(model.fc), "kaiming", seed=0).weight
    torch.testing.assert_close(randomize_(copy.deepcopy(model).fc).weight, expected)
    steps = dict((name, copy.deepcopy(m)) for name, m in cascading_randomization(model, ["fc", "block5"]))
    torch.testing.assert_close(steps["fc"].fc.weight, expected)
    block5 = initialize(copy.deepcopy(model.block5), "kaiming", seed=1)[0].weight
    torch.testing.assert_close(steps["block5"].block5[0].weight, block5)  # step k uses seed + k
    assert torch.equal(model.fc.weight, initialize(small_cnn(batchnorm=True), "normal", std=0.5, seed=9).fc.weight)


def test_spearman_of_a_constant_map_is_nan_without_dividing_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 / 0 in numpy would warn
        assert np.isnan(spearman(np.ones(5), np.arange(5)))


def test_rank_rows_takes_tensors_that_require_grad_and_any_number_of_values():
    values = torch.tensor([[3.0, 1.0, 2.0, 1.0]], requires_grad=True)
    np.testing.assert_array_equal(rank_rows(values), [[4.0, 1.5, 3.0, 1.5]])
    np.testing.assert_array_equal(rank_rows([[5.0]]), [[1.0]])            # one map of one value
    np.testing.assert_array_equal(rank_rows([3.0, 1.0, 2.0]), [[1.0], [1.0], [1.0]])  # three maps of one value each
    np.testing.assert_array_equal(rank_rows(torch.arange(8.0).view(2, 2, 2).flip(-1)), [[2, 1, 4, 3], [2, 1, 4, 3]])
    for bad in (5.0, np.zeros((0, 4)), []):
        with pytest.raises(ValueError, match="expected N maps"):
            rank_rows(bad)


def test_spearman_rows_of_two_values_and_of_constant_maps():
    np.testing.assert_array_equal(spearman_rows([[1, 2], [1, 2]], [[3, 4], [4, 3]]), [1.0, -1.0])  # spread 0.5 < 1
    with np.errstate(all="raise"):  # a constant map gives NaN without computing 0 / 0
        got = spearman_rows([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    assert np.isnan(got[0]) and got[1] == 1.0


# -- overlay, top_k -----------------------------------------------------------------

def test_overlay_clips_the_map_and_the_blend_and_returns_float32():
    cmap = matplotlib.colormaps["viridis"].with_extremes(under="red", over="blue")
    cam = torch.tensor([[-0.5, 1.5]])
    photo = np.array([[[1.5, -0.5, 0.5], [0.25, 0.25, 0.25]]])  # float64, partly outside [0, 1]
    colors = matplotlib.colormaps["viridis"]([0.0, 1.0])[:, :3]
    blended = overlay(photo, cam, cmap=cmap, alpha=1.0)
    assert blended.dtype == np.float32 and blended.shape == (1, 2, 3)
    np.testing.assert_allclose(blended[0], colors, atol=1e-6)  # the colormap's ends, not under/over
    np.testing.assert_allclose(overlay(photo, cam, alpha=0.0)[0], [[1.0, 0.0, 0.5], [0.25, 0.25, 0.25]])
    for alpha in (-0.01, 1.01):
        with pytest.raises(ValueError, match="alpha"):
            overlay(photo, cam, alpha=alpha)
    with pytest.raises(ValueError, match="H×W×3"):
        overlay(np.zeros((1, 2, 4)), cam)


def test_top_k_takes_one_image_and_any_k_from_1_to_all_classes():
    logits = torch.zeros(1000)
    logits[3] = 5.0
    assert [name for name, _ in top_k(logits, k=1)] == [imagenet_categories()[3]]
    everything = top_k(logits, k=1000)
    assert len(everything) == 1000 and sum(p for _, p in everything) == pytest.approx(1.0)
    for k in (0, 1001):
        with pytest.raises(ValueError, match="k must be"):
            top_k(logits, k=k)
    with pytest.raises(ValueError, match="one image"):
        top_k(torch.zeros(2, 1000))


def test_displayable_scales_by_min_and_max_of_any_sign_and_span():
    image = torch.tensor([[-1.0, -0.5, 0.5], [0.0, 0.25, -0.75]])  # min -1, span 1.5
    np.testing.assert_allclose(displayable(image)[..., 1], (image.numpy() + 1) / 1.5, atol=1e-6)
    narrow = torch.tensor([[0.1, 0.6], [0.35, 0.1]])  # span 0.5
    np.testing.assert_allclose(displayable(narrow)[..., 0], [[0.0, 1.0], [0.5, 0.0]], atol=1e-6)


def test_colorize_uses_viridis_by_default():
    grid = np.array([[0, 128, 255]], dtype=np.uint8)
    assert np.array_equal(colorize(grid), colorize(grid, "viridis"))
    assert tuple(colorize(grid)[0, 0]) == (68, 1, 84)


def test_fingerprint_of_negative_zero_one_value_float32_and_a_tensor_that_requires_grad():
    assert fingerprint(np.array([-0.0, 0.0])) == "2: min 0  max 0  mean 0  std 0"
    assert fingerprint(np.array([3.0])) == "1: min 3  max 3  mean 3  std 0"
    # float32 sums would lose the ones next to 2**24: the mean must be computed in float64
    assert fingerprint(np.array([1.0, 2**24, 1.0], dtype=np.float32), digits=7).split("mean ")[1].startswith("5592406 ")
    assert fingerprint(torch.ones(2, 3, requires_grad=True)) == "2×3: min 1  max 1  mean 1  std 0"


def test_grad_cam_upsamples_bilinearly_with_pixel_centres_and_normalises_each_map():
    activation = torch.tensor([[[0.0, 4.0], [0.0, 4.0]]])  # one channel; gradient 1: weight 1, map = activation
    up = grad_cam(activation, torch.ones(1, 2, 2), size=(2, 4), normalize=False)
    # align_corners=False: output pixel centres 0.25 and 0.75 of the way between the two columns
    torch.testing.assert_close(up, torch.tensor([[0.0, 1.0, 3.0, 4.0], [0.0, 1.0, 3.0, 4.0]]))
    maps = torch.tensor([[[1.0, 2.0, 3.0], [5.0, 5.0, 1.0]], [[-2.0, 0.0, 2.0], [2.0, 2.0, 2.0]]])
    torch.testing.assert_close(normalize_map(maps), torch.tensor(
        [[[0.0, 0.25, 0.5], [1.0, 1.0, 0.0]], [[0.0, 0.5, 1.0], [1.0, 1.0, 1.0]]]))


def test_grad_cam_errors_name_the_tensor_with_the_wrong_shape():
    with pytest.raises(ValueError, match="^gradient must be"):
        cam_weights(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="^activation must be"):
        grad_cam(torch.zeros(2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="^gradient must be"):
        grad_cam(torch.zeros(1, 2, 2), torch.zeros(2, 2))


# -- the toy dataset, drawn by hand ---------------------------------------------------

def gabor_by_hand(n: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The module docstring's recipe, one image at a time with numpy: the same draws from one generator."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % 4)[torch.randperm(n, generator=g)]

    def uniform(low, high):
        return (low + (high - low) * torch.rand(n, generator=g)).double().numpy()

    angle = labels.double().numpy() * np.pi / 4 + uniform(-1, 1) * np.radians(10)  # ±10° of jitter
    wavelength, phase = uniform(4.0, 8.0), uniform(0, 2 * np.pi)
    centre_x, centre_y, radius, contrast = uniform(8, 24), uniform(8, 24), uniform(3.5, 6.0), uniform(0.6, 1.2)
    rows, cols = np.mgrid[0:32, 0:32]
    images = np.empty((n, 32, 32))
    for i in range(n):
        dx, dy = cols - centre_x[i], rows - centre_y[i]
        across = dx * np.sin(angle[i]) + dy * np.cos(angle[i])
        window = np.exp(-(dx**2 + dy**2) / (2 * radius[i] ** 2))
        images[i] = contrast[i] * window * np.cos(2 * np.pi * across / wavelength[i] + phase[i])
    images += noise * torch.randn(n, 32, 32, generator=g).double().numpy()
    return torch.from_numpy(images).float().unsqueeze(1), labels


@pytest.mark.parametrize("noise", [0.0, 0.4])
def test_gabor_patches_follow_the_recipe_draw_for_draw(noise):
    got = gabor_patches(8, seed=3, noise=noise)
    images, labels = gabor_by_hand(8, 3, noise)
    assert torch.equal(got.labels, labels) and got.images.shape == (8, 1, 32, 32)
    torch.testing.assert_close(got.images, images, atol=1e-5, rtol=0)
    for n in (0, 6):
        with pytest.raises(ValueError, match="multiple of 4"):
            gabor_patches(n, seed=0)
    with pytest.raises(ValueError, match="cannot be negative"):
        gabor_patches(4, seed=0, noise=-0.1)


def test_train_and_test_draw_from_seed_and_seed_plus_one():
    train, test = train_and_test(8, 4, seed=5)
    assert torch.equal(train.images, gabor_patches(8, 5).images) and torch.equal(test.images, gabor_patches(4, 6).images)
    default_train, default_test = train_and_test(4, 4)
    assert torch.equal(default_train.images, gabor_patches(4, 0).images)
    assert torch.equal(default_test.images, gabor_patches(4, 1).images)


def test_small_cnn_layout_kernels_strides_and_sizes():
    model = small_cnn(batchnorm=True, widths=(2, 3, 4, 5, 6), n_classes=7)
    assert [name for name, _ in model.named_children()] == [
        "block1", "block2", "block3", "block4", "block5", "pool", "flatten", "fc"]
    convs = [getattr(model, f"block{i}")[0] for i in range(1, 6)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0], c.bias is None)
            for c in convs] == [(1, 2, 5, 2, 2, True), (2, 3, 3, 1, 1, True), (3, 4, 3, 2, 1, True),
                                (4, 5, 3, 1, 1, True), (5, 6, 3, 1, 1, True)]
    assert all(isinstance(getattr(model, f"block{i}")[1], nn.BatchNorm2d) for i in range(1, 6))
    sizes = [tuple(o.shape) for o in (model[:k](torch.zeros(1, 1, 32, 32)) for k in range(1, 6))]
    assert sizes == [(1, 2, 16, 16), (1, 3, 16, 16), (1, 4, 8, 8), (1, 5, 8, 8), (1, 6, 8, 8)]
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 7)
    plain = small_cnn()
    assert len(plain.block1) == 2 and plain.block1[0].bias is not None and plain.fc.out_features == 4


def test_depth_statistics_of_linear_layers_and_a_relu_whose_name_has_underscores():
    act = nn.ReLU()
    model = nn.Sequential(OrderedDict([("fc_in", nn.Linear(3, 4)), ("my_act", act), ("fc_out", nn.Linear(4, 2)),
                                       ("again", act)]))
    rows = depth_statistics(model, torch.ones(5, 3), layer_type=nn.Linear)
    assert [(r.name, r.relu, r.channels) for r in rows] == [("fc_in", "my_act", 4), ("fc_out", "my_act_1", 2)]
    assert depth_statistics(model, torch.ones(5, 3)) == []  # no Conv2d: no rows


def test_training_plots_titles_labels_limits_and_sizes():
    low, high = recorded([torch.full((1, 2), 1.0), torch.full((1, 2), 3.0)]), recorded(
        [torch.full((1, 2), 0.5), torch.tensor([[0.0, 20.0]])])
    fig = plot_mean_std({"a": low, "b": high}, log=False)
    try:
        axes = fig.axes[:4]  # row-major: a mean, b mean, a std, b std
        assert [ax.get_title() for ax in axes] == ["a: mean", "b: mean", "a: std", "b: std"]
        assert [axes[0].get_ylabel(), axes[2].get_ylabel()] == ["activation mean", "activation std"]
        assert [ax.get_xlabel() for ax in axes] == ["", "", "training step", "training step"]
        for row in (axes[:2], axes[2:]):  # one y range per row, holding both runs
            assert row[0].get_ylim() == row[1].get_ylim()
        assert axes[0].get_ylim()[0] <= 0.5 and axes[0].get_ylim()[1] >= 10.0
        assert axes[2].get_ylim()[0] <= 0.0 and axes[2].get_ylim()[1] >= 10.0
    finally:
        plt.close(fig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a std of 0 cannot be log-scaled; the scale is what we check
        fig = plot_mean_std(low)
    assert fig.axes[0].get_title() == "mean" and fig.axes[1].get_title() == "std"
    assert fig.axes[0].get_yscale() == "log"
    plt.close(fig)
    fig = plot_dead_fraction({"a": low, "b": high}, stat="dead")
    try:
        assert [ax.get_title() for ax in fig.axes[:2]] == ["a: dead channels", "b: dead channels"]
        assert fig.axes[0].get_ylim() == pytest.approx((-0.02, 1.02)) and fig.axes[0].get_ylabel() == "fraction"
        assert tuple(fig.get_size_inches()) == pytest.approx((3.4 * 2 + 0.6, 2.8))
        np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.0, 0.5])
    finally:
        plt.close(fig)
    fig = plot_dead_fraction(low)
    assert fig.axes[0].get_title() == "values near zero"
    plt.close(fig)
    with pytest.raises(ValueError, match="stat must be"):
        plot_dead_fraction(low, stat="mean")
    fig = plot_histograms({"a": low, "b": high})
    try:
        assert [ax.get_title() for ax in fig.axes[:2]] == ["source", ""]  # layer names on the top row only
    finally:
        plt.close(fig)


def layers_of_ones(n_layers: int, bins: int = 4) -> TrainingRecorder:
    """A recorder of ``n_layers`` layers that saw the values 1, 2, 3 at each of two steps."""
    model = nn.Sequential(*[nn.Identity() for _ in range(n_layers)])
    with TrainingRecorder(model, names=[str(i) for i in range(n_layers)], bins=bins, value_range=(0.0, 4.0)) as rec:
        for _ in range(2):
            model(torch.tensor([[1.0, 2.0, 3.0]]))
    return rec


def test_training_plots_sizes_panels_layer_colours_and_image_settings():
    viridis = matplotlib.colormaps["viridis"]
    for n_layers, positions in ((2, [0.0, 0.85]), (3, [0.0, 0.425, 0.85])):  # shallow dark, deep light
        with matplotlib.rc_context({"image.cmap": "gray"}):  # the layer colours are viridis whatever the default
            fig = plot_mean_std({"a": layers_of_ones(n_layers), "b": layers_of_ones(n_layers)}, log=False)
        try:
            assert len(fig.axes) == 4 and tuple(fig.get_size_inches()) == pytest.approx((3.4 * 2 + 0.6, 5.2))
            colours = [matplotlib.colors.to_rgba(line.get_color()) for line in fig.axes[0].lines]
            np.testing.assert_allclose(colours, [viridis(x) for x in positions])
        finally:
            plt.close(fig)
    fig = plot_dead_fraction({"a": layers_of_ones(2), "b": layers_of_ones(2)})
    try:
        assert len(fig.axes) == 2 and [ax.get_xlabel() for ax in fig.axes] == ["training step"] * 2
    finally:
        plt.close(fig)
    with matplotlib.rc_context({"image.cmap": "gray", "image.interpolation": "bilinear", "image.aspect": "equal"}):
        fig = plot_histograms({"a": layers_of_ones(3, bins=1), "b": layers_of_ones(3, bins=1)})
    try:
        assert tuple(fig.get_size_inches()) == pytest.approx((2.0 * 3 + 1.0, 1.9 * 2 + 0.6))
        image = fig.axes[0].images[0]
        assert image.get_cmap().name == "viridis" and image.get_interpolation() == "nearest"
        assert fig.axes[0].get_aspect() == "auto"
        assert image.norm.vmin == 0.0 and image.norm.vmax == pytest.approx(np.log1p(3))  # every count is 3 here
    finally:
        plt.close(fig)


def test_accuracy_is_the_share_of_top1_hits_and_an_empty_recorder_has_no_histogram_columns():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert accuracy(nn.Identity(), logits, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)
    rec = TrainingRecorder(nn.Sequential(nn.Identity()), names=["0"], bins=5)
    assert rec.histogram("0").shape == (5, 0)


def test_training_recorder_keeps_no_gradient_norms_unless_asked_and_accepts_one_bin():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    with TrainingRecorder(model, names=["1"], bins=1, value_range=(0.0, 1.0)) as rec:
        model(torch.ones(4, 3)).sum().backward()
    assert rec.histogram("1").shape == (1, 1) and rec.histogram("1")[0, 0] == 8
    assert rec.nbytes == (4 + 1) * 8  # one step, one layer, no gradient norm
    with pytest.raises(ValueError, match="bins"):
        TrainingRecorder(model, names=["1"], bins=0)


def test_fit_uses_batches_of_64_by_default():
    images, labels = tiny_data(100)
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    by_hand = copy.deepcopy(model)
    fit(model, images, labels, steps=1, lr=0.1)
    batch = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(0))
    torch.optim.SGD(by_hand.parameters(), lr=0.1, momentum=0.9).zero_grad()
    F.cross_entropy(by_hand(images[batch]), labels[batch]).backward()
    with torch.no_grad():
        by_hand.weight -= 0.1 * by_hand.weight.grad
    torch.testing.assert_close(model.weight, by_hand.weight)
    default_lr, explicit_lr = copy.deepcopy(by_hand), copy.deepcopy(by_hand)
    fit(default_lr, images, labels, steps=2)
    fit(explicit_lr, images, labels, steps=2, lr=0.05)
    torch.testing.assert_close(default_lr.weight, explicit_lr.weight, rtol=0, atol=0)


# -- hooks ------------------------------------------------------------------------------

class Pair(nn.Module):
    """Returns a tuple: records keep tuples of copies; the firing trace shows no output shape."""

    def forward(self, x):
        return x, 2 * x


def probe(module, args, output):
    """A named forward hook, for hooks_on's labels."""


def test_records_of_tuples_copies_before_an_inplace_relu_and_by_index():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(inplace=True), Pair())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        model[0].bias.zero_()
    x = torch.tensor([[[[1.0, -2.0]]]])
    with ActivationRecorder(model, layer_type=(nn.Conv2d, Pair)) as rec:
        model(x)
    torch.testing.assert_close(rec["0"], torch.tensor([[[[1.0, -2.0]], [[-1.0, 2.0]]]]))  # before the ReLU
    first, second = rec["2"]
    assert isinstance(rec["2"], tuple) and torch.equal(second, 2 * first) and (first >= 0).all()
    assert list(rec.as_dict()) == ["0", "2"] and rec.as_dict()["0"] is rec[0]
    assert repr(rec) == "ActivationRecorder(2 modules, 2 records, stopped)"
    events = firing_trace(model, x, names=["2"])
    assert events[0].output_shape == () and events[0].input_shapes == ((1, 2, 1, 2),)


def test_recorder_repr_gradient_by_index_and_the_names_it_suggests():
    model = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(1, 1, 1)), ("conv2", nn.Conv2d(1, 1, 1))]))
    rec = ActivationRecorder(model, gradients=True)
    assert repr(rec) == "ActivationRecorder(2 modules, 0 records, stopped)"
    with rec:
        assert repr(rec) == "ActivationRecorder(2 modules, 0 records, active)"
        model(torch.ones(1, 1, 2, 2, requires_grad=True)).sum().backward()
    assert torch.equal(rec.gradient(1), rec.gradient("conv2")) and rec.gradient(1).shape == (1, 1, 2, 2)
    with pytest.raises(KeyError, match=re.escape("'conv' (close: conv2, conv1); 'zzz' (close: none)")):
        ActivationRecorder(model, names=["conv", "zzz"])
    with pytest.raises(KeyError, match=re.escape("Recorded: conv1, conv2\"")):
        rec["conv3"]


def test_names_preview_counts_beyond_five():
    relu = nn.ReLU()
    model = nn.Sequential(*[relu] * 6)
    with ActivationRecorder(model, layer_type=nn.ReLU) as rec:
        model(torch.ones(1))
    assert rec.names == ["0", "0_1", "0_2", "0_3", "0_4", "0_5"]
    with pytest.raises(KeyError, match=re.escape("0, 0_1, 0_2, 0_3, 0_4, ... (6 in all)")):
        rec["x"]
    five = nn.Sequential(*[relu] * 5)
    with ActivationRecorder(five, layer_type=nn.ReLU) as rec:
        five(torch.ones(1))
    with pytest.raises(KeyError, match=re.escape("0_3, 0_4\"")):
        rec["x"]


def test_hooks_on_names_the_module_the_kind_and_the_function():
    model = nn.Sequential(nn.ReLU())
    handles = [model[0].register_forward_hook(probe), model.register_forward_pre_hook(functools.partial(probe))]
    try:
        assert hooks_on(model) == [HookEntry("", "forward_pre", "partial"), HookEntry("0", "forward", "probe")]
        assert str(hooks_on(model)[0]) == "(model): forward_pre hook partial"
    finally:
        for handle in handles:
            handle.remove()


def test_recordings_of_a_model_on_another_device_come_back_on_the_cpu():
    """A meta-device model under FakeTensorMode stands in for a GPU: the copies must land on the CPU."""
    fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU()).to("meta")
    with fake_tensor.FakeTensorMode(allow_non_fake_inputs=True):
        with torch.no_grad(), ActivationRecorder(model, layer_type=nn.Module, names=["0", "1"]) as rec:
            model(torch.zeros(1, 1, 3, 4, device="meta"))
    assert [(t.device.type, tuple(t.shape)) for t in rec.outputs] == [("cpu", (1, 2, 3, 4))] * 2


# -- tiling ---------------------------------------------------------------------------

def test_tile_pages_enlarges_by_two_and_refuses_negative_padding():
    tiles = np.arange(1, 5, dtype=np.uint8).reshape(1, 2, 2)
    grid = tile_pages(tiles, factor=2, padding=1)
    assert grid.shape == (6, 6) and (grid[1:3, 1:3] == 1).all() and (grid[3:5, 3:5] == 4).all()
    with pytest.raises(ValueError, match="padding"):
        tile_pages(tiles, padding=-1)


def test_tile_grid_and_padding_mask_defaults_and_a_tensor_that_requires_grad():
    tiles = torch.ones(2, 2, 3, requires_grad=True)
    grid = tile_grid(tiles)
    assert grid.shape == (2 + 2 + 2, 2 * (3 + 2) + 2)  # default padding 2, both tiles in one row
    assert padding_mask(2, (2, 3), nrow=1, padding=1).shape == (2 * (2 + 1) + 1, 3 + 2)


def test_show_feature_maps_without_a_name_and_its_drawing_settings():
    fig = show_feature_maps(torch.randn(3, 2, 4), normalize="layer")
    try:
        (image,) = fig.axes[0].get_images()
        assert fig.axes[0].get_title().startswith("3×2×4, channels 0–2 (page 1 of 1)")
        assert image.get_interpolation() == "antialiased" and image.get_array().dtype == np.float32
    finally:
        plt.close(fig)


# -- the explorer's state and encoders ------------------------------------------------

def test_explorer_state_defaults_cache_keys_and_page_sizes():
    values = torch.arange(5 * 3 * 2, dtype=torch.float32).view(5, 3, 2) - 7
    state = ExplorerState({"x": values}, nrow=2, padding=3, tile_px=6, browser_zoom=1)
    assert np.array_equal(state.indices(0), state.indices(0, "channel", False))
    assert np.array_equal(state.page_grid(0), state.page_grid(0, 0, 64, "channel", False))
    state.warm("layer", symmetric=True)
    assert (0, "layer", True) in state.cached_keys
    factor = state.page_scale(0)[0]
    assert factor == 2  # 6 // 3
    for page_size in (5, 3):
        for page in range(state.n_pages(0, page_size)):
            assert state.page_pixels(0, page, page_size) == state.page_grid(0, page, page_size).shape
    assert state.page_pixels(0) == (3 * (3 * 2 + 3) + 3, 2 * (2 * 2 + 3) + 3)
    with pytest.raises(TypeError, match="pairs"):
        ExplorerState([("x", values, "extra")])


def test_palette_png_pads_with_the_colour_given_and_the_early_png_keeps_its_colormap():
    indices = np.array([[0, 1], [255, 0]], dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_palette_png(indices, "viridis", pad_color=(1, 2, 3)))).convert("RGB"))
    assert tuple(decoded[0, 0]) == (1, 2, 3) and tuple(decoded[1, 0]) == (253, 231, 37)
    grey = np.asarray(Image.open(io.BytesIO(encode_page(indices, "gray", "auto"))).convert("RGB"))
    assert tuple(grey[1, 0]) == (255, 255, 255) and tuple(grey[0, 1]) == (0, 0, 0)


def test_depth_rows_skip_other_recorded_modules_columns_of_one_row_and_the_legend_of_two_runs():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU())
    with torch.no_grad(), ActivationRecorder(model, layer_type=(nn.Conv2d, nn.BatchNorm2d, nn.ReLU)) as rec:
        model(torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0)))
    rows = depth_statistics_from(rec)
    assert [(r.name, r.relu) for r in rows] == [("0", "2")]  # the BatchNorm record is no row
    assert as_columns(rows[:1])["name"] == ["0"]
    one, two = plot_depth_statistics(rows), plot_depth_statistics({"a": rows, "b": rows})
    assert one.axes[1].get_legend() is None and two.axes[1].get_legend() is not None
    plt.close(one)
    plt.close(two)
