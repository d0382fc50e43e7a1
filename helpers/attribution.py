"""Which parts of the image drive a prediction: Grad-CAM, gradient saliency, overlays and top-k classes.

Grad-CAM (Selvaraju et al., 2017) needs two tensors from one layer, both
recorded by ``ActivationRecorder(model, names=[layer], gradients=True)``:

* the layer's activation ``A`` (C×h×w), and
* the gradient ``dA`` of a class score (the logit, before softmax) with
  respect to ``A``.

Then, for every sample:

1. **channel weights** ``w_c`` = spatial mean of the gradient of channel *c*;
2. **map** = ReLU(Σ_c w_c · A_c): only what pushes the score *up* is kept;
3. **upsampled** to the image size with bilinear interpolation;
4. **normalised** to [0, 1] by its own minimum and maximum. A constant map
   (for example all zeros, when the ReLU removes everything) becomes all
   zeros, never NaN.

Gradient saliency (Simonyan et al., 2014) is the simplest map: |∂ score / ∂ pixel|,
the largest over the colour channels (``gradient_saliency``).

The map explains the network you give it: with random weights it explains
an untrained network, not "where the cat is".
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Colormap
from torch import nn

from .hooks import ActivationRecorder
from .images import to_displayable
from .models import imagenet_categories

__all__ = [
    "GradCam",
    "cam_weights",
    "grad_cam",
    "grad_cam_for",
    "gradient_saliency",
    "normalize_map",
    "overlay",
    "top_k",
]


def _as_nchw(tensor: torch.Tensor, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(tensor).detach()
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4:
        raise ValueError(f"{what} must be C×h×w or N×C×h×w, got shape {tuple(tensor.shape)}.")
    return tensor.float()


def cam_weights(gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's channel weights: the spatial mean of the gradient, N×C (or C for a C×h×w input)."""
    batched = _as_nchw(gradient, "gradient")
    weights = batched.mean(dim=(2, 3))
    return weights if torch.as_tensor(gradient).dim() == 4 else weights[0]


