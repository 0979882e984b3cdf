"""Layers shared by the hand-written families. Imports torch only."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor``, never dropping more than 10%.

    The one channel-rounding rule of MobileNetV2/V3, EfficientNet and the references'
    SE widths (``_make_divisible`` in the MobileNet papers' reference code).
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def init_conv_bn_(model: nn.Module, mode: str = "fan_out") -> None:
    """The initialization every family here shares: He-normal convolution weights (``mode``
    "fan_out", as torchvision's and timm's ResNets, EfficientNets and MobileNets; DenseNet uses
    "fan_in"), zero convolution biases, BatchNorm weight 1 and bias 0. Classifiers differ by
    family and are left to the caller."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """A bias-free convolution followed by BatchNorm: the projection shortcut of ResNet.

    Indexed as ``0`` (conv) and ``1`` (bn), the layout of the references' ``downsample``.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def same_padding(size: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's "SAME" padding along one axis: (before, after), the odd pixel going after.

    The output has ``ceil(size / stride)`` pixels. For a stride-2 convolution the total is often
    odd (a 3x3 on 224 pixels pads 0 before and 1 after), which no symmetric ``padding=`` can express.
    """
    total = max((math.ceil(size / stride) - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow "SAME" padding computed from each input's size (zeros, padded first)."""

    def __init__(self, *args, **kwargs) -> None:
        if kwargs.pop("padding", 0) != 0:
            raise ValueError("Conv2dSame computes its padding; do not pass padding=")
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        return super().forward(nn.functional.pad(x, (left, right, top, bottom)))


def make_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: str = "symmetric",
) -> nn.Conv2d:
    """A convolution padded ``"symmetric"`` (``kernel_size // 2`` each side, PyTorch style) or ``"same"``
    (TensorFlow's). Where "SAME" is symmetric anyway (stride 1, odd kernel) this is a plain ``nn.Conv2d``,
    as in the TensorFlow ports of timm; otherwise a ``Conv2dSame``."""
    if padding == "symmetric" or (padding == "same" and stride == 1 and kernel_size % 2 == 1):
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)
    if padding == "same":
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
    raise ValueError(f"padding must be 'symmetric' or 'same', got {padding!r}")


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., 2018): global pool, 1x1 reduce, activation, 1x1 expand, gate.

    The references build the two fully connected layers as 1x1 convolutions with bias (the seed
    uses ``nn.Linear``; the numbers are the same, and porting reshapes a Linear weight into a
    1x1 conv weight). Each family passes the reduced width it computes and its activation/gate.
    """

    def __init__(
        self,
        channels: int,
        reduced_channels: int,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act = act_layer(inplace=True)
        self.conv_expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * self.gate(scale)


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth (drop-connect): in training, zero whole samples of a residual branch with
    probability ``drop_prob`` and scale the kept ones by ``1 / (1 - drop_prob)``; identity in eval."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    return x * mask.div_(keep_prob)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ConvBnAct(nn.Module):
    """Bias-free convolution, BatchNorm, optional activation: the unit of MobileNet and EfficientNet.

    ``padding`` is ``"symmetric"`` (``kernel_size // 2``) or TensorFlow's ``"same"`` (see ``make_conv2d``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act_layer: type[nn.Module] | None = nn.ReLU,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.conv = make_conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, padding=padding)
        self.bn = norm_layer(out_channels)
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

