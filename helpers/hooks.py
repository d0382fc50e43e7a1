"""Record what the layers of a model output, with forward hooks.

The rules, in one place:

* **Selection.** A recorder watches every module of a type (``nn.Conv2d`` by
  default) or the modules named in ``names`` (qualified names, as in
  ``model.named_modules()``).
* **One forward pass.** Each call of the model itself starts a fresh record,
  so ``len(rec)`` is 36 for ResNet34 however often you run it. Call the model
  once per ``with`` block if you want to compare passes.
* **Naming.** A module called *k* times in one forward pass gives *k* records
  named ``name``, ``name_1``, ... ``name_{k-1}`` in firing order: the same
  rule as torchvision's ``create_feature_extractor``.
* **What is kept.** Detached copies on the CPU. A later in-place op (such as
  ResNet's ``ReLU(inplace=True)`` after a BatchNorm) cannot change them and
  they hold no autograd graph.
* **Gradients.** With ``gradients=True`` the recorder also keeps the gradient
  of each recorded output, through a tensor hook registered from the forward
  hook (a full backward hook fails on a module whose output is then changed
  in place, such as ResNet's ``bn1`` and ``bn2`` layers, and on an in-place
  module itself, such as its ReLUs). Call
  ``backward()`` inside the ``with`` block. A second ``backward()`` replaces
  the recorded gradients; it does not add to them as ``.grad`` does.
* **Cleanup.** Every hook is removed on ``stop()`` or when the ``with`` block
  ends, also when the forward pass raises. Starting a recorder first removes
  the hooks of any earlier recorder of this package on the same model, so a
  re-run notebook cell never stacks hooks.
* **Model state.** Training mode and grad mode are never changed.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

LayerType = type[nn.Module] | tuple[type[nn.Module], ...]

# The recorder currently active on each model. Weak keys: a registry must not
# keep a model alive.
_active_recorders: "weakref.WeakKeyDictionary[nn.Module, ActivationRecorder]" = (
    weakref.WeakKeyDictionary()
)


def conv_layers(
    model: nn.Module, layer_type: LayerType = nn.Conv2d
) -> list[tuple[str, nn.Module]]:
    """Every module of ``layer_type`` with its qualified name, in ``named_modules()`` order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, layer_type)]


def _select_modules(
    model: nn.Module, layer_type: LayerType, names: Sequence[str] | None
) -> list[tuple[str, nn.Module]]:
    if names is None:
        selected = conv_layers(model, layer_type)
        if not selected:
            raise ValueError(
                f"The model has no module of type {layer_type}; pass layer_type= "
                "or names= to choose what to record."
            )
        return selected
    if isinstance(names, str):
        raise TypeError(f"names must be a list of module names, not the string {names!r}.")
    by_name = dict(model.named_modules())
    unknown = [n for n in names if n not in by_name]
    if unknown:
        import difflib

        hints = {n: difflib.get_close_matches(n, list(by_name), n=3) for n in unknown}
        detail = "; ".join(f"{n!r} (close: {', '.join(h) or 'none'})" for n, h in hints.items())
        raise KeyError(f"No module named {detail}. See model.named_modules() for the names.")
    return [(n, by_name[n]) for n in names]


