"""Shared test helpers."""

from __future__ import annotations

import torch
from torch import nn


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_unchanged(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(snapshot)
    changed = [k for k in state if not torch.equal(state[k], snapshot[k])]
    assert not changed, f"tensors changed: {changed[:5]}"


def aten_ops(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The aten operators an eval forward pass issues, in order."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    model.eval()
    with torch.inference_mode(), Record() as record:
        model(x)
    return record.ops
