"""The BasicBlock diagram: boxes read from the block, in the order its forward really calls them."""

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from helpers.diagrams import basic_block_boxes, basic_block_figure, describe_basic_block
from helpers.hooks import firing_trace

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def net():
    return resnet18(weights=None).eval()


def test_identity_block_boxes(net):
    main, shortcut = basic_block_boxes(net.layer1[0], in_size=56)
    assert [b.label.split("\n")[0] for b in main] == [
        "input x: 64×56×56", "conv1: 3×3 conv, stride 1", "bn1: BatchNorm", "relu (call 1)",
        "conv2: 3×3 conv, stride 1", "bn2: BatchNorm", "+", "relu (call 2)", "output: 64×56×56",
    ]
    assert [b.label for b in shortcut] == ["identity:\nx itself"]


def test_downsample_block_boxes_and_sizes(net):
    main, shortcut = basic_block_boxes(net.layer2[0], in_size=56)
    assert main[1].label == "conv1: 3×3 conv, stride 2\n64 → 128 channels"
    assert main[-1].label == "output: 128×28×28"  # stride 2 halves 56
    assert [b.label for b in shortcut] == ["downsample.0: 1×1 conv, stride 2\n64 → 128 channels",
                                           "downsample.1: BatchNorm"]
    assert "×" not in basic_block_boxes(net.layer2[0])[0][0].label  # no size without in_size


def test_boxes_follow_the_firing_order_of_the_block(net):
    """The drawn order is the calling order, the shared relu included (checked with hooks, not assumed)."""
    block = net.layer2[0]
    fired = [e.name for e in firing_trace(block, torch.zeros(1, 64, 16, 16))]
    main, shortcut = basic_block_boxes(block)
    main_modules = [b.name for b in main if b.name]
    shortcut_modules = [b.name for b in shortcut if b.name]
    assert [n for n in fired if not n.startswith("downsample")] == main_modules
    assert [n for n in fired if n.startswith("downsample")] == shortcut_modules
    assert main_modules.count("relu") == 2


def test_figure_draws_every_box_once_per_panel(net):
    fig = basic_block_figure({"layer1.0": net.layer1[0], "layer2.0": net.layer2[0]})
    try:
        assert len(fig.axes) == 2
        for ax, block in zip(fig.axes, (net.layer1[0], net.layer2[0])):
            main, shortcut = basic_block_boxes(block)
            drawn = [t.get_text() for t in ax.texts]
            for box in main + shortcut:
                assert drawn.count(box.label) == 1, box.label
        assert "downsample shortcut" in fig.axes[1].get_title()
        assert "identity shortcut" in fig.axes[0].get_title()
    finally:
        plt.close(fig)


def test_description_names_both_paths(net):
    text = describe_basic_block(net.layer2[0], in_size=56)
    assert text.startswith("main: input x: 64×56×56 → conv1: 3×3 conv, stride 2, 64 → 128 channels")
    assert "shortcut from x to +: downsample.0: 1×1 conv, stride 2" in text


def test_clear_errors():
    with pytest.raises(TypeError, match="BasicBlock"):
        basic_block_boxes(nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="at least one block"):
        basic_block_figure({})


def test_description_of_the_identity_shortcut(net):
    assert describe_basic_block(net.layer1[0]).endswith("shortcut from x to +: identity: x itself")
