"""One training loop for the experiments: SGD with momentum and step decay, as the ResNet paper trains.

Every network of one experiment sees the same mini-batches in the same order with the same
augmentation (the batch stream is seeded by ``Recipe.seed``, separately from the weights), so the
architectures are the only difference between runs.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, TextIO

import torch
from torch import nn
from torch.nn import functional as F

from repro.training.data import ImageData, augment, normalizer


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Recipe:
    """The ResNet paper's CIFAR recipe (section 4.2) by default: batch 128, learning rate 0.1 divided by
    10 at 32k and 48k of 64k iterations (half and three quarters of the run), momentum 0.9, weight
    decay 1e-4, 4-pixel pad-and-crop and flip augmentation. Shorter runs keep the proportions."""

    iterations: int = 64_000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of ``iterations``
    augment: bool = True
    eval_points: int = 10  # held-out evaluations along the run (and one at the end)
    eval_size: int = 2_000  # images per evaluation, from each split
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1 or self.eval_points < 1 or self.eval_size < 1:
            raise ValueError(f"iterations, batch_size, eval_points and eval_size must be positive: {self}")
        if not all(0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of the run in (0, 1), got {self.milestones}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    name: str
    curve: list[dict]  # one row per evaluation point
    final_train_error: float  # eval mode, unaugmented, on up to eval_size training images
    final_test_error: float  # eval mode, on the whole held-out split
    seconds: float


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, batch_size: int = 500
) -> tuple[float, float]:
    """(error, mean loss) of ``model`` in eval mode; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    wrong, loss = 0, 0.0
    for start in range(0, len(x), batch_size):
        xb = (x[start : start + batch_size].float() / 255 - mean) / std
        logits = model(xb)
        yb = y[start : start + batch_size]
        wrong += int((logits.argmax(1) != yb).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    model.train(was_training)
    return wrong / len(x), loss / len(x)


def train(
    model: nn.Module,
    data: ImageData,
    recipe: Recipe,
    name: str = "model",
    device: str | None = None,
    log: TextIO | None = sys.stderr,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` (its parameters with ``requires_grad``) on ``data`` following ``recipe``.

    Curve rows hold, per evaluation point, the training error and loss averaged over the
    mini-batches since the previous point (train mode, augmented: what the network is optimizing)
    and the held-out error on the first ``eval_size`` test images (eval mode).
    """
    device = device or default_device()
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{name}: no trainable parameters (everything is frozen)")
    optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    milestones = sorted({max(1, round(m * recipe.iterations)) for m in recipe.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    mean, std = (t.to(device) for t in normalizer(data))
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    stream = torch.Generator().manual_seed(recipe.seed)  # batch order and augmentation, same for every model
    eval_at = {math.ceil(recipe.iterations * k / recipe.eval_points) for k in range(1, recipe.eval_points + 1)}
    per_epoch = max(1, len(train_x) // recipe.batch_size)

    curve: list[dict] = []
    order = torch.randperm(len(train_x), generator=stream)
    position, interval_wrong, interval_seen, interval_loss = 0, 0, 0, 0.0
    start = time.perf_counter()
    for iteration in range(1, recipe.iterations + 1):
        if position + recipe.batch_size > len(order):
            order, position = torch.randperm(len(train_x), generator=stream), 0
        index = order[position : position + recipe.batch_size].to(device)
        position += recipe.batch_size
        xb = train_x[index].float() / 255
        if recipe.augment:
            xb = augment(xb, stream)
        xb = (xb - mean) / std
        yb = train_y[index]
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: loss became {float(loss)} at iteration {iteration}")
        interval_wrong += int((logits.argmax(1) != yb).sum())
        interval_seen += len(yb)
        interval_loss += float(loss.detach()) * len(yb)
        if on_step is not None:
            on_step(iteration)
        if iteration in eval_at:
            test_error, test_loss = evaluate(model, test_x[: recipe.eval_size], test_y[: recipe.eval_size], mean, std)
            row = {
                "model": name,
                "iteration": iteration,
                "epoch": round(iteration / per_epoch, 3),
                "lr": optimizer.param_groups[0]["lr"],
                "train_error": interval_wrong / interval_seen,
                "train_loss": interval_loss / interval_seen,
                "test_error": test_error,
                "test_loss": test_loss,
                "seconds": round(time.perf_counter() - start, 2),
            }
            curve.append(row)
            interval_wrong, interval_seen, interval_loss = 0, 0, 0.0
            if log is not None:
                print(
                    f"{name:>10} it {iteration:>6}/{recipe.iterations} train err {row['train_error']:.3f} "
                    f"test err {test_error:.3f} ({row['seconds']:.0f}s)",
                    file=log,
                    flush=True,
                )
    final_train_error, _ = evaluate(model, train_x[: recipe.eval_size], train_y[: recipe.eval_size], mean, std)
    final_test_error, _ = evaluate(model, test_x, test_y, mean, std)
    return TrainResult(name, curve, final_train_error, final_test_error, time.perf_counter() - start)
