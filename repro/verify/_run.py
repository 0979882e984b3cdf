"""``verify_module``: trace, pair (a tie the dataflow cannot break settled by trying each way of pairing it),
port, compare, and name the first divergence."""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import numbers
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils._pytree import tree_flatten

import reference as reference_library
from repro.equivalence import (
    FLOAT64, Diff, Tolerance, build_to_randomize, calibrated_tolerance, copy_model, float64_copy, gradient_diffs,
    randomize_,
)
from repro.porting import PortError, port_weights
from repro.verify._compare import (
    MISMATCH, CandidateCapture, Divergence, GradPoint, ReferenceCapture, StaleCaptureError, compare, compare_output,
    compared_in_rows, enclosing, locate, settings_difference,
)
from repro.verify._pairing import (Pairing, PairingError, UndecidedTie, compare_constants, pair_nodes, pair_state,
                                   reshaped_state)
from repro.verify._report import Level, VerifyReport, layers_frame, unpaired_tensors
from repro.verify._stochastic import (StochasticLayer, acting, applications, rates_match, rates_off, stochastic_layers,
                                     summary, units_compared)
from repro.verify._trace import (INDEXING_INVISIBLE, INPUT, MODEL_FAILURES, Call, Graph, Node, PointKey, RandomWatch,
                                 Recorder, Sink, indexing_visible, stored_constants, trace)

WIDE_INPUT_SCALE = 8.0


class VerifyError(ValueError):
    """The verification could not run: a model that fails on the input, a model off the CPU, ..."""


def uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper compiles (its hooks and passes would be compiled too), else ``model``.
    A model was compiled only where dynamo is loaded already: nothing is imported to find out."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    optimized = getattr(eval_frame, "OptimizedModule", None)
    return model._orig_mod if optimized is not None and isinstance(model, optimized) else model


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def resolve_reference(reference: str | nn.Module, reference_kwargs: Mapping[str, Any] | None, *,
                      to_randomize: bool) -> tuple[nn.Module, str]:
    """The reference to compare with (built from its spec, or a copy of the module) and its name; one built
    ``to_randomize`` (every weight about to be redrawn) skips the library's initialization where it can
    (``build_to_randomize``)."""
    if isinstance(reference, nn.Module):
        if reference_kwargs:
            raise VerifyError(f"reference_kwargs build a reference from a spec ('timm:resnet50'); the reference given "
                              f"is a module, built already: {dict(reference_kwargs)}")
        reference = uncompiled(reference)
        _check_cpu(reference, "reference")
        return _copy(reference, "reference"), _type_name(reference)
    if not isinstance(reference, str):
        raise TypeError("reference must be a spec such as 'timm:resnet50' or an nn.Module, "
                        f"got {type(reference).__name__}")
    # The library's own defaults (dropout included: the stochastic level compares the rates of both) unless
    # the caller says otherwise; the name says how it was built.
    reference_kwargs = dict(reference_kwargs or {})
    built = ", ".join(f"{k}={v!r}" for k, v in reference_kwargs.items())
    name = f"{reference} ({built})" if built else reference
    try:
        build = functools.partial(reference_library.create, reference, **reference_kwargs)
        with torch.random.fork_rng(devices=[]):  # the library's initialization draws leave the caller's state alone
            return (build_to_randomize(build) if to_randomize else build()), name
    except reference_library.UnknownNameError:
        raise  # a spec naming no model: its own error, with the names it may have meant
    except _BUILD_FAILURES as err:  # a keyword the library does not take, or a value it refuses
        raise VerifyError(f"cannot build {reference} with {reference_kwargs}: {type(err).__name__}: {err}") from err




# What a library's constructor raises for keyword arguments it refuses (timm asserts on a pool type, looks an
# activation up by name; torchvision divides by ``in_chans``), or for a weights file it cannot load
# (``reference.weights.WeightsError``, a ``ValueError``) or fetch (``PretrainedUnavailableError``, a ``RuntimeError``).
_BUILD_FAILURES = (TypeError, ValueError, RuntimeError, AssertionError, LookupError, ArithmeticError, OSError)


def _run(which: str, fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except MODEL_FAILURES as err:
        raise VerifyError(f"the {which} fails on the verification input: {type(err).__name__}: {err}") from err


@contextmanager
def _scratch(model: nn.Module, training: bool):
    """Run ``model`` in a mode, then give back its mode, buffers and gradients as they were."""
    was_training = model.training
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, p.grad) for p in model.parameters()]
    for p, _ in grads:
        p.grad = None
    model.train(training)
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, grad in grads:
            p.grad = grad
        model.train(was_training)


@dataclass
class _Step:
    """What one pass of a model leaves: its outputs; after a backward pass, the input gradient, the parameter
    gradients and the buffers; whether it drew random numbers (``_pass`` says how that is seen); its recorder,
    if recorded."""

    outputs: list[torch.Tensor]
    input_grad: torch.Tensor | None = None
    grads: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    drew: bool = False
    recorder: Recorder | None = None


def _pass(model: nn.Module, x: torch.Tensor, *, training: bool, seed: int, sink=None, watch: bool = False,
          output_weights: list[torch.Tensor] | None = None) -> _Step:
    """One forward pass of ``model`` (in train or eval mode, random numbers seeded), recorded into ``sink``
    when one is given, and a backward pass of ``sum(output * output_weights)`` when weights are given.
    ``drew``: whether the global random generator advanced or, with ``watch`` (or recorded), a torch function
    that draws random numbers was called. The model is left as it was: mode, buffers and gradients."""
    devices = [x.device] if x.device.type == "cuda" else []
    with _scratch(model, training), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        seeded = torch.get_rng_state()
        recorder = None if sink is None else Recorder(model, sink)
        watcher = RandomWatch() if watch and recorder is None else None
        with watcher or contextlib.nullcontext():
            run = model if recorder is None else recorder.run
            if output_weights is None:
                with torch.no_grad():
                    outputs = _outputs(run(x))
            else:
                x = x.clone().requires_grad_(True)
                outputs = _outputs(run(x))
        after = ()
        if output_weights is not None:
            _backward(outputs, output_weights)
            after = _after_backward(model, x)
        drew = not torch.equal(seeded, torch.get_rng_state()) or (watcher is not None and watcher.seen)
        return _Step([t.detach() for t in outputs], *after, drew=drew, recorder=recorder)


def _backward(outputs: list[torch.Tensor], output_weights: list[torch.Tensor]) -> None:
    """Backward of ``sum(output * output_weights)``."""
    if len(output_weights) != len(outputs):
        raise ValueError(f"the model returns {len(outputs)} tensors where the reference returns {len(output_weights)}")
    loss = sum((t * (w.reshape(t.shape) if w.numel() == t.numel() else torch.ones_like(t))).sum()
               for t, w in zip(outputs, output_weights, strict=True) if t.requires_grad)
    if isinstance(loss, torch.Tensor):
        loss.backward()


def _after_backward(model: nn.Module, x: torch.Tensor):
    """The input gradient, the parameter gradients and the buffers, after a backward pass."""
    return (x.grad.detach().clone() if x.grad is not None else torch.zeros_like(x),
            # No copies needed: ``_scratch`` gives the parameters their previous gradients back.
            {n: p.grad.detach() for n, p in model.named_parameters() if p.grad is not None},
            {n: b.detach().clone() for n, b in model.named_buffers()})


def _both(candidate: nn.Module, reference: nn.Module, x: torch.Tensor, *, training: bool, seed: int,
          watch: bool = False, output_weights: list[torch.Tensor] | None = None) -> tuple[_Step, _Step]:
    """A plain (unrecorded) pass of each model on one input (``watch``: see ``_pass``)."""
    return tuple(_run(which, _pass, model, x, training=training, seed=seed, watch=watch,
                      output_weights=output_weights)
                 for which, model in (("candidate", candidate), ("reference", reference)))


def _finite(tensors: Sequence[torch.Tensor | None]) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def _not_finite_level(level: str, what: str) -> Level:
    """A level the reference's own numbers cannot decide: its ``what`` holds a NaN or an infinity, so no
    difference from it means anything (a model checked against itself would read 'differs')."""
    return Level(level, None, False, None,
                 f"cannot be decided here: the reference's own {what} is not finite (NaN or infinity) on the "
                 f"verification input, so there is nothing to compare with; an input size, a seed or weights on "
                 f"which the reference computes finite numbers would decide it")


