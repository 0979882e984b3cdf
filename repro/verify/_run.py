"""``verify``: trace, pair, port, compare, and name the first divergence."""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from repro.equivalence import Diff, randomize_
from repro.porting import PortError, PortRules, port_weights
from repro.verify._compare import (
    MISMATCH, CandidateCapture, Divergence, ReferenceCapture, StaleCaptureError, compare, locate,
)
from repro.verify._pairing import pair_nodes, pair_state, reshaped_state
from repro.verify._report import VerifyReport, layers_frame, unpaired_tensors
from repro.verify._trace import INPUT, Graph, PointKey, Recorder, trace

WIDE_INPUT_SCALE = 8.0


class VerifyError(ValueError):
    """The verification could not run: a model that fails on the input, a model off the CPU, ..."""


@dataclass(frozen=True)
class _PairedRules(PortRules):
    """Porting rules made from a dataflow pairing: one exact name per tensor."""

    mapping: Mapping[str, str] = field(default_factory=dict)

    def target_key(self, source_key: str) -> str | None:
        return self.mapping.get(source_key)


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _resolve_reference(reference: str | nn.Module, reference_kwargs: Mapping[str, Any] | None) -> tuple[nn.Module, str]:
    if isinstance(reference, nn.Module):
        return copy.deepcopy(reference), _type_name(reference)
    if not isinstance(reference, str):
        raise TypeError(f"reference must be a spec such as 'timm:resnet50' or an nn.Module, got {type(reference).__name__}")
    import reference as reference_library
    from repro.registry import REFERENCES

    if reference_kwargs is None:  # a spec the suite covers: its settings without dropout and drop-path
        entry = REFERENCES.get(reference)
        reference_kwargs = dict(entry.deterministic_reference_kwargs) if entry is not None else {}
    return reference_library.create(reference, **reference_kwargs), reference


# What a model that cannot run on the input raises; anything else is a bug to see in full.
_MODEL_FAILURES = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError, AssertionError)


def _run(which: str, fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _MODEL_FAILURES as err:
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
    """What a pass leaves besides its points: with a backward pass, the gradients and buffers."""

    recorder: Recorder
    input_grad: torch.Tensor | None = None
    grads: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)


def _forward(model: nn.Module, x: torch.Tensor, sink, *, training: bool, seed: int,
             output_weights: list[torch.Tensor] | None = None) -> _Step:
    """One recorded forward pass of ``model`` (in train or eval mode, random numbers seeded), and a
    backward pass of ``sum(output * output_weights)`` when weights are given. The model is left
    as it was: mode, buffers and gradients."""
    devices = [x.device] if x.device.type == "cuda" else []
    with _scratch(model, training), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        recorder = Recorder(model, sink)
        if output_weights is None:
            with torch.no_grad():
                recorder.run(x)
            return _Step(recorder)
        x = x.clone().requires_grad_(True)
        outputs = [t for t in tree_flatten(recorder.run(x))[0] if isinstance(t, torch.Tensor)]
        if len(output_weights) != len(outputs):
            raise ValueError(f"the model returns {len(outputs)} tensors where the reference returns {len(output_weights)}")
        loss = sum((t * (w.reshape(t.shape) if w.numel() == t.numel() else torch.ones_like(t))).sum()
                   for t, w in zip(outputs, output_weights, strict=True) if t.requires_grad)
        if isinstance(loss, torch.Tensor):
            loss.backward()
        return _Step(
            recorder,
            x.grad.detach().clone() if x.grad is not None else torch.zeros_like(x),
            # No copies needed: ``_scratch`` gives the parameters their previous gradients back.
            {n: p.grad.detach() for n, p in model.named_parameters() if p.grad is not None},
            {n: b.detach().clone() for n, b in model.named_buffers()},
        )


def _point_names(cand: Graph) -> dict[PointKey, str]:
    names: dict[PointKey, str] = {}
    for node in cand.called():
        for k in range(node.calls):
            call = f" (call {k + 1})" if node.calls > 1 else ""
            names[("in", node.id, k)] = f"the input of {node.name or '(root)'}{call}"
            names[("core", node.id, k)] = f"the output of {node.name or '(root)'}{call}"
    return names


