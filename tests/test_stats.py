"""Per-layer statistics: exact on known tensors, and right on ResNet34 from one forward pass."""

import math

import matplotlib
import pytest
import torch
from torch import nn
from torchvision.models import resnet34

from helpers.hooks import ActivationRecorder, conv_layers, hooks_on
from helpers.stats import (
    DepthStats,
    LayerStats,
    as_columns,
    depth_statistics,
    depth_statistics_from,
    plot_depth_statistics,
    record_stats,
    stage_starts,
    tensor_stats,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return resnet34(weights=None).eval()


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_all_zeros():
    s = tensor_stats(torch.zeros(2, 3, 4, 5), "z")
    assert s == LayerStats("z", channels=3, height=4, width=5, mean=0.0, std=0.0, zero_fraction=1.0)
    assert s.spatial == "4×5"


def test_constant():
    s = tensor_stats(torch.full((1, 6, 7, 7), 2.5))
    assert (s.mean, s.std, s.zero_fraction) == (2.5, 0.0, 0.0)
    assert (s.channels, s.height, s.width) == (6, 7, 7)


def test_small_exact_values_use_the_population_std():
    s = tensor_stats(torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]]))
    assert s.mean == 1.5 and s.zero_fraction == 0.25
    assert s.std == pytest.approx(math.sqrt(1.25))  # sample std would be sqrt(5/3)
    assert tensor_stats(torch.ones(1, 1, 1, 1)).std == 0.0  # one value: 0, not NaN


def test_random_normal_and_after_relu():
    x = torch.randn(4, 16, 32, 32, generator=torch.Generator().manual_seed(0))  # 65 536 values
    s = tensor_stats(x)
    assert s.mean == pytest.approx(0.0, abs=0.02)
    assert s.std == pytest.approx(1.0, abs=0.02)
    assert s.zero_fraction == 0.0
    r = tensor_stats(torch.relu(x))
    assert r.zero_fraction == pytest.approx(0.5, abs=0.01)
    assert r.mean == pytest.approx(1 / math.sqrt(2 * math.pi), abs=0.01)  # half-normal mean
    assert r.std == pytest.approx(math.sqrt(0.5 - 1 / (2 * math.pi)), abs=0.01)


def test_uniform_known_mean_and_std():
    x = torch.rand(1, 8, 64, 64, generator=torch.Generator().manual_seed(3))
    s = tensor_stats(x)
    assert s.mean == pytest.approx(0.5, abs=0.01)
    assert s.std == pytest.approx(1 / math.sqrt(12), abs=0.01)


def test_shapes_accepted_and_refused():
    assert tensor_stats(torch.zeros(5, 3, 2)).channels == 5
    assert (tensor_stats(torch.zeros(2, 10)).channels, tensor_stats(torch.zeros(2, 10)).height) == (10, 1)
    with pytest.raises(ValueError):
        tensor_stats(torch.zeros(3))
    with pytest.raises(ValueError):
        tensor_stats(torch.zeros(1, 0, 2, 2))


def test_record_stats_and_columns():
    rows = record_stats([("a", torch.zeros(1, 2, 3, 3)), ("b", torch.ones(1, 4, 1, 1))])
    cols = as_columns(rows)
    assert cols["name"] == ["a", "b"] and cols["channels"] == [2, 4] and cols["zero_fraction"] == [1.0, 0.0]
    assert as_columns([]) == {}


def test_depth_statistics_on_resnet34(model, image):
    calls = []
    counter = model.register_forward_pre_hook(lambda m, args: calls.append(1))
    try:
        rows = depth_statistics(model, image)
    finally:
        counter.remove()
    assert len(calls) == 1, "one forward pass"
    assert hooks_on(model) == []
    assert all(isinstance(r, DepthStats) for r in rows)
    assert [r.name for r in rows] == [n for n, _ in conv_layers(model)]
    assert [r.index for r in rows] == list(range(36))
    assert [r.channels for r in rows] == [64] * 7 + [128] * 9 + [256] * 13 + [512] * 7
    assert [r.height for r in rows] == [32] + [16] * 6 + [8] * 9 + [4] * 13 + [2] * 7
    by_name = {r.name: r for r in rows}
    assert by_name["conv1"].relu == "relu"
    assert by_name["layer1.0.conv1"].relu == "layer1.0.relu"
    assert by_name["layer1.0.conv2"].relu == "layer1.0.relu_1"
    assert by_name["layer3.0.downsample.0"].relu == "layer3.0.relu_1"
    assert stage_starts(rows) == [(0, "conv1"), (1, "layer1"), (7, "layer2"), (16, "layer3"), (29, "layer4")]


