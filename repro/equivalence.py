"""Proving a hand-written model identical to its reference.

The procedure every equivalence test, the report and ``repro.verify`` share:

1. ``randomize_`` the reference: every floating parameter and buffer redrawn, BatchNorm gammas
   away from zero (timm zero-initializes the last gamma of each residual block, which would hide
   any bug in the residual branch), running statistics calibrated on data and then perturbed,
   ``num_batches_tracked`` set to a random count.
2. Port its weights into the hand-written model.
3. Compare parameter and buffer counts; eval outputs; then, in train mode, outputs, the input
   gradient, every parameter's gradient and the running statistics BatchNorm leaves behind.

Differences are measured as ``max|a - b| / max|b|`` (relative to the reference's largest
magnitude) and flagged bit-exact when the tensors are equal element for element.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from repro.environment import deterministic_kernels
from repro.flops import build_on_meta

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@torch.no_grad()
def build_uninitialized(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` without its weight initialization, for a model about to be overwritten whole
    (by ``randomize_`` or a port): built on the meta device, then given CPU memory.

    Initialization is most of the cost of building a network (ResNet-152: 0.6 s of kaiming draws,
    0.1 s on the meta device), and the equivalence check throws it away. So that nothing
    uninitialized can pass unseen, every floating parameter is set to NaN (a parameter that is not
    overwritten makes the outputs non-finite, which fails the comparison) and BatchNorm statistics
    are reset; a model with any other buffer, or a non-floating parameter, is refused.
    """
    model = build_on_meta(build)
    unknown = [f"{module_name}.{name}" if module_name else name
               for module_name, module in model.named_modules()
               for name, _ in module.named_buffers(recurse=False)
               if not isinstance(module, nn.modules.batchnorm._BatchNorm)]
    unknown += [name for name, p in model.named_parameters() if not p.is_floating_point()]
    if unknown:
        raise ValueError(f"{type(model).__name__} has state other than parameters and BatchNorm statistics "
                         f"({', '.join(unknown[:3])}); build it initialized")
    model.to_empty(device="cpu")
    for param in model.parameters():
        param.fill_(float("nan"))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            module.reset_running_stats()
    return model


@torch.no_grad()
def randomize_(model: nn.Module, input_size: tuple[int, ...] | None = (2, 3, 224, 224), seed: int = 0) -> nn.Module:
    """Redraw every parameter and buffer of ``model`` in place (see module docstring)."""
    gen = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen, dtype=torch.float32).mul_(std).to(t.dtype)

    def uniform(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return torch.rand(t.shape, generator=gen, dtype=torch.float32).mul_(high - low).add_(low).to(t.dtype)

    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.is_floating_point():
                continue
            if isinstance(module, _NORM_TYPES) and name == "weight":
                param.copy_(uniform(param, 0.5, 1.5))
            elif param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(normal(param, math.sqrt(2.0 / fan_in)))
            else:
                param.copy_(normal(param, 0.1))

    batchnorms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if batchnorms and input_size is not None:
        # Calibrate: running statistics equal to real batch statistics, so eval-mode activations
        # stay in a sensible range however deep the network is.
        was_training = model.training
        momenta = [m.momentum for m in batchnorms]
        for m in batchnorms:
            m.momentum = 1.0
        model.train()
        model(torch.randn(input_size, generator=gen))
        model.train(was_training)
        for m, momentum in zip(batchnorms, momenta, strict=True):
            m.momentum = momentum
    for m in batchnorms:
        m.running_mean.add_(normal(m.running_mean, 0.1) * m.running_var.sqrt())
        m.running_var.mul_(uniform(m.running_var, 0.8, 1.25))
        m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=gen)))
    return model


