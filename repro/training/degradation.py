"""The degradation experiment of the ResNet paper (section 4.2, Fig. 1 and 6), run for real.

``python -m repro.training.degradation [--data PATH] [--out DIR]`` trains plain and residual
CIFAR networks of two depths (default 20 and 56) with one recipe and one batch stream, then writes

* ``degradation_curves.csv`` and ``degradation_curves.png``: training and held-out error over iterations;
* ``degradation_final.csv``: final errors beside the paper's;
* ``degradation_meta.json``: the command, data, recipe, device, versions, commit and wall time.

Without ``--data`` it trains on generated images (``repro.training.data.synthetic_shapes``) at 16x16
for 640 iterations, minutes on two CPU cores (each run records its wall time in
``degradation_meta.json``); with ``--data`` (CIFAR-10 in its Python
format, or an image folder) the default is the paper's full schedule, 64k iterations.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from repro.flops import count_params
from repro.models.cifar_resnet import CifarResNet
from repro.training.data import SYNTHETIC_NAME, DataError, ImageData, load_data, synthetic_shapes
from repro.environment import cpu_threads
from repro.training.loop import Recipe, TrainResult, default_device, train
from repro.plotting import png_bytes, subplots

# The ResNet paper, Table 6: CIFAR-10 test error (%) of the residual nets (option A, best of 5 runs;
# ResNet-110 is "6.43 (6.61 +- 0.16)"). The plain nets have no table, only curves: Fig. 6 (left)
# and Fig. 1 show plain-56 above plain-20 in training and test error throughout.
PAPER_TEST_ERROR = {
    ("resnet", 20): 8.75,
    ("resnet", 32): 7.51,
    ("resnet", 44): 7.17,
    ("resnet", 56): 6.97,
    ("resnet", 110): 6.43,
}
PAPER_PLAIN = "no number; Fig. 1/6: deeper plain net has higher training and test error"

# The default run (no --data): generated data, small enough for minutes on two CPU cores.
DEFAULT_RESOLUTION = 16
DEFAULT_TRAIN_SIZE = 10_000
DEFAULT_TEST_SIZE = 2_000
DEFAULT_ITERATIONS = 640


@dataclass(frozen=True)
class Net:
    kind: str  # "plain" or "resnet"
    depth: int

    @property
    def name(self) -> str:
        return f"{self.kind}{self.depth}"

    def build(self, num_classes: int) -> CifarResNet:
        return CifarResNet(self.depth, num_classes=num_classes, shortcut="A" if self.kind == "resnet" else None)


def default_recipe(iterations: int, data: ImageData, augment: bool | None = None, **fields) -> Recipe:
    """The paper's recipe for ``iterations``. Augmentation (pad-and-crop, flip) is the paper's for real
    data; generated images are drawn with random position, size, rotation and colour already, and
    are not augmented unless asked (at 16x16 a 4-pixel crop moves a quarter of the image)."""
    if augment is None:
        augment = data.name != SYNTHETIC_NAME
    return Recipe(iterations=iterations, augment=augment, eval_size=min(2_000, len(data.test_x)), **fields)


def run(
    data: ImageData,
    depths: tuple[int, ...],
    recipe: Recipe,
    device: str | None = None,
    log=sys.stderr,
    init_seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train plain and residual nets of each depth; return (curves, final errors)."""
    curves, finals = [], []
    for depth in depths:
        for kind in ("plain", "resnet"):
            net = Net(kind, depth)
            torch.manual_seed(init_seed)  # the same seed for every net's initial weights
            model = net.build(data.num_classes)
            result: TrainResult = train(model, data, recipe, name=net.name, device=device, log=log)
            curves += [{**row, "kind": kind, "depth": depth} for row in result.curve]
            paper = PAPER_TEST_ERROR.get((kind, depth)) if data.name == "CIFAR-10" else None
            finals.append(
                {
                    "model": net.name,
                    "kind": kind,
                    "depth": depth,
                    "params": count_params(model),
                    "train error (%)": round(100 * result.final_train_error, 2),
                    "test error (%)": round(100 * result.final_test_error, 2),
                    "paper test error (%), CIFAR-10": PAPER_TEST_ERROR.get(
                        (kind, depth), PAPER_PLAIN if kind == "plain" else None
                    ),
                    "comparable to paper": "yes" if paper is not None and recipe.iterations >= 64_000 else "no",
                    "seconds": round(result.seconds, 1),
                }
            )
    return pd.DataFrame(curves), pd.DataFrame(finals)


def degradation_verdict(final: pd.DataFrame) -> dict[str, bool]:
    """Did deeper plain nets train worse, and deeper residual nets not?"""
    by = final.set_index("model")["train error (%)"]
    depths = sorted(final["depth"].unique())
    shallow, deep = depths[0], depths[-1]
    return {
        "plain_degrades": bool(by[f"plain{deep}"] > by[f"plain{shallow}"]),
        "resnet_degrades": bool(by[f"resnet{deep}"] > by[f"resnet{shallow}"]),
        "resnet_beats_plain_at_depth": bool(by[f"resnet{deep}"] < by[f"plain{deep}"]),
    }