def test_depth_statistics_match_an_independent_computation(model, image):
    rows = {r.name: r for r in depth_statistics(model, image)}
    seen = {}

    def keep(name):
        def hook(module, args, output):
            seen[name] = output.detach().clone()  # clone: bn1's output is then ReLU'd in place

        return hook

    watched = {"layer2.0.conv2": model.layer2[0].conv2, "layer2.0.bn1": model.layer2[0].bn1,
               "layer2.0": model.layer2[0], "conv1": model.conv1, "layer4.2": model.layer4[2]}
    handles = [m.register_forward_hook(keep(n)) for n, m in watched.items()]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in handles:
            handle.remove()
    conv = seen["layer2.0.conv2"].double()
    assert rows["layer2.0.conv2"].mean == pytest.approx(conv.mean().item(), rel=1e-6, abs=1e-9)
    assert rows["layer2.0.conv2"].std == pytest.approx(conv.std(unbiased=False).item(), rel=1e-6)
    # conv1 of a block → the block's first ReLU call: zero exactly where bn1's output is <= 0.
    assert rows["layer2.0.conv1"].zeros_after_relu == pytest.approx((seen["layer2.0.bn1"] <= 0).double().mean().item())
    # conv2 and the downsample conv → the block's second ReLU call, whose output is the block's output.
    block_zeros = (seen["layer2.0"] == 0).double().mean().item()
    assert rows["layer2.0.conv2"].zeros_after_relu == pytest.approx(block_zeros)
    assert rows["layer2.0.downsample.0"].zeros_after_relu == pytest.approx(block_zeros)
    assert rows["layer4.2.conv2"].zeros_after_relu == pytest.approx((seen["layer4.2"] == 0).double().mean().item())
    assert rows["layer4.2.conv2"].relu_mean == pytest.approx(seen["layer4.2"].double().mean().item(), rel=1e-6)
    assert 0.05 < block_zeros < 0.95  # a ReLU output, not all or nothing


def test_rows_from_an_existing_recorder(model, image):
    with torch.no_grad(), ActivationRecorder(model, layer_type=(nn.Conv2d, nn.ReLU)) as rec:
        model(image)
    assert len(rec) == 36 + 33
    assert depth_statistics_from(rec) == depth_statistics(model, image)
    with torch.no_grad(), ActivationRecorder(model) as convs_only:
        model(image)
    with pytest.raises(ValueError, match="ReLU"):
        depth_statistics_from(convs_only)


def test_plot_depth_statistics_draws_every_layer(model, image):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = depth_statistics(model, image)
    fig = plot_depth_statistics({"a": rows, "b": rows})
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert titles == ["conv output: mean", "conv output: std", "zeros after the ReLU",
                          "mean after the ReLU", "spatial size", "channels"]
        data_lines = [[line for line in ax.get_lines() if len(line.get_xdata()) > 2] for ax in fig.axes]
        assert [len(lines) for lines in data_lines] == [2, 2, 2, 2, 1, 1]  # both runs; the architecture once
        assert all(len(line.get_xdata()) == 36 for lines in data_lines for line in lines)
    finally:
        plt.close(fig)


def test_known_mean_std_and_zero_fraction_with_a_dead_channel():
    # Channel k of 4 is filled with k (channel 0 is dead): mean 1.5, std √1.25, a quarter zeros.
    layer = torch.arange(4, dtype=torch.float32)[None, :, None, None].expand(2, 4, 3, 3)
    s = tensor_stats(layer, "k")
    assert (s.channels, s.height, s.width, s.mean, s.zero_fraction) == (4, 3, 3, 1.5, 0.25)
    assert s.std == pytest.approx(math.sqrt(1.25), rel=1e-12)
    # Signed, symmetric values: mean 0, std 2; 2 of 8 are exactly zero (−0.0 counts as zero).
    signed = tensor_stats(torch.tensor([[-2.0, 2.0, -2.0, 2.0, -2.0, 2.0, 0.0, -0.0]]))
    assert (signed.mean, signed.zero_fraction) == (0.0, 0.25)
    assert signed.std == pytest.approx(math.sqrt(6 * 4 / 8), rel=1e-12)


def test_tiny_values_are_not_zeros():
    # A ReLU sets values to exactly 0: small but non-zero activations must not be counted.
    tiny = torch.tensor([[[[0.0, 1e-30, -1e-12, 3e-8]]]])
    assert tensor_stats(tiny).zero_fraction == 0.25


def test_depth_statistics_pair_each_conv_call_with_the_relu_call_that_fires_next():
    from tests.toy_net import OutOfOrderNet, forward_by_hand, toy_input

    net, x = OutOfOrderNet(), toy_input()
    rows = depth_statistics(net, x)
    expected = forward_by_hand(net, x)
    assert [(r.name, r.relu) for r in rows] == [("stem", "act"), ("mix", "act_1"), ("mix_1", None), ("head", None)]
    for row in rows:
        conv = expected[row.name].double()
        assert row.mean == pytest.approx(conv.mean().item(), rel=1e-6)
        assert row.std == pytest.approx(conv.std(correction=0).item(), rel=1e-6)
        if row.relu is None:
            assert math.isnan(row.zeros_after_relu) and math.isnan(row.relu_mean)
        else:
            relu = expected[row.relu].double()
            assert row.zeros_after_relu == (relu == 0).double().mean().item()
            assert 0 < row.zeros_after_relu < 1
            assert row.relu_mean == pytest.approx(relu.mean().item(), rel=1e-6)
