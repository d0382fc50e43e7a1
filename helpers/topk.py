"""Each channel's most activating examples from a stream of images, in bounded memory ("Microscope-lite").

OpenAI Microscope shows, for every channel, the dataset images that activate it
most. With a stream of batches there is no need to keep every score:

* ``channel_peaks(activation)`` reduces a batch N×C×H×W to each channel's
  peak value per image and where it is (N×C values and flat positions
  ``row * W + col``; among equal maxima, the first position in row-major order).
* ``StreamingTopK(k).update(scores, positions)`` merges a batch's N×C scores
  into a running top-k per channel: it holds C×k values, image indices and
  positions, whatever the number of images (``nbytes``).

**Order and ties.** Per channel, larger scores come first; among equal scores
the smaller image index comes first. So the result equals
``torch.sort(all_scores.T, descending=True, stable=True)`` cut to k, for any
batch sizes. ``torch.topk`` picks the same *values*; with ties it does not
promise which index it keeps, so compare indices with the stable sort.

``receptive_field(model, layer)`` says which input pixels a position of a
layer's output can see, for cropping the examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .interventions import find_module

__all__ = ["ReceptiveField", "StreamingTopK", "channel_peaks", "receptive_field"]


def channel_peaks(activation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's largest value per image and its flat position: two N×C tensors from N×C×H×W."""
    if activation.dim() != 4:
        raise ValueError(f"channel_peaks() needs an N×C×H×W activation, got shape {tuple(activation.shape)}.")
    values, positions = activation.detach().flatten(2).max(dim=2)
    return values, positions


class StreamingTopK:
    """Per channel, the ``k`` largest scores seen so far, with their image indices and positions.

    >>> top = StreamingTopK(k=9)
    >>> for batch in batches:                     # any number of images
    ...     top.update(*channel_peaks(layer_output(batch)))
    >>> top.indices.shape                         # C×9: image numbers, best first
    """

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        self.k = k
        self.seen = 0
        self.values = torch.empty(0)
        self.indices = torch.empty(0, dtype=torch.int64)
        self.positions = torch.empty(0, dtype=torch.int64)

    def update(self, scores: torch.Tensor, positions: torch.Tensor | None = None,
               indices: torch.Tensor | None = None) -> None:
        """Merge one batch: ``scores`` N×C; ``positions`` N×C (optional); image ``indices`` N
        (default: numbered on from the images seen so far)."""
        scores = torch.as_tensor(scores).detach().float().cpu()
        if scores.dim() != 2 or scores.shape[0] == 0:
            raise ValueError(f"scores must be N×C with N ≥ 1 (one row per image), got shape {tuple(scores.shape)}.")
        if torch.isnan(scores).any():
            raise ValueError("scores contain NaN, which has no place in an order; check the activations.")
        n, channels = scores.shape
        if self.seen and channels != self.values.shape[0]:
            raise ValueError(f"this batch has {channels} channels, earlier batches had {self.values.shape[0]}.")
        if indices is None:
            indices = torch.arange(self.seen, self.seen + n)
        indices = torch.as_tensor(indices, dtype=torch.int64).cpu()
        if indices.shape != (n,):
            raise ValueError(f"indices must hold one image number per row of scores ({n}), got {tuple(indices.shape)}.")
        positions = torch.zeros_like(scores, dtype=torch.int64) if positions is None else \
            torch.as_tensor(positions, dtype=torch.int64).cpu()
        if positions.shape != scores.shape:
            raise ValueError(f"positions must have the shape of scores {tuple(scores.shape)}, "
                             f"got {tuple(positions.shape)}.")
        if not self.seen:
            self.values = scores.new_empty(channels, 0)
            self.indices = indices.new_empty(channels, 0)
            self.positions = positions.new_empty(channels, 0)
        values = torch.cat([self.values, scores.T], dim=1)
        index = torch.cat([self.indices, indices.expand(channels, n)], dim=1)
        where = torch.cat([self.positions, positions.T], dim=1)
        # Two stable sorts = one sort by (score descending, image index ascending).
        by_index = torch.sort(index, dim=1, stable=True).indices
        values, index, where = (t.gather(1, by_index) for t in (values, index, where))
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :self.k]
        self.values, self.indices, self.positions = (t.gather(1, order) for t in (values, index, where))
        self.seen += n

    @property
    def nbytes(self) -> int:
        """Bytes held: C × min(k, images seen) × (4 + 8 + 8), whatever the number of images."""
        return sum(t.numel() * t.element_size() for t in (self.values, self.indices, self.positions))

    def __repr__(self) -> str:
        channels = self.values.shape[0] if self.seen else 0
        return f"StreamingTopK(k={self.k}, {channels} channels, {self.seen} images seen, {self.nbytes} bytes)"


@dataclass(frozen=True)
class ReceptiveField:
    """Output position ``i`` of a layer sees input pixels ``start + i·jump`` to ``start + i·jump + size − 1``
    along each axis (before clipping to the image)."""

    size: int
    jump: int
    start: int

    def box(self, row: int, col: int, height: int, width: int) -> tuple[slice, slice]:
        """The rows and columns of an ``height``×``width`` input that position (row, col) sees, clipped."""
        def span(i: int, limit: int) -> slice:
            first = self.start + i * self.jump
            return slice(max(first, 0), min(first + self.size, limit))

        return span(row, height), span(col, width)


def receptive_field(model: nn.Module, layer: str) -> ReceptiveField:
    """The receptive field of ``layer``'s output, for a chain of layers (an ``nn.Sequential`` of blocks).

    Every ``Conv2d``, ``MaxPool2d`` and ``AvgPool2d`` up to ``layer``, in ``named_modules()`` order, is
    taken to run once, in that order, on the previous one's output (square kernels, strides and padding).
    Models with branches (ResNet's downsample shortcuts) need more care than this.
    """
    target = find_module(model, layer)
    inside = {id(m) for m in target.modules()}
    size, jump, start = 1, 1, 0
    passed = False
    for module in model.modules():
        if passed and id(module) not in inside:
            break
        passed = passed or module is target
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            kernel, stride, padding, dilation = (_one(getattr(module, a, 1)) for a in
                                                 ("kernel_size", "stride", "padding", "dilation"))
            size += (kernel - 1) * dilation * jump
            start -= padding * jump
            jump *= stride
    return ReceptiveField(size, jump, start)


def _one(value) -> int:
    values = value if isinstance(value, tuple) else (value,)
    if isinstance(value, str) or len(set(values)) != 1:
        raise ValueError(f"receptive_field() handles square kernels, strides and padding, got {value!r}.")
    return int(values[0])
