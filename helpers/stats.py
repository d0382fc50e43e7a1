"""How activations change with depth: per-layer statistics from one forward pass.

Two levels:

* ``tensor_stats(tensor)`` summarises any activation: channels, spatial
  size, mean, standard deviation (population, ``correction=0``: a single
  value has std 0, not NaN) and the fraction of values that are exactly 0.
* ``depth_statistics(model, image)`` runs **one** forward pass and returns
  one row per conv layer (36 for ResNet34), in firing order.
  ``depth_statistics_from(recorder)`` builds the same rows from a recorder
  that already recorded convs and ReLUs together.

Where zeros are counted. A conv's own output is almost never exactly 0: the
zeros appear after the ReLU. In ResNet a conv is not followed directly by its
ReLU: BatchNorm comes in between (which shifts and rescales every channel),
and for ``conv2`` the shortcut is added before the ReLU. So the sign of the
conv output does *not* tell how many values the ReLU will zero. Instead we
record the ReLU calls themselves, in the same pass, and pair each conv with
**the ReLU call that fires next**: ``conv1 → relu``, ``layerX.Y.conv1 →
layerX.Y.relu`` and ``layerX.Y.conv2 → layerX.Y.relu_1`` (BasicBlock calls
its one ``relu`` module twice). A downsample conv shares its block's
``relu_1``, which acts on the sum of both branches. The ReLUs are in place,
which is harmless here: the recorder copies each output when its hook fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .hooks import ActivationRecorder, LayerType

__all__ = [
    "DepthStats",
    "LayerStats",
    "as_columns",
    "depth_statistics",
    "depth_statistics_from",
    "plot_depth_statistics",
    "record_stats",
    "stage_starts",
    "tensor_stats",
]


@dataclass(frozen=True)
class LayerStats:
    """Summary of one activation tensor (all samples of the batch together)."""

    name: str
    channels: int
    height: int
    width: int
    mean: float
    std: float
    zero_fraction: float

    @property
    def spatial(self) -> str:
        return f"{self.height}×{self.width}"


@dataclass(frozen=True)
class DepthStats:
    """One conv layer: its output's statistics and the zeros of the ReLU call that follows it."""

    index: int
    name: str
    channels: int
    height: int
    width: int
    mean: float                # of the conv output
    std: float                 # of the conv output
    relu: str | None           # the ReLU call paired with this conv (None if no ReLU fires after it)
    zeros_after_relu: float    # fraction of exact zeros in that ReLU's output (NaN without one)
    relu_mean: float           # mean of that ReLU's output (NaN without one)

    @property
    def spatial(self) -> str:
        return f"{self.height}×{self.width}"


def tensor_stats(tensor: torch.Tensor, name: str = "") -> LayerStats:
    """Statistics of one activation: N×C×H×W, C×H×W, or N×F (features: H = W = 1)."""
    values = torch.as_tensor(tensor).detach()
    if values.dim() == 4:
        channels, height, width = values.shape[1:]
    elif values.dim() == 3:
        channels, height, width = values.shape
    elif values.dim() == 2:
        channels, height, width = values.shape[1], 1, 1
    else:
        raise ValueError(
            f"tensor_stats() needs N×C×H×W, C×H×W or N×F, got shape {tuple(values.shape)}."
        )
    if values.numel() == 0:
        raise ValueError(f"{name or 'the tensor'} is empty: no statistics to compute.")
    values = values.double()  # float32 sums over millions of values drift
    return LayerStats(
        name=name,
        channels=int(channels),
        height=int(height),
        width=int(width),
        mean=float(values.mean()),
        std=float(values.std(correction=0)),
        zero_fraction=float((values == 0).double().mean()),
    )


def record_stats(records: Iterable[tuple[str, torch.Tensor]]) -> list[LayerStats]:
    """``tensor_stats`` for every (name, tensor) pair, e.g. ``record_stats(recorder)``."""
    return [tensor_stats(tensor, name) for name, tensor in records]


def _record_modules(rec: ActivationRecorder) -> list[nn.Module]:
    """The module behind each record (``name_k`` is call k of module ``name``)."""
    by_name = dict(rec.layers)
    modules = []
    for name in rec.names:
        if name not in by_name:
            name = name.rpartition("_")[0]
        modules.append(by_name[name])
    return modules


def depth_statistics(
    model: nn.Module,
    image: torch.Tensor,
    layer_type: LayerType = nn.Conv2d,
) -> list[DepthStats]:
    """One row per ``layer_type`` call (36 convs for ResNet34) from one forward pass.

    The pass runs under ``torch.no_grad()`` with one recorder on the convs and
    the ReLUs; every hook is removed afterwards. See the module docstring for
    how each conv is paired with a ReLU call.
    """
    device = next(model.parameters()).device
    with torch.no_grad(), ActivationRecorder(model, layer_type=(layer_type, nn.ReLU)) as rec:
        model(image.to(device))
    return depth_statistics_from(rec, layer_type)


