"""A sanity check for attribution maps: cascading randomisation (Adebayo et al., 2018).

An explanation of a trained network should depend on what the network learned. The
test: re-draw the weights of the layers one at a time, from the output back to
the input, keeping the earlier re-draws (*cascading*), and compare each new map
with the original one by its **Spearman rank correlation** (the Pearson
correlation of the ranks; ties share their average rank, as in scipy). A map
whose correlation stays high while the weights are destroyed shows something
that does not come from the learned weights: the input's edges, or the
architecture.

* ``spearman(a, b)`` — rank correlation of two maps (any shape, same size).
* ``randomize_(module, seed)`` — re-draw a part of a model in place.
* ``cascading_randomization(model, names, seed)`` — copies of the model with
  more and more of its parts re-drawn, from the top; the original is untouched.

The maps to compare come from ``helpers.attribution`` (``grad_cam_for``, ``gradient_saliency``).
"""

from __future__ import annotations

import copy
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .toydata import initialize

__all__ = ["cascading_randomization", "randomize_", "ranks", "spearman"]


def ranks(values) -> np.ndarray:
    """Ranks 1..n of the flattened values; tied values share their average rank."""
    flat = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values,
                      dtype=np.float64).ravel()  # pragma: no mutate (equivalent: float64 or the input's dtype rank every value below 2**53 alike)
    unique, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts + 1          # rank of the first copy of each distinct value
    return (first + (counts - 1) / 2.0)[inverse]


def spearman(a, b) -> float:
    """Spearman rank correlation of two arrays of the same size (NaN when either is constant)."""
    ra, rb = ranks(a), ranks(b)
    if ra.shape != rb.shape:
        raise ValueError(f"the maps have {ra.size} and {rb.size} values; compare maps of the same size.")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    spread = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / spread) if spread > 0 else np.nan


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw ``module`` in place: Kaiming weights for its convs and linears, BatchNorm reset
    (weight 1, bias 0, running mean 0 and variance 1). Returns ``module``."""
    initialize(module, "kaiming", seed=seed)
    for part in module.modules():
        if isinstance(part, nn.modules.batchnorm._BatchNorm):
            part.reset_parameters()
    return module


def cascading_randomization(model: nn.Module, names: Sequence[str], seed: int = 0
                            ) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``("original", copy)`` then ``(name, copy)`` after re-drawing each part in ``names``, in order.

    Give ``names`` from the output towards the input (``["fc", "block5", ...]``):
    each copy has that part *and all before it in the list* re-drawn. The same
    copy is modified and yielded each time; ``model`` itself is never changed.
    """
    by_name = dict(model.named_modules())
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise KeyError(f"No module named {', '.join(map(repr, unknown))}; see model.named_modules().")
    randomized = copy.deepcopy(model)
    parts = dict(randomized.named_modules())
    yield "original", randomized
    for step, name in enumerate(names):
        randomize_(parts[name], seed=seed + step)
        yield name, randomized
