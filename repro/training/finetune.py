"""Fine-tuning helpers (seed section 6.1): a new classifier, frozen layers, parameter counts.

The seed replaces ``model.fc`` and sets ``requires_grad = False`` on every parameter whose name
does not contain ``'fc'``. Two things that leaves out, done here:

* Frozen BatchNorm layers must stay in eval mode. ``requires_grad = False`` stops gradient
  updates of a BatchNorm's scale and shift, but in ``model.train()`` the layer still normalizes
  with each batch's statistics and overwrites its running mean and variance: the "frozen"
  backbone computes something else after fine-tuning (seed pitfall 3 is this mistake in another
  guise). ``freeze*`` switch every BatchNorm whose parameters are all frozen to a subclass whose
  ``train()`` keeps it in eval mode; ``unfreeze`` switches it back. State dicts are unchanged.
* Names are matched as module paths (``fc`` matches ``fc.weight``, not ``layer1.0.se.fc1.weight``):
  the seed's substring test would leave an SE network's ``se.fc1/fc2`` trainable.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import reference
from repro.porting import from_reference
from repro.registry import UnknownNameError
from repro.training.data import DataError, ImageData, load_data, synthetic_shapes
from repro.training.loop import Recipe, TrainResult, default_device, train
from repro.weights import WeightsError

CLASSIFIER_NAMES = ("fc", "classifier", "head.fc", "last_linear")


# --- the classifier --------------------------------------------------------------------------------


def _submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def classifier_name(model: nn.Module) -> str:
    """The dotted name of the final classifier: a Linear (or a 1x1 convolution head), or the last
    Linear inside a Sequential classifier (torchvision's EfficientNet and MobileNet)."""
    for name in CLASSIFIER_NAMES:
        module = _submodule(model, name)
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            return name
        if isinstance(module, nn.Sequential):
            linears = [i for i, m in enumerate(module) if isinstance(m, nn.Linear)]
            if linears:
                return f"{name}.{linears[-1]}"
    raise ValueError(f"{type(model).__name__}: no classifier found under {', '.join(CLASSIFIER_NAMES)}")


def replace_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the classifier with a freshly initialized one for ``num_classes``; returns the new layer."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    name = classifier_name(model)
    old = model.get_submodule(name)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:  # a 1x1 convolution head (timm's ResNetV2, ours with conv_head=True)
        new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, new)
    return new


# --- freezing --------------------------------------------------------------------------------------


class _EvalOnly:
    """Mixin for a frozen BatchNorm: ``train()`` leaves it in eval mode (running statistics used, never updated)."""

    def train(self, mode: bool = True):
        return super().train(False)


_FROZEN_CLASSES: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    if cls not in _FROZEN_CLASSES:
        name = f"EvalOnly{cls.__name__}"
        frozen = type(
            name,
            (_EvalOnly, cls),
            {"__module__": __name__, "_unfrozen_class": cls, "__doc__": f"{cls.__name__} kept in eval mode (frozen)."},
        )
        _FROZEN_CLASSES[cls] = frozen
        globals()[name] = frozen  # so that pickling a whole model finds the class
    return _FROZEN_CLASSES[cls]


def is_frozen_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, _EvalOnly)


def _sync_batchnorm(model: nn.Module) -> None:
    """Eval-lock every BatchNorm whose parameters are all frozen, unlock the others. A BatchNorm
    without parameters (affine=False) follows the parameters of the module that holds it."""
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if not isinstance(module, _BatchNorm):
            continue
        params = list(module.parameters(recurse=False))
        if not params:
            parent = modules[name.rpartition(".")[0]]
            params = list(parent.parameters())
        frozen = bool(params) and not any(p.requires_grad for p in params)
        base = getattr(type(module), "_unfrozen_class", type(module))
        module.__class__ = _frozen_class(base) if frozen else base
        if frozen:
            module.train(False)
        else:
            module.train(model.training)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """``name`` (a parameter's dotted name) matches a pattern given as an fnmatch pattern over the
    whole name, or as a module path (``layer4`` matches ``layer4.0.conv1.weight``)."""
    return any(fnmatch.fnmatchcase(name, p) or name.startswith(p + ".") for p in patterns)


def _check_patterns(model: nn.Module, patterns: Sequence[str]) -> None:
    if isinstance(patterns, str):
        raise TypeError(f"patterns must be a list of names, got the string {patterns!r}")
    names = [n for n, _ in model.named_parameters()]
    unmatched = [p for p in patterns if not any(_matches(n, [p]) for n in names)]
    if unmatched:
        raise ValueError(
            f"{', '.join(map(repr, unmatched))} match no parameter of {type(model).__name__} "
            f"(names look like {', '.join(names[:3])}, ...)"
        )


def freeze(model: nn.Module, patterns: Sequence[str]) -> nn.Module:
    """Freeze the parameters matching any of ``patterns`` (module paths or fnmatch patterns)."""
    _check_patterns(model, patterns)
    for name, param in model.named_parameters():
        if _matches(name, patterns):
            param.requires_grad_(False)
    _sync_batchnorm(model)
    return model


def freeze_all_but(model: nn.Module, trainable: Sequence[str]) -> nn.Module:
    """Freeze every parameter except those matching ``trainable`` (seed 6.1: ``["fc"]``)."""
    _check_patterns(model, trainable)
    for name, param in model.named_parameters():
        param.requires_grad_(_matches(name, trainable))
    _sync_batchnorm(model)
    return model


