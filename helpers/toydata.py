"""A dataset made on the spot and a small CNN that learns it in seconds, offline.

**The images.** ``gabor_patches(n, seed)`` draws ``n`` grey 32×32 images. Each
holds one *Gabor patch* (a striped grating under a round Gaussian window) at a
random position, with random stripe width, phase and contrast, on Gaussian
noise. The class is the orientation of the stripes: ``CLASSES`` lists the four
(horizontal, ``/``, vertical, ``\\``, as drawn by ``imshow`` with row 0 at the top), each jittered by up to ±10°. Position,
width and phase carry no information, so a network must learn orientation
detectors, and the patch gives an attribution map somewhere to point.

Everything comes from one ``torch.Generator`` seeded with ``seed``: the same
seed gives the same tensors. Classes are balanced (``n`` divisible by 4 gives
exactly ``n / 4`` each). ``train_and_test`` makes two such sets from different
seeds, so the held-out images are never seen in training.

**The model.** ``small_cnn()`` is an ``nn.Sequential`` with named parts:
``block1`` … ``block5`` (each conv → optional BatchNorm → ReLU), then
``pool``, ``flatten`` and the classifier ``fc``. ``initialize(model, scheme)``
sets the conv and linear weights: ``"kaiming"`` (He et al., 2015) or
``"normal"`` with a fixed ``std`` (e.g. 0.01, too small for this depth).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = ["CLASSES", "Images", "PatchParameters", "displayable", "gabor", "gabor_patches", "initialize",
           "patch_parameters", "small_cnn", "train_and_test"]

CLASSES = ("horizontal", "diagonal /", "vertical", "diagonal \\")
SIZE = 32


class Images(NamedTuple):
    """Images N×1×32×32 (float32) and their class indices N (int64)."""

    images: torch.Tensor
    labels: torch.Tensor


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


class PatchParameters(NamedTuple):
    """What ``gabor_patches`` drew for each image (all tensors of length N; angles in radians)."""

    labels: torch.Tensor
    angle: torch.Tensor
    wavelength: torch.Tensor
    phase: torch.Tensor
    centre_x: torch.Tensor
    centre_y: torch.Tensor
    radius: torch.Tensor     # the σ of the round Gaussian window, in pixels
    contrast: torch.Tensor


def _draw_parameters(n: int, g: torch.Generator) -> PatchParameters:
    labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    # Stripes of class k run at k·45° counter-clockwise from horizontal *as displayed* (imshow's row 0 at the
    # top, so y points down): the stripes run along (cos θ, -sin θ) and the wave travels along its normal.
    angle = labels * (math.pi / 4) + _uniform(n, -1, 1, g) * math.radians(10)
    wavelength = _uniform(n, 4.0, 8.0, g)
    phase = _uniform(n, 0, 2 * math.pi, g)
    centre_x, centre_y = _uniform(n, 8, SIZE - 8, g), _uniform(n, 8, SIZE - 8, g)
    radius = _uniform(n, 3.5, 6.0, g)
    contrast = _uniform(n, 0.6, 1.2, g)
    return PatchParameters(labels, angle, wavelength, phase, centre_x, centre_y, radius, contrast)


def patch_parameters(n: int, seed: int) -> PatchParameters:
    """The patch of each image of ``gabor_patches(n, seed)``: where it is, its σ, angle, … (no pixels drawn)."""
    if n < len(CLASSES) or n % len(CLASSES):
        raise ValueError(f"n must be a positive multiple of {len(CLASSES)} (balanced classes), got {n}.")
    return _draw_parameters(n, torch.Generator().manual_seed(seed))


def gabor_patches(n: int, seed: int, noise: float = 0.4) -> Images:
    """``n`` images of one oriented Gabor patch on noise; the label is the orientation (see module doc)."""
    if n < len(CLASSES) or n % len(CLASSES):
        raise ValueError(f"n must be a positive multiple of {len(CLASSES)} (balanced classes), got {n}.")
    if noise < 0:
        raise ValueError(f"noise is a standard deviation and cannot be negative, got {noise}.")
    g = torch.Generator().manual_seed(seed)
    labels, angle, wavelength, phase, centre_x, centre_y, radius, contrast = _draw_parameters(n, g)

    patches = gabor(angle, wavelength, phase, centre_x, centre_y, radius, contrast)
    images = patches + noise * torch.randn(n, SIZE, SIZE, generator=g)
    return Images(images.unsqueeze(1).float(), labels)


def gabor(angle: torch.Tensor, wavelength: torch.Tensor, phase: torch.Tensor, centre_x: torch.Tensor,
          centre_y: torch.Tensor, radius: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """Noise-free Gabor patches, N×32×32, from N values of each parameter (angle in radians, as drawn by
    ``imshow``: counter-clockwise from horizontal; lengths in pixels). ``gabor_patches`` draws these at random."""
    coords = torch.arange(SIZE, dtype=torch.float32)
    y, x = coords.view(1, SIZE, 1), coords.view(1, 1, SIZE)
    dx, dy = x - centre_x.view(-1, 1, 1), y - centre_y.view(-1, 1, 1)
    across = dx * torch.sin(angle).view(-1, 1, 1) + dy * torch.cos(angle).view(-1, 1, 1)
    wave = torch.cos(2 * math.pi * across / wavelength.view(-1, 1, 1) + phase.view(-1, 1, 1))
    window = torch.exp(-(dx**2 + dy**2) / (2 * radius.view(-1, 1, 1) ** 2))
    return contrast.view(-1, 1, 1) * window * wave


def train_and_test(n_train: int = 2048, n_test: int = 512, seed: int = 0) -> tuple[Images, Images]:
    """A training set and a held-out set, drawn from the seeds ``seed`` and ``seed + 1``."""
    return gabor_patches(n_train, seed), gabor_patches(n_test, seed + 1)


def _block(c_in: int, c_out: int, kernel: int, stride: int, batchnorm: bool) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def small_cnn(batchnorm: bool = False, widths: tuple[int, ...] = (16, 16, 32, 32, 32),
              n_classes: int = len(CLASSES)) -> nn.Sequential:
    """Five conv blocks (5×5 then 3×3; strides 2, 1, 2, 1, 1: 32×32 → 16×16 → 8×8), global average pool, linear.

    Parameters are PyTorch's defaults; call ``initialize`` to choose the scheme.
    """
    if len(widths) != 5:
        raise ValueError(f"widths needs one channel count per block (5), got {widths}.")
    kernels, strides = (5, 3, 3, 3, 3), (2, 1, 2, 1, 1)
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    c_in = 1
    for i, (c_out, k, s) in enumerate(zip(widths, kernels, strides), start=1):
        parts[f"block{i}"] = _block(c_in, c_out, k, s, batchnorm)
        c_in = c_out
    parts["pool"] = nn.AdaptiveAvgPool2d(1)
    parts["flatten"] = nn.Flatten()
    parts["fc"] = nn.Linear(c_in, n_classes)
    return nn.Sequential(parts)


def initialize(model: nn.Module, scheme: str = "kaiming", std: float = 0.01, seed: int = 0) -> nn.Module:
    """Re-draw every conv and linear weight (biases 0), reproducibly from ``seed``; returns ``model``.

    ``"kaiming"``: normal with std √(2 / fan_in), which keeps the scale of ReLU
    activations constant with depth (He et al., 2015). ``"normal"``: normal
    with the given ``std`` for every layer, whatever its fan-in.
    BatchNorm layers keep weight 1 and bias 0.
    """
    if scheme not in ("kaiming", "normal"):
        raise ValueError(f"scheme must be 'kaiming' or 'normal', got {scheme!r}.")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                scale = math.sqrt(2.0 / fan_in) if scheme == "kaiming" else std
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * scale)
                if module.bias is not None:
                    module.bias.zero_()
    return model


def displayable(image: torch.Tensor) -> np.ndarray:
    """A grey 1×1×H×W, 1×H×W or H×W image as H×W×3 floats in [0, 1] (scaled by its own min and max),
    for ``helpers.attribution.overlay``."""
    pixels = torch.as_tensor(image).detach().cpu().float().squeeze()
    if pixels.dim() != 2:
        raise ValueError(f"displayable() needs one grey image, got shape {tuple(torch.as_tensor(image).shape)}.")
    low, span = pixels.min(), pixels.max() - pixels.min()
    scaled = (pixels - low) / span if span > 0 else torch.zeros_like(pixels)
    return scaled.unsqueeze(-1).expand(-1, -1, 3).numpy()
