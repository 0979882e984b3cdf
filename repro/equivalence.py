"""Proving a hand-written model identical to its reference.

The procedure every equivalence test, the report and ``repro.verify`` share:

1. ``randomize_`` the reference: every floating parameter and BatchNorm buffer redrawn, BatchNorm
   gammas away from zero (timm zero-initializes the last gamma of each residual block, which would
   hide any bug in the residual branch), running statistics calibrated on data and then perturbed,
   ``num_batches_tracked`` set to a random count; a frozen BatchNorm's vectors (weight, bias and
   statistics held as buffers, torchvision's ``FrozenBatchNorm2d``) redrawn and calibrated like a
   BatchNorm's (or, named otherwise, each drawn positive and apart from the others). Other floating
   buffers (an attention mask, a fixed position table) are the architecture's, kept.
2. Port its weights into the hand-written model.
3. Compare parameter and buffer counts; eval outputs; then, in train mode, outputs, the input
   gradient, every parameter's gradient and the running statistics BatchNorm leaves behind.

Differences are measured as ``max|a - b| / max|b|`` (relative to the reference's largest
magnitude; a parameter gradient relative to the largest gradient of its module) and flagged
bit-exact when the tensors are equal element for element.

One definition of "equivalent" for the whole project (``check_reference``, the report and
``repro.verify`` alike): the same function, decided on float64 copies of both models and of the
input, within ``FLOAT64_RTOL`` (far below float32 noise, so that float32 rounding can neither
hide nor fake a difference; above float64 rounding and the float32 constants of a few float64
kernels). Float32 bit-identity is reported beside it as the stronger fact. Where a
model cannot run in float64 the comparison falls back to float32 with a tolerance calibrated on
the reference's own float32-vs-float64 error on the same input (``calibrated_tolerance``), or,
if neither model runs in float64, the stated ``FLOAT32_RTOL``.
"""

from __future__ import annotations

import copy
import gc
import itertools
import math
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

