"""Feature visualisation: optimise an input to excite one unit, read through a forward hook.

``visualize(model, layer, unit)`` starts from noise (``init_std``) and follows the
gradient of the unit's activation with respect to the **input** (Olah et al.,
2017, "Feature Visualization"). The unit is channel ``unit`` of ``layer``'s
output, averaged over positions (for an N×C output such as ``fc``: that
logit). A forward hook reads the output; nothing else in the model changes
(the parameters' ``.grad`` are not touched, modes are left as found: call
``model.eval()`` first so that BatchNorm uses its running statistics).

Two regularisers, both on by default:

* **L2 penalty** on the pixels (``l2`` × the sum of squared pixels). In a
  ReLU network the activation grows about in proportion to the input's
  scale, so without a penalty the optimum is "the same picture, brighter,
  forever"; the penalty fixes the scale, and the picture is what is left to
  choose. Its size must match the unit's: the objective trades the unit's
  gain against ``l2``, so a unit ten times smaller (a channel mean against
  a logit) needs an ``l2`` about ten times smaller, or the penalty wins and
  the picture stays faint (it still moves away from its start: Adam's steps
  of about ``lr`` per pixel are larger than a faint start).
* **Jitter** (``jitter``): each step shifts the image by a random whole
  number of pixels (circularly) before the forward pass, so the picture must
  excite the unit at neighbouring positions too and cannot exploit one
  alignment with the stride-2 grid (the checkerboard-like high-frequency
  patterns of unregularised optimisation).

**The start.** A unit that is exactly 0 on the starting image (a ReLU channel
whose input stays below threshold on faint noise) has gradient 0 there and
gets no pull towards the unit (only the penalty acts, shrinking the picture
towards 0); ``visualize`` warns (``RuntimeWarning``) and a larger
``init_std`` (e.g. the data's noise level) gives it a start.

``dominant_orientation(image)`` reads the orientation of stripes from the
image's power spectrum, in the convention of ``helpers.toydata`` (degrees
counter-clockwise from horizontal as drawn by ``imshow``, in [0, 180)).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from .interventions import find_module

__all__ = ["dominant_orientation", "nearest_class", "visualize"]


def visualize(model: nn.Module, layer: str, unit: int, shape: tuple[int, ...] = (1, 1, 32, 32), steps: int = 60,
              lr: float = 0.05, l2: float = 0.05, jitter: int = 2, seed: int = 0,
              init_std: float = 0.01) -> torch.Tensor:
    """The input (of ``shape``, batch 1) that maximises ``unit`` of ``layer`` minus ``l2``·Σx², by Adam.

    It starts from ``init_std`` × standard normal noise (seeded by ``seed``); warns if the unit's gradient
    is 0 on that start (the picture would not move towards the unit: give a larger ``init_std``).
    """
    if steps < 1 or lr <= 0 or l2 < 0 or jitter < 0 or init_std < 0:
        raise ValueError(f"need steps ≥ 1, lr > 0, l2 ≥ 0, jitter ≥ 0 and init_std ≥ 0; "
                         f"got {steps}, {lr}, {l2}, {jitter}, {init_std}.")
    module = find_module(model, layer)
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    image = (init_std * torch.randn(shape, generator=generator)).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=lr)
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, args, output: seen.append(output))
    try:
        with torch.enable_grad():
            for step in range(steps):
                dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
                seen.clear()
                model(torch.roll(image, shifts=(dy, dx), dims=(-2, -1)))
                if not seen:
                    raise RuntimeError(f"{layer!r} did not run in the forward pass.")
                output = seen[0]
                if unit >= output.shape[1] or unit < 0:
                    raise IndexError(f"{layer!r} has {output.shape[1]} channels; there is no unit {unit}.")
                activation = output[0, unit].mean()
                (gain,) = torch.autograd.grad(activation, image, allow_unused=True)
                if step == 0 and (gain is None or not bool(gain.any())):
                    warnings.warn(f"unit {unit} of {layer!r} has gradient 0 on the starting image (init_std="
                                  f"{init_std}): the picture will not move towards it. Start from larger noise, "
                                  "e.g. init_std at the data's noise level.", RuntimeWarning, stacklevel=2)
                gain = torch.zeros_like(image) if gain is None else gain
                image.grad = -gain + 2 * l2 * image.detach()  # the gradient of -(activation - l2·Σx²)
                optimizer.step()
    finally:
        handle.remove()
    return image.detach().cpu()


def dominant_orientation(image: torch.Tensor) -> tuple[float, float]:
    """(angle in degrees in [0, 180), strength in [0, 1]) of the stripes in a grey image (H×W, or 1×1×H×W).

    Each spatial frequency (fx, fy) of the power spectrum stands for stripes at angle atan2(fx, fy); the
    angles are averaged as doubled angles weighted by power, so 0° and 180° agree. Strength 1 means all
    power at one orientation, 0 none preferred.
    """
    pixels = torch.as_tensor(image).detach().cpu().double().squeeze()
    if pixels.dim() != 2:
        raise ValueError(f"dominant_orientation() needs one grey image, got shape {tuple(image.shape)}.")
    power = torch.fft.fft2(pixels - pixels.mean()).abs().square()
    fy = torch.fft.fftfreq(pixels.shape[0], dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(pixels.shape[1], dtype=torch.float64).view(1, -1)
    angle = torch.atan2(fx, fy)  # y points down, as in imshow: horizontal stripes vary along y only
    total = power.sum()
    if total == 0:
        return 0.0, 0.0
    z = complex((power * torch.cos(2 * angle)).sum() / total, (power * torch.sin(2 * angle)).sum() / total)
    return math.degrees(math.atan2(z.imag, z.real) / 2) % 180.0, abs(z)


def nearest_class(angle: float, n_classes: int = 4) -> int:
    """The class whose orientation (class k at k·180/n_classes degrees) is nearest to ``angle``."""
    return int(round(angle / (180.0 / n_classes))) % n_classes