def _copy_to_cpu(value):
    """A detached CPU copy of a tensor, or of every tensor in a tuple or list."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        # On the CPU, .cpu() would return the same storage: clone instead.
        return value.clone() if value.device.type == "cpu" else value.to("cpu")
    if isinstance(value, (tuple, list)):
        return type(value)(_copy_to_cpu(v) for v in value)
    return value


class ActivationRecorder:
    """Record the output of selected modules on every forward call.

    >>> with ActivationRecorder(model) as rec:        # nn.Conv2d by default
    ...     model(x)
    >>> len(rec), rec.names[0], rec["conv1"].shape
    (36, 'conv1', torch.Size([1, 64, 112, 112]))

    Where ``with`` does not fit, call ``rec.start()`` and ``rec.stop()``.
    Constructing a recorder registers nothing. See the module docstring for
    the naming, copying and cleanup rules.
    """

    def __init__(
        self,
        model: nn.Module,
        layer_type: LayerType = nn.Conv2d,
        names: Sequence[str] | None = None,
        gradients: bool = False,
    ) -> None:
        self.model = model
        self.layers = _select_modules(model, layer_type, names)
        self.record_gradients = gradients
        self.names: list[str] = []
        self.outputs: list = []
        self.gradients: list[torch.Tensor | None] = []
        self._calls: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []
        self._tensor_handles: list[RemovableHandle] = []

    # -- registration ---------------------------------------------------
    @property
    def is_active(self) -> bool:
        """True while this recorder's hooks are attached."""
        return bool(self._handles)

    def start(self) -> "ActivationRecorder":
        """Attach the hooks (removing any left by an earlier recorder on this model)."""
        previous = _active_recorders.get(self.model)
        if previous is not None:
            previous.stop()
        self.clear()
        self._handles.append(self.model.register_forward_pre_hook(self._on_model_call))
        for name, module in self.layers:
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        _active_recorders[self.model] = self
        return self

    def stop(self) -> None:
        """Remove every hook this recorder added. Safe to call twice."""
        for handle in self._handles + self._tensor_handles:
            handle.remove()
        self._handles.clear()
        self._tensor_handles.clear()
        if _active_recorders.get(self.model) is self:
            del _active_recorders[self.model]

    def __enter__(self) -> "ActivationRecorder":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- the hooks --------------------------------------------------------
    def _on_model_call(self, module: nn.Module, args) -> None:
        self.clear()

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            index = len(self.outputs)
            self.names.append(name if call == 0 else f"{name}_{call}")
            self.outputs.append(_copy_to_cpu(output))
            self.gradients.append(None)
            if self.record_gradients:
                self._watch_gradient(output, index)

        return hook

    def _watch_gradient(self, output, index: int) -> None:
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"gradients=True needs modules that return one tensor; "
                f"{self.names[index]!r} returned {type(output).__name__}."
            )
        if not output.requires_grad:
            raise RuntimeError(
                f"gradients=True, but the output of {self.names[index]!r} does not require "
                "grad. Run the forward pass with grad enabled (not under torch.no_grad() "
                "or torch.inference_mode()); with frozen parameters, pass an input with "
                "requires_grad_(True)."
            )

        def store(grad: torch.Tensor) -> None:
            self.gradients[index] = grad.detach().to("cpu", copy=True)

        self._tensor_handles.append(output.register_hook(store))

    # -- access -----------------------------------------------------------
    def clear(self) -> None:
        """Forget what was recorded (hooks stay attached)."""
        self.names.clear()
        self.outputs.clear()
        self.gradients.clear()
        self._calls.clear()
        for handle in self._tensor_handles:
            handle.remove()
        self._tensor_handles.clear()

    def __len__(self) -> int:
        return len(self.outputs)

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(zip(self.names, self.outputs))

    def __getitem__(self, key: int | str):
        if isinstance(key, str):
            try:
                return self.outputs[self.names.index(key)]
            except ValueError:
                raise KeyError(
                    f"Nothing recorded under {key!r}. Recorded: {self._names_preview()}"
                ) from None
        return self.outputs[key]

    def gradient(self, key: int | str) -> torch.Tensor:
        """The gradient recorded for an output, by index or name."""
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"Nothing recorded under {key!r}. Recorded: {self._names_preview()}")
            index = self.names.index(key)
        else:
            index = key
        grad = self.gradients[index]
        if grad is None:
            raise RuntimeError(
                f"No gradient recorded for {self.names[index]!r}: record with gradients=True "
                "and call backward() inside the with-block, on a score that depends on it."
            )
        return grad

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Name → recorded output, in firing order."""
        return dict(zip(self.names, self.outputs))

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded outputs and gradients."""
        tensors = [t for t in self.outputs + self.gradients if isinstance(t, torch.Tensor)]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _names_preview(self) -> str:
        if not self.names:
            return "nothing yet (run the model inside the with-block)."
        shown = ", ".join(self.names[:5])
        return shown + (f", ... ({len(self.names)} in all)" if len(self.names) > 5 else "")

    def __repr__(self) -> str:
        state = "active" if self.is_active else "stopped"
        return f"ActivationRecorder({len(self.layers)} modules, {len(self)} records, {state})"


# -- inspection, for teaching and tests -----------------------------------------

_HOOK_DICTS = {
    "forward_pre": "_forward_pre_hooks",
    "forward": "_forward_hooks",
    "backward_pre": "_backward_pre_hooks",
    "backward": "_backward_hooks",
}


@dataclass(frozen=True)
class HookEntry:
    """One hook attached to a module."""

    module: str
    kind: str
    function: str

    def __str__(self) -> str:
        return f"{self.module or '(model)'}: {self.kind} hook {self.function}"


def hooks_on(model: nn.Module) -> list[HookEntry]:
    """Every module hook currently attached anywhere in ``model``.

    PyTorch has no public listing, so this reads the modules' hook
    dictionaries; tensor hooks are not included.
    """
    entries = []
    for name, module in model.named_modules():
        for kind, attribute in _HOOK_DICTS.items():
            for hook in getattr(module, attribute, {}).values():  # pragma: no mutate (every nn.Module has the four dicts: the default is never used)
                label = getattr(hook, "__qualname__", type(hook).__name__)
                entries.append(HookEntry(name, kind, label))
    return entries


@dataclass(frozen=True)
class FiringEvent:
    """One call of a watched module during a forward pass."""

    order: int
    name: str
    call: int
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


def firing_trace(
    model: nn.Module,
    inputs: torch.Tensor,
    names: Sequence[str] | None = None,
    layer_type: LayerType = nn.Module,
) -> list[FiringEvent]:
    """Run one forward pass and list, in firing order, each call of the chosen modules.

    By default every leaf module is watched. The pass runs under
    ``torch.no_grad()``; the hooks are removed afterwards.
    """
    if names is None:
        selected = [
            (n, m)
            for n, m in model.named_modules()
            if isinstance(m, layer_type) and not any(True for _ in m.children())
        ]
    else:
        selected = _select_modules(model, layer_type, names)
    events: list[FiringEvent] = []
    calls: dict[str, int] = {}

    def make_hook(name: str):
        def hook(module, args, output):
            calls[name] = calls.get(name, 0) + 1
            shapes = tuple(_shape(a) for a in args if isinstance(a, torch.Tensor))
            events.append(FiringEvent(len(events), name, calls[name], shapes, _shape(output)))

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in selected]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return events


def format_trace(events: Sequence[FiringEvent]) -> str:
    """A fixed-width text table of a firing trace."""

    def dims(shape: tuple[int, ...]) -> str:
        return "×".join(map(str, shape))

    rows = [("order", "module", "call", "input", "output")]
    for e in events:
        inputs = ", ".join(dims(s) for s in e.input_shapes)
        rows.append((str(e.order), e.name, str(e.call), inputs, dims(e.output_shape)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows
    )
