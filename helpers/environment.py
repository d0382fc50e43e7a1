"""One readable report of the software, the device and the weights in use."""

from __future__ import annotations

import sys

import torch
import torchvision

from .models import pick_device, weights_info


def on_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules  # Colab's kernel imports it at start


def describe_environment(model: torch.nn.Module | None = None) -> str:
    """Versions, device and (when a model is given) which weights it carries."""
    device = pick_device()
    lines = [
        f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
    ]
    if device.type == "cpu" and on_colab():
        lines.append("No GPU: in Colab choose Runtime > Change runtime type > T4 GPU, then run all cells again.")
    if model is not None:
        lines.append(f"weights: {weights_info(model)}")
    return "\n".join(lines)