def _outputs_diff(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> Diff:
    """The worst ``Diff`` among the outputs; ``MISMATCH`` where their number or shapes differ."""
    if len(ours) != len(theirs):
        return MISMATCH
    diffs = [compare_output(a, b) for a, b in zip(ours, theirs, strict=True)]
    return max(diffs, key=lambda d: (not d.finite, d.max_rel, d.max_abs)) if diffs else MISMATCH


@dataclass
class _TrainDiffs:
    """A train step of two models, compared: the output and the input gradient (``checks``), each paired
    parameter's gradient, each paired buffer that takes no gradient, and the gradients on one side only."""

    checks: dict[str, Diff]
    grads: dict[str, Diff]
    buffers: dict[str, Diff]
    missing: list[str]

    @classmethod
    def of(cls, cand: _Step, ref: _Step, pairs: list[tuple[str, str]]) -> "_TrainDiffs":
        checks = {"train output": _outputs_diff(cand.outputs, ref.outputs),
                  "input gradient": compare(cand.input_grad, ref.input_grad) or MISMATCH}
        grads, missing = gradient_diffs(cand.grads, ref.grads, pairs)
        buffers = {c: compare(cand.buffers[c], ref.buffers[r]) or MISMATCH for c, r in pairs
                   if c not in cand.grads and r not in ref.grads and c in cand.buffers}
        return cls(checks, grads, buffers, missing)

    def agrees(self, rtol: float) -> bool:
        return all(d.ok(rtol) for part in (self.checks, self.grads, self.buffers) for d in part.values())


def _point_names(cand: Graph) -> dict[PointKey, str]:
    names: dict[PointKey, str] = {}
    for node in cand.called():
        for k in range(node.calls):
            call = f" (call {k + 1})" if node.calls > 1 else ""
            names[("in", node.id, k)] = f"the input of {node.display}{call}"
            names[("core", node.id, k)] = f"the output of {node.display}{call}"
    return names


def _check_cpu(model: nn.Module, which: str) -> None:
    devices = {t.device.type for t in list(model.parameters()) + list(model.buffers())}
    if devices - {"cpu"}:
        raise VerifyError(f"repro.verify runs on the CPU; the {which} has tensors on {sorted(devices - {'cpu'})}: "
                          "call .cpu()")


def _unfreeze(model: nn.Module) -> list[str]:
    """Let every floating parameter of ``model`` (a copy) take a gradient; the names of those that did not."""
    frozen = [n for n, p in model.named_parameters() if p.is_floating_point() and not p.requires_grad]
    for name in frozen:
        model.get_parameter(name).requires_grad_(True)
    return frozen


def _copy(model: nn.Module, which: str) -> nn.Module:
    try:
        return copy_model(model)
    except (RuntimeError, TypeError, AttributeError) as err:
        raise VerifyError(f"repro.verify works on a copy and cannot copy the {which}: "
                          f"{type(err).__name__}: {err}") from err


DEFAULT_INPUT_SIZE = (2, 3, 224, 224)


@dataclass(frozen=True)
class VerifyOptions:
    """What ``repro.verify`` takes beside the two models: ``verify``'s keywords, its one signature and defaults
    (``verify_module`` and ``verify_onnx`` take this record; ``verify_module`` says what each does)."""

    input_size: Sequence[int] | None
    port: bool
    train: bool
    rtol: float | None
    seed: int
    wide_input_scale: float | None
    reference_kwargs: Mapping[str, Any] | None
    output: str | int | None
    port_into_candidate: bool

    def __post_init__(self) -> None:
        """A bad argument is a one-line error before anything runs."""
        def positive(value: Any) -> bool:
            real = isinstance(value, numbers.Real) and not isinstance(value, bool)
            return real and math.isfinite(value) and value > 0

        if self.input_size is not None:
            checked_input_size(self.input_size)
        if self.rtol is not None and not positive(self.rtol):
            raise VerifyError(f"rtol must be a positive number, got {self.rtol!r}")
        if self.wide_input_scale is not None and not positive(self.wide_input_scale):
            raise VerifyError(f"wide_input_scale must be a positive number (None leaves the scaled-up pass out), got "
                              f"{self.wide_input_scale!r}")
        if not isinstance(self.seed, numbers.Integral) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**62:
            raise VerifyError(f"seed must be an integer from 0 to 2**62 - 1 (a generator's seed), got {self.seed!r}")
        if self.reference_kwargs is not None and not isinstance(self.reference_kwargs, Mapping):
            raise VerifyError(f"reference_kwargs must be a mapping of keyword arguments such as {{'drop_rate': 0.0}}, "
                              f"got {type(self.reference_kwargs).__name__}")
        if self.output is not None and (not isinstance(self.output, (str, int)) or isinstance(self.output, bool)):
            raise VerifyError(f"output must be a field name, a key or an index, got {self.output!r}")
        for name in ("port", "train", "port_into_candidate"):
            if not isinstance(getattr(self, name), bool):
                raise VerifyError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def given_tolerance(self) -> Tolerance | None:
        """The caller's ``rtol`` as a float64 tolerance; ``None``: ``repro.equivalence``'s (``FLOAT64``)."""
        return None if self.rtol is None else Tolerance("float64", self.rtol, "given by the caller")


def verify_module(candidate: nn.Module, reference: str | nn.Module, options: VerifyOptions) -> VerifyReport:
    """Check whether ``candidate`` computes exactly what ``reference`` computes, and where it first differs.

    ``reference`` is a spec (``"timm:resnet50"``, ``"torchvision:resnet50"``, built as the library
    builds it by default, dropout included, or with ``options.reference_kwargs``, which the report's
    reference name then shows) or a module. Both models are copied: what the user handed in is never
    changed. With ``port=True`` the reference is randomized and its weights are copied into the
    candidate's copy; with ``port=False`` both are compared with the weights they hold.
    ``port_into_candidate=True`` then also copies those weights into ``candidate`` itself
    (only when the structures pair; the one step that changes the user's model, on request).

    The verdict is decided on float64 copies (``repro.equivalence``: tolerance ``FLOAT64_RTOL``
    unless ``rtol`` is given); float32 bit-identity is checked beside it. It comes in levels:
    the eval function, the train step with the stochastic layers of both models turned off, and
    the stochastic configuration (each model's dropout and drop-path rates, side by side).
    The eval passes (the input, and its first sample scaled up) compare every paired module's
    output; the train step compares what it leaves (the outputs, the input gradient, every paired
    parameter's gradient and buffer) and runs again recorded, module by module, only to locate a
    difference or to say where random numbers are drawn.
    ``input_size`` defaults to ``DEFAULT_INPUT_SIZE``.
    ``output`` picks the compared output of a model returning a tuple, dict or output object
    (a key, attribute or index; default: ``logits`` where there is one, else the first tensor).
    ``train=False`` skips the train-mode step, ``wide_input_scale=None`` the eval pass on a
    scaled-up sample. Frozen parameters (``requires_grad=False``) are compared like the others
    and named in the report.

    Raises ``PairingError`` when neither the dataflow nor trying each way of pairing a tie (the one
    way under which every paired module agrees) decides which module is which, and
    ``VerifyError`` when a model cannot run on the input.
    """
    exported = [side for side, model in (("candidate", candidate), ("reference", reference))
                if isinstance(model, torch.export.ExportedProgram)]
    candidate, reference = (model.module() if isinstance(model, torch.export.ExportedProgram) else model
                            for model in (candidate, reference))
    if not isinstance(candidate, nn.Module):
        raise TypeError(f"candidate must be an nn.Module, a torch.export program or an ONNX file (.onnx), got "
                        f"{type(candidate).__name__}")
    for side, model in (("candidate", candidate), ("reference", reference)):
        if isinstance(model, torch.jit.ScriptModule):
            raise VerifyError(f"the {side} is a TorchScript module (torch.jit.script or trace): it runs outside "
                              f"Python, where verify cannot follow its dataflow; verify the module it was made from, "
                              f"or its ONNX export (torch.onnx.export(model, x, 'model.onnx', dynamo=False, "
                              f"do_constant_folding=False), then verify('model.onnx', ...))")
    compiled = [side for side, model in (("candidate", candidate), ("reference", reference))
                if isinstance(model, nn.Module) and uncompiled(model) is not model]
    candidate = uncompiled(candidate)
    name = "torch.export.ExportedProgram" if "candidate" in exported else _type_name(candidate)
    # A model that refuses train mode (a torch.export program runs in the mode it was exported in): one function.
    refusing = {side: why for side, model in (("candidate", candidate), ("reference", reference))
                if isinstance(model, nn.Module) and (why := _refuses_train_mode(model))}
    input_size = checked_input_size(DEFAULT_INPUT_SIZE if options.input_size is None else options.input_size)
    _check_cpu(candidate, "candidate")
    for side, model in (("candidate", candidate), ("reference", reference)):
        lazy = isinstance(model, nn.Module) and bool(_lazy_modules(model))
        if lazy and not options.port:
            raise VerifyError(f"port=False compares the weights the models hold, and the {side}'s lazy modules hold "
                              f"none yet: call it once on an input first, or verify with port=True")
        if lazy and side == "candidate" and options.port_into_candidate:
            raise VerifyError("port_into_candidate=True copies weights into the candidate, whose lazy modules have no "
                              "shapes yet: call it once on an input first")
    ref32, ref_name = resolve_reference(reference, options.reference_kwargs, to_randomize=options.port)
    ref_name = "torch.export.ExportedProgram" if "reference" in exported else ref_name
    cand32 = _copy(candidate, "candidate")
    report = VerifyReport(name, ref_name, input_size, (options.given_tolerance or FLOAT64).rtol)
    prepare(cand32, ref32, report, options.output, options.seed)
    if options.port:
        randomize_reference(ref32, report, options.seed)
    not_applicable = {}
    if refusing:
        why = "; ".join(f"the {side}'s train() raises {err}" for side, err in refusing.items())
        not_applicable = {"train step": f"not applicable: {why} (a torch.export program computes what the model "
                                        f"computed in the mode it was exported in; exported in train mode, its "
                                        f"BatchNorms use the batch's statistics in every pass); the eval levels "
                                        f"compare the one function it computes",
                          "stochastic configuration": f"not applicable: {why}, so no dropout rate acts"}
    run = compare_models(cand32, ref32, report, port=options.port, train=options.train and not refusing,
                         tolerance=options.given_tolerance, seed=options.seed,
                         wide_input_scale=options.wide_input_scale, not_applicable=not_applicable)
    # After the comparison, which starts its notes afresh where float64 fails.
    report.notes += [f"the {side} is a torch.compile wrapper: the module it compiles is verified (what the compiled "
                     f"kernels compute is not; time or run them with repro.bench)" for side in compiled]
    report.notes += [f"the {side} is a torch.export program: the module its module() builds is verified"
                     for side in exported]
    if options.output is not None and all(o.get("what") == "the output tensor" for o in report.outputs):
        report.notes.append(f"output={options.output!r} chooses nothing: both models return one tensor, and it is "
                            f"compared")
    if options.port_into_candidate and report.port is not None:
        run.port(ref32, candidate)
        report.notes.append("the reference's weights were copied into the candidate (port_into_candidate=True)")
    return report


def _paired_settings(node: Node, partner: Node, classes: bool = True) -> str:
    """How a paired module's settings differ from its partner's (``settings_difference``). Padding done by
    ``F.pad`` or a padding module (inside the convolution or before it) makes a convolution's padding setting only
    a part of its padding: the padding in all is compared instead."""
    pads = (node.padding, partner.padding)
    padded = pads[0] is not None and pads[1] is not None and (len(pads[0].steps) > 1 or len(pads[1].steps) > 1)
    words = [settings_difference(node.module, partner.module,
                                 frozenset({"padding", "padding_mode"}) if padded else frozenset(), classes=classes)]
    if padded and pads[0].differs(pads[1]):
        words.append(f"padding in all {pads[0].in_all()} vs {pads[1].in_all()} (the candidate's: "
                     f"{', then '.join(pads[0].steps)}; the reference's: {', then '.join(pads[1].steps)})")
    return "; ".join(w for w in words if w)


def _among(ours: Sequence[float], theirs: Sequence[float]) -> bool:
    """Whether ``ours`` is ``theirs`` with entries left out (each in the same order)."""
    remaining = iter(theirs)
    return all(any(rate == other for other in remaining) for rate in ours)


def _one_for_one(ours: list[Call], theirs: list[Call], at: int, candidate: nn.Module, reference: nn.Module) -> bool:
    """Whether two sequences of steps correspond one for one, not shifted by a step one side writes as a function:
    each step before ``at`` of the same shapes in and out as its partner; the step at ``at`` of the same input
    shape, and output shape unless both are of one class (a pooling whose padding differs); those after it too,
    unless its output shapes differ (then theirs follow from it)."""
    ins = [(a.shapes[0], b.shapes[0]) for a, b in zip(ours, theirs, strict=True)]
    outs = [(a.shapes[1], b.shapes[1]) for a, b in zip(ours, theirs, strict=True)]
    if any(x != y for x, y in ins[:at + 1] + outs[:at]):
        return False
    if outs[at][0] == outs[at][1]:
        return all(x == y for x, y in ins[at:] + outs[at:])
    return type(candidate.get_submodule(ours[at].name)) is type(reference.get_submodule(theirs[at].name))


def _refuses_train_mode(model: nn.Module) -> str | None:
    """Why ``model`` cannot be put in train mode (a ``torch.export`` program's ``train()``, set on the instance,
    raises NotImplementedError), or ``None``. Only a ``train`` set on the instance is asked (for the mode the model
    is in, every module's mode restored after): a class's own ``train`` (freezing BatchNorms in a detector, say) may
    change more than modes, and is left alone."""
    if "train" not in vars(model):
        return None
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.train(model.training)
    except (NotImplementedError, RuntimeError, TypeError, AttributeError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    finally:
        for module, training in modes:
            module.training = training
    return None


def checked_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    """``input_size`` as a tuple of at least two positive integers (a batch, then each sample's shape); a float, a
    string or a size below 1 is a ``VerifyError`` (nothing is rounded)."""
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in input_size):
        raise VerifyError(f"input_size must be positive integers such as (2, 3, 224, 224), got {input_size!r}")
    sizes = tuple(int(s) for s in input_size)
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise VerifyError(f"input_size must be positive integers such as (2, 3, 224, 224), got {sizes}")
    return sizes


def prepare(cand32: nn.Module, ref32: nn.Module, report: VerifyReport, output: str | int | None, seed: int) -> None:
    """Ready the copies for comparison, noting what was done in ``report``: float32 where they cannot run on the
    float32 input as they are, lazy modules materialized, frozen parameters take gradients, each returns its
    compared output, their stochastic layers are found (on the verification input), to be turned off in train
    mode alone (``rates_off``)."""
    x = verification_input(report.input_size, seed)
    for side, model in (("candidate", cand32), ("reference", ref32)):
        # A model converted to another precision (float16 for deployment) that cannot run on the float32 input as
        # it is (one casting its input itself, or mixing precisions on purpose, can) is verified as a float32 copy.
        precisions = _precisions(model)
        if precisions and not _runs(model, x, seed):
            model.float()
            report.converted.append(side)
            lower = " and ".join(p for p in precisions.split(" and ") if p != "float64")
            unchecked = f"what it computes in {lower} is not checked, and " if lower else ""
            report.notes.append(f"the {side} holds {precisions} tensors and cannot run on the float32 verification "
                                f"input: verified as a float32 copy ({unchecked}that copy's float32 bit-identity is "
                                f"not claimed for it)")
        report.notes += _materialized(model, side, x, seed)
    report.frozen_candidate, report.frozen_reference = _unfreeze(cand32), _unfreeze(ref32)
    report.outputs = [_select_output(cand32, output, "candidate"), _select_output(ref32, output, "reference")]
    report.stochastic_candidate = _run("candidate", stochastic_layers, cand32, x, seed)
    report.stochastic_reference = _run("reference", stochastic_layers, ref32, x, seed)
    for side, layers in (("candidate", report.stochastic_candidate), ("reference", report.stochastic_reference)):
        report.notes += idle_rate_notes(side, layers)


def idle_rate_notes(side: str, layers: list[StochasticLayer]) -> list[str]:
    """One note naming the rates kept on, or given to, a module that does not apply them (``StochasticLayer.acts``);
    none where there are none."""
    idle = [str(layer) for layer in layers if not layer.acts]
    if not idle:
        return []
    return [f"rates the {side} keeps on, or gives to, a module that draws no random numbers itself in a train-mode "
            f"pass: {', '.join(idle)}; rates such a module does not apply (settings for its children, or unused, as a "
            f"block without a residual leaves its drop-connect rate), not stochastic layers"]



def _runs(model: nn.Module, x: torch.Tensor, seed: int) -> bool:
    """Whether ``model`` runs on ``x`` in eval mode as it is."""
    try:
        _pass(model, x, training=False, seed=seed)
    except MODEL_FAILURES:
        return False
    return True


def _precisions(model: nn.Module) -> str:
    """The floating precisions other than float32 that ``model``'s tensors hold (``float16 and bfloat16``)."""
    return " and ".join(sorted({str(t.dtype).removeprefix("torch.") for t in
                                itertools.chain(model.parameters(), model.buffers())
                                if t.is_floating_point() and t.dtype != torch.float32}))


def _lazy_modules(model: nn.Module) -> list[str]:
    """The modules of ``model`` holding tensors a lazy module has not given a shape yet."""
    return sorted({name.rpartition(".")[0] or "(root)" for name, t in
                   itertools.chain(model.named_parameters(), model.named_buffers()) if is_lazy(t)})


def _materialized(model: nn.Module, side: str, x: torch.Tensor, seed: int) -> list[str]:
    """A copy with lazy modules (``nn.LazyLinear``: shapes unknown until the first call) materialized by one eval
    pass on the verification input, as their own first call would (seeded; mode and buffers left as they were);
    the note saying so, if it was needed."""
    lazy = _lazy_modules(model)
    if not lazy:
        return []
    _run(side, _pass, model, x, training=False, seed=seed)
    return [f"the {side}'s lazy modules were materialized by one eval pass on the verification input: "
            f"{', '.join(lazy[:5])}{' ...' if len(lazy) > 5 else ''}"]


def randomize_reference(ref32: nn.Module, report: VerifyReport, seed: int) -> None:
    """``randomize_`` the reference copy, its BatchNorm statistics calibrated on at least two samples
    (one sample has no variance on a 1x1 map) in a train-mode pass with its stochastic layers off."""
    size = report.input_size
    with rates_off(ref32, report.stochastic_reference):
        _run("reference", randomize_, ref32, (max(2, size[0]), *size[1:]), seed)


def verification_input(input_size: tuple[int, ...], seed: int) -> torch.Tensor:
    """The input every pass of ``compare`` starts from (float32)."""
    try:
        return torch.randn(input_size, generator=torch.Generator().manual_seed(seed + 1))
    except RuntimeError as err:  # more memory than the machine has
        raise VerifyError(f"an input of size {list(input_size)} cannot be allocated here: "
                          f"{(str(err).splitlines() or [''])[0]}") from err


def compare_models(cand32: nn.Module, ref32: nn.Module, report: VerifyReport, *, port: bool, train: bool,
                   tolerance: Tolerance | None, seed: int, wide_input_scale: float | None,
                   whole_batch: bool = False, not_applicable: Mapping[str, str] | None = None,
                   more_levels: Callable[[nn.Module, nn.Module], list[Level]] | None = None) -> _Verification:
    """Pair, port (``port=True``: ``ref32``'s weights into ``cand32``) and compare two prepared copies,
    filling in ``report``: in float64 (within ``tolerance``, default ``FLOAT64``), or in float32 within a
    calibrated tolerance where float64 fails; then float32 bit-identity and the verdict. ``not_applicable``
    names levels that do not apply to the candidate, with the reason; ``whole_batch``: the candidate takes
    only the input's batch (an ONNX graph with a fixed one), so its trace and the scaled-up pass run on every
    sample, not the first alone; ``more_levels(cand32, ref32)``,
    called once the models compare (ported), adds levels of the caller's own."""
    x = verification_input(report.input_size, seed)
    before = list(report.notes)  # what preparing the copies found: kept when the comparison starts afresh
    cand64, ref64 = float64_copy(cand32), float64_copy(ref32)
    report.rtol = (tolerance or FLOAT64).rtol
    try:
        run = _Verification(cand64, ref64, report, x.double(), seed, train, wide_input_scale, whole_batch)
        run.run(port)
        report.tolerance = tolerance or FLOAT64
    except VerifyError as err:  # fails in float64: decide in float32 within a calibrated tolerance
        report.reset(keep_notes=before)
        calibrated = calibrated_tolerance(float32_error(ref32, ref64, x), f"float64 fails: {err}")
        if tolerance is not None:
            calibrated = Tolerance("float32", tolerance.rtol, f"{calibrated.basis}; rtol {tolerance.basis} instead")
        report.tolerance = calibrated
        report.rtol = report.tolerance.rtol
        run = _Verification(cand32, ref32, report, x, seed, train, wide_input_scale, whole_batch)
        run.run(port)
    if report.port is not None:
        run.port(ref32, cand32)
    if run.compared:
        run.float32_checks(cand32, ref32, x)
    extra = more_levels(cand32, ref32) if more_levels is not None and run.compared else []
    run.conclude(not_applicable or {}, extra)
    return run


def float32_error(ref32: nn.Module, ref64: nn.Module, x: torch.Tensor) -> list[float] | None:
    """The reference's own float32-vs-float64 relative error on ``x`` (eval output); ``None`` if it
    cannot run in float64 either."""
    with torch.no_grad():
        single = _outputs(_run("reference", ref32.eval(), x))
        try:
            double = _outputs(ref64.eval()(x.double()))
        except MODEL_FAILURES:
            return None
    return [Diff.of(a.double(), b).max_rel for a, b in zip(single, double, strict=True)]


def _outputs(result: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]


def _select_output(model: nn.Module, output: str | int | None, which: str) -> dict[str, Any]:
    """Make ``model`` (a copy) return the one compared tensor; say which it is (``what``) and, for a model
    returning several, how to choose each (``choices``: ``output=`` value -> shape)."""
    choice: dict[str, Any] = {}

    def select(module: nn.Module, args: Any, result: Any) -> torch.Tensor:
        if isinstance(result, torch.Tensor):  # the only tensor, whatever ``output`` names
            choice["what"] = "the output tensor"
            return result
        tensors = _outputs(result)
        choices = _choices(result)
        choice["choices"] = {how: list(t.shape) for how, t in choices}

        def chosen(tensor: torch.Tensor) -> torch.Tensor:
            choice["chosen"] = next((how for how, t in choices if t is tensor), None)
            return tensor

        if isinstance(output, int):
            if not -len(tensors) <= output < len(tensors):
                raise VerifyError(f"output={output}: the {which} returns {len(tensors)} tensors")
            choice["what"] = f"tensor {output % len(tensors)} of {len(tensors)} ({type(result).__name__})"
            return chosen(tensors[output])
        name = output or "logits"
        field = _field(result, name)
        if field is None and output is not None:
            raise VerifyError(f"output={output!r}: the {which} returns a {type(result).__name__} without that field")
        if field is None:
            if not tensors:
                raise VerifyError(f"the {which} returns a {type(result).__name__} holding no tensor")
            first = next((how for how, t in choices if t is tensors[0]), None)
            choice["what"] = (f"{first + ', ' if first else ''}the first of {len(tensors)} tensors "
                              f"({type(result).__name__})")
            return chosen(tensors[0])
        choice["what"] = f"{name!r} ({type(result).__name__})"
        return chosen(field)

    model.register_forward_hook(select)
    return choice


def _choices(result: Any) -> list[tuple[str, torch.Tensor]]:
    """The tensors a model returns directly in a mapping, tuple or list, each with the ``output=`` value that
    chooses it (``'out'``, ``1``)."""
    if isinstance(result, Mapping):
        return [(repr(k), v) for k, v in result.items() if isinstance(k, str) and isinstance(v, torch.Tensor)]
    if isinstance(result, (tuple, list)):
        return [(str(i), v) for i, v in enumerate(result) if isinstance(v, torch.Tensor)]
    return []


def _field(result: Any, name: str) -> torch.Tensor | None:
    value = result.get(name) if isinstance(result, Mapping) else getattr(result, name, None)
    return value if isinstance(value, torch.Tensor) else None


class _Verification:
    """One verification of two models in one precision (float64, or float32 where float64 fails)."""

    def __init__(self, candidate: nn.Module, ref_model: nn.Module, report: VerifyReport, x: torch.Tensor, seed: int,
                 train: bool, wide_input_scale: float | None, whole_batch: bool = False) -> None:
        self.candidate, self.ref_model, self.report = candidate, ref_model, report
        self.rtol, self.seed, self.train, self.wide_input_scale = report.rtol, seed, train, wide_input_scale
        # The samples the trace and the scaled-up pass run on: the first alone, or every one where the candidate
        # takes only the input's batch.
        self.samples = slice(None) if whole_batch else slice(0, 1)
        self.wide_title = f"{'input' if whole_batch else 'first sample'} x{wide_input_scale or 0:g}"
        self.gen = torch.Generator().manual_seed(seed + 2)
        self.x = x
        self.rules: dict[str, str] | None = None
        self.compared = False
        self.output_weights: list[torch.Tensor] | None = None
        self.captures: dict[str, CandidateCapture] = {}
        self.reference_random: dict[str, list[tuple[str, str]]] = {}
        self.divergences: dict[str, Divergence] = {}  # by pass
        self.calls: dict[str, Counter] = {}  # side -> module name -> calls in the traced pass
        self.train_calls: dict[str, Counter] = {}  # side -> stochastic layer -> calls in the train step's forward
        self.unchanged: set[str] = set()  # candidate buffers its train step leaves alone, the reference's changing
        self.grads: dict[str, Diff] = {}
        self.buffers: dict[str, Diff] = {}
        self.counts: dict[str, tuple[int, int]] = {}  # what the train step added to integer counts, both sides
        self.trained = False  # whether the train step ran
        self.train_only = False  # whether modules called in train mode alone were paired (``_pair_train_only``)
        self.observed: set[str] = set()  # sides observed for rates found at dropout calls (``_find_rates_at_calls``)
        self.reference_not_finite: set[str] = set()  # the levels whose reference numbers hold a NaN or an infinity

    def port(self, source: nn.Module, target: nn.Module):
        """Copy ``source``'s tensors (the reference's) into ``target`` (the candidate's) through the dataflow
        pairing (reshaped where it says); the architecture constants of both, and the counts one alone keeps,
        stay as they are (the pairing compares the constants)."""
        alone = {side: {key for who, key, _ in self.pairing.counts_alone if who == side}
                 for side in ("candidate", "reference")}
        left = stored_constants(source) | alone["reference"]
        state = reshaped_state({k: t for k, t in source.state_dict().items() if k not in left}, self.pairing)
        return port_weights(state, target, self.rules, keep=stored_constants(target) | alone["candidate"])

    def run(self, port: bool) -> VerifyReport:
        report = self.report
        # The reference's eval pass both traces it and is the first comparison's reference side.
        ref_eval = ReferenceCapture(self.rtol)
        ref_recorder = _run("reference", _pass, self.ref_model, self.x, sink=ref_eval, training=False,
                            seed=self.seed).recorder
        self.ref_graph = ref_recorder.graph()
        try:
            with torch.no_grad():
                self.cand_graph, cand_recorder = _run("candidate", trace, self.candidate.eval(),
                                                      self.x[self.samples].clone())
        except VerifyError as err:
            self._take_whole_batch(err)
            with torch.no_grad():
                self.cand_graph, cand_recorder = _run("candidate", trace, self.candidate.eval(), self.x.clone())
        # How often each module runs in one pass: a stochastic module applied twice counts twice.
        self.trace_calls = {"candidate": cand_recorder.calls, "reference": ref_recorder.calls}
        # A dropout call given a rate in eval mode may drop in train mode: that model is observed for it.
        recorders = {"candidate": cand_recorder, "reference": ref_recorder}
        self._find_rates_at_calls([side for side, recorder in recorders.items() if recorder.rated_calls])
        self.calls = {side: Counter(c.name for c in calls) for side, calls in self.trace_calls.items()}
        try:
            self.pairing = pair_nodes(self.cand_graph, self.ref_graph)
        except UndecidedTie as tie:
            self.pairing = self._settle(tie, ref_eval, port)
        self._pair_train_only()
        if not self._structure_matches():
            return report
        pair_state(self.cand_graph, self.ref_graph, self.pairing)
        self.rules = dict(self.pairing.tensors)  # the dataflow pairing is the rules: one exact name per tensor
        report.notes += self.pairing.notes(self.ref_graph)
        if port:
            try:
                report.port = self.port(self.ref_model, self.candidate)
            except PortError as err:  # a floating tensor paired with an integer one, say
                raise VerifyError(f"the pairing found by dataflow cannot be ported: {err}") from err
        self.compared = True
        self.names = _point_names(self.cand_graph)

        ref_outputs = ref_eval.outputs
        if not _finite(ref_outputs):
            self.reference_not_finite.add("eval")
        self._compare_pass("eval", self.x, training=False, ref_capture=ref_eval)
        del ref_eval
        report.checks["eval output"] = self.captures["eval"].output_diff()
        report.notes += compared_in_rows(self.captures["eval"], self.names)
        if not report.checks["eval output"].ok(self.rtol):
            report.notes += self._other_outputs(ref_outputs)
        if self.wide_input_scale:
            self._wide_pass()
        if self.train:
            self.output_weights = [torch.randn(t.shape, generator=self.gen).to(t) for t in ref_outputs]
            self._train_step(self.output_weights)
        self._note_random_numbers()
        return report

    def _take_whole_batch(self, err: VerifyError) -> None:
        """Where the candidate fails on the first sample alone and runs on the whole input (a ``torch.export``
        program exported for that batch size alone), trace it and run the scaled-up pass on every sample, saying so;
        else ``err`` stands."""
        if self.samples == slice(None) or not _runs(self.candidate, self.x, self.seed):
            raise err
        cause = err.__cause__ or err
        self.samples, self.wide_title = slice(None), f"input x{self.wide_input_scale or 0:g}"
        self.report.notes.append(f"the candidate fails on a single sample ({type(cause).__name__}: "
                                 f"{(str(cause).splitlines() or [''])[0]}) and runs on the whole batch: its trace and "
                                 f"the scaled-up pass take every sample, so a single sample's output shape is not "
                                 f"checked")

    def _pair_train_only(self) -> None:
        """Modules a model calls in train mode alone (auxiliary heads: GoogLeNet's, torchvision's Inception-v3's;
        timm's Inception-v3 runs its head in eval mode too and drops it) leave the eval trace without the dataflow
        that pairs them, and change the dataflow around them. Where either model has a module its eval pass does
        not call, both are traced in train mode: a pairing of every module of both there (each called) takes the
        eval pairing's place where that one is incomplete, or adds the modules it left out where it agrees with
        it; the train-mode uses give their tensors roles, and the train step then runs recorded, comparing them.
        Otherwise the eval pairing stands (a module one model has and never calls is a structure difference)."""
        graphs = (self.cand_graph, self.ref_graph)
        if all(n.order >= 0 for g in graphs for n in g.nodes):
            return
        with self._rates_off(self.candidate, self.ref_model):
            train = [_run(side, _pass, model, self.x, training=True, seed=self.seed, sink=Sink()).recorder.graph()
                     for side, model in (("candidate", self.candidate), ("reference", self.ref_model))]
        try:
            found = pair_nodes(*train)
        except PairingError:
            return
        if not found.complete or any(n.order < 0 for g in train for n in g.nodes):
            return
        # The same node in both traces of one model: its module, and the part of it (functional uses).
        at = [{(id(n.module), n.part): n for n in g.nodes} for g in graphs]
        pairs: dict[int, tuple[Node, Node, Node, Node]] = {}  # candidate id -> eval and train nodes of both
        for tc, tr in found.nodes.items():
            c, r = (at[i].get((id(g.nodes[n].module), g.nodes[n].part))
                    for i, (g, n) in enumerate(zip(train, (tc, tr), strict=True)))
            if c is None or r is None:
                return
            pairs[c.id] = (c, r, train[0].nodes[tc], train[1].nodes[tr])
        if self.pairing.complete and any(self.pairing.nodes.get(c) not in (None, r.id) for c, (_, r, _, _) in
                                         pairs.items()):
            return  # the two traces pair otherwise: the eval pairing stands
        alone = [c for c, r, _, _ in pairs.values() if c.order < 0 or r.order < 0]
        pairing, self.train_only = self.pairing, True
        if not pairing.complete:
            pairing.unpaired_candidate, pairing.unpaired_reference, pairing.undecided = [], [], []
            pairing.wiring, pairing.settled = list(found.wiring), list(found.settled)
            pairing.divergence, pairing.divergence_reason = None, ""
        pairing.nodes = {c: r.id for c, (_, r, _, _) in pairs.items()}
        for c, r, c_train, r_train in pairs.values():
            for node, used in ((c, c_train), (r, r_train)):
                if node.order < 0:
                    node.functions, node.roles = set(used.functions), dict(used.roles)
        pairing.stored_once, pairing.constant_differences = {}, []
        compare_constants(self.cand_graph, self.ref_graph, pairing)
        names = ", ".join(c.display + ("" if (c.order < 0) == (r.order < 0) else
                                       f" (the {'reference' if c.order < 0 else 'candidate'}'s runs in eval mode too)")
                          for c, r, _, _ in [pairs[c.id] for c in alone[:5]])
        self.report.notes.append(
            f"{len(alone)} modules run in train mode alone (auxiliary heads, say): both models traced in train mode "
            f"and paired there, ported, and compared module by module in the train step, which runs recorded (their "
            f"outputs are not the compared output): {names}{' ...' if len(alone) > 5 else ''}")

    def _other_outputs(self, ref_outputs: list[torch.Tensor]) -> list[str]:
        """Where the compared outputs differ: the candidate's other outputs of the reference output's shape."""
        if len(ref_outputs) != 1 or not self.report.outputs:
            return []
        shape = list(ref_outputs[0].shape)
        chosen = self.report.outputs[0].get("chosen")
        others = [how for how, size in self.report.outputs[0].get("choices", {}).items()
                  if size == shape and how != chosen]
        shown = ", ".join(how if how.startswith("'") else f"tensor {how}" for how in others)
        return [f"the candidate also returns {shown} of the reference output's shape {shape}: "
                f"output={others[0]} compares {'it' if len(others) == 1 else 'the first'}"] if others else []

    def _settle(self, tie: UndecidedTie, ref_eval: ReferenceCapture, port: bool) -> Pairing:
        """Settle a tie the dataflow cannot break by trying each way of pairing it: port through it and compare
        one eval pass; keep the one way under which every paired module agrees. The comparisons that follow
        decide the verdict as for any pairing."""
        agreeing, outcomes = [], []
        names = _point_names(self.cand_graph)
        for pairing, words in tie.assignments:
            self.pairing = pairing
            pair_state(self.cand_graph, self.ref_graph, pairing)
            self.rules = dict(pairing.tensors)
            try:
                if port:
                    self.port(self.ref_model, self.candidate)
            except PortError as err:
                outcomes.append(f"{words}: cannot be ported ({str(err).splitlines()[0]})")
                continue
            _, capture, _ = self._run_pair(self.x, False, ref_eval, None)
            bad = sorted((p for p in capture.points if not p.ok(self.rtol)), key=lambda p: p.seq)
            if not bad:
                agreeing.append((pairing, words))
            where = names.get(bad[0].key, "the model output") if bad else ""
            outcomes.append(f"{words}: " + (f"{where} differs" if bad else "every paired module agrees"))
        tried = f"tried the {len(tie.assignments)} ways of pairing them (candidate <-> reference)"
        if not agreeing:
            raise PairingError(f"{tie}\n  {tried}: under none of them does every paired module agree, so the "
                               "candidate computes something else whichever way they are paired (refusing to name "
                               "a first divergence):" + "".join(f"\n    {o}" for o in outcomes))
        if len(agreeing) > 1:
            raise PairingError(f"{tie}\n  {tried}: every paired module agrees under {len(agreeing)} of them "
                               "(refusing to guess):" + "".join(f"\n    {o}" for o in outcomes))
        pairing, words = agreeing[0]
        pairing.tried = (f"tie settled by trying {len(tie.assignments)} assignments (candidate <-> reference): "
                         f"{words}, the only one under which every paired module agrees in eval mode")
        return pairing

    def _note_random_numbers(self) -> None:
        """Dropout, drop-path or a stray ``torch.rand`` explain differences that the numbers alone do not."""
        drawn: dict[tuple[str, str], dict[str, list[str]]] = {}
        for title, capture in self.captures.items():
            mode = "train" if title == "train" else "eval"
            sides = [("candidate", capture.random)]
            if mode == "train":
                sides.append(("reference", self.reference_random[title]))
            for side, calls in sides:
                for where, fn in calls:
                    places = drawn.setdefault((side, mode), {}).setdefault(fn, [])
                    if where not in places:
                        places.append(where)
        for (side, mode), functions in drawn.items():
            used = "; ".join(f"{fn} in {', '.join(places)}" for fn, places in functions.items())
            seeded = " (both models ran with the same seed)" if mode == "train" else ""
            self.report.notes.append(f"the {side} draws random numbers in {mode} mode: {used}{seeded}")

    def _structure_matches(self) -> bool:
        """Fill in what the pairing found; whether the structures match well enough to compare."""
        report, pairing, cand, ref = self.report, self.pairing, self.cand_graph, self.ref_graph
        never_c = [n.id for n in cand.nodes if n.order < 0 and n.id not in pairing.nodes]
        never_r = [n.id for n in ref.nodes if n.order < 0 and n.id not in pairing.nodes.values()]
        report.unpaired_candidate = unpaired_tensors(cand, pairing.unpaired_candidate, never_c)
        report.unpaired_reference = unpaired_tensors(ref, pairing.unpaired_reference, never_r)
        report.structure = list(pairing.wiring) + pairing.constant_differences + [
            f"could not be paired unambiguously: {u}" for u in pairing.undecided]
        report.layers = layers_frame(cand, ref, pairing, {}, {}, {}, self.rtol)
        if pairing.complete and not never_c and not never_r:
            return True
        if not indexing_visible():  # the difference may be indexing this torch hides from the trace: say so
            report.structure.append(INDEXING_INVISIBLE)
        if pairing.divergence is not None:
            report.first_divergence = cand.nodes[pairing.divergence].display
            report.divergence_detail = f"structure: {pairing.divergence_reason}"
        counts = [sum(t.numel() for t in m.state_dict().values()) for m in (self.candidate, self.ref_model)]
        params = [sum(p.numel() for p in m.parameters()) for m in (self.candidate, self.ref_model)]
        same = ("as many parameters: the same numbers may be arranged otherwise (split over several modules, say), "
                "which a one-to-one port cannot follow" if params[0] == params[1] else "parameters")
        report.structure.insert(0, f"the structures differ: {len(pairing.nodes)} modules paired, "
                                   f"{len(pairing.unpaired_candidate) + len(never_c)} of the candidate's and "
                                   f"{len(pairing.unpaired_reference) + len(never_r)} of the reference's left over "
                                   f"({counts[0]:,} vs {counts[1]:,} values in their state; {params[0]:,} vs "
                                   f"{params[1]:,} {same})")
        return False

    # -- passes ------------------------------------------------------------------------------
    def _run_pair(self, x: torch.Tensor, training: bool, ref_capture: ReferenceCapture | None,
                  output_weights: list[torch.Tensor] | None, fingerprints: bool = False,
                  models: tuple[nn.Module, nn.Module] | None = None, rtol: float | None = None):
        """Both models' captures of one pass (``models``: other copies of the two, candidate first, within
        ``rtol``). Reference points are kept by reference and copied on write; if an in-place operation the
        recorder did not recognize defeats that, the pass runs again copying every point."""
        candidate, reference = models or (self.candidate, self.ref_model)
        rtol = self.rtol if rtol is None else rtol

        def run(model, sink):
            return _pass(model, x, sink=sink, training=training, seed=self.seed, output_weights=output_weights)

        for eager in (False, True):
            ref_step = None
            if ref_capture is None or eager:
                ref_capture = ReferenceCapture(rtol, fingerprints=fingerprints, eager=eager,
                                               grads=output_weights is not None)
                ref_step = _run("reference", run, reference, ref_capture)
            capture = CandidateCapture(ref_capture, self.pairing.nodes, rtol, eager=eager)
            try:
                step = _run("candidate", run, candidate, capture)
                capture.compare_grads()
                return ref_step, capture, step
            except StaleCaptureError:
                if eager:
                    raise
        raise AssertionError("unreachable")

    def _compare_pass(self, title: str, x: torch.Tensor, *, training: bool, ref_capture: ReferenceCapture | None = None,
                      output_weights: list[torch.Tensor] | None = None) -> tuple[_Step | None, _Step]:
        """Compare one pass; when it differs, run it once more with fingerprints to locate where."""
        ref_step, capture, step = self._run_pair(x, training, ref_capture, output_weights)
        self.captures[title] = capture
        self.reference_random[title] = capture.reference.random
        capture.reference_random_seqs = capture.reference.random_seqs
        capture.reference = None  # its tensors are no longer needed
        if capture.diverges():
            _, located, _ = self._run_pair(x, training, None, None, fingerprints=True)
            found = locate(located, title, self.names)
            if found is not None:
                self.divergences[title] = found
        return ref_step, step

    def _wide_pass(self) -> None:
        """The eval pass on the first sample scaled up, every paired module compared (a difference an activation
        saturating downstream hides from the output is seen where it arises)."""
        title = f"eval, {self.wide_title}"
        self._compare_pass(title, self.x[self.samples] * self.wide_input_scale, training=False)
        self.report.checks[f"eval output, {self.wide_title}"] = self.captures[title].output_diff()

    def _train_step(self, output_weights: list[torch.Tensor]) -> None:
        """One train step of both models, compared by what it leaves: the outputs, the input gradient, every
        paired parameter's gradient and buffer. Run again recorded (every paired module's train-mode output
        compared) only to locate a difference, to say where random numbers are drawn, or to compare modules
        called in train mode alone (``_pair_train_only``); the plain pass's numbers stay the verdict."""
        report = self.report
        pairs = [(cand_key, ref_key) for ref_key, cand_key in self.pairing.tensors]
        with self._counting_stochastic_calls(), self._rates_off(self.candidate, self.ref_model) as calls_off:
            cand, ref = _both(self.candidate, self.ref_model, self.x, training=True, seed=self.seed, watch=True,
                              output_weights=output_weights)
        if any(calls.turned_off for calls in calls_off):  # which model made them is not known: both are observed
            self._find_rates_at_calls(["candidate", "reference"])
        diffs = _TrainDiffs.of(cand, ref, pairs)
        if not _finite([*ref.outputs, ref.input_grad, *ref.grads.values()]):
            self.reference_not_finite.add("train step")
        if cand.drew or ref.drew or not diffs.agrees(self.rtol) or self.train_only:
            del cand, ref
            with self._rates_off(self.candidate, self.ref_model):
                ref, cand = self._compare_pass("train", self.x, training=True, output_weights=output_weights)
            if not diffs.agrees(self.rtol) and _TrainDiffs.of(cand, ref, pairs).agrees(self.rtol):
                report.notes.append("the train step differs when run plainly and agrees when run again recorded "
                                    "(a kernel that is not deterministic, or one chosen differently under the "
                                    "recorder): the plain run's numbers are the verdict, with nothing located")
        self.trained = True
        self.grads, self.buffers = diffs.grads, diffs.buffers
        # What the step added to integer counts (a BatchNorm's num_batches_tracked), both sides: how often it ran.
        before = [dict(m.named_buffers()) for m in (self.candidate, self.ref_model)]
        self.counts = {c: (int(cand.buffers[c] - before[0][c]), int(ref.buffers[r] - before[1][r])) for c, r in pairs
                       if c in cand.buffers and r in ref.buffers and cand.buffers[c].numel() == 1
                       and not cand.buffers[c].is_floating_point() and not ref.buffers[r].is_floating_point()}
        # The buffers the candidate's step leaves as they were while the reference's changes them.
        self.unchanged = {c for c, r in pairs if c in cand.buffers and r in ref.buffers
                          and torch.equal(cand.buffers[c], before[0][c])
                          and not torch.equal(ref.buffers[r], before[1][r])}
        report.checks.update(diffs.checks)
        if diffs.missing:
            report.structure.append(f"gradients on one side only: {', '.join(diffs.missing[:10])}")
        if self.grads:
            name, worst = Diff.worst(self.grads)
            report.checks[f"parameter gradients (worst: {name})"] = worst
        if self.buffers:
            name, worst = Diff.worst(self.buffers)
            report.checks[f"buffers after the train step (worst: {name})"] = worst

    @contextmanager
    def _rates_off(self, candidate: nn.Module, reference: nn.Module):
        """Both models' stochastic layers off (``rates_off``), for a train-mode pass: copies of the prepared models
        (float64 or float32) hold them under the same names. Yields both ``DropoutCallsOff``: what they turn off."""
        with rates_off(candidate, self.report.stochastic_candidate) as ours, \
                rates_off(reference, self.report.stochastic_reference) as theirs:
            yield ours, theirs

    def _find_rates_at_calls(self, sides: Sequence[str]) -> None:
        """A model's traced pass called a dropout function with a rate, or the train step turned one off at the
        call: each of ``sides`` not observed in a train-mode pass yet (``prepare`` observes a model where it finds
        a rate under a known name) is observed now, so that the rates its dropout calls are given are listed, in
        the order they draw, among its stochastic layers."""
        for side, model in (("candidate", self.candidate), ("reference", self.ref_model)):
            if side not in sides:
                continue
            if side not in self.observed and not getattr(self.report, f"stochastic_{side}"):
                layers = _run(side, stochastic_layers, model, self.x, self.seed, probe=True)
                setattr(self.report, f"stochastic_{side}", layers)
                self.report.notes += idle_rate_notes(side, layers)
            self.observed.add(side)

    @contextmanager
    def _counting_stochastic_calls(self):
        """Count, in ``self.train_calls``, how often each stochastic layer of both models is called in the forward
        pass of a train step (not again where activation checkpointing recomputes it in the backward pass): a
        drop-path module a block builds and never calls (timm's, in a block without a residual) applies no rate."""
        self.train_calls = {"candidate": Counter(), "reference": Counter()}
        handles = []

        def count(side: str, name: str, module: nn.Module, args: tuple) -> None:
            if torch._C._current_autograd_node() is None:
                self.train_calls[side][name] += 1

        for side, model, layers in (("candidate", self.candidate, self.report.stochastic_candidate),
                                    ("reference", self.ref_model, self.report.stochastic_reference)):
            for name in dict.fromkeys(layer.module for layer in acting(layers)):
                handles.append(model.get_submodule(name).register_forward_pre_hook(functools.partial(count, side,
                                                                                                       name)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # -- float32 ---------------------------------------------------------------------------
    def float32_checks(self, cand32: nn.Module, ref32: nn.Module, x: torch.Tensor) -> None:
        """The passes of the comparison again, on the float32 models as they are (ported), for
        bit-identity: the outputs, the input gradient, every parameter gradient, the buffers."""
        checks = self.report.float32
        cand, ref = _both(cand32, ref32, x, training=False, seed=self.seed)
        checks["eval output"] = _outputs_diff(cand.outputs, ref.outputs)
        if not checks["eval output"].bit_exact and self.report.tolerance.dtype == "float64" \
                and self._eval_level().holds:
            self.report.notes += self._float32_parting(cand32, ref32, x)
        if self.wide_input_scale:
            cand, ref = _both(cand32, ref32, x[self.samples] * self.wide_input_scale, training=False, seed=self.seed)
            checks[f"eval output, {self.wide_title}"] = _outputs_diff(cand.outputs, ref.outputs)
        if self.output_weights is None:
            return
        with self._rates_off(cand32, ref32):
            cand, ref = _both(cand32, ref32, x, training=True, seed=self.seed,
                              output_weights=[w.float() for w in self.output_weights])
        diffs = _TrainDiffs.of(cand, ref, [(cand_key, ref_key) for ref_key, cand_key in self.pairing.tensors])
        checks.update(diffs.checks)
        for what, part in (("parameter gradients", diffs.grads), ("buffers after the train step", diffs.buffers)):
            if part:
                name, worst = min(part.items(), key=lambda kv: (kv[1].bit_exact, -kv[1].max_rel))
                checks[f"{what} (worst: {name})"] = worst

    def _float32_parting(self, cand32: nn.Module, ref32: nn.Module, x: torch.Tensor) -> list[str]:
        """Where float32 eval passes the float64 verdict calls the same function first part bit for bit: the
        first paired module whose float32 output is not the reference's bit for bit while its input is (an
        ``AvgPool2d(7)`` against a mean, a hand-written swish), so that a harmless rounding difference is told
        from one that matters. Recorded, every paired module compared at tolerance zero; run only where the
        float32 eval output is not bit-identical."""
        models = (cand32, ref32)
        _, capture, _ = self._run_pair(x, False, None, None, models=models, rtol=0.0)
        if not capture.diverges():
            return []
        _, located, _ = self._run_pair(x, False, None, None, fingerprints=True, models=models, rtol=0.0)
        found = locate(located, "float32 eval", self.names)
        if found is None:
            return []
        return [f"float32 is not bit-identical from {found.module} on ({found.detail}); float64 agrees there, so "
                f"the two compute the same function with their operations rounded otherwise"]

    # -- verdict -----------------------------------------------------------------------------
    def conclude(self, not_applicable: Mapping[str, str], more: Sequence[Level]) -> None:
        """The verdict in levels (eval function, train step, stochastic configuration; ``not_applicable``
        ones with their reason; then ``more``), each with its own first divergence, and the overall
        verdict from them."""
        report, rtol = self.report, self.rtol
        report.levels = {}
        if self.compared:
            report.layers = layers_frame(self.cand_graph, self.ref_graph, self.pairing, self.captures, self.grads,
                                         self.buffers, rtol, trained=self.trained)
            outputs = [d.max_abs for k, d in report.checks.items() if k in ("eval output", "train output")]
            report.max_abs_diff = max(outputs) if outputs else math.nan
            report.levels["eval"] = self._eval_level()
            report.levels["train step"] = self._train_level()
        else:
            for name in ("eval", "train step"):
                report.levels[name] = Level(name, None, detail="not compared: the structures differ")
        report.levels["stochastic configuration"] = self._stochastic_level()
        for name, why in not_applicable.items():
            report.levels[name] = Level(name, None, detail=why)
        for level in more:
            report.levels[level.name] = level
        levels = list(report.levels.values())
        report.equivalent = (self.compared and not report.structure and levels[0].holds is True
                             and all(level.holds is not False for level in levels)
                             and report.levels["train step"].state != "undecided")
        report.bit_exact = (report.equivalent and all(level.bit_exact for level in levels[:2] if level.holds)
                            and not report.converted)
        for level in levels:
            if level.holds is False:
                level.detail += self._settings_note(level.first_divergence)
        report.notes += self._settings_differing()
        failing = next((level for level in levels if level.holds is False), None)
        if self.compared and not report.equivalent and not report.undecided:
            if failing is None:  # only the structure (gradients on one side only, say)
                report.first_divergence, report.divergence_detail = self._structure_divergence()
            else:
                report.first_divergence, report.divergence_detail = failing.first_divergence, failing.detail

    def _settings_note(self, module: str | None) -> str:
        """Where a divergence is located at a module with a partner (a paired node, or a module holding no tensors
        that the dataflow puts in a reference module's place): how its settings differ from its partner's."""
        if module is None or not hasattr(self, "pairing"):
            return ""
        for node in self.cand_graph.called():
            partner = self.pairing.nodes.get(node.id)
            # A part of a module (its tensors used by functional calls) has no settings of its own to show.
            if node.display == module and partner is not None and not node.part:
                ref_node = self.ref_graph.nodes[partner]
                partner_name = self.ref_graph.name(partner)
                words = [_paired_settings(node, ref_node)]
                frozen = [(side, name) for side, n, name in (("candidate", node, module),
                                                             ("reference", ref_node, partner_name)) if n.frozen_norm]
                if len(frozen) == 1:
                    side, name = frozen[0]
                    words.append(f"the {side}'s {name} holds its weight and bias as buffers, a frozen BatchNorm (no "
                                 f"gradients; in train mode it may normalize by its running statistics, not the "
                                 f"batch's)")
                shown = "; ".join(w for w in words if w)
                return f" [settings of {module} vs the reference's {partner_name}: {shown}]" if shown else ""
        found = self._step_partner(module)
        if found is None:
            return self._steps_note(module)
        partner_name, ours, theirs = found
        words = settings_difference(ours, theirs)
        return f" [settings of {module} vs the reference's {partner_name}: {words}]" if words else ""

    def _settings_differing(self) -> list[str]:
        """A note on every paired module whose settings differ from its partner's, grouped by the difference
        (``eps 0.001 vs 1e-05 in 49 modules``): causes to read beside a divergence, which names only the first,
        so that a second difference is not found only once the first is fixed. Classes left out (libraries name
        theirs differently)."""
        if not hasattr(self, "pairing"):
            return []
        where: dict[str, list[str]] = {}
        for node in self.cand_graph.called():
            partner = self.pairing.nodes.get(node.id)
            if partner is None or node.part:
                continue
            for part in _paired_settings(node, self.ref_graph.nodes[partner], classes=False).split("; "):
                if part:
                    where.setdefault(part, []).append(node.display)
        if not where:
            return []
        shown = "; ".join(f"{part} in {len(names)} module{'s' if len(names) > 1 else ''} ({', '.join(names[:4])}"
                          f"{' ...' if len(names) > 4 else ''})" for part, names in where.items())
        return [f"settings that differ between paired modules (candidate's first; causes to read beside the "
                f"numbers, not verdicts): {shown}"]

    def _steps_note(self, module: str) -> str:
        """Where a divergence at ``module`` is computed through steps without tensors from points that agree: the
        leaf modules each model runs on those points alone (activations, poolings), where their classes differ, so
        that a step one model has and the other lacks (a reference's max-pool, the ReLU ending its stem) is named."""
        found = next((d for d in self.divergences.values() if d.module == module and d.upstream), None)
        theirs_at = None if found is None else self._reference_points(found.upstream)
        if theirs_at is None:
            return ""
        steps = {side: [c for c in self.trace_calls[side] if c.upstream == at and self._is_step(model, c)]
                 for side, model, at in (("candidate", self.candidate, found.upstream),
                                         ("reference", self.ref_model, theirs_at))}
        kinds = {side: [type(model.get_submodule(c.name)).__name__ for c in steps[side]]
                 for side, model in (("candidate", self.candidate), ("reference", self.ref_model))}
        if kinds["candidate"] == kinds["reference"]:
            return ""
        words = "; ".join(f"the {side}'s: " + (", ".join(f"{c.name} ({kind})" for c, kind in
                                                         zip(steps[side], kinds[side], strict=True)) or "none")
                          for side in ("candidate", "reference"))
        source = ", ".join(sorted(self.names.get(key, "the model input") for key in found.upstream))
        return (f" [the modules computing from {source} alone (a step written as a function is not listed): "
                f"{words}]")

    def _reference_points(self, upstream: frozenset) -> frozenset | None:
        """The reference's points in the place of the candidate's ``upstream`` (the model input stays itself);
        ``None`` where one is not paired."""
        points = set()
        for key in upstream:
            partner = self.pairing.nodes.get(key[1]) if len(key) == 3 else -1
            if partner is None:
                return None
            points.add(key if len(key) != 3 else (key[0], partner, key[2]))
        return frozenset(points)

    @staticmethod
    def _is_step(model: nn.Module, call: Call) -> bool:
        """Whether ``call`` is a leaf module holding no tensors that computes something (not an ``nn.Identity``)."""
        return (call.node is None and bool(call.name) and call.output_keys != call.input_keys
                and next(model.get_submodule(call.name).children(), None) is None)

    def _step_partner(self, module: str) -> tuple[str, nn.Module, nn.Module] | None:
        """The reference module in the place of ``module``, a module holding no tensors (an activation, a pooling):
        the leaf modules that compute from the same points (paired nodes' inputs and outputs, the model input) are
        taken in order on both sides, and where there are as many on each, the one at its position is its partner
        (timm's ``act1``, ``maxpool`` for another ResNet's ``relu``, ``pool``). ``None`` where they are not one for
        one (a step written as a function on one side) or ``module`` holds tensors or runs no module of its own."""
        calls = self.trace_calls
        # The call the divergence was located at (``Divergence.order``: its place in end order), else the first.
        ends = {found.order for found in self.divergences.values() if found.module == module}
        named = [c for c in calls["candidate"] if c.name == module and c.node is None]
        for call in [c for c in named if c.end in ends] or named[:1]:
            upstream = self._reference_points(call.upstream)
            if upstream is not None:
                ours, theirs = ([c for c in calls[side] if c.upstream == at and self._is_step(model, c)]
                                for side, model, at in (("candidate", self.candidate, call.upstream),
                                                        ("reference", self.ref_model, upstream)))
                if call in ours and len(ours) == len(theirs) and _one_for_one(ours, theirs, ours.index(call),
                                                                             self.candidate, self.ref_model):
                    name = theirs[ours.index(call)].name
                    return name, self.candidate.get_submodule(module), self.ref_model.get_submodule(name)
        return None

    def _float32_exact(self, prefix: str) -> bool:
        diffs = [d for k, d in self.report.float32.items() if k.startswith(prefix)]
        return bool(diffs) and all(d.bit_exact for d in diffs)

    def _eval_level(self) -> Level:
        rtol = self.rtol
        passes = [title for title in self.captures if title != "train"]
        every = [p.diff for t in passes for p in self.captures[t].points]
        every += [d for k, d in self.report.checks.items() if k.startswith("eval output")]
        holds = all(d.ok(rtol) for d in every)
        bit_exact = self._float32_exact("eval output")
        if holds:
            return Level("eval", True, bit_exact)
        if "eval" in self.reference_not_finite:
            return _not_finite_level("eval", "eval output")
        found = [self.divergences[t] for t in passes if t in self.divergences]
        outputs = [d for k, d in self.report.checks.items() if k.startswith("eval output")]
        # Outputs that agree beside a module that differs: a difference these weights and inputs do not carry to
        # the output (a BatchNorm and a max-pool in either order: they commute under positive scales alone).
        hidden = ("; the outputs agree on these inputs, yet a module's output differs: with these weights the "
                  "difference does not reach the output, with others it may" if outputs and
                  all(d.ok(rtol) for d in outputs) else "")
        if found:
            first = min(found, key=lambda d: d.order)
            return Level("eval", False, False, first.module, first.detail + hidden)
        module, detail = self._structure_divergence()
        return Level("eval", False, False, module, detail + hidden)

    def _train_level(self) -> Level:
        if not self.trained:
            return Level("train step", None, detail="not checked (train=False)")
        rtol = self.rtol
        every = [p.diff for p in self.captures["train"].points] if "train" in self.captures else []
        every += list(self.grads.values()) + list(self.buffers.values())
        every += [d for k, d in self.report.checks.items() if not k.startswith("eval output")]
        exact = ("train output", "input gradient", "parameter gradients", "buffers")
        bit_exact = all(self._float32_exact(k) for k in exact if any(c.startswith(k) for c in self.report.float32))
        if all(d.ok(rtol) for d in every):
            return Level("train step", True, bit_exact)
        if "train step" in self.reference_not_finite:
            return _not_finite_level("train step", "train output, input gradient or parameter gradients")
        module, detail = self._train_divergence()
        still = self._still_drawing()
        early = self._buffer_difference_before_draws() if still else None
        if early is not None:
            module, detail = early
        elif still and "train" in self.captures and self.captures["train"].draws_may_explain(rtol):
            return Level("train step", None, False, None,
                         f"cannot be decided here: random numbers are still drawn in train mode by {still} (not a "
                         f"rate this tool knows, so not turned off), drawn before the first difference, and the "
                         f"train step, both models run with one seed, differs, first at {module} ({detail}); turn "
                         f"that randomness off in the model to decide it")
        return Level("train step", False, False, module, detail)

    def _random_left(self) -> dict[str, list[str]]:
        """Each side's modules that still draw random numbers in the train step (after ``rates_off``), in the order
        they first draw (``blocks.2`` before ``blocks.10``)."""
        return {side: list(dict.fromkeys(where for where, _ in calls))
                for side, calls in (("candidate", self.captures["train"].random if "train" in self.captures else []),
                                    ("reference", self.reference_random.get("train", [])))}

    def _still_drawing(self) -> str:
        return "; ".join(f"the {side} in {', '.join(places)}" for side, places in self._random_left().items() if places)

    def _stochastic_level(self) -> Level:
        report = self.report
        cand, ref = report.stochastic_candidate, report.stochastic_reference
        left = self._random_left()
        still = self._still_drawing()
        # How often each is applied: counted in the train step where one ran, else its calls in the eval trace.
        observed = self.train_calls if self.trained else None
        cand, ref = (applications(acting(layers), (observed or self.calls).get(side, {}), observed is not None)
                     for side, layers in (("candidate", cand), ("reference", ref)))
        side_by_side = f"candidate: {summary(cand)}; reference: {summary(ref)}"
        if not rates_match(cand, ref):
            at = next((i for i, (a, b) in enumerate(zip(cand, ref)) if a.rate != b.rate), min(len(cand), len(ref)))
            # A rate the candidate lacks: the candidate as a whole (its root) is where it differs.
            where = cand[at].module or "(root)" if at < len(cand) else "(root)"
            first = " vs ".join(str(side[at]) if at < len(side) else "none" for side in (cand, ref))
            drawn = (f"; random numbers still drawn in train mode by {still}: not a known rate, so not turned off"
                     if still else "")
            # A side still drawing may hold rates not known anywhere among its known ones (a drop-connect before
            # its head dropout): the configurations can be the same unless its known rates, in order, are not
            # among the other side's (or both sides still draw, and anything can be).
            known = {"candidate": cand, "reference": ref}
            hidden = [side for side, other in (("candidate", "reference"), ("reference", "candidate"))
                      if left[side] and (left[other] or _among([a.rate for a in known[side]],
                                                               [b.rate for b in known[other]]))]
            if hidden:
                return Level("stochastic configuration", None, False, None,
                             f"{side_by_side}{drawn}; the {' and the '.join(hidden)}'s rates beyond those known may "
                             f"be in those draws, so the configurations cannot be compared here")
            return Level("stochastic configuration", False, False, where,
                         f"stochastic configuration: the rates differ ({side_by_side}; the first that differs: "
                         f"{first}); turned off in both copies for the train step{drawn}")
        at, unseen = units_compared(cand, ref)
        if at is not None:
            return Level("stochastic configuration", False, False, cand[at].module or "(root)",
                         f"stochastic configuration: the same rates, each draw dropping other units ({side_by_side}; "
                         f"the first that differs: {cand[at]} vs {ref[at]}); turned off in both copies for the train "
                         f"step")
        if unseen is not None:
            return Level("stochastic configuration", None, False, None,
                         f"{side_by_side}; the same rates, but what one draw of {cand[unseen]} or of {ref[unseen]} "
                         f"drops is not seen here (layers of other classes, one not called alone on a probe), so "
                         f"whether they drop the same units is not decided")
        if any(left.values()):
            return Level("stochastic configuration", None, False, None,
                         f"{side_by_side}; random numbers still drawn in train mode by {still}: not a known rate, "
                         f"so not turned off (the train step ran both with one seed)")
        return Level("stochastic configuration", True, True, None, side_by_side)

    def _structure_divergence(self) -> tuple[str, str]:
        if self.pairing.divergence is not None:
            return (self.cand_graph.nodes[self.pairing.divergence].display,
                    f"structure: {self.pairing.divergence_reason}")
        return "(root)", "; ".join(self.report.structure) or "the whole-model checks differ"

    def _backward_divergence(self, node_of: dict[str, Node]) -> tuple[str, str] | None:
        """Where backward first goes wrong, from the gradients at every point of the recorded train step (backward
        runs against execution order): the latest point whose gradient differs, blamed on the module that takes
        that tensor (its backward turns agreeing gradients into a differing one); or a module whose parameter
        gradient differs while its own output's gradient agrees; whichever backward reaches first. ``None``
        where no gradient at a point was compared."""
        capture = self.captures.get("train")
        if capture is None or not capture.grad_points:
            return None
        rtol = self.rtol
        cores: dict[int, list] = {}
        for g in capture.grad_points:
            if g.key[0] == "core":
                cores.setdefault(g.key[1], []).append(g)
        own = []  # (where backward reaches it, node, parameter, its gradient's Diff)
        for key, d in self.grads.items():
            node = node_of[key]
            if not d.ok(rtol) and node.id in cores and all(c.diff.ok(rtol) for c in cores[node.id]):
                own.append((max(c.seq for c in cores[node.id]), node, key, d))
        bad = [g for g in capture.grad_points if not g.diff.ok(rtol)]
        latest = max(bad, key=lambda g: g.seq) if bad else None
        if own and (latest is None or max(own, key=lambda o: o[0])[0] > latest.seq):
            _, node, key, d = max(own, key=lambda o: o[0])
            return node.display, (f"train step: the gradient of {key} differs (max rel {d.max_rel:.3g}) while the "
                                  f"gradient of {node.display}'s output agrees: its backward goes wrong")
        if latest is None:
            return None
        where = self.names.get(latest.key, str(latest.key))
        if latest.missing:
            return self._cut(capture, latest, where)
        module, takers = self._consumers(capture, latest)
        which = (f"in {module}, which takes that tensor" if len(takers) <= 1 else
                 f"in one of {', '.join(takers)} (each takes that tensor, or what one of them computes from it, "
                 f"before the next point compared), inside {module}")
        return module, (f"train step: the gradient at {where} differs (max rel {latest.diff.max_rel:.3g}) while every "
                        f"gradient after it agrees: backward goes wrong {which}")

    def _cut(self, capture: CandidateCapture, point: GradPoint, where: str) -> tuple[str, str]:
        """Where no gradient reaches a point on one side while every later point's agrees: the gradient is cut
        there. A tensor that takes no part in autograd at a node's input was detached (or computed without
        gradients) before it: by the module whose forward hands it over; one that does, or a node's own output
        computed without gradients: by that node."""
        node = self.cand_graph.nodes[point.key[1]]
        own = next((c for c in capture.calls if c.node == node.id and c.k == point.key[2]), None)
        inside = point.key[0] == "in" and point.carries_grad or point.key[0] == "core" and not point.carries_grad
        caller = enclosing(capture.calls, own)
        blamed = node.display if inside or own is None else (caller.name if caller is not None else "") or "(root)"
        side, other = point.missing, "reference" if point.missing == "candidate" else "candidate"
        return blamed, (f"train step: no gradient reaches {where} in the {side} while one does in the {other}, and "
                        f"every gradient after it agrees: the {side} cuts the gradient in {blamed} (a detach, or a "
                        f"computation under torch.no_grad)")

    def _consumers(self, capture: CandidateCapture, point: GradPoint) -> tuple[str, list[str]]:
        """The modules whose backward may turn agreeing gradients into the differing one at ``point``: the
        innermost module calls that take its tensor (not the node whose output it is), and after a module without
        parameters those that take its output in turn, up to the next point. One module: it; several (the tensor
        feeds two branches, or a chain of activations lies between two points): the innermost module call around
        them all, and their names."""
        node = self.cand_graph.nodes[point.key[1]]
        own = next((c for c in capture.calls if c.node == node.id and c.k == point.key[2]), None)
        ancestors = set()
        call = own
        while (call := enclosing(capture.calls, call)) is not None:
            ancestors.add(call.index)

        affine = {n.name for n in self.cand_graph.nodes if n.kind == "affine" and n.name}

        def inside_a_node(call: Call) -> bool:  # a padding module inside a convolution's: part of that node
            while (call := enclosing(capture.calls, call)) is not None:
                if call.node is not None or call.name in affine:
                    return True
            return False

        def takers(keys: set) -> list[Call]:
            found = [c for c in capture.calls if keys & set(c.input_keys) and c is not own and c.index not in ancestors
                     and not inside_a_node(c)]
            return [c for c in found if not any(o.index > c.index and o.end < c.end for o in found)]

        def is_node(call: Call) -> bool:  # compared at its input: the chain of suspects stops there
            return call.node is not None or call.name in affine

        found: list[Call] = []
        todo = takers({point.tensor_key}) if point.key[0] == "core" else [c for c in [own] if c is not None] + [
            c for c in takers({point.tensor_key}) if not is_node(c)]
        while todo:
            call = todo.pop(0)
            if call in found:
                continue
            found.append(call)
            if not is_node(call):  # no point at its output: whatever takes that output may be to blame too
                todo += [c for c in takers(set(call.output_keys)) if not is_node(c)]
        names = [c.name or "(root)" for c in found]
        if len(found) == 1:
            return names[0] if found[0] is not own else node.display, names
        if not found:
            caller = enclosing(capture.calls, own)
            return (caller.name if caller is not None else "") or "(root)", []
        common = enclosing(capture.calls, found[0])
        while common is not None and not all(common.index < c.index and common.end > c.end for c in found):
            common = enclosing(capture.calls, common)
        return (common.name if common is not None else "") or "(root)", names

    def _buffer_divergence(self, bad: list[tuple[Node, str, Diff]], agreeing: str) -> tuple[str, str]:
        """The first module (in execution order) among ``bad`` (node, state key, ``Diff``), whose buffers differ after
        the step while ``agreeing`` says what agrees; and why (it ran another number of times, or updates otherwise)."""
        node, key, d = min(bad, key=lambda b: b[0].order)
        counts = [f"{k} grew by {self.counts[k][0]} vs {self.counts[k][1]}" for k in node.state_keys()
                  if k in self.counts and self.counts[k][0] != self.counts[k][1]]
        why = ("the candidate's step leaves it as it was while the reference's updates it (a copy of it updated "
               "instead, or statistics kept fixed in train mode)" if key in self.unchanged
               else f"{'; '.join(counts)} in one step: the module ran another number of times "
                    f"(recomputed in the backward pass by activation checkpointing, say)" if counts
               else "its update rule differs (a BatchNorm momentum, say)")
        return node.display, f"train step: {key} after one step differs (max rel {d.max_rel:.3g}) {agreeing}: {why}"

    def _buffer_difference_before_draws(self) -> tuple[str, str] | None:
        """A buffer that differs after the step, of a BatchNorm (whose statistics its own operation writes) whose
        every call (its input and its own result agreeing) comes before any random number is drawn on either side:
        a difference the draws cannot explain. (Another module's buffers may be written later, by another module.)"""
        capture = self.captures.get("train")
        if capture is None:
            return None
        first = (min(capture.random_seqs, default=math.inf), min(capture.reference_random_seqs, default=math.inf))
        node_of = self._node_of()
        early = []
        for key, d in self.buffers.items():
            points = [p for p in capture.points if p.key[0] in ("in", "core") and p.key[1] == node_of[key].id]
            if not d.ok(self.rtol) and node_of[key].kind == "batchnorm" and points and all(
                    p.ok(self.rtol) and p.seq < first[0] and p.ref_seq is not None and p.ref_seq < first[1]
                    for p in points):
                early.append((node_of[key], key, d))
        return self._buffer_divergence(early, "while its input and its output agree, before any random number is "
                                              "drawn") if early else None

    def _node_of(self) -> dict[str, Node]:
        """The called candidate node holding each state key."""
        return {key: node for node in self.cand_graph.called() for key in node.state_keys()}

    def _train_divergence(self) -> tuple[str, str]:
        """In order of precedence: the earliest module (in the candidate's execution order) that
        explains a difference in the train-mode forward pass; the earliest module whose buffers
        differ after the train step; where backward first goes wrong (``_backward_divergence``), or
        without gradients at points the latest module whose gradients differ; where the wiring differs."""
        if "train" in self.divergences:
            return self.divergences["train"].module, self.divergences["train"].detail
        node_of = self._node_of()
        bad_buffers = [(node_of[k], k, d) for k, d in self.buffers.items() if not d.ok(self.rtol)]
        if bad_buffers:
            return self._buffer_divergence(bad_buffers, "while every output agrees")
        backward = self._backward_divergence(node_of)
        if backward is not None:
            return backward
        bad_grads = [(node_of[k], k, d) for k, d in self.grads.items() if not d.ok(self.rtol)]
        if bad_grads:
            node, key, d = max(bad_grads, key=lambda b: b[0].order)
            return node.display, (
                f"train step: the gradient of {key} differs (max rel {d.max_rel:.3g}) while the forward passes agree; "
                f"it is the last module in execution order with a differing gradient, where backward goes wrong")
        if self.pairing.divergence is not None:
            return self._structure_divergence()
        first = next((n.name for n in self.cand_graph.called() if INPUT in n.preds), "(root)")
        return first or "(root)", "train step: the input gradient differs while everything else agrees"