@dataclass(frozen=True)
class Diff:
    """How far ``actual`` is from ``expected``."""

    max_abs: float
    max_rel: float  # max|a - b| / max|b|
    bit_exact: bool
    finite: bool = True

    @classmethod
    def of(cls, actual: torch.Tensor, expected: torch.Tensor) -> "Diff":
        if actual.shape != expected.shape:
            raise ValueError(f"shape mismatch: {tuple(actual.shape)} vs {tuple(expected.shape)}")
        a, b = actual.detach().double(), expected.detach().double()
        finite = bool(torch.isfinite(a).all() and torch.isfinite(b).all())
        if a.numel() == 0:
            return cls(0.0, 0.0, True, finite)
        max_abs = float((a - b).abs().max())
        scale = float(b.abs().max())
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
        return cls(max_abs, max_rel, bool(torch.equal(actual, expected)), finite)

    def ok(self, rtol: float) -> bool:
        # NaN never passes: a NaN == NaN comparison must not hide a broken model.
        return self.finite and self.max_rel <= rtol

    @staticmethod
    def worst(diffs: Mapping[str, "Diff"]) -> tuple[str, "Diff"]:
        return max(diffs.items(), key=lambda kv: (not kv[1].finite, kv[1].max_rel))


@dataclass
class TrainStep:
    output: torch.Tensor
    input_grad: torch.Tensor
    grads: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]


def train_step(model: nn.Module, x: torch.Tensor, output_weight: torch.Tensor) -> TrainStep:
    """One train-mode forward and backward of ``sum(model(x) * output_weight)`` on a copy of ``model``,
    under ``deterministic_kernels()`` so that the gradients are reproducible bit for bit."""
    model = copy.deepcopy(model).train()
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with deterministic_kernels():
        out = model(x)
        (out * output_weight).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    return TrainStep(out.detach(), x.grad.detach(), grads, buffers)


def count_tensors(model: nn.Module) -> dict[str, int]:
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "parameter_tensors": sum(1 for _ in model.parameters()),
        "buffers": sum(b.numel() for b in model.buffers()),
    }


@dataclass
class EquivalenceResult:
    spec: str
    model: str
    input_size: tuple[int, ...]
    counts_reference: dict[str, int]
    counts_ours: dict[str, int]
    eval_output: Diff
    train_output: Diff | None = None
    input_grad: Diff | None = None
    param_grads: dict[str, Diff] = field(default_factory=dict)  # by hand-written name
    running_stats: dict[str, Diff] = field(default_factory=dict)
    missing_grads: list[str] = field(default_factory=list)

    @property
    def bit_exact(self) -> bool:
        return all(d.bit_exact for d in self.all_diffs().values())

    def all_diffs(self) -> dict[str, Diff]:
        diffs = {"eval output": self.eval_output}
        if self.train_output is not None:
            diffs["train output"] = self.train_output
            diffs["input grad"] = self.input_grad
        diffs.update({f"grad {k}": d for k, d in self.param_grads.items()})
        diffs.update({f"buffer {k}": d for k, d in self.running_stats.items()})
        return diffs

    def failures(self, rtol: float = 1e-5) -> list[str]:
        problems = []
        if self.counts_reference != self.counts_ours:
            problems.append(f"counts differ: reference {self.counts_reference} vs ours {self.counts_ours}")
        if self.missing_grads:
            problems.append(f"gradients present on one side only: {self.missing_grads[:5]}")
        problems += [
            f"{name}: max rel diff {d.max_rel:.3g} (max abs {d.max_abs:.3g}){'' if d.finite else ', non-finite values'}"
            for name, d in self.all_diffs().items()
            if not d.ok(rtol)
        ]
        return problems

    def assert_equivalent(self, rtol: float = 1e-5) -> None:
        problems = self.failures(rtol)
        if problems:
            raise AssertionError(f"{self.model} is not equivalent to {self.spec}:\n  " + "\n  ".join(problems[:20]))

    def summary(self) -> dict[str, Any]:
        name, worst = Diff.worst(self.all_diffs())
        return {
            "reference": self.spec,
            "model": self.model,
            "params_reference": self.counts_reference["parameters"],
            "params_ours": self.counts_ours["parameters"],
            "eval_max_abs": self.eval_output.max_abs,
            "eval_max_rel": self.eval_output.max_rel,
            "worst_check": name,
            "worst_max_rel": worst.max_rel,
            "bit_exact": self.bit_exact,
        }


