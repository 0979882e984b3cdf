"""Layers shared by the hand-written families. Imports torch only."""

from __future__ import annotations

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