import reference
from repro.environment import deterministic_kernels
from repro.flops import build_on_meta, build_on_meta_or_none
from repro.porting import port_weights
from repro.registry import MODELS, create_model_from_entry, reference_entry

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@torch.no_grad()
def build_uninitialized(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` without its weight initialization, for a model about to be overwritten whole
    (by ``randomize_`` or a port): built on the meta device, then given CPU memory.

    Initialization is most of the cost of building a network (ResNet-152: 0.6 s of kaiming draws,
    0.1 s on the meta device), and the equivalence check throws it away. So that nothing
    uninitialized can pass unseen, every floating parameter is set to NaN (a parameter that is not
    overwritten makes the outputs non-finite, which fails the comparison) and BatchNorm statistics
    are reset; a model with any other state (``_kept_state``) is refused.
    """
    model = build_on_meta(build)
    kept = _kept_state(model)
    if kept:
        raise ValueError(f"{type(model).__name__} has state other than parameters and BatchNorm statistics "
                         f"({', '.join(kept[:3])}); build it initialized")
    return _materialized(model)


@torch.no_grad()
def build_to_randomize(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` for ``randomize_`` to overwrite whole: uninitialized (``build_uninitialized``) where that
    is the same model, else built as it is: where its constructor computes with tensors (torchvision's
    RegNets derive their widths so), or it holds state ``randomize_`` keeps (``_kept_state``)."""
    model = build_on_meta_or_none(build)
    return build() if model is None or _kept_state(model) else _materialized(model)


def _kept_state(model: nn.Module) -> list[str]:
    """What of a model built on the meta device an uninitialized build would lose: buffers other than
    BatchNorm statistics (an attention mask, a position table: the architecture's, which ``randomize_``
    keeps), non-floating parameters, tensors held as plain attributes, parameters shared by two modules
    (``to_empty`` would untie them)."""
    kept = [f"{module_name}.{name}" if module_name else name
            for module_name, module in model.named_modules()
            for name, _ in module.named_buffers(recurse=False)
            if not isinstance(module, nn.modules.batchnorm._BatchNorm)]
    kept += [name for name, p in model.named_parameters() if not p.is_floating_point()]
    kept += [f"{module_name}.{name}" if module_name else name for module_name, module in model.named_modules()
             for name, value in vars(module).items() if isinstance(value, torch.Tensor)]
    names, tensors = list(model.named_parameters(remove_duplicate=False)), list(model.parameters())
    if len(names) != len(tensors):
        kept.append(f"shared parameters ({len(names)} names for {len(tensors)} tensors)")
    return kept


def _materialized(model: nn.Module) -> nn.Module:
    """A model built on the meta device given CPU memory: floating parameters NaN, BatchNorm statistics reset."""
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

    batchnorms = [m for m in model.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    frozen = [(m, vectors) for m in model.modules() if (vectors := frozen_batchnorm_vectors(m)) is not None]
    named = [m for m, vectors in frozen if set(vectors) == _BATCHNORM_VECTORS]  # which vector is which: known
    if (batchnorms or named) and input_size is not None:
        # Calibrate: running statistics equal to real batch statistics, so eval-mode activations
        # stay in a sensible range however deep the network is (a frozen one's set from its input as it runs).
        was_training = model.training
        momenta = [m.momentum for m in batchnorms]
        for m in batchnorms:
            m.momentum = 1.0
        hooks = [m.register_forward_pre_hook(_calibrate_frozen) for m in named]
        model.train()
        try:
            model(torch.randn(input_size, generator=gen))
        finally:
            for hook in hooks:
                hook.remove()
        model.train(was_training)
        for m, momentum in zip(batchnorms, momenta, strict=True):
            m.momentum = momentum
    elif named:  # nothing to calibrate on: statistics near those of a unit-variance input
        for m in named:
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
    for m in batchnorms + named:
        m.running_mean.add_(normal(m.running_mean, 0.1) * m.running_var.sqrt())
        m.running_var.mul_(uniform(m.running_var, 0.8, 1.25))
    for m in batchnorms:
        m.num_batches_tracked.fill_(int(torch.randint(1, 10_000, (1,), generator=gen)))
    for m, vectors in frozen:
        if m in named:
            m.weight.copy_(uniform(m.weight, 0.5, 1.5))
            m.bias.copy_(normal(m.bias, 0.1))
        else:  # which vector is the variance is not known: each positive, and each other than the rest
            for vector in vectors.values():
                vector.copy_(uniform(vector, 0.5, 1.5))
    return model


_BATCHNORM_VECTORS = {"weight", "bias", "running_mean", "running_var"}


def frozen_batchnorm_vectors(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """The four vectors of a BatchNorm frozen into buffers (torchvision's ``FrozenBatchNorm2d``, detection
    backbones'), by name: a module with no floating parameters of its own and four floating buffers, vectors of
    one length, whatever their names. ``None`` for any other module."""
    buffers = {n: b for n, b in module._buffers.items() if b is not None and b.is_floating_point()}
    params = [p for p in module._parameters.values() if p is not None and p.is_floating_point()]
    return None if params or len(buffers) != 4 or not vectors_of_one_length(buffers.values()) else buffers


def vectors_of_one_length(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether the tensors are all vectors (``[C]``, ``[1, C, 1, 1]``) of one length, and there is one at least."""
    tensors = list(tensors)
    return bool(tensors) and all(max(t.shape, default=1) == t.numel() for t in tensors) \
        and len({t.numel() for t in tensors}) == 1


def is_frozen_batchnorm(module: nn.Module) -> bool:
    """A BatchNorm frozen into buffers (``frozen_batchnorm_vectors``) that names them as a BatchNorm does
    (``weight``, ``bias``, ``running_mean``, ``running_var``): which is which is known."""
    vectors = frozen_batchnorm_vectors(module)
    return vectors is not None and set(vectors) == _BATCHNORM_VECTORS


def _calibrate_frozen(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: a frozen BatchNorm's statistics set to those of its input, per channel (dimension 1)."""
    x = args[0].detach()
    dims = [d for d in range(x.ndim) if d != 1]
    module.running_mean.copy_(x.mean(dims).reshape(module.running_mean.shape))
    module.running_var.copy_(x.var(dims, unbiased=False).reshape(module.running_var.shape))


DIFF_CHUNK = 1 << 22  # elements compared at once (32 MB of float64 per operand)
_NATIVE = (torch.float32, torch.float64)  # differences taken in the tensors' own precision


def _measure(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float, bool, bool]:
    """``max|actual - expected|``, ``max|expected|``, whether the two are equal bit for bit, and whether both
    are finite; a slice of ``DIFF_CHUNK`` elements at a time, so that a large tensor (VGG's first Linear and
    its gradient, 102M elements) needs no float64 copy of itself (a non-contiguous one is copied once, flat).

    Two float32 (or float64) tensors are measured in their own precision: an equal slice costs one
    comparison and one min-max, an unequal one a subtraction besides (rounded once, a relative error of
    one unit in the last place of the difference). Anything else, or a slice whose difference or scale is
    not finite (a NaN, an infinity, a difference that overflows), is measured in float64, NaN propagating."""
    flat_a, flat_b = actual.detach().reshape(-1), expected.detach().reshape(-1)
    native = actual.dtype == expected.dtype and actual.dtype in _NATIVE
    max_abs = scale = 0.0
    exact = finite = True
    for start in range(0, flat_a.numel(), DIFF_CHUNK):
        chunk_a, chunk_b = flat_a[start:start + DIFF_CHUNK], flat_b[start:start + DIFF_CHUNK]
        equal = torch.equal(chunk_a, chunk_b)
        if native:
            low, high = torch.aminmax(chunk_b)
            chunk_scale = max(-float(low), float(high))
            chunk_abs = 0.0 if equal else float((chunk_a - chunk_b).abs_().max())
            if math.isfinite(chunk_scale) and math.isfinite(chunk_abs):
                max_abs, scale, exact = max(max_abs, chunk_abs), max(scale, chunk_scale), exact and equal
                continue
        a, b = chunk_a.double(), chunk_b.double()
        finite = finite and bool(torch.isfinite(a).all() and torch.isfinite(b).all())
        exact = exact and equal
        chunk_abs, chunk_scale = float((a - b).abs().max()), float(b.abs().max())
        # max() would drop a NaN met second: keep it.
        max_abs = chunk_abs if math.isnan(chunk_abs) or math.isnan(max_abs) else max(max_abs, chunk_abs)
        scale = chunk_scale if math.isnan(chunk_scale) or math.isnan(scale) else max(scale, chunk_scale)
    return max_abs, scale, exact, finite


def _relative(max_abs: float, scale: float) -> float:
    return max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)


@dataclass(frozen=True)
class Diff:
    """How far ``actual`` is from ``expected``."""

    max_abs: float
    max_rel: float  # max|a - b| / max|b|
    bit_exact: bool
    finite: bool = True

    @classmethod
    def of(cls, actual: torch.Tensor, expected: torch.Tensor) -> "Diff":
        """Measured by ``_measure``: in float32 or float64 where both tensors are, otherwise in float64."""
        if actual.shape != expected.shape:
            raise ValueError(f"shape mismatch: {tuple(actual.shape)} vs {tuple(expected.shape)}")
        max_abs, scale, exact, finite = _measure(actual, expected)
        return cls(max_abs, _relative(max_abs, scale), exact, finite)

    def ok(self, rtol: float) -> bool:
        # NaN never passes: a NaN == NaN comparison must not hide a broken model.
        return self.finite and self.max_rel <= rtol

    @staticmethod
    def worst(diffs: Mapping[str, "Diff"]) -> tuple[str, "Diff"]:
        return max(diffs.items(), key=lambda kv: (not kv[1].finite, kv[1].max_rel))


# The float64 tolerance. float64 rounding (unit roundoff 1.1e-16), accumulated over the deepest
# pass here, stays below 1e-12 relative; but some PyTorch float64 kernels are only float32-exact:
# Hardsigmoid's backward multiplies by the float32 constant 1.0f / 6.0f, 3.0e-8 relative off 1/6
# (measured: a hand-written relu6(x + 3) / 6 against nn.Hardsigmoid, float64 gradients 3.3e-8
# apart in MobileNetV3, forward bit-identical). 1e-7 admits that, and nothing near the size of a
# mistake hidden by float32 noise (1e-5 to 1e-2 relative on these networks in float32).
FLOAT64_RTOL = 1e-7
# Stated float32 tolerance where no model runs in float64, so nothing can be calibrated.
FLOAT32_RTOL = 1e-5
# A float32 tolerance calibrated on the reference: this many times its own float32-vs-float64
# error on the same input, and never below this many float32 units of roundoff.
CALIBRATION_FACTOR = 10.0
FLOAT32_FLOOR = 8 * torch.finfo(torch.float32).eps


@dataclass(frozen=True)
class Tolerance:
    """How a verdict was decided: in which precision, within which relative tolerance, and why."""

    dtype: str  # "float64" or "float32"
    rtol: float
    basis: str

    def __str__(self) -> str:
        return f"{self.dtype}, rtol {self.rtol:.2g} ({self.basis})"


FLOAT64 = Tolerance("float64", FLOAT64_RTOL, "float64 copies of both models and the input")


def calibrated_tolerance(reference_errors: Sequence[float] | None, why: str) -> Tolerance:
    """The float32 tolerance when ``why`` keeps a model out of float64: ``CALIBRATION_FACTOR``
    times the reference's own float32-vs-float64 relative error (``reference_errors``, one per
    compared output), or ``FLOAT32_RTOL`` when the reference cannot run in float64 either (``None``)."""
    if reference_errors is None:
        return Tolerance("float32", FLOAT32_RTOL, f"{why}; neither model runs in float64, so the tolerance is "
                                                  f"the stated float32 default, not calibrated")
    error = max(reference_errors, default=0.0)
    rtol = max(CALIBRATION_FACTOR * error, FLOAT32_FLOOR)
    return Tolerance("float32", rtol, f"{why}; {CALIBRATION_FACTOR:g}x the reference's own float32-vs-float64 "
                                      f"error on the same input ({error:.2g}), at least {FLOAT32_FLOOR:.2g}")


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that runs on its own tensors only: a ``forward`` set on an
    instance (``net.forward = lambda x: net.head(...)``) is rebuilt with its closure copied
    along, so that it calls the copy's modules, not the original's. What that closure holds and
    cannot be copied (a context variable in a ``torch.export`` program's guard function) is shared
    where it reaches none of the model's modules and tensors."""
    # A scripted function held as an attribute is stateless and cannot be deep-copied: share it.
    memo: dict[int, Any] = {
        id(value): value
        for module in model.modules()
        for value in module.__dict__.values()
        if isinstance(value, torch.jit.ScriptFunction)
    }
    clone = copy.deepcopy(model, memo)
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    # A lazy module's tensors have no storage yet.
    own = {id(o) for o in itertools.chain(model.modules(), tensors)} | {
        t.untyped_storage().data_ptr() for t in tensors if not isinstance(t, nn.parameter.UninitializedTensorMixin)}
    for name, module in model.named_modules():
        fn = module.__dict__.get("forward")
        if isinstance(fn, types.FunctionType) and fn.__closure__:
            cells = tuple(_copy_cell(cell, memo, own) for cell in fn.__closure__)
            clone.get_submodule(name).forward = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__,
                                                                   fn.__defaults__, cells)
    return clone


def _copy_cell(cell: types.CellType, memo: dict[int, Any], own: set[int]) -> types.CellType:
    try:
        contents = cell.cell_contents
    except ValueError:  # an empty cell
        return cell
    trial = dict(memo)  # a copy that fails half-way leaves nothing half-built for the next cell
    try:
        copied = copy.deepcopy(contents, trial)
    except (TypeError, copy.Error):
        if _reaches(contents, own):
            raise
        return cell
    memo.update(trial)
    return types.CellType(copied)


def _reaches(root: object, own: set[int], depth: int = 8) -> bool:
    """Whether ``root`` may hold one of the objects ``own`` (ids of modules and tensors, and the data pointers of
    the tensors' storages, so that a view of a weight counts), through its referents (a function's: its closure
    and defaults, not its module's globals): ``True`` where it does within ``depth`` steps, and where ``depth``
    steps do not settle it."""
    seen: set[int] = set()
    level = [root]
    for _ in range(depth):
        following = []
        for obj in level:
            if id(obj) in own or (isinstance(obj, torch.Tensor) and not isinstance(
                    obj, nn.parameter.UninitializedTensorMixin) and obj.untyped_storage().data_ptr() in own):
                return True
            if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.CodeType, str, bytes, int, float)):
                continue
            seen.add(id(obj))
            if isinstance(obj, types.FunctionType):
                following += [c.cell_contents for c in obj.__closure__ or () if c != types.CellType()]
                following += list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
            else:
                following += gc.get_referents(obj)
        if not following:
            return False
        level = following
    return True


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (its floating parameters and buffers cast; integer ones kept)."""
    return copy_model(model).double()


def module_of(key: str) -> str:
    """The module a state key belongs to: ``layer1.0.conv1.weight`` -> ``layer1.0.conv1``."""
    return key.rsplit(".", 1)[0] if "." in key else ""


def gradient_diffs(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                   pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, Diff], list[str]]:
    """Each paired parameter gradient's ``Diff`` (by ``actual``'s key), relative to the largest
    reference gradient of its module, and the pairs with a gradient on one side only.

    Relative to the module, not to the tensor: the bias gradient of a BatchNorm feeding another
    BatchNorm in train mode is zero up to rounding (the next one removes every channel's mean),
    and rounding noise relative to zero means nothing."""
    raw: dict[str, tuple[float, bool, bool]] = {}
    scale: dict[str, float] = {}
    missing = []
    for actual_key, expected_key in pairs:
        if actual_key not in actual and expected_key not in expected:
            continue
        if actual_key not in actual or expected_key not in expected:
            missing.append(f"{actual_key} / {expected_key}")
            continue
        a, e = actual[actual_key], expected[expected_key]
        if a.numel() != e.numel():
            raw[actual_key], largest = (math.inf, False, True), 0.0
        else:
            max_abs, largest, exact, finite = _measure(a, e.reshape(a.shape))
            raw[actual_key] = (max_abs, exact, finite)
        owner = module_of(actual_key)
        scale[owner] = max(scale.get(owner, 0.0), largest)
    diffs = {key: Diff(max_abs, _relative(max_abs, scale[module_of(key)]), exact, finite)
             for key, (max_abs, exact, finite) in raw.items()}
    return diffs, missing


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
    """The comparison of one pair. Its diffs are the ones the verdict is decided on (float64
    unless ``tolerance`` says otherwise); ``float32`` holds the float32 run's, for bit-identity."""

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
    tolerance: Tolerance = FLOAT64
    float32: dict[str, Diff] = field(default_factory=dict)  # the float32 run's diffs, by the same names

    @property
    def bit_exact(self) -> bool:
        """Float32 bit-identity of every compared tensor (the stronger fact)."""
        return all(d.bit_exact for d in (self.float32 or self.all_diffs()).values())

    def all_diffs(self) -> dict[str, Diff]:
        return _named_diffs(self.eval_output, self.train_output, self.input_grad, self.param_grads, self.running_stats)

    def failures(self, rtol: float | None = None) -> list[str]:
        """What does not hold, within ``rtol`` (default: the result's own tolerance)."""
        rtol = self.tolerance.rtol if rtol is None else rtol
        problems = []
        if self.counts_reference != self.counts_ours:
            problems.append(f"counts differ: reference {self.counts_reference} vs ours {self.counts_ours}")
        if self.missing_grads:
            problems.append(f"gradients present on one side only: {self.missing_grads[:5]}")
        problems += [
            f"{name}: max rel diff {d.max_rel:.3g} (max abs {d.max_abs:.3g}, {self.tolerance.dtype})"
            f"{'' if d.finite else ', non-finite values'}"
            for name, d in self.all_diffs().items()
            if not d.ok(rtol)
        ]
        return problems

    def assert_equivalent(self, rtol: float | None = None) -> None:
        problems = self.failures(rtol)
        if problems:
            raise AssertionError(f"{self.model} is not equivalent to {self.spec} ({self.tolerance}):\n  "
                                 + "\n  ".join(problems[:20]))

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
            "precision": self.tolerance.dtype,
            "rtol": self.tolerance.rtol,
            "bit_exact": self.bit_exact,
        }


