"""A tiny CNN whose forward pass calls its modules in another order than ``__init__`` defines them.

In ResNet34 definition order and firing order agree, so only a model like this one shows
whether a tool really follows the firing order. ``forward_by_hand`` computes every
intermediate value with torch.nn.functional, without modules or hooks: the independent
answer the recorder's values and gradients are checked against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Firing order, with the name the recorder gives each call of the reused modules.
FIRING_ORDER = ["stem", "act", "mix", "act_1", "mix_1", "head"]
DEFINITION_ORDER = ["head", "mix", "stem", "act"]


class OutOfOrderNet(nn.Module):
    """head, mix, stem, act defined; forward fires stem → act → mix → act → mix → head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.head = nn.Conv2d(4, 3, kernel_size=1)
        self.mix = nn.Conv2d(4, 4, kernel_size=3, padding=1)
        self.stem = nn.Conv2d(2, 4, kernel_size=1)
        self.act = nn.ReLU()
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = self.act(self.mix(x))
        return self.head(self.mix(x))


def forward_by_hand(net: OutOfOrderNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every call's output, named as the recorder names them, computed without calling a module."""
    out = {}
    out["stem"] = F.conv2d(x, net.stem.weight, net.stem.bias)
    out["act"] = out["stem"].clamp(min=0)
    out["mix"] = F.conv2d(out["act"], net.mix.weight, net.mix.bias, padding=1)
    out["act_1"] = out["mix"].clamp(min=0)
    out["mix_1"] = F.conv2d(out["act_1"], net.mix.weight, net.mix.bias, padding=1)
    out["head"] = F.conv2d(out["mix_1"], net.head.weight, net.head.bias)
    return out


def toy_input(seed: int = 1, size: int = 5) -> torch.Tensor:
    return torch.randn(1, 2, size, size, generator=torch.Generator().manual_seed(seed))
