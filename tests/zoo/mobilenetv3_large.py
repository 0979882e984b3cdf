"""MobileNetV3-Large (Howard et al., 2019, "Searching for MobileNetV3"), written independently.

Follows the paper's Table 1 as timm's ``mobilenetv3_large_100`` builds it: expansion widths
rounded to multiples of 8, squeeze-excite reducing the *expanded* width by 4 (rounded to 8)
with a ReLU and a hard-sigmoid gate, no expansion convolution in the first block. Names
(``features``, ``widen``/``filter``/``narrow``, ``attention``, ``last``, ``pre_logits``) and the
definition order (projection first) are this file's own, and by default the 1x1 convolution
after global pooling is written as the ``nn.Linear`` it amounts to (``linear_head=False``: as
timm's 1x1 convolution, which also computes it with the same kernel, bit for bit).

Classic mistakes, one flag each (defaults give the correct network):

* ``relu6=True``: ReLU6 where the network uses ReLU (MobileNetV2's activation);
* ``gate="keras"``: hard-sigmoid as ``clip(0.2 x + 0.5, 0, 1)`` (Keras / TF1) instead of
  ``relu6(x + 3) / 6`` (the paper, PyTorch, timm).
"""

from __future__ import annotations

import torch
from torch import nn

# MobileNetV3-Large, paper Table 1: kernel, expansion width, output width, SE, activation, stride.
LARGE = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)


def round8(value: float) -> int:
    rounded = max(8, int(value + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * value else rounded


class KerasHardSigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class Attention(nn.Module):
    def __init__(self, channels: int, gate: str) -> None:
        super().__init__()
        reduced = round8(channels / 4)
        self.down = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU()
        self.up = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid() if gate == "pytorch" else KerasHardSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.up(self.relu(self.down(x.mean((2, 3), keepdim=True)))))


class Bneck(nn.Module):
    def __init__(self, c_in: int, kernel: int, expanded: int, c_out: int, se: bool, act: str, stride: int,
                 relu6: bool, gate: str) -> None:
        super().__init__()
        activation = (nn.ReLU6 if relu6 else nn.ReLU) if act == "RE" else nn.Hardswish
        self.narrow_bn = nn.BatchNorm2d(c_out)
        self.narrow = nn.Conv2d(expanded, c_out, 1, bias=False)
        self.attention = Attention(expanded, gate) if se else nn.Identity()
        self.filter = nn.Conv2d(expanded, expanded, kernel, stride, kernel // 2, groups=expanded, bias=False)
        self.filter_bn = nn.BatchNorm2d(expanded)
        self.filter_act = activation()
        if expanded != c_in:
            self.widen = nn.Sequential(nn.Conv2d(c_in, expanded, 1, bias=False), nn.BatchNorm2d(expanded), activation())
        else:
            self.widen = nn.Identity()
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.filter_act(self.filter_bn(self.filter(self.widen(x))))
        y = self.narrow_bn(self.narrow(self.attention(y)))
        return x + y if self.residual else y


class MobileNetV3Large(nn.Module):
    def __init__(self, num_classes: int = 1000, *, relu6: bool = False, gate: str = "pytorch",
                 linear_head: bool = True) -> None:
        super().__init__()
        self.head = nn.Linear(1280, num_classes)
        self.pre_logits = nn.Sequential(
            nn.Linear(960, 1280) if linear_head else nn.Conv2d(960, 1280, 1), nn.Hardswish()
        )
        self.linear_head = linear_head
        self.first = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        blocks, c_in = [], 16
        for kernel, expanded, c_out, se, act, stride in LARGE:
            blocks.append(Bneck(c_in, kernel, expanded, c_out, se, act, stride, relu6, gate))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.last = nn.Sequential(nn.Conv2d(160, 960, 1, bias=False), nn.BatchNorm2d(960), nn.Hardswish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last(self.features(self.first(x)))
        if self.linear_head:
            return self.head(self.pre_logits(x.mean((2, 3))))
        return self.head(self.pre_logits(x.mean((2, 3), keepdim=True)).flatten(1))