def _named_diffs(eval_output: Diff, train_output: Diff | None, input_grad: Diff | None,
                 param_grads: Mapping[str, Diff], running_stats: Mapping[str, Diff]) -> dict[str, Diff]:
    diffs = {"eval output": eval_output}
    if train_output is not None:
        diffs["train output"] = train_output
        diffs["input grad"] = input_grad
    diffs.update({f"grad {k}": d for k, d in param_grads.items()})
    diffs.update({f"buffer {k}": d for k, d in running_stats.items()})
    return diffs


@dataclass
class _Run:
    """One precision's comparison of a ported pair."""

    eval_output: Diff
    train_output: Diff | None = None
    input_grad: Diff | None = None
    param_grads: dict[str, Diff] = field(default_factory=dict)
    running_stats: dict[str, Diff] = field(default_factory=dict)
    missing_grads: list[str] = field(default_factory=list)
    reference_outputs: tuple[torch.Tensor, ...] = ()

    def all_diffs(self) -> dict[str, Diff]:
        return _named_diffs(self.eval_output, self.train_output, self.input_grad, self.param_grads, self.running_stats)


def _run_pair(reference_model: nn.Module, ours: nn.Module, target_to_source: Mapping[str, str], x: torch.Tensor,
              output_weights: Callable[[torch.Size], torch.Tensor] | None) -> _Run:
    reference_model.eval()
    ours.eval()
    with torch.no_grad():
        expected, actual = reference_model(x), ours(x)
    run = _Run(Diff.of(actual, expected), reference_outputs=(expected,))
    if output_weights is None:
        return run
    output_weight = output_weights(expected.shape)
    ref_step = train_step(reference_model, x, output_weight.to(x.dtype))
    our_step = train_step(ours, x, output_weight.to(x.dtype))
    run.reference_outputs += (ref_step.output,)
    run.train_output = Diff.of(our_step.output, ref_step.output)
    run.input_grad = Diff.of(our_step.input_grad, ref_step.input_grad)
    run.param_grads, run.missing_grads = gradient_diffs(our_step.grads, ref_step.grads, target_to_source.items())
    for target_key, source_key in target_to_source.items():
        if target_key in our_step.buffers and target_key not in our_step.grads and source_key not in ref_step.grads:
            ref_buf = ref_step.buffers[source_key]
            run.running_stats[target_key] = Diff.of(our_step.buffers[target_key],
                                                    ref_buf.reshape(our_step.buffers[target_key].shape))
    return run


