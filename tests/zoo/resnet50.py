"""ResNet-50 (He et al., 2015) written independently of ``repro.models.resnet``.

Names (``stem``, ``stages.N.M``, ``squeeze``/``spatial``/``unsqueeze``, ``bypass``, ``logits``)
share nothing with timm's or torchvision's (``conv1``, ``layer1``, ``downsample``, ``fc``); every
block defines its normalizations before its convolutions and computes its shortcut first.

Classic mistakes, one flag each (defaults give the correct network):

* ``stride_in_reduce``: stride 2 on the first 1x1 convolution (original Caffe ResNet, "v1")
  instead of on the 3x3 (torchvision's and timm's "v1.5");
* ``eps`` / ``momentum``: BatchNorm settings other than PyTorch's 1e-5 / 0.1 (``eps_stage``
  limits the eps mistake to one stage);
* ``relu_after_add=False``: no ReLU after the residual addition;
* ``bypass_norm=False``: a projection shortcut without its BatchNorm;
* ``head_pool="max"``: global max pooling instead of average pooling.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

WIDTHS = (64, 128, 256, 512)  # bottleneck width of each stage (paper, Table 1)
DEPTHS = (3, 4, 6, 3)  # ResNet-50
EXPANSION = 4


class Unit(nn.Module):
    def __init__(self, c_in: int, width: int, stride: int, *, eps: float, momentum: float,
                 stride_in_reduce: bool, relu_after_add: bool, bypass_norm: bool) -> None:
        super().__init__()
        c_out = width * EXPANSION
        norm = lambda c: nn.BatchNorm2d(c, eps=eps, momentum=momentum)  # noqa: E731
        self.bypass = None
        if stride != 1 or c_in != c_out:
            layers = OrderedDict(proj=nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False))
            if bypass_norm:
                layers["norm"] = norm(c_out)
            self.bypass = nn.Sequential(layers)
        self.unsqueeze_norm = norm(c_out)
        self.spatial_norm = norm(width)
        self.squeeze_norm = norm(width)
        self.unsqueeze = nn.Conv2d(width, c_out, 1, bias=False)
        self.spatial = nn.Conv2d(width, width, 3, stride=1 if stride_in_reduce else stride, padding=1, bias=False)
        self.squeeze = nn.Conv2d(c_in, width, 1, stride=stride if stride_in_reduce else 1, bias=False)
        self.act = nn.ReLU()
        self.relu_after_add = relu_after_add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.bypass is None else self.bypass(x)
        y = self.act(self.squeeze_norm(self.squeeze(x)))
        y = self.act(self.spatial_norm(self.spatial(y)))
        y = skip + self.unsqueeze_norm(self.unsqueeze(y))
        return self.act(y) if self.relu_after_add else y


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000, *, eps: float = 1e-5, momentum: float = 0.1,
                 eps_stage: int | None = None, stride_in_reduce: bool = False, relu_after_add: bool = True,
                 bypass_norm: bool = True, head_pool: str = "avg") -> None:
        super().__init__()
        self.logits = nn.Linear(WIDTHS[-1] * EXPANSION, num_classes)
        default = dict(eps=1e-5, momentum=momentum)
        wrong = dict(eps=eps, momentum=momentum)
        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
            norm=nn.BatchNorm2d(64, **(wrong if eps_stage is None else default)),
            act=nn.ReLU(),
            pool=nn.MaxPool2d(3, stride=2, padding=1),
        ))
        stages, c_in = [], 64
        for index, (width, depth) in enumerate(zip(WIDTHS, DEPTHS, strict=True)):
            settings = wrong if eps_stage in (None, index) else default
            units = []
            for i in range(depth):
                units.append(Unit(c_in, width, 2 if i == 0 and index > 0 else 1, stride_in_reduce=stride_in_reduce,
                                  relu_after_add=relu_after_add, bypass_norm=bypass_norm, **settings))
                c_in = width * EXPANSION
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1) if head_pool == "avg" else nn.AdaptiveMaxPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.logits(x.flatten(1))


def resnet50_no_relu_after_add() -> ResNet50:
    return ResNet50(relu_after_add=False)