def plot_curves(curves: pd.DataFrame, title: str) -> bytes:
    """Fig. 6 of the paper, redrawn: plain nets left, residual right; dashed training, solid held-out."""
    fig, axes = subplots(1, 2, figsize=(10, 4), sharey=True)
    colours = dict(
        zip(
            sorted(curves["depth"].unique()),
            ("tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple"),
            strict=False,
        )
    )
    for ax, kind in zip(axes, ("plain", "resnet"), strict=True):
        for depth, group in curves[curves["kind"] == kind].groupby("depth"):
            ax.plot(
                group["iteration"],
                100 * group["train_error"],
                "--",
                color=colours[depth],
                label=f"{kind}-{depth} train",
            )
            ax.plot(
                group["iteration"],
                100 * group["test_error"],
                "-",
                color=colours[depth],
                label=f"{kind}-{depth} held-out",
            )
        ax.set_title({"plain": "plain networks", "resnet": "ResNets (option A shortcuts)"}[kind])
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("error (%)")
    fig.suptitle(title, fontsize=9)
    return png_bytes(fig)


def git_commit() -> str:
    """HEAD of the checkout this code runs from, marked when the code under repro/training differs from it."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, cwd=root
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "repro/training", "repro/models/cifar_resnet.py"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=root,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (" + uncommitted changes to the training code" if dirty.stdout.strip() else "")


def write_outputs(out: Path, curves: pd.DataFrame, final: pd.DataFrame, meta: dict, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "degradation_curves.csv": curves.to_csv(index=False).encode(),
        "degradation_final.csv": final.to_csv(index=False).encode(),
        "degradation_curves.png": plot_curves(curves, title),
        "degradation_meta.json": (json.dumps(meta, indent=2) + "\n").encode(),
    }
    written = []
    for name, payload in files.items():  # each file replaced atomically
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        raise DataError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m repro.training.degradation", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="CIFAR-10 python-format directory or an image folder; default: generated shapes (no download)",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--iterations",
        type=int,
        default=None,
        help=f"training iterations per net (default: {DEFAULT_ITERATIONS} on generated data, 64000 with --data)",
    )
    length.add_argument(
        "--epochs", type=float, default=None, help="training length in epochs of the training split instead"
    )
    parser.add_argument(
        "--depths", type=int, nargs="+", default=[20, 56], help="depths 6n+2 to compare (default 20 56)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the paper's pad-and-crop and flip augmentation (default: on with --data, off for generated data)",
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help=f"image size for generated data and image folders (default {DEFAULT_RESOLUTION} generated, 32 otherwise)",
    )
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--test-size", type=int, default=None, help="use only the first N held-out images")
    parser.add_argument("--eval-points", type=int, default=10)
    parser.add_argument(
        "--seed", type=int, default=0, help="data generation, batch order, augmentation and initial weights"
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: torch's); 1 is robust when other work shares the cores",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/degradation"), help="output directory (default reports/degradation)"
    )
    args = parser.parse_args(argv)
    for depth in args.depths:
        if depth < 8 or (depth - 2) % 6:
            parser.error(f"--depths: {depth} is not 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...)")
    if len(set(args.depths)) < 2:
        parser.error("--depths needs at least two different depths to compare")
    for flag in (
        "iterations",
        "epochs",
        "batch_size",
        "train_size",
        "test_size",
        "eval_points",
        "resolution",
        "threads",
    ):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if args.device is not None and args.device not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    return args


def load(args: argparse.Namespace) -> ImageData:
    if args.data is None:
        data = synthetic_shapes(
            n_train=args.train_size or DEFAULT_TRAIN_SIZE,
            n_test=args.test_size or DEFAULT_TEST_SIZE,
            resolution=args.resolution or DEFAULT_RESOLUTION,
            seed=args.seed,
        )
    else:
        data = load_data(args.data, resolution=args.resolution or 32, seed=args.seed)
    return data.subset(args.train_size, args.test_size)


def main(argv: list[str] | None = None) -> int:
    command = " ".join(["python -m repro.training.degradation", *(sys.argv[1:] if argv is None else argv)])
    try:
        args = parse_args(argv)
        data = load(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.epochs is not None:
        iterations = max(1, round(args.epochs * len(data.train_x) / args.batch_size))
    else:
        iterations = args.iterations or (DEFAULT_ITERATIONS if args.data is None else 64_000)
    recipe = default_recipe(
        iterations,
        data,
        augment=args.augment,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_points=args.eval_points,
        seed=args.seed,
    )
    device = args.device or default_device()
    print(
        f"{data.description}; {iterations} iterations of batch {args.batch_size} per net on {device}", file=sys.stderr
    )
    start = time.perf_counter()
    try:
        with cpu_threads(args.threads):
            curves, final = run(data, tuple(args.depths), recipe, device=device, init_seed=args.seed)
    except KeyboardInterrupt:
        print("interrupted: nothing written", file=sys.stderr)
        return 130
    wall = time.perf_counter() - start
    meta = {
        "command": command,
        "data": data.description,
        "classes": list(data.classes),
        "train_images": len(data.train_x),
        "held_out_images": len(data.test_x),
        "recipe": recipe.as_dict(),
        "device": torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU ({platform.machine()}, {args.threads or torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_seconds": round(wall, 1),
        "verdict": degradation_verdict(final),
    }
    title = f"{data.description}; {iterations} iterations, batch {args.batch_size}"
    written = write_outputs(args.out, curves, final, meta, title)
    print(final.to_string(index=False), file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in written)} in {wall:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
