"""Can a block learn the identity? The measurement behind seed section 2.1's claim.

The seed "tests" the claim that a residual block learns an identity mapping more easily by
printing ``|H(x) - x|`` for a randomly initialized plain block and residual block: no learning
happens, and both blocks end in a ReLU, so neither can output the negative half of its ``x ~ N(0, 1)``
input whatever its weights. ``seed_identity_test`` reproduces those numbers to show it.

``identity_fit`` measures what the claim is about: blocks (one, or a stack) are *trained* to
reproduce their input, on non-negative inputs as every block inside a ResNet receives (the output
of a ReLU), and the loss is recorded step by step. Three starting points:

* ``plain``: the seed's PlainBlock (conv-BN-ReLU-conv-BN-ReLU), no shortcut;
* ``residual``: the seed's ResidualBlock, the same layers plus the identity shortcut;
* ``residual, gamma 0``: the residual block with its last BatchNorm scale at zero (timm's
  ``zero_init_last``): at the start it computes ``relu(0 + x) = x``, the identity, exactly.
"""

from __future__ import annotations


from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from repro.models.cifar_resnet import CifarBlock
from repro.plotting import png_bytes, subplots

VARIANTS = ("plain", "residual", "residual, gamma 0")
DATA_SEED_OFFSET = 10_000  # the inputs of seed s come from generator seed DATA_SEED_OFFSET + s


def make_blocks(variant: str, channels: int, blocks: int) -> nn.Sequential:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    stack = nn.Sequential(
        *[CifarBlock(channels, channels, shortcut=None if variant == "plain" else "A") for _ in range(blocks)]
    )
    for m in stack.modules():  # the networks' initialization (He, fan-out; BatchNorm 1 and 0)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    if variant == "residual, gamma 0":
        for block in stack:
            block.zero_init_last()
    return stack


@torch.no_grad()
def seed_identity_test(seed: int = 0) -> dict[str, float]:
    """Seed 2.1 as written: 64 channels, one 56x56 input ``x ~ N(0, 1)``, fresh blocks in train mode
    (modules start in train mode), mean ``|out - x|``; and what the same shows for non-negative input."""
    torch.manual_seed(seed)
    plain, residual = make_blocks("plain", 64, 1), make_blocks("residual", 64, 1)
    zero = make_blocks("residual, gamma 0", 64, 1)
    x = torch.randn(1, 64, 56, 56)
    relu_x = x.clamp(min=0)
    return {
        "plain |H(x) - x|": float((plain(x) - x).abs().mean()),
        "residual |H(x) - x|": float((residual(x) - x).abs().mean()),
        "residual gamma 0 |H(x) - x|": float((zero(x) - x).abs().mean()),
        "best any ReLU-ended block can do, mean |min(x, 0)|": float((x - relu_x).abs().mean()),
        "residual gamma 0 max |H(x) - x| on x >= 0": float((zero(relu_x) - relu_x).abs().max()),
    }


def identity_fit(
    variant: str,
    blocks: int = 1,
    steps: int = 200,
    channels: int = 16,
    size: int = 8,
    batch: int = 16,
    lr: float = 1e-2,
    seed: int = 0,
) -> pd.DataFrame:
    """Train ``blocks`` stacked blocks of ``variant`` to output their input (MSE, Adam), on fresh
    non-negative inputs ``relu(N(0, 1))`` each step. Returns the loss per step, relative to the
    input's mean square (1.0 = no better than outputting zeros), in train mode (what is optimized)
    and, every tenth step, in eval mode on a held-out batch."""
    torch.manual_seed(seed)
    stack = make_blocks(variant, channels, blocks).train()
    optimizer = torch.optim.Adam(stack.parameters(), lr=lr)
    # The same inputs for every variant, from a stream no seed's initialization uses (seed + 1 would be the next
    # seed's weights: the runs would share random numbers).
    data = torch.Generator().manual_seed(DATA_SEED_OFFSET + seed)
    held_out = torch.randn(4 * batch, channels, size, size, generator=data).clamp(min=0)
    rows = []
    for step in range(steps + 1):
        x = torch.randn(batch, channels, size, size, generator=data).clamp(min=0)
        loss = F.mse_loss(stack(x), x)
        row = {
            "variant": variant,
            "blocks": blocks,
            "step": step,
            "relative_mse": float(loss.detach() / x.pow(2).mean()),
        }
        if step % 10 == 0 or step == steps:
            stack.eval()
            with torch.no_grad():
                row["relative_mse_eval"] = float(F.mse_loss(stack(held_out), held_out) / held_out.pow(2).mean())
            stack.train()
        rows.append(row)
        if step < steps:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return pd.DataFrame(rows)


def steps_to(curve: pd.DataFrame, threshold: float) -> int | None:
    """First step whose train-mode relative MSE is at or below ``threshold``; None if never."""
    hit = curve[curve["relative_mse"] <= threshold]
    return int(hit["step"].iloc[0]) if len(hit) else None


