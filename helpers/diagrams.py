"""Data-flow diagrams of ResNet's BasicBlock, drawn from the block itself with matplotlib.

Each box is read off the module (kernel size, stride, channels), so the picture of
``model.layer2[0]`` shows its downsample shortcut and the picture of ``model.layer1[0]``
shows the identity shortcut. The two ``relu`` boxes are one module called twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn
from torchvision.models.resnet import BasicBlock

# Light fills from the Okabe–Ito palette (colour-blind safe); the text stays black.
COLOURS = {"conv": "#b3d7f0", "bn": "#f5d9a8", "relu": "#bfe6d6", "add": "#ffffff", "data": "#e8e8e8"}


@dataclass(frozen=True)
class Box:
    """One box of the diagram: the module it stands for (or "" for data and the sum), its text and kind."""

    name: str
    label: str
    kind: str  # a key of COLOURS


def _side(size: int, conv: nn.Conv2d) -> int:
    return (size + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1


def _conv_box(name: str, conv: nn.Conv2d) -> Box:
    k, s = conv.kernel_size[0], conv.stride[0]
    return Box(name, f"{name}: {k}×{k} conv, stride {s}\n{conv.in_channels} → {conv.out_channels} channels", "conv")


def basic_block_boxes(block: nn.Module, in_size: int | None = None) -> tuple[list[Box], list[Box]]:
    """The main path (input to output, in calling order) and the shortcut of a torchvision BasicBlock.

    ``in_size`` (the input's height = width) adds C×H×W sizes to the input and output boxes.
    """
    if not isinstance(block, BasicBlock):
        raise TypeError(
            f"basic_block_boxes() draws a torchvision BasicBlock (e.g. model.layer1[0]), got {type(block).__name__}."
        )
    c_in, c_out = block.conv1.in_channels, block.conv2.out_channels
    sizes = ("", "")
    if in_size is not None:
        out_size = _side(_side(in_size, block.conv1), block.conv2)
        sizes = (f"×{in_size}×{in_size}", f"×{out_size}×{out_size}")
    main = [
        Box("", f"input x: {c_in}{sizes[0]}", "data"),
        _conv_box("conv1", block.conv1),
        Box("bn1", "bn1: BatchNorm", "bn"),
        Box("relu", "relu (call 1)", "relu"),
        _conv_box("conv2", block.conv2),
        Box("bn2", "bn2: BatchNorm", "bn"),
        Box("", "+", "add"),
        Box("relu", "relu (call 2)", "relu"),
        Box("", f"output: {c_out}{sizes[1]}", "data"),
    ]
    if block.downsample is None:
        shortcut = [Box("", "identity:\nx itself", "data")]
    else:
        conv, bn = block.downsample[0], block.downsample[1]
        shortcut = [_conv_box("downsample.0", conv), Box("downsample.1", "downsample.1: BatchNorm", "bn")]
    return main, shortcut


def describe_basic_block(block: nn.Module, in_size: int | None = None) -> str:
    """The diagram as text: the main path, then (second line) the shortcut that joins it at the +."""
    main, shortcut = basic_block_boxes(block, in_size)

    def text(boxes: list[Box]) -> str:
        return " → ".join(box.label.replace(":\n", ": ").replace("\n", ", ") for box in boxes)

    return f"main: {text(main)}\n  shortcut from x to +: {text(shortcut)}"


def draw_basic_block(block: nn.Module, ax: Axes, title: str = "", in_size: int | None = None) -> None:
    """Draw the block's data flow top to bottom on ``ax``: main path on the left, shortcut on the right."""
    main, shortcut = basic_block_boxes(block, in_size)
    step = 1.0 / len(main)
    main_x, short_x = 0.36, 0.82
    y = [1 - step * (i + 0.5) for i in range(len(main))]
    add_row = next(i for i, box in enumerate(main) if box.label == "+")

    def box(x: float, y_: float, b: Box) -> None:
        shape = "circle,pad=0.25" if b.kind == "add" else "round,pad=0.35"
        ax.text(x, y_, b.label, ha="center", va="center", fontsize=9, zorder=3,
                bbox={"boxstyle": shape, "fc": COLOURS[b.kind], "ec": "#444444"})

    def arrow(start: tuple[float, float], end: tuple[float, float], **style) -> None:
        props = {"arrowstyle": "-|>", "color": "#333333", "shrinkA": 13, "shrinkB": 13, **style}
        ax.annotate("", xy=end, xytext=start, arrowprops=props, zorder=2)

    for i, b in enumerate(main):
        box(main_x, y[i], b)
        if i:
            arrow((main_x, y[i - 1]), (main_x, y[i]))
    # The shortcut leaves x, runs down the right-hand column and joins the main path at the +.
    short_y = [y[1] - (y[1] - y[add_row]) * (j + 1) / (len(shortcut) + 1) for j in range(len(shortcut))]
    for j, b in enumerate(shortcut):
        box(short_x, short_y[j], b)
    arrow((main_x, y[0]), (short_x, short_y[0]), connectionstyle="angle,angleA=0,angleB=90", shrinkA=40)
    for j in range(1, len(shortcut)):
        arrow((short_x, short_y[j - 1]), (short_x, short_y[j]))
    arrow((short_x, short_y[-1]), (main_x, y[add_row]), connectionstyle="angle,angleA=-90,angleB=0", shrinkB=9)
    # One ReLU module, two calls: a dashed bracket on the left joins its two boxes.
    top, bottom = (y[i] for i in (i for i, b in enumerate(main) if b.kind == "relu"))
    left, box_edge = 0.17, main_x - 0.085
    ax.plot([box_edge, left, left, box_edge], [top, top, bottom, bottom], ls="--", color="#009e73", zorder=1)
    ax.text(left - 0.015, (top + bottom) / 2, "the same\nmodule\nself.relu,\ncalled\ntwice",
            ha="right", va="center", fontsize=8, color="#00704f")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)


def basic_block_figure(blocks: dict[str, nn.Module], in_sizes: dict[str, int] | None = None) -> Figure:
    """One panel per named BasicBlock, side by side, e.g. ``{"layer1.0": model.layer1[0], ...}``."""
    if not blocks:
        raise ValueError("basic_block_figure() needs at least one block to draw.")
    in_sizes = in_sizes or {}
    fig, axes = plt.subplots(1, len(blocks), figsize=(5.2 * len(blocks), 7.2), squeeze=False)
    for ax, (name, block) in zip(axes[0], blocks.items()):
        shortcut = "identity shortcut" if block.downsample is None else "downsample shortcut"
        draw_basic_block(block, ax, title=f"{name}: BasicBlock with {shortcut}", in_size=in_sizes.get(name))
    fig.tight_layout()
    return fig
