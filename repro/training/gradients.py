"""Do gradients vanish in a deep plain network? Gradient sizes along the depth of a freshly initialized net.

Seed section 9 asks why residual connections relieve vanishing gradients ("分析残差连接为什么能缓解
梯度消失问题"). That presupposes that, without them, the gradient reaching the early layers is small.
``block_input_gradients`` measures it: one train-mode forward and backward pass (BatchNorm on batch
statistics, as in training) of a cross-entropy loss, recording the root-mean-square gradient of the
loss with respect to each block's input. A ratio first block / last block below 1 means the gradient
shrinks toward the input (vanishes); above 1, it grows (explodes).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def block_input_gradients(
    model: nn.Module, block_type: type[nn.Module], x: torch.Tensor, y: torch.Tensor
) -> list[float]:
    """RMS gradient of the cross-entropy loss with respect to the input of each ``block_type`` module of
    ``model``, in forward order, from one train-mode pass on ``(x, y)``. The model is left in train mode,
    with its parameters' gradients (and BatchNorm running statistics) as that one pass made them."""
    blocks = [m for m in model.modules() if isinstance(m, block_type)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no {block_type.__name__} module")
    grads: dict[int, float] = {}

    def record(i: int):
        def pre_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            inputs[0].register_hook(lambda g: grads.__setitem__(i, float(g.pow(2).mean().sqrt())))

        return pre_hook

    handles = [b.register_forward_pre_hook(record(i)) for i, b in enumerate(blocks)]
    try:
        model.train()
        F.cross_entropy(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    return [grads[i] for i in range(len(blocks))]