def _check_cpu(model: nn.Module, which: str) -> None:
    devices = {t.device.type for t in list(model.parameters()) + list(model.buffers())}
    if devices - {"cpu"}:
        raise VerifyError(f"repro.verify runs on the CPU; the {which} has tensors on {sorted(devices - {'cpu'})}: call .cpu()")


def verify(
    candidate: nn.Module,
    reference: str | nn.Module,
    *,
    input_size: Sequence[int] = (2, 3, 224, 224),
    port: bool = True,
    train: bool = True,
    rtol: float = 1e-5,
    seed: int = 0,
    wide_input_scale: float | None = WIDE_INPUT_SCALE,
    reference_kwargs: Mapping[str, Any] | None = None,
) -> VerifyReport:
    """Check whether ``candidate`` computes exactly what ``reference`` computes, and where it first differs.

    ``reference`` is a spec (``"timm:resnet50"``, ``"torchvision:resnet50"``, built with
    ``reference_kwargs``, or for a spec the suite covers with its settings that switch dropout
    and drop-path off) or a module (copied, never changed). With ``port=True`` the reference is
    randomized and its weights are copied into ``candidate``, which keeps them; with
    ``port=False`` both models are compared with the weights they hold. ``train=False`` skips
    the train-mode step, ``wide_input_scale=None`` the eval pass on a scaled-up sample.

    Raises ``PairingError`` when the dataflow cannot decide which module is which, and
    ``VerifyError`` when a model cannot run on the input.
    """
    if not isinstance(candidate, nn.Module):
        raise TypeError(f"candidate must be an nn.Module, got {type(candidate).__name__}")
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) < 2 or any(s < 1 for s in input_size):
        raise ValueError(f"input_size must be positive sizes such as (2, 3, 224, 224), got {input_size}")
    ref_model, ref_name = _resolve_reference(reference, reference_kwargs)
    _check_cpu(candidate, "candidate")
    _check_cpu(ref_model, "reference")
    was_training = candidate.training
    try:
        if port:
            _run("reference", randomize_, ref_model, input_size, seed)
        run = _Verification(candidate, ref_model, VerifyReport(_type_name(candidate), ref_name, input_size, rtol),
                            seed, train, wide_input_scale)
        return run.run(port)
    finally:
        candidate.train(was_training)


