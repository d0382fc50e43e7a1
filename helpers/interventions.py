"""Hooks that change the network: ablate channels or patch in another run's activation.

A forward hook that **returns** a tensor replaces the module's output for
everything downstream; returning ``None`` keeps it. Both tools here use that
rule, as context managers:

* ``ablate(model, "block4", [3, 7])`` sets channels 3 and 7 of ``block4``'s
  output to 0 (``mode="zero"``) or to a given mean (``mode="mean"``, with
  ``mean=`` of shape C or C×H×W, e.g. from ``mean_activation``).
* ``patch(model, "block3", clean)`` replaces ``block3``'s output by
  ``clean`` (the same shape), everywhere or only where ``channels`` /
  ``mask`` say.

The rules:

* **Copies, never in place.** The hook returns an edited clone; the module's
  own output tensor is not modified (an in-place edit could break autograd
  for modules that saved their output, such as ReLU).
* **Every call.** A module called twice in one forward pass is edited at both
  calls; the yielded ``Intervention`` counts them (``.calls``).
* **Cleanup.** The hook is removed when the ``with`` block ends, also when the
  forward pass raises: ``hooks_on(model) == []`` afterwards.
* **Model state.** Training mode and grad mode are never changed. Gradients
  flow through the kept values; ablated or patched values are constants.
* **Errors.** An unknown module name, a negative or out-of-range channel, a
  mean or patch of the wrong shape each raise an error that says what to fix.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

__all__ = ["Intervention", "ablate", "find_module", "mean_activation", "patch"]


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``; ``""`` is the model itself)."""
    if not isinstance(name, str):
        raise TypeError(f"the layer is given by its name (a string), got {type(name).__name__}.")
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, list(modules), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"No module named {name!r} in the model.{hint} See model.named_modules() for the names.")
    return modules[name]


@dataclass
class Intervention:
    """What an active ``ablate`` or ``patch`` did so far: the module's name and how often it was edited."""

    layer: str
    calls: int = 0


def _channel_list(channels: Sequence[int] | int) -> list[int]:
    listed = [channels] if isinstance(channels, int) else list(channels)
    for c in listed:
        if isinstance(c, bool) or not isinstance(c, int) and not (isinstance(c, torch.Tensor) and c.dim() == 0):
            raise TypeError(f"channels must be integers, got {c!r}.")
    listed = [int(c) for c in listed]
    negative = [c for c in listed if c < 0]
    if negative:
        raise ValueError(f"channel indices count from 0; negative ones ({negative}) are not accepted.")
    return sorted(set(listed))


