"""Watch a network while it learns: per-layer summaries at every training step, from hooks.

``TrainingRecorder`` follows fastai's ``ActivationStats`` (course22p2, lesson
``10_activations``). The rules:

* **What is kept.** For each watched module and each training step: the mean,
  the standard deviation (population), the fraction of values near zero
  (``|x| <= near_zero``), the fraction of *dead channels* (channels near zero
  for every sample and position of the batch), and a histogram with fixed
  bins over ``value_range`` (values outside go to the first or last bin, so
  every value is counted). With ``gradients=True`` also the norm of the
  gradient of the loss with respect to the module's output, through a tensor
  hook registered from the forward hook.
* **What is not kept.** The activations. Each hook reduces its output to
  ``4 + bins`` numbers and copies them into a NumPy row; no tensor outlives
  the step. Memory grows by ``layers × (4 + bins) × 8`` bytes per step
  (``nbytes``), plus 8 bytes per layer with ``gradients=True``.
* **What is a step.** One forward call of the model in training mode. Calls in
  eval mode (accuracy on the held-out set) are not recorded unless
  ``training_only=False``.
* **Cleanup.** A context manager: every hook is removed when the ``with``
  block ends, also when training raises. Starting a recorder removes the hooks
  of any earlier recorder of this package on the same model, so re-running a
  notebook cell never stacks hooks. Training mode and grad mode are not
  touched.

Below the recorder: a small training loop (``fit``), ``accuracy``,
``one_thread`` (bit-for-bit reproducible training) and the plots.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import nn
from torch.utils.hooks import RemovableHandle

from .hooks import LayerType, _active_recorders, _select_modules

__all__ = [
    "STATS",
    "TrainingRecorder",
    "accuracy",
    "fit",
    "histogram_image",
    "one_thread",
    "plot_dead_fraction",
    "plot_histograms",
    "plot_mean_std",
]

STATS = ("mean", "std", "near_zero", "dead")  # the order of the first columns of a stored row


def summarize(values: torch.Tensor, low: float, high: float, bins: int, near_zero: float) -> np.ndarray:
    """``mean, std, near-zero fraction, dead-channel fraction, *histogram`` of one activation, as float64.

    ``values`` is N×C×… (channels on dim 1) or N×F. Bin ``i`` counts ``low + i·w <= x < low + (i+1)·w``
    with ``w = (high - low) / bins``; values below ``low`` count in the first bin, values from ``high``
    up in the last, so the counts add up to ``values.numel()``.
    """
    x = values.detach().float()
    if x.dim() < 2 or x.numel() == 0:
        raise ValueError(f"expected a non-empty N×C×… activation, got shape {tuple(x.shape)}.")
    # One scratch buffer, reused in place: allocating big temporaries costs more than the arithmetic.
    flat = x.flatten()
    mean = flat.mean()
    scratch = torch.sub(flat, mean)
    std = scratch.square_().mean().sqrt()  # two passes: no cancellation when std << |mean|
    torch.abs(flat, out=scratch)
    near = torch.count_nonzero(scratch <= near_zero) / flat.numel()
    dims = [d for d in range(x.dim()) if d != 1]
    dead = (scratch.view_as(x).amax(dim=dims) <= near_zero).sum() / x.shape[1]
    torch.sub(flat, low, out=scratch).mul_(bins / (high - low)).floor_().clamp_(0, bins - 1)
    hist = torch.bincount(scratch.to(torch.int32), minlength=bins)
    head = torch.stack([mean, std, near, dead])
    return torch.cat([head.double(), hist.double()]).cpu().numpy()


class TrainingRecorder:
    """Per-step summaries of selected modules' outputs during training (see the module docstring).

    >>> with TrainingRecorder(model, names=["block1", "block2"]) as rec:
    ...     fit(model, data, steps=100)
    >>> rec.stat("std", "block2").shape, rec.histogram("block2").shape
    ((100,), (40, 100))
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str] | None = None,
        layer_type: LayerType = nn.ReLU,
        bins: int = 40,
        value_range: tuple[float, float] = (0.0, 4.0),
        near_zero: float = 1e-2,
        gradients: bool = False,
        training_only: bool = True,
    ) -> None:
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}.")
        low, high = value_range
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}.")
        if near_zero < 0:
            raise ValueError(f"near_zero is a distance from 0 and cannot be negative, got {near_zero}.")
        self.model = model
        self.layers = _select_modules(model, layer_type, names)
        self.names = [name for name, _ in self.layers]
        self.low, self.high, self.bins = float(low), float(high), int(bins)
        self.edges = np.linspace(low, high, bins + 1)
        self.near_zero = near_zero
        self.record_gradients = gradients
        self.training_only = training_only
        self.steps = 0
        self._rows: dict[str, list[np.ndarray]] = {name: [] for name in self.names}
        self._grad_norms: dict[str, list[float]] = {name: [] for name in self.names}
        self._handles: list[RemovableHandle] = []
        self._tensor_handles: list[RemovableHandle] = []

    # -- registration: the object that registers is the object that removes ----
    def __enter__(self) -> "TrainingRecorder":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def is_active(self) -> bool:
        return bool(self._handles)

    def start(self) -> "TrainingRecorder":
        """Attach the hooks, after removing those of an earlier recorder of this package on the model."""
        earlier = _active_recorders.pop(self.model, None)
        if earlier is not None:
            earlier.stop()
        self._handles = [self.model.register_forward_pre_hook(self._on_model_call)] + [
            module.register_forward_hook(self._make_hook(name)) for name, module in self.layers
        ]
        _active_recorders[self.model] = self
        return self

    def stop(self) -> None:
        """Remove every hook this recorder added (module hooks and pending tensor hooks). Safe to call twice."""
        while self._handles:
            self._handles.pop().remove()
        self._drop_tensor_hooks()
        if _active_recorders.get(self.model) is self:
            _active_recorders.pop(self.model)

    def _drop_tensor_hooks(self) -> None:
        while self._tensor_handles:
            self._tensor_handles.pop().remove()

    # -- the hooks --------------------------------------------------------
    def _recording(self, module: nn.Module) -> bool:
        return module.training or not self.training_only

    def _on_model_call(self, module: nn.Module, args) -> None:
        if self._recording(module):
            self.steps += 1
            self._drop_tensor_hooks()  # the last step's graph is gone; so are its tensors

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            if not self._recording(self.model):
                return
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"TrainingRecorder needs modules that return one tensor; {name!r} "
                                f"returned {type(output).__name__}.")
            self._rows[name].append(summarize(output, self.low, self.high, self.bins, self.near_zero))
            if self.record_gradients and output.requires_grad:
                norms = self._grad_norms[name]
                self._tensor_handles.append(output.register_hook(lambda g: norms.append(float(g.norm()))))

        return hook

    # -- access -----------------------------------------------------------
    def stat(self, stat: str, layer: str) -> np.ndarray:
        """One value per step: ``"mean"``, ``"std"``, ``"near_zero"``, ``"dead"`` or ``"grad_norm"``."""
        rows = self._layer_rows(layer)
        if stat == "grad_norm":
            if not self.record_gradients:
                raise RuntimeError("No gradient norms: record with gradients=True.")
            return np.array(self._grad_norms[layer], dtype=np.float64)
        if stat not in STATS:
            raise KeyError(f"Unknown statistic {stat!r}; choose from {', '.join(STATS)} or grad_norm.")
        return rows[:, STATS.index(stat)] if len(rows) else np.zeros(0)

    def histogram(self, layer: str) -> np.ndarray:
        """Counts, bins × steps (value bins down the rows, steps along the columns)."""
        rows = self._layer_rows(layer)
        return rows[:, len(STATS):].T if len(rows) else np.zeros((self.bins, 0))

    def _layer_rows(self, layer: str) -> np.ndarray:
        if layer not in self._rows:
            raise KeyError(f"{layer!r} is not watched; watched: {', '.join(self.names)}.")
        return np.stack(self._rows[layer]) if self._rows[layer] else np.zeros((0, len(STATS)))

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored summaries (no activations are kept)."""
        rows = sum(row.nbytes for rows in self._rows.values() for row in rows)
        return rows + 8 * sum(len(norms) for norms in self._grad_norms.values())

    def __repr__(self) -> str:
        state = "active" if self.is_active else "stopped"
        return f"TrainingRecorder({len(self.names)} modules, {self.steps} steps, {state})"


# -- training ------------------------------------------------------------------

@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one CPU thread, then restore the thread count as found.

    How a convolution splits its sums between threads changes the rounding, and
    training amplifies the difference: on one thread the same seed gives the
    same numbers on any number of cores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, lr: float = 0.05,
        batch_size: int = 64, seed: int = 0, after_step: Callable[[int], None] | None = None) -> list[float]:
    """Train with SGD (momentum 0.9) on random mini-batches; return the loss of every step.

    The batches come from a generator seeded with ``seed``. ``after_step(step)``, if given, is called
    after each optimizer step (step 0, 1, …), e.g. to measure how much the weights moved. The model is put in
    training mode and left in the mode it was found in; grad mode is enabled inside.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    was_training = model.training
    losses = []
    model.train()
    try:
        with torch.enable_grad():
            for _ in range(steps):
                batch = torch.randint(0, len(labels), (batch_size,), generator=generator)  # pragma: no mutate (randint(high, ...) starts at 0 too: equivalent)
                loss = F.cross_entropy(model(images[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                if after_step is not None:
                    after_step(len(losses) - 1)
    finally:
        model.train(was_training)
    return losses


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of correct top-1 predictions, in eval mode and without grad (modes restored)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float((model(images).argmax(dim=1) == labels).double().mean())
    finally:
        model.train(was_training)


# -- plots -----------------------------------------------------------------------

def _as_runs(runs: TrainingRecorder | Mapping[str, TrainingRecorder]) -> dict[str, TrainingRecorder]:
    return dict(runs) if isinstance(runs, Mapping) else {"": runs}


def _layer_colour(number: int, count: int):
    """Shallow layers dark, deep layers light: viridis, stopping before its pale yellow end."""
    return plt.get_cmap("viridis")(0.85 * number / max(count - 1, 1))


def _panel_grid(n_rows: int, n_cols: int, width: float, height: float):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), layout="constrained", squeeze=False)
    return fig, axes


def plot_mean_std(runs: TrainingRecorder | Mapping[str, TrainingRecorder], log: bool = True) -> Figure:
    """Mean (top row) and std (bottom row) of every watched layer over the steps, one column per run.

    Each row shares its y axis, on a log scale by default, so a collapse to 1e-6 and a healthy 1 are
    both readable and directly comparable between runs.
    """
    runs = _as_runs(runs)
    fig, axes = _panel_grid(2, len(runs), 3.4 * len(runs) + 0.6, 5.2)
    for column, (label, rec) in enumerate(runs.items()):
        for row, stat in enumerate(("mean", "std")):
            ax = axes[row, column]
            for number, layer in enumerate(rec.names):
                ax.plot(rec.stat(stat, layer), lw=1.2, color=_layer_colour(number, len(rec.names)), label=layer)
            if log:
                ax.set_yscale("log")
            ax.set(title=f"{label}: {stat}" if label else stat, xlabel="training step" if row else None)
            ax.grid(alpha=0.3)
    for row in range(2):
        _share_limits(axes[row])
    axes[0, -1].legend(fontsize=7, loc="best")
    axes[0, 0].set_ylabel("activation mean")
    axes[1, 0].set_ylabel("activation std")
    return fig


def _share_limits(axes) -> None:
    low = min(ax.get_ylim()[0] for ax in axes)
    high = max(ax.get_ylim()[1] for ax in axes)
    for ax in axes:
        ax.set_ylim(low, high)


def histogram_image(rec: TrainingRecorder, layer: str) -> np.ndarray:
    """What ``plot_histograms`` draws for a layer: log(1 + count), bins × steps (bin 0 = lowest values)."""
    return np.log1p(rec.histogram(layer))


def plot_histograms(runs: TrainingRecorder | Mapping[str, TrainingRecorder]) -> Figure:
    """fastai's "colourful dimension" view: one image per layer and run, steps on x, value bins on y.

    The colour is log(1 + count) with one scale for all panels (viridis), so a run whose values
    all sit in the lowest bin shows a single bright line at the bottom.
    """
    runs = _as_runs(runs)
    first = next(iter(runs.values()))
    images = {(label, layer): histogram_image(rec, layer) for label, rec in runs.items() for layer in rec.names}
    norm = Normalize(0.0, max(float(image.max()) for image in images.values()))
    fig, axes = _panel_grid(len(runs), len(first.names), 2.0 * len(first.names) + 1.0, 1.9 * len(runs) + 0.6)
    low, high = float(first.edges[0]), float(first.edges[-1])
    for r, (label, rec) in enumerate(runs.items()):
        for c, layer in enumerate(rec.names):
            ax = axes[r, c]
            shown = ax.imshow(images[label, layer], origin="lower", aspect="auto", cmap="viridis", norm=norm,
                              extent=(0, max(rec.steps, 1), low, high), interpolation="nearest")
            if r == 0:
                ax.set_title(layer, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{label}\nactivation value" if label else "activation value", fontsize=9)
            if r == len(runs) - 1:
                ax.set_xlabel("step")
    fig.colorbar(shown, ax=axes, shrink=0.9, label="log(1 + count)")
    return fig


def plot_dead_fraction(runs: TrainingRecorder | Mapping[str, TrainingRecorder], stat: str = "near_zero") -> Figure:
    """The fraction of near-zero values (``stat="near_zero"``) or dead channels (``"dead"``) per layer over steps."""
    if stat not in ("near_zero", "dead"):
        raise ValueError(f"stat must be 'near_zero' or 'dead', got {stat!r}.")
    runs = _as_runs(runs)
    fig, axes = _panel_grid(1, len(runs), 3.4 * len(runs) + 0.6, 2.8)
    for ax, (label, rec) in zip(axes[0], runs.items()):
        for number, layer in enumerate(rec.names):
            ax.plot(rec.stat(stat, layer), lw=1.2, color=_layer_colour(number, len(rec.names)), label=layer)
        what = "values near zero" if stat == "near_zero" else "dead channels"
        ax.set(title=f"{label}: {what}" if label else what, xlabel="training step", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("fraction")
    axes[0, -1].legend(fontsize=7, loc="best")
    return fig