def freeze_up_to(model: nn.Module, stage: str) -> nn.Module:
    """Freeze the stem and every stage up to and including the module ``stage`` (e.g. ``layer2``,
    ``stages.3``): every parameter registered before the end of that module."""
    names = [n for n, _ in model.named_parameters()]
    inside = [i for i, n in enumerate(names) if n.startswith(stage + ".")]
    if not inside:
        raise ValueError(
            f"{stage!r} is no module with parameters in {type(model).__name__}; "
            f"top-level ones: {', '.join(n for n, m in model.named_children() if any(True for _ in m.parameters()))}"
        )
    for index, (_, param) in enumerate(model.named_parameters()):
        if index <= inside[-1]:
            param.requires_grad_(False)
    _sync_batchnorm(model)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(True)
    _sync_batchnorm(model)
    return model


# --- counting ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamCounts:
    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def __str__(self) -> str:
        """As the seed prints them (section 6.1), in English."""
        return (
            f"trainable parameters: {self.trainable:,} ({self.trainable / self.total * 100:.2f}%)\n"
            f"frozen parameters: {self.frozen:,}"
        )


def count_trainable(model: nn.Module) -> ParamCounts:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ParamCounts(trainable, sum(p.numel() for p in model.parameters()) - trainable)


# --- a fine-tuning run -------------------------------------------------------------------------------


def ported_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """The hand-written model matching reference ``spec`` (e.g. ``torchvision:resnet18``), holding the
    reference's weights: read from ``weights`` (a state dict of the reference, .safetensors or torch
    file) when given, else the reference's random initialization."""
    return from_reference(spec, source=reference.create(spec, weights=weights))


def fine_tune(
    spec: str,
    data: ImageData,
    recipe: Recipe,
    weights: str | Path | None = None,
    trainable: Sequence[str] = ("fc",),
    device: str | None = None,
    log=sys.stderr,
) -> tuple[nn.Module, TrainResult, ParamCounts]:
    """Port ``spec`` (weights from ``weights`` if given), give it a classifier for ``data``'s classes,
    freeze all but ``trainable`` (frozen BatchNorm kept in eval mode), train; returns (model, result, counts)."""
    model = ported_model(spec, weights)
    replace_classifier(model, data.num_classes)
    freeze_all_but(model, trainable)
    counts = count_trainable(model)
    result = train(model, data, recipe, name=f"{spec} fine-tuned", device=device, log=log)
    return model, result, counts


def seed_freeze(model: nn.Module) -> nn.Module:
    """Seed 6.1's freezing, verbatim: ``requires_grad = False`` where ``'fc' not in name``; BatchNorm untouched."""
    for name, param in model.named_parameters():
        if "fc" not in name:
            param.requires_grad = False
    return model


# --- command line --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m repro.training.finetune``: port a reference model, replace its head, freeze, train briefly."""
    class Parser(argparse.ArgumentParser):
        def error(self, message: str):
            raise DataError(message)

    parser = Parser(prog="python -m repro.training.finetune", description=main.__doc__.split(": ", 1)[1])
    parser.add_argument(
        "--spec", default="torchvision:resnet18", help="reference whose hand-written port is fine-tuned"
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="the reference's state dict (.safetensors or torch file)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="CIFAR-10 python format or an image folder; default: generated shapes"
    )
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument(
        "--train-size", type=int, default=5_000, help="generated training images (or the first N of --data)"
    )
    parser.add_argument(
        "--test-size", type=int, default=1_000, help="generated held-out images (or the first N of --data)"
    )
    parser.add_argument(
        "--trainable", nargs="+", default=None, help="module paths / patterns left trainable (default: the classifier)"
    )
    parser.add_argument(
        "--freeze-up-to", default=None, help="instead: freeze the stem and stages up to this module (e.g. layer2)"
    )
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None, help="write finetune_curve.csv and finetune_meta.json here")
    try:
        args = parser.parse_args(argv)
        if args.trainable is not None and args.freeze_up_to is not None:
            parser.error("--trainable and --freeze-up-to are alternatives")
        data = (
            synthetic_shapes(n_train=args.train_size, n_test=args.test_size, resolution=args.resolution)
            if args.data is None
            else load_data(args.data, resolution=args.resolution).subset(args.train_size, args.test_size)
        )
        model = ported_model(args.spec, args.weights)
        head = classifier_name(model)
        replace_classifier(model, data.num_classes)
        if args.freeze_up_to is not None:
            freeze_up_to(model, args.freeze_up_to)
        else:
            freeze_all_but(model, args.trainable or [head])
    except (DataError, WeightsError, UnknownNameError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = count_trainable(model)
    print(counts, file=sys.stderr)
    recipe = Recipe(
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        augment=args.data is not None,
        eval_points=5,
        eval_size=min(2_000, len(data.test_x)),
    )
    result = train(model, data, recipe, name=args.spec, device=default_device())
    print(
        f"final: train error {result.final_train_error:.3f}, held-out error {result.final_test_error:.3f}",
        file=sys.stderr,
    )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(result.curve).to_csv(args.out / "finetune_curve.csv", index=False)
        meta = {
            "spec": args.spec,
            "weights": str(args.weights) if args.weights else None,
            "data": data.description,
            "trainable": counts.trainable,
            "frozen": counts.frozen,
            "recipe": recipe.as_dict(),
            "final_train_error": result.final_train_error,
            "final_test_error": result.final_test_error,
        }
        (args.out / "finetune_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
