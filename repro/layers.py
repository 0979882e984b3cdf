"""Layers shared by the hand-written families. Imports torch only."""

from __future__ import annotations

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


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """A bias-free convolution followed by BatchNorm: the projection shortcut of ResNet.

    Indexed as ``0`` (conv) and ``1`` (bn), the layout of the references' ``downsample``.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


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
