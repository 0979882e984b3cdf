"""Counting multiply-accumulates with torch's own FLOP counter."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

# The in-place random draws nn.init and timm's initializers issue (and erfinv_, of truncated-normal
# draws). On a meta tensor they produce nothing, yet torch runs their Python decompositions to get
# there: 0.8 s of a timm ResNet-152 built on the meta device, and 1.7 s more the first time in a process.
_RANDOM_FILLS = frozenset(getattr(torch.ops.aten, name) for name in (
    "normal_", "uniform_", "bernoulli_", "exponential_", "random_", "log_normal_", "cauchy_", "geometric_", "erfinv_"))


class _MetaRandomFillsAreNoOps(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in _RANDOM_FILLS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]  # what the op returns on meta anyway: the same tensor, no data
        return func(*args, **(kwargs or {}))


def build_on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device: its structure and shapes, no memory, and no initialization
    cost (random fills of meta tensors, which write nothing, are not even dispatched)."""
    with torch.device("meta"), _MetaRandomFillsAreNoOps():
        return build()


def build_on_meta_or_none(build: Callable[[], nn.Module]) -> nn.Module | None:
    """``build_on_meta``, or ``None`` where the constructor computes with tensor values, which meta tensors do
    not hold (``.item()``: RuntimeError; ``.tolist()``, a copy out: NotImplementedError; torchvision's RegNets
    derive their widths so). A constructor that fails on every device raises again where it is built as it is."""
    try:
        return build_on_meta(build)
    except (NotImplementedError, RuntimeError):
        return None


def count_macs(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one eval forward pass, per batch given (convolutions and matmuls).

    ``torch.utils.flop_counter`` counts 2 FLOPs per multiply-accumulate; papers quote MACs
    (ResNet-50: 4.1 G), so this returns FLOPs / 2. Elementwise ops (BN, activations) are not counted,
    as in the papers. The input is made on the model's device: a model built on the meta device
    (shapes only, no initialization cost) is counted without any arithmetic.
    """
    return macs_and_output_shape(model, input_size)[0]


def count_flops(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> int:
    """Floating-point operations of one eval forward pass as ``torch.utils.flop_counter`` counts them: a multiply
    and an add are two, so twice ``count_macs`` (the papers' 'FLOPs' are ``count_macs``)."""
    return 2 * count_macs(model, input_size)


@torch.no_grad()
def macs_and_output_shape(model: nn.Module, input_size: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """``count_macs`` and the output's shape, from the same forward pass."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        output = model(torch.zeros(input_size, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() // 2, tuple(output.shape)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_params(build: Callable[[], nn.Module]) -> int:
    """Parameter count of ``build()`` constructed on the meta device: shapes only, no memory, no initialization cost."""
    return count_params(build_on_meta(build))


def separable_conv_macs(kernel_size: int, in_channels: int, out_channels: int, feature_size: int) -> tuple[int, int]:
    """Seed section 4.2 (MobileNet paper, equations 2 and 5): multiply-accumulates of a standard
    ``D_K x D_K`` convolution from ``M`` to ``N`` channels on a ``D_F x D_F`` output, and of the
    depthwise-separable pair that replaces it (stride 1, output as large as the input):

        standard:  D_K * D_K * M * N * D_F * D_F
        separable: D_K * D_K * M * D_F * D_F + M * N * D_F * D_F

    Returns ``(standard, separable)``; their ratio is the seed's printed speed-up.
    """
    k, m, n, f = kernel_size, in_channels, out_channels, feature_size
    return k * k * m * n * f * f, k * k * m * f * f + m * n * f * f