def depth_statistics_from(rec: ActivationRecorder, layer_type: LayerType = nn.Conv2d) -> list[DepthStats]:
    """The rows of ``depth_statistics`` from a recorder that already recorded one forward
    pass of both ``layer_type`` and ``nn.ReLU`` modules (``layer_type=(nn.Conv2d, nn.ReLU)``)."""
    modules = _record_modules(rec)
    if not any(isinstance(m, nn.ReLU) for m in modules):
        raise ValueError("The recorder holds no ReLU call: record with layer_type=(nn.Conv2d, nn.ReLU).")
    rows: list[DepthStats] = []
    for position, (name, module) in enumerate(zip(rec.names, modules)):
        if isinstance(module, nn.ReLU) or not isinstance(module, layer_type):
            continue
        conv = tensor_stats(rec.outputs[position], name)
        relu_at = next(
            (j for j in range(position + 1, len(modules)) if isinstance(modules[j], nn.ReLU)), None
        )
        relu = tensor_stats(rec.outputs[relu_at], rec.names[relu_at]) if relu_at is not None else None
        rows.append(
            DepthStats(
                index=len(rows),
                name=name,
                channels=conv.channels,
                height=conv.height,
                width=conv.width,
                mean=conv.mean,
                std=conv.std,
                relu=relu.name if relu else None,
                zeros_after_relu=relu.zero_fraction if relu else math.nan,
                relu_mean=relu.mean if relu else math.nan,
            )
        )
    return rows


def as_columns(rows: Sequence) -> dict[str, list]:
    """Rows of a dataclass (``LayerStats`` or ``DepthStats``) as a dict of lists, one per field."""
    if not rows:
        return {}
    return {f.name: [getattr(row, f.name) for row in rows] for f in fields(rows[0])}


def stage_starts(rows: Sequence[DepthStats]) -> list[tuple[int, str]]:
    """(index, label) where a new top-level stage begins: conv1, layer1, layer2, ..."""
    starts, previous = [], None
    for row in rows:
        stage = row.name.split(".")[0]
        if stage != previous:
            starts.append((row.index, stage))
            previous = stage
    return starts


def plot_depth_statistics(
    runs: Sequence[DepthStats] | dict[str, Sequence[DepthStats]],
    title: str = "Activation statistics across depth (one forward pass)",
) -> Figure:
    """Six panels across the conv layers: mean and std of each conv output, zeros and mean
    after the ReLU that follows, spatial size, channels.

    Pass a dict ``{label: rows}`` to draw several runs (e.g. two models) on the same axes.
    The std and the post-ReLU mean use a log scale: they span orders of magnitude.
    """
    if not isinstance(runs, dict):
        runs = {"": runs}
    first = list(next(iter(runs.values())))
    x = np.arange(len(first))
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.8), sharex=True, layout="constrained")
    (ax_mean, ax_std, ax_zero), (ax_relu, ax_size, ax_chan) = axes
    for number, (label, rows) in enumerate(runs.items()):
        cols = as_columns(rows)
        style = dict(marker="o", ms=2.5, lw=1.2, color=f"C{number}", label=label or None)
        ax_mean.plot(x, cols["mean"], **style)
        ax_std.plot(x, cols["std"], **style)
        ax_zero.plot(x, cols["zeros_after_relu"], **style)
        ax_relu.plot(x, cols["relu_mean"], **style)  # pragma: no mutate (plot(y) draws at x = 0..n-1 too: equivalent)
    ax_mean.axhline(0, color="grey", lw=0.8)
    ax_mean.set(title="conv output: mean")
    ax_std.set(title="conv output: std", yscale="log")
    ax_zero.set(title="zeros after the ReLU", ylim=(0, 1))
    ax_relu.set(title="mean after the ReLU", yscale="log")
    if len(runs) > 1:
        ax_std.legend(fontsize=8)
    cols = as_columns(first)
    for ax, key, panel, fmt in ((ax_size, "height", "spatial size", "{0}×{0}"),
                                (ax_chan, "channels", "channels", "{0}")):
        ax.plot(x, cols[key], marker="o", ms=2.5, lw=1.2, color="k")
        ax.set_yscale("log", base=2)
        levels = sorted(set(cols[key]))
        ax.set_yticks(levels, labels=[fmt.format(v) for v in levels])
        ax.minorticks_off()
        ax.set_title(panel)
    starts = stage_starts(first) + [(len(first), "")]
    centres = [(a + b - 1) / 2 for (a, _), (b, _) in zip(starts, starts[1:])]
    for ax in axes.flat:
        for index, _ in starts[1:-1]:
            ax.axvline(index - 0.5, color="grey", lw=0.6, ls=":")
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(centres, labels=[name for _, name in starts[:-1]], fontsize=8,
                      rotation=35, ha="right", rotation_mode="anchor")
        ax.tick_params(axis="x", length=0)
        ax.set_xlim(-0.8, len(first) - 0.2)
    for ax in axes[1]:
        ax.set_xlabel(f"{len(first)} conv layers in firing order")
    fig.suptitle(title)
    return fig