# What a model that cannot run in float64 raises (a dtype fixed inside its forward, say).
FLOAT64_FAILURES = (RuntimeError, TypeError, ValueError)


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
    """Compare an already-ported pair: eval outputs, then a train-mode step (see module docstring),
    on float64 copies (the verdict) and as they are in float32 (bit-identity).
    Both models are moved to ``device``; the inputs are drawn on the CPU (the same numbers anywhere)."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(input_size, generator=gen).to(device)
    reference_model.to(device)
    ours.to(device)
    drawn: list[torch.Tensor] = []

    def output_weights(shape: torch.Size) -> torch.Tensor:  # drawn once, the same numbers in both precisions
        if not drawn:
            drawn.append(torch.randn(shape, generator=gen).to(device))
        return drawn[0]

    weights = output_weights if train else None
    single = _run_pair(reference_model, ours, target_to_source, x, weights)
    tolerance, double = FLOAT64, None
    try:
        double = _run_pair(float64_copy(reference_model), float64_copy(ours), target_to_source, x.double(), weights)
    except FLOAT64_FAILURES as err:
        why = f"float64 fails ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
        try:
            ref64 = float64_copy(reference_model)
            outputs64 = _run_pair(ref64, ref64, {}, x.double(), weights).reference_outputs
            errors = [Diff.of(a, b.to(a.dtype)).max_rel
                      for a, b in zip(single.reference_outputs, outputs64, strict=True)]
        except FLOAT64_FAILURES:
            errors = None
        tolerance = calibrated_tolerance(errors, why)
    decided = double or single
    return EquivalenceResult(
        spec=spec,
        model=model,
        input_size=tuple(input_size),
        counts_reference=count_tensors(reference_model),
        counts_ours=count_tensors(ours),
        eval_output=decided.eval_output,
        train_output=decided.train_output,
        input_grad=decided.input_grad,
        param_grads=decided.param_grads,
        running_stats=decided.running_stats,
        missing_grads=decided.missing_grads,
        tolerance=tolerance,
        float32=single.all_diffs(),
    )


# Every ImageNet network here downsamples by 32; the CIFAR nets by 4.
MIN_RESOLUTION = {"cifar_resnet": 8}
DEFAULT_MIN_RESOLUTION = 32


def validate_input_size(input_size: tuple[int, ...], model: str, *, train: bool = True) -> None:
    """Refuse inputs a comparison cannot mean anything on, naming what is wrong."""
    if len(input_size) != 4 or any(not isinstance(n, int) for n in input_size):
        raise ValueError(f"input size must be four integers (batch, channels, height, width), got {tuple(input_size)}")
    batch, channels, height, width = input_size
    family = MODELS[model].family if model in MODELS else None
    minimum = MIN_RESOLUTION.get(family, DEFAULT_MIN_RESOLUTION)
    if batch < 1:
        raise ValueError(f"batch size must be at least 1, got {batch}")
    if channels != 3:
        raise ValueError(f"{model} takes 3-channel images, got {channels} channels")
    if min(height, width) < minimum:
        raise ValueError(f"resolution {height}x{width} is too small for {model}: it downsamples by {minimum}, "
                         f"use at least {minimum}")
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
