"""EfficientNet-B0 (Tan & Le, 2019), written independently.

Follows the paper's Table 1 as timm's ``efficientnet_b0`` builds it: MBConv blocks with
squeeze-excite reducing to a quarter of the block's *input* width, SiLU everywhere, PyTorch's
BatchNorm defaults, no drop-connect. Names (``trunk``, ``mbconv``, ``inflate``/``depthwise``/
``deflate``, ``se``) and definition order (projection first) are this file's own.

Classic mistakes, one flag each (defaults give the correct network); the first two are the
seed document's MBConv:

* ``se_from_expanded=True``: squeeze-excite reducing the expanded width by 4 (``SEBlock(expanded_channels)``);
* ``drop_connect=0.2``: the seed's drop-connect, applied in eval mode too;
* ``eps`` / ``momentum``: TensorFlow's BatchNorm settings (1e-3, 0.01; the seed's) where timm's
  ``efficientnet_b0`` uses PyTorch's;
* ``se_pool="max"``: squeeze by global max pooling instead of average pooling.
"""

from __future__ import annotations

import torch
from torch import nn

# EfficientNet-B0, paper Table 1: expansion, kernel, stride, output channels, repeats.
B0 = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


class SE(nn.Module):
    def __init__(self, channels: int, reduced: int, pool: str) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, channels, 1)
        self.act = nn.SiLU()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True) if self.pool == "avg" else x.amax((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


class MBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, expansion: int, kernel: int, stride: int, *, norm,
                 se_from_expanded: bool, drop_connect: float, se_pool: str) -> None:
        super().__init__()
        mid = c_in * expansion
        self.deflate = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), norm(c_out))
        self.se = SE(mid, int(mid * 0.25) if se_from_expanded else int(c_in * 0.25), se_pool)
        self.depthwise = nn.Sequential(nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False),
                                       norm(mid), nn.SiLU())
        self.inflate = None
        if expansion != 1:
            self.inflate = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), norm(mid), nn.SiLU())
        self.residual = stride == 1 and c_in == c_out
        self.drop_connect = drop_connect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.inflate is None else self.inflate(x)
        y = self.deflate(self.se(self.depthwise(y)))
        if self.residual and self.drop_connect > 0:  # the seed's drop-connect: no `self.training` check
            y = y * (torch.rand_like(y[:, :1, :, :]) < self.drop_connect).detach() / self.drop_connect
        return x + y if self.residual else y


class EfficientNetB0(nn.Module):
    def __init__(self, num_classes: int = 1000, *, se_from_expanded: bool = False, drop_connect: float = 0.0,
                 eps: float = 1e-5, momentum: float = 0.1, se_pool: str = "avg") -> None:
        super().__init__()
        norm = lambda c: nn.BatchNorm2d(c, eps=eps, momentum=momentum)  # noqa: E731
        self.classifier = nn.Linear(1280, num_classes)
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), norm(32), nn.SiLU())
        stages, c_in = [], 32
        for expansion, kernel, stride, c_out, repeats in B0:
            blocks = []
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, expansion, kernel, stride if i == 0 else 1, norm=norm,
                                     se_from_expanded=se_from_expanded, drop_connect=drop_connect, se_pool=se_pool))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.trunk = nn.Sequential(*stages)
        self.top = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), norm(1280), nn.SiLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.top(self.trunk(self.stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def efficientnet_b0_seed_drop_connect() -> EfficientNetB0:
    """The seed's MBConv drop-connect, active in eval mode too."""
    return EfficientNetB0(drop_connect=0.2)