def compare_ported(
    reference_model: nn.Module,
    ours: nn.Module,
    target_to_source: Mapping[str, str],
    input_size: tuple[int, ...],
    *,
    spec: str = "",
    model: str = "",
    train: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> EquivalenceResult:
    """Compare an already-ported pair: eval outputs, then a train-mode step (see module docstring).
    Both models are moved to ``device``; the inputs are drawn on the CPU (the same numbers anywhere)."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(input_size, generator=gen).to(device)
    reference_model.to(device)
    ours.to(device)
    reference_model.eval()
    ours.eval()
    with torch.no_grad():
        expected, actual = reference_model(x), ours(x)
    result = EquivalenceResult(
        spec=spec,
        model=model,
        input_size=tuple(input_size),
        counts_reference=count_tensors(reference_model),
        counts_ours=count_tensors(ours),
        eval_output=Diff.of(actual, expected),
    )
    if not train:
        return result
    output_weight = torch.randn(expected.shape, generator=gen).to(device)
    ref_step = train_step(reference_model, x, output_weight)
    our_step = train_step(ours, x, output_weight)
    result.train_output = Diff.of(our_step.output, ref_step.output)
    result.input_grad = Diff.of(our_step.input_grad, ref_step.input_grad)
    for target_key, source_key in target_to_source.items():
        if target_key in our_step.grads or source_key in ref_step.grads:
            if target_key not in our_step.grads or source_key not in ref_step.grads:
                result.missing_grads.append(f"{target_key} / {source_key}")
                continue
            ref_grad = ref_step.grads[source_key]
            result.param_grads[target_key] = Diff.of(our_step.grads[target_key], ref_grad.reshape(our_step.grads[target_key].shape))
        elif target_key in our_step.buffers:
            ref_buf = ref_step.buffers[source_key]
            result.running_stats[target_key] = Diff.of(our_step.buffers[target_key], ref_buf.reshape(our_step.buffers[target_key].shape))
    return result


# Every ImageNet network here downsamples by 32; the CIFAR nets by 4.
MIN_RESOLUTION = {"cifar_resnet": 8}
DEFAULT_MIN_RESOLUTION = 32


def validate_input_size(input_size: tuple[int, ...], model: str, *, train: bool = True) -> None:
    """Refuse inputs a comparison cannot mean anything on, naming what is wrong."""
    from repro.registry import MODELS

    if len(input_size) != 4 or any(not isinstance(n, int) for n in input_size):
        raise ValueError(f"input size must be four integers (batch, channels, height, width), got {tuple(input_size)}")
    batch, channels, height, width = input_size
    minimum = MIN_RESOLUTION.get(MODELS[model].family, DEFAULT_MIN_RESOLUTION) if model in MODELS else DEFAULT_MIN_RESOLUTION
    if batch < 1:
        raise ValueError(f"batch size must be at least 1, got {batch}")
    if channels != 3:
        raise ValueError(f"{model} takes 3-channel images, got {channels} channels")
    if min(height, width) < minimum:
        raise ValueError(f"resolution {height}x{width} is too small for {model}: it downsamples by {minimum}, use at least {minimum}")
    if train and batch * (height // minimum) * (width // minimum) < 2:
        raise ValueError(
            f"train-mode comparison of {model} at batch {batch}, {height}x{width} leaves BatchNorm one value per "
            "channel at the last stage: use batch >= 2 or a larger resolution"
        )


def check_reference(
    spec: str,
    *,
    batch: int = 2,
    resolution: int | None = None,
    train: bool = True,
    seed: int = 0,
    build_reference: Callable[..., nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> EquivalenceResult:
    """Build ``spec``'s reference and our matching model, randomize, port, and compare (on ``device``)."""
    import reference

    from repro.porting import port_weights
    from repro.registry import create_model_from_entry, reference_entry

    entry = reference_entry(spec)
    resolution = resolution or entry.resolution
    input_size = (batch, 3, resolution, resolution)
    validate_input_size(input_size, entry.model, train=train)
    build = build_reference or reference.create
    ref_model = build_uninitialized(lambda: build(spec, **entry.deterministic_reference_kwargs))
    randomize_(ref_model, input_size, seed=seed)
    ours = build_uninitialized(lambda: create_model_from_entry(entry, **entry.deterministic_model_kwargs))
    report = port_weights(ref_model, ours, entry.rules)
    return compare_ported(
        ref_model, ours, report.target_to_source, input_size, spec=spec, model=entry.model, train=train, seed=seed,
        device=device,
    )
