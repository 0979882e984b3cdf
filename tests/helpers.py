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
