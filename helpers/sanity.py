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

from .attribution import grad_cam
from .toydata import initialize

__all__ = ["attribution_maps", "cascading_randomization", "randomize_", "rank_rows", "ranks", "spearman",
           "spearman_rows"]


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


def _as_rows(values) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if array.ndim < 1 or array.size == 0:
        raise ValueError(f"expected N maps (N×…), got shape {array.shape}.")
    return array.reshape(len(array), -1)


def rank_rows(values) -> np.ndarray:
    """``ranks`` of each row of an N×… array at once (N×n): ranks 1..n, ties share their average rank."""
    rows = _as_rows(values)
    n = rows.shape[1]
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    position = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), rows.shape)
    starts = np.ones(rows.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(rows.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0.0), axis=1)        # first place of each tie group
    last = np.minimum.accumulate(np.where(ends, position, n + 1.0)[:, ::-1], axis=1)[:, ::-1]
    result = np.empty(rows.shape)
    np.put_along_axis(result, order, (first + last) / 2.0, axis=1)
    return result


def spearman_rows(a, b) -> np.ndarray:
    """``spearman(a[i], b[i])`` for every i at once: N correlations (NaN where either map is constant)."""
    ra, rb = rank_rows(a), rank_rows(b)
    if ra.shape != rb.shape:
        raise ValueError(f"got {ra.shape[0]} maps of {ra.shape[1]} values and {rb.shape[0]} of {rb.shape[1]}; "
                         "compare the same number of maps of the same size.")
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    spread = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    return np.where(spread > 0, (ra * rb).sum(axis=1) / np.where(spread > 0, spread, 1.0), np.nan)


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


def attribution_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grad-CAM at ``layer`` and gradient saliency for a whole batch, in one forward and one backward pass.

    Returns ``(cams, raw, saliency)``: N×H×W Grad-CAMs in [0, 1] (as ``grad_cam_for(...).cam``), the
    N×h×w maps before upsampling and scaling (``.raw``), and N×H×W |∂ logit / ∂ pixel| (max over
    colour channels, as ``gradient_saliency``). Each image is explained for its own ``targets[i]``.
    The model runs in eval mode, so that no image's map depends on the rest of the batch (BatchNorm
    uses its running statistics); mode and grad mode are restored, every hook removed.
    """
    if images.dim() != 4 or len(images) != len(targets):
        raise ValueError(f"expected N×C×H×W images and N targets, got {tuple(images.shape)} and "
                         f"{tuple(torch.as_tensor(targets).shape)}.")
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise KeyError(f"No module named {layer!r}; see model.named_modules().")
    kept: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, args, output: kept.append(output))
    was_training = model.training
    model.eval()
    try:
        leaf = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(leaf)
            score = logits.gather(1, torch.as_tensor(targets).view(-1, 1)).sum()
            activation = kept[0]
            grad_act, grad_in = torch.autograd.grad(score, [activation, leaf])
    finally:
        handle.remove()
        model.train(was_training)
    activation = activation.detach()
    cams = grad_cam(activation, grad_act, size=tuple(images.shape[-2:]))
    raw = grad_cam(activation, grad_act, normalize=False)
    return cams, raw, grad_in.abs().amax(dim=1)