def identity_experiment(
    depths: tuple[int, ...] = (1, 8), steps: int = 200, threshold: float = 0.01, seeds: tuple[int, ...] = (0,),
    **kwargs,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per depth, seed and variant; all curves). Within a seed every variant starts from its own
    initialization and sees the same inputs, so a seed pairs the variants."""
    curves, rows = [], []
    for blocks in depths:
        for seed in seeds:
            for variant in VARIANTS:
                curve = identity_fit(variant, blocks, steps, seed=seed, **kwargs).assign(seed=seed)
                curves.append(curve)
                evals = curve.dropna(subset=["relative_mse_eval"])
                rows.append({
                    "blocks": blocks,
                    "variant": variant,
                    "seed": seed,
                    "relative MSE at start": curve["relative_mse"].iloc[0],
                    f"relative MSE after {steps // 10} steps": curve["relative_mse"].iloc[steps // 10],
                    f"relative MSE after {steps} steps (train mode)": curve["relative_mse"].iloc[-1],
                    f"after {steps} steps, eval mode, held-out": evals["relative_mse_eval"].iloc[-1],
                    f"steps to relative MSE <= {threshold}": steps_to(curve, threshold),
                })
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def over_seeds(per_seed: pd.DataFrame, steps: int, threshold: float = 0.01) -> pd.DataFrame:
    """Per depth and variant, across the seeds of ``identity_experiment``: the median of each relative MSE, the
    range of the final one, and the steps to ``threshold`` seed by seed ('> steps': never reached)."""
    final = f"relative MSE after {steps} steps (train mode)"
    reached = f"steps to relative MSE <= {threshold}"
    rows = []
    for (blocks, variant), group in per_seed.groupby(["blocks", "variant"], sort=False):
        rows.append({
            "blocks": blocks,
            "variant": variant,
            "seeds": len(group),
            "relative MSE at start (median)": round(group["relative MSE at start"].median(), 4),
            f"after {steps // 10} steps (median)": round(group[f"relative MSE after {steps // 10} steps"].median(), 4),
            f"after {steps} steps, train mode (median)": round(group[final].median(), 5),
            f"after {steps} steps (min - max)": f"{group[final].min():.3g} - {group[final].max():.3g}",
            f"after {steps} steps, eval mode, held-out (median)":
                round(group[f"after {steps} steps, eval mode, held-out"].median(), 5),
            f"{reached}, per seed": ", ".join(f"> {steps}" if pd.isna(n) else str(int(n)) for n in group[reached]),
        })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SeedOrder:
    """At one depth, over the seeds (each a paired comparison: the same inputs, and the same weights in the layers
    the two variants share): in how many the residual stack ends with the lower train-mode relative MSE, in how
    many the plain one does (a tie is neither), out of how many."""

    residual_lower: int
    plain_lower: int
    seeds: int


def residual_below_plain(per_seed: pd.DataFrame, steps: int) -> dict[int, SeedOrder]:
    """``SeedOrder`` per depth."""
    final = f"relative MSE after {steps} steps (train mode)"
    wide = per_seed.pivot_table(index=["blocks", "seed"], columns="variant", values=final)
    return {int(blocks): SeedOrder(int((group["residual"] < group["plain"]).sum()),
                                   int((group["plain"] < group["residual"]).sum()), len(group))
            for blocks, group in wide.groupby(level="blocks")}


def plot_identity(curves: pd.DataFrame) -> bytes:
    """Per depth, each variant's median curve over the seeds, with the range of the seeds shaded."""
    depths = sorted(curves["blocks"].unique())
    fig, axes = subplots(1, len(depths), figsize=(5 * len(depths), 3.8), squeeze=False)
    for ax, blocks in zip(axes[0], depths, strict=True):
        for variant, group in curves[curves["blocks"] == blocks].groupby("variant", sort=False):
            # gamma-0 starts at exactly 0: a log axis needs a floor
            exact = (group["relative_mse"] == 0).all()
            by_step = group.groupby("step")["relative_mse"]
            median, low, high = (v.clip(lower=1e-6) for v in (by_step.median(), by_step.min(), by_step.max()))
            seeds = group["seed"].nunique()
            line, = ax.plot(median.index, median.values,
                            label=variant + (" (exactly 0)" if exact else "") + (f", median of {seeds} seeds"
                                                                                  if seeds > 1 else ""))
            if seeds > 1:
                ax.fill_between(median.index, low.values, high.values, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_yscale("log")
        ax.set_title(f"{blocks} stacked block{'s' if blocks > 1 else ''} trained to reproduce the input")
        ax.set_xlabel("Adam step")
        ax.set_ylabel("MSE / mean(x^2) (train mode, floor 1e-6)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return png_bytes(fig)