def normalize_map(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map (…×H×W) to [0, 1] by its own min and max; a constant map becomes 0."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    flat = span == 0
    scaled = (maps - low) / torch.where(flat, torch.ones_like(span), span)
    return torch.where(flat, torch.zeros_like(scaled), scaled)


def grad_cam(
    activation: torch.Tensor,
    gradient: torch.Tensor,
    size: tuple[int, int] | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """The Grad-CAM map from one layer's activation and the gradient of a score with respect to it.

    ``activation`` and ``gradient`` have the same shape, C×h×w or N×C×h×w.
    ``size`` = (H, W) of the image to upsample to (bilinear); ``None`` keeps h×w.
    Returns H×W (or N×H×W) floats, in [0, 1] when ``normalize``.
    """
    acts = _as_nchw(activation, "activation")
    grads = _as_nchw(gradient, "gradient")
    if acts.shape != grads.shape:
        raise ValueError(
            f"activation {tuple(acts.shape)} and gradient {tuple(grads.shape)} must have the same "
            "shape: record both from the same layer and the same forward pass."
        )
    weights = cam_weights(grads)                                  # N×C
    maps = F.relu((weights[:, :, None, None] * acts).sum(dim=1))  # N×h×w
    if size is not None:
        maps = F.interpolate(maps.unsqueeze(1), size=tuple(size), mode="bilinear",
                             align_corners=False).squeeze(1)
    if normalize:
        maps = normalize_map(maps)
    return maps if torch.as_tensor(activation).dim() == 4 else maps[0]


@dataclass(frozen=True)
class GradCam:
    """What ``grad_cam_for`` found: the map and what it explains."""

    cam: torch.Tensor        # H×W in [0, 1], image size
    raw: torch.Tensor        # h×w, ReLU(Σ w_c A_c) before upsampling and normalising
    weights: torch.Tensor    # C channel weights
    layer: str
    target: int
    score: float             # the logit whose gradient was used
    logits: torch.Tensor     # 1×1000, detached, on the CPU


def grad_cam_for(
    model: nn.Module,
    image: torch.Tensor,
    layer: str = "layer4",
    target: int | None = None,
) -> GradCam:
    """Run ``model`` on one image (1×3×H×W), backpropagate a class logit and return its Grad-CAM.

    ``target`` is a class index; ``None`` uses the top class. ``layer`` is a
    module name (``"layer4"``: the output of ResNet's last stage). One forward
    and one backward pass (to the input only: the parameters' ``.grad`` are
    not touched); every hook is removed afterwards.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"grad_cam_for() takes one image, 1×3×H×W; got shape {tuple(image.shape)}.")
    device = next(model.parameters()).device
    # A leaf input that requires grad: autograd.grad with respect to it runs the
    # backward pass through every layer (so the recorder's tensor hooks fire) without
    # computing or touching the parameters' .grad, and works with frozen parameters.
    leaf = image.detach().to(device).requires_grad_(True)
    with torch.enable_grad(), ActivationRecorder(model, names=[layer], gradients=True) as rec:
        logits = model(leaf)
        if target is None:
            target = int(logits[0].argmax())
        score = logits[0, target]
        torch.autograd.grad(score, leaf)
    activation, gradient = rec[layer], rec.gradient(layer)
    return GradCam(
        cam=grad_cam(activation, gradient, size=tuple(image.shape[-2:]))[0],
        raw=grad_cam(activation, gradient, normalize=False)[0],  # pragma: no mutate (normalize=None is falsy too: equivalent)
        weights=cam_weights(gradient)[0],
        layer=layer,
        target=target,
        score=float(score.detach()),
        logits=logits.detach().cpu(),
    )


def gradient_saliency(model: nn.Module, image: torch.Tensor, target: int | None = None) -> torch.Tensor:
    """|∂ logit[target] / ∂ pixel|, max over colour channels: H×W for one image 1×C×H×W.

    ``target=None`` uses the top class. Backpropagates to the input only (the
    parameters' ``.grad`` are left alone); grad mode and training mode are unchanged.
    The image is moved to the model's device; the map comes back on the CPU.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"gradient_saliency() takes one image, 1×C×H×W; got shape {tuple(image.shape)}.")
    device = next(model.parameters()).device
    leaf = image.detach().to(device).requires_grad_(True)
    with torch.enable_grad():
        logits = model(leaf)
        if target is None:
            target = int(logits[0].argmax())
        (grad,) = torch.autograd.grad(logits[0, target], leaf)
    return grad[0].abs().amax(dim=0).cpu()


def overlay(
    image,
    cam,
    cmap: str | Colormap = "viridis",
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a map in [0, 1] (H×W) over a picture; return H×W×3 floats in [0, 1].

    ``image`` is H×W×3 floats in [0, 1] (what ``to_displayable`` returns) or a
    normalised 1×3×H×W / 3×H×W model input, which is passed to
    ``to_displayable`` first. ``alpha`` is the weight of the colour map:
    0 shows only the photo, 1 only the map.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}.")
    if isinstance(image, torch.Tensor):
        image = to_displayable(image)
    picture = np.asarray(image, dtype=np.float32)
    heat = torch.as_tensor(cam).detach().cpu().float().numpy()
    if picture.ndim != 3 or picture.shape[2] != 3:
        raise ValueError(f"image must be H×W×3, got shape {picture.shape}.")
    if heat.shape != picture.shape[:2]:
        raise ValueError(
            f"the map is {heat.shape[0]}×{heat.shape[1]} but the image is "
            f"{picture.shape[0]}×{picture.shape[1]}: compute it with size=image size."
        )
    colors = plt.get_cmap(cmap)(np.clip(heat, 0.0, 1.0))[..., :3].astype(np.float32)
    return np.clip((1.0 - alpha) * picture + alpha * colors, 0.0, 1.0)


def top_k(logits: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable ImageNet classes as (name, probability) pairs, best first.

    ``logits`` are the model's raw outputs for one image (1000 or 1×1000);
    names come from the weights' metadata (``imagenet_categories()``).
    """
    scores = torch.as_tensor(logits).detach().float().cpu()
    if scores.dim() == 2 and scores.shape[0] == 1:
        scores = scores[0]
    categories = imagenet_categories()
    if scores.dim() != 1 or scores.shape[0] != len(categories):
        raise ValueError(
            f"top_k() needs the logits of one image ({len(categories)} values or "
            f"1×{len(categories)}), got shape {tuple(torch.as_tensor(logits).shape)}."
        )
    if not 1 <= k <= len(categories):
        raise ValueError(f"k must be between 1 and {len(categories)}, got {k}.")
    probabilities = scores.softmax(dim=0)
    values, indices = probabilities.topk(k)
    return [(categories[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
