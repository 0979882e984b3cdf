"""Counting multiply-accumulates with torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> int:
    """Multiply-accumulates of one eval forward pass, per batch given (convolutions and matmuls).

    ``torch.utils.flop_counter`` counts 2 FLOPs per multiply-accumulate; papers quote MACs
    (ResNet-50: 4.1 G), so this returns FLOPs / 2. Elementwise ops (BN, activations) are not counted,
    as in the papers.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