class _Verification:
    def __init__(self, candidate: nn.Module, ref_model: nn.Module, report: VerifyReport, seed: int, train: bool,
                 wide_input_scale: float | None) -> None:
        self.candidate, self.ref_model, self.report = candidate, ref_model, report
        self.rtol, self.seed, self.train, self.wide_input_scale = report.rtol, seed, train, wide_input_scale
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.x = torch.randn(report.input_size, generator=self.gen)
        self.captures: dict[str, CandidateCapture] = {}
        self.reference_random: dict[str, list[tuple[str, str]]] = {}
        self.divergences: list[Divergence] = []
        self.grads: dict[str, Diff] = {}
        self.buffers: dict[str, Diff] = {}

    def run(self, port: bool) -> VerifyReport:
        report = self.report
        # The reference's eval pass both traces it and is the first comparison's reference side.
        ref_eval = ReferenceCapture(self.rtol)
        self.ref_graph = _run("reference", _forward, self.ref_model, self.x, ref_eval, training=False,
                              seed=self.seed).recorder.graph()
        with torch.no_grad():
            self.cand_graph, _ = _run("candidate", trace, self.candidate.eval(), self.x[:1].clone())
        self.pairing = pair_nodes(self.cand_graph, self.ref_graph)
        if not self._structure_matches():
            return report
        pair_state(self.cand_graph, self.ref_graph, self.pairing)
        report.notes += self.pairing.notes(self.ref_graph)
        if port:
            rules = _PairedRules(name="dataflow pairing", source_type=report.reference, target_type=report.candidate,
                                 renames=(), mapping=dict(self.pairing.tensors))
            try:
                source = (reshaped_state(self.ref_model.state_dict(), self.pairing) if self.pairing.reshapes
                          else self.ref_model)
                report.port = port_weights(source, self.candidate, rules)
            except PortError as err:  # a floating tensor paired with an integer one, say
                raise VerifyError(f"the pairing found by dataflow cannot be ported: {err}") from err
        self.names = _point_names(self.cand_graph)

        ref_outputs = ref_eval.outputs
        self._compare_pass("eval", self.x, training=False, ref_capture=ref_eval)
        del ref_eval
        report.checks["eval output"] = self.captures["eval"].output_diff()
        if self.wide_input_scale:
            title = f"eval, first sample x{self.wide_input_scale:g}"
            self._compare_pass(title, self.x[:1] * self.wide_input_scale, training=False)
            report.checks[f"eval output, first sample x{self.wide_input_scale:g}"] = self.captures[title].output_diff()
        if self.train:
            self._train_step([torch.randn(t.shape, generator=self.gen).to(t) for t in ref_outputs])
        self._note_random_numbers()
        self._verdict()
        return report

    def _note_random_numbers(self) -> None:
        """Dropout, drop-path or a stray ``torch.rand`` explain differences that the numbers alone do not."""
        drawn: dict[tuple[str, str], dict[str, list[str]]] = {}
        for title, capture in self.captures.items():
            mode = "train" if title == "train" else "eval"
            sides = [("candidate", capture.random)] + ([("reference", self.reference_random[title])] if mode == "train" else [])
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
        never_c = [n.id for n in cand.nodes if n.order < 0]
        never_r = [n.id for n in ref.nodes if n.order < 0]
        report.unpaired_candidate = unpaired_tensors(cand, pairing.unpaired_candidate, never_c)
        report.unpaired_reference = unpaired_tensors(ref, pairing.unpaired_reference, never_r)
        report.structure = list(pairing.wiring) + [f"could not be paired unambiguously: {u}" for u in pairing.undecided]
        report.layers = layers_frame(cand, ref, pairing, {}, {}, {}, self.rtol)
        if pairing.complete and not never_c and not never_r:
            return True
        if pairing.divergence is not None:
            report.first_divergence = cand.nodes[pairing.divergence].name or "(root)"
            report.divergence_detail = f"structure: {pairing.divergence_reason}"
        counts = [sum(t.numel() for t in m.state_dict().values()) for m in (self.candidate, self.ref_model)]
        report.structure.insert(0, f"the structures differ: {len(pairing.nodes)} modules paired, "
                                   f"{len(pairing.unpaired_candidate) + len(never_c)} of the candidate's and "
                                   f"{len(pairing.unpaired_reference) + len(never_r)} of the reference's left over "
                                   f"({counts[0]:,} vs {counts[1]:,} values in their state)")
        return False

    # -- passes ------------------------------------------------------------------------------
    def _run_pair(self, x: torch.Tensor, training: bool, ref_capture: ReferenceCapture | None,
                  output_weights: list[torch.Tensor] | None, fingerprints: bool = False):
        """Both models' captures of one pass. Reference points are kept by reference and copied
        on write; if an in-place operation the recorder did not recognize defeats that, the
        pass runs again copying every point."""
        def run(model, sink):
            return _forward(model, x, sink, training=training, seed=self.seed, output_weights=output_weights)

        for eager in (False, True):
            ref_step = None
            if ref_capture is None or eager:
                ref_capture = ReferenceCapture(self.rtol, fingerprints=fingerprints, eager=eager)
                ref_step = _run("reference", run, self.ref_model, ref_capture)
            capture = CandidateCapture(ref_capture, self.pairing.nodes, self.rtol, eager=eager)
            try:
                return ref_step, capture, _run("candidate", run, self.candidate, capture)
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
        capture.reference = None  # its tensors are no longer needed
        if capture.diverges():
            _, located, _ = self._run_pair(x, training, None, None, fingerprints=True)
            found = locate(located, title, self.names)
            if found is not None:
                self.divergences.append(found)
        return ref_step, step

    def _train_step(self, output_weights: list[torch.Tensor]) -> None:
        report = self.report
        ref_step, cand_step = self._compare_pass("train", self.x, training=True, output_weights=output_weights)
        report.checks["train output"] = self.captures["train"].output_diff()
        report.checks["input gradient"] = compare(cand_step.input_grad, ref_step.input_grad) or MISMATCH
        owner = {key: node.name for node in self.cand_graph.called() for key in node.state_keys()}
        grad_scale: dict[str, float] = {}  # per candidate module: its largest reference gradient
        missing = []
        for ref_key, cand_key in self.pairing.tensors:
            if cand_key in cand_step.grads or ref_key in ref_step.grads:
                if cand_key not in cand_step.grads or ref_key not in ref_step.grads:
                    missing.append(f"{cand_key} / {ref_key}")
                    continue
                expected = ref_step.grads[ref_key]
                self.grads[cand_key] = compare(cand_step.grads[cand_key], expected) or MISMATCH
                scale = float(expected.abs().max()) if expected.numel() else 0.0
                grad_scale[owner[cand_key]] = max(grad_scale.get(owner[cand_key], 0.0), scale)
            elif cand_key in cand_step.buffers:
                self.buffers[cand_key] = compare(cand_step.buffers[cand_key], ref_step.buffers[ref_key]) or MISMATCH
        # A gradient is measured against the largest gradient of its module: the bias gradient of a
        # BatchNorm feeding another BatchNorm in train mode is zero up to rounding (the next one
        # removes every channel's mean), and rounding noise relative to zero means nothing.
        for key, d in self.grads.items():
            scale = grad_scale[owner[key]]
            rel = d.max_abs / scale if scale > 0 else (0.0 if d.max_abs == 0 else math.inf)
            self.grads[key] = Diff(d.max_abs, rel, d.bit_exact, d.finite)
        if missing:
            report.structure.append(f"gradients on one side only: {', '.join(missing[:10])}")
        if self.grads:
            name, worst = Diff.worst(self.grads)
            report.checks[f"parameter gradients (worst: {name})"] = worst
        if self.buffers:
            name, worst = Diff.worst(self.buffers)
            report.checks[f"buffers after the train step (worst: {name})"] = worst

    # -- verdict -----------------------------------------------------------------------------
    def _verdict(self) -> None:
        report, rtol = self.report, self.rtol
        report.layers = layers_frame(self.cand_graph, self.ref_graph, self.pairing, self.captures, self.grads,
                                     self.buffers, rtol)
        points = [p.diff for c in self.captures.values() for p in c.points]
        every = points + list(report.checks.values()) + list(self.grads.values()) + list(self.buffers.values())
        report.equivalent = all(d.ok(rtol) for d in every) and not report.structure
        report.bit_exact = report.equivalent and all(d.bit_exact for d in every)
        outputs = [d.max_abs for k, d in report.checks.items() if k in ("eval output", "train output")]
        report.max_abs_diff = max(outputs) if outputs else math.nan
        if not report.equivalent:
            report.first_divergence, report.divergence_detail = self._first_divergence()

    def _first_divergence(self) -> tuple[str, str]:
        """In order of precedence: the earliest module (in the candidate's execution order) that
        explains a difference in a forward pass; the earliest module whose buffers differ after
        the train step; the latest whose gradients differ (backward runs the other way); where
        the wiring differs."""
        if self.divergences:
            first = min(self.divergences, key=lambda d: d.order)
            return first.module, first.detail
        node_of = {key: node for node in self.cand_graph.called() for key in node.state_keys()}
        bad_buffers = [(node_of[k], k, d) for k, d in self.buffers.items() if not d.ok(self.rtol)]
        if bad_buffers:
            node, key, d = min(bad_buffers, key=lambda b: b[0].order)
            return node.name or "(root)", (f"train step: {key} after one step differs (max rel {d.max_rel:.3g}) "
                                           f"while every output agrees (a BatchNorm momentum, say)")
        bad_grads = [(node_of[k], k, d) for k, d in self.grads.items() if not d.ok(self.rtol)]
        if bad_grads:
            node, key, d = max(bad_grads, key=lambda b: b[0].order)
            return node.name or "(root)", (
                f"train step: the gradient of {key} differs (max rel {d.max_rel:.3g}) while the forward passes agree; "
                f"it is the last module in execution order with a differing gradient, where backward goes wrong")
        if self.pairing.divergence is not None:
            return (self.cand_graph.nodes[self.pairing.divergence].name or "(root)",
                    f"structure: {self.pairing.divergence_reason}")
        first = next((n.name for n in self.cand_graph.called() if INPUT in n.preds), "(root)")
        return first or "(root)", "train step: the input gradient differs while everything else agrees"