def _check_output(output, layer: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        what = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise TypeError(f"{layer!r} must return one N×C×… tensor to be edited, got {what}.")
    return output


def _check_channels(channels: list[int], output: torch.Tensor, layer: str) -> None:
    too_big = [c for c in channels if c >= output.shape[1]]
    if too_big:
        raise IndexError(f"{layer!r} has {output.shape[1]} channels (0 to {output.shape[1] - 1}); "
                         f"channels {too_big} do not exist.")


def _edit_output(model: nn.Module, layer: str, edit) -> contextlib.AbstractContextManager[Intervention]:
    """A context manager whose forward hook returns ``edit(output)``; removed on exit, also after an exception.

    The name is looked up now, so a typo fails where the ``with`` statement is, before anything runs.
    """
    module = find_module(model, layer)

    @contextlib.contextmanager
    def active() -> Iterator[Intervention]:
        record = Intervention(layer)

        def hook(module: nn.Module, args, output):
            edited = edit(_check_output(output, layer))
            record.calls += 1
            return edited

        handle = module.register_forward_hook(hook)
        try:
            yield record
        finally:
            handle.remove()

    return active()


def ablate(model: nn.Module, layer: str, channels: Sequence[int] | int, mode: str = "zero",
           mean: torch.Tensor | None = None):
    """Context manager: replace ``channels`` of ``layer``'s output by 0 or by ``mean``, for every call.

    ``mode="zero"`` writes 0; ``mode="mean"`` writes ``mean[c]`` (``mean`` has shape C, one value per
    channel, or C×H×W, one per channel and position). Yields an ``Intervention``.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}.")
    if mode == "mean" and mean is None:
        raise ValueError("mode='mean' needs mean= (shape C or C×H×W); see mean_activation().")
    if mode == "zero" and mean is not None:
        raise ValueError("mean= is only used with mode='mean'.")
    chosen = _channel_list(channels)

    def edit(output: torch.Tensor) -> torch.Tensor:
        _check_channels(chosen, output, layer)
        edited = output.clone()
        if mode == "zero":
            edited[:, chosen] = 0
        else:
            value = torch.as_tensor(mean, dtype=output.dtype, device=output.device)
            per_channel = value.shape == output.shape[1:2]
            if not per_channel and value.shape != output.shape[1:]:
                raise ValueError(f"mean has shape {tuple(value.shape)}; {layer!r} outputs "
                                 f"{tuple(output.shape[1:])} per sample, so give C={output.shape[1]} values "
                                 f"or a {'×'.join(map(str, output.shape[1:]))} tensor.")
            fill = value[chosen]
            edited[:, chosen] = fill.view(len(chosen), *[1] * (output.dim() - 2)) if per_channel else fill
        return edited

    return _edit_output(model, layer, edit)


def patch(model: nn.Module, layer: str, activation: torch.Tensor, channels: Sequence[int] | int | None = None,
          mask: torch.Tensor | None = None):
    """Context manager: replace ``layer``'s output by ``activation`` (same shape), for every call.

    Only ``channels`` (a list) or only where ``mask`` is True (a boolean tensor that broadcasts to the
    output, e.g. 1×1×H×W for positions) when given; elsewhere the run's own values stay. Yields an
    ``Intervention``.
    """
    if channels is not None and mask is not None:
        raise ValueError("give channels= or mask=, not both.")
    source = torch.as_tensor(activation).detach()
    chosen = None if channels is None else _channel_list(channels)
    if mask is not None and torch.as_tensor(mask).dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor (True = patch), got {torch.as_tensor(mask).dtype}.")

    def edit(output: torch.Tensor) -> torch.Tensor:
        if source.shape != output.shape:
            raise ValueError(f"the patch has shape {tuple(source.shape)} but {layer!r} outputs "
                             f"{tuple(output.shape)}: record it from the same layer, with a batch of the same size.")
        new = source.to(dtype=output.dtype, device=output.device)
        if chosen is None and mask is None:
            return new.clone()
        if chosen is not None:
            _check_channels(chosen, output, layer)
            edited = output.clone()
            edited[:, chosen] = new[:, chosen]
            return edited
        return torch.where(torch.as_tensor(mask, device=output.device), new, output)

    return _edit_output(model, layer, edit)


def mean_activation(model: nn.Module, layer: str, images: torch.Tensor, per_position: bool = False,
                    batch_size: int = 256) -> torch.Tensor:
    """The mean of ``layer``'s output over ``images``: shape C, or C×H×W with ``per_position``.

    Runs the model in batches under ``torch.no_grad()``, reading the output through a forward hook that
    is removed afterwards. Training mode is left as found (call ``model.eval()`` first for BatchNorm's
    running statistics).
    """
    module = find_module(model, layer)
    total, count = None, 0

    def hook(module: nn.Module, args, output) -> None:
        nonlocal total, count
        out = _check_output(output, layer).detach().double()
        summed = out.sum(dim=0) if per_position else out.transpose(0, 1).flatten(1).sum(dim=1)
        total = summed if total is None else total + summed
        count += out.shape[0] if per_position else out.numel() // out.shape[1]

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size])
    finally:
        handle.remove()
    if total is None:
        raise ValueError(f"{layer!r} was never called: give at least one image.")
    return (total / count).float()
