"""``repro.verify`` with an ONNX graph as the candidate: a model from any framework, exported.

``verify_onnx("model.onnx", "timm:resnet50")`` reads the graph into an ``OnnxGraph``
(``repro.onnx_graph``: one module per ONNX node, each computing with torch functions, the node's
weights its own) and verifies that module as it verifies any candidate: traced, paired with the
reference by dataflow (ONNX node names, initializer names and the order of independent nodes play
no part), the randomized reference's weights ported into its copy, compared node by node in float64;
the first divergence is named by its ONNX node. The file is only read.

Two facts beyond the comparison:

* Folded BatchNorms. Exporters fold a BatchNorm into the convolution that feeds it (both torch
  exporters do in eval mode), so the graph has a convolution with a bias where the reference has a
  convolution and a BatchNorm. When the graph has fewer ``BatchNormalization`` nodes than the
  reference has BatchNorms, the reference is also compared folded the same way: every BatchNorm
  whose input is exactly the output of a convolution that feeds nothing else
  (``repro.fuse.fold_in_place``, the exporters' rule), once a float64 check shows the folded
  reference computes the reference's function. It is compared folded first where the graph lacks
  exactly the foldable BatchNorms, else only where the reference as it is leaves the structures
  apart (a candidate that lacks a BatchNorm of its own is told so, not compared folded). The report
  says which: a folded graph shows its structure, but what the BatchNorms held (their epsilon, their
  statistics) is inside convolution weights that the port replaces, so a wrong epsilon in the
  exported model cannot be seen; an export without folding is verified BatchNorm by BatchNorm.
* ONNX Runtime. The ported weights are written into a copy of the graph (``with_weights``), which
  ONNX Runtime runs on the inputs ``repro.export.check`` uses; its output must be within that
  check's calibrated tolerance of the reference's float64 output (the ``ONNX Runtime`` level).

Departures, and why:

* The train step does not apply: an ONNX inference graph has no train mode (its BatchNormalization
  uses stored statistics, its dropout is gone), so that level reads "not applicable" and the eval
  levels decide; for the same reason the stochastic configuration (dropout and drop-path rates,
  which an inference graph does not keep) is not applicable either.
* Float32 bit-identity is not claimed: it would be a fact about the torch kernels that run the
  graph here, not about the file, which every runtime computes with its own kernels. The float32
  lines stay in the report; what a runtime computes is the ``ONNX Runtime`` level.
* ``input_size`` defaults to the graph's input shape (batch 2 where the batch is symbolic); a given
  size must fit its fixed dimensions.
* With ``port=False`` (the file's weights against the reference's, as they are) a folded graph holds
  weights the exporter computed in float32, so it is decided within a tolerance calibrated on the
  reference's own float32-vs-float64 error (``repro.equivalence.calibrated_tolerance``), which the
  report states; an unfolded graph holds the very float32 weights and is decided in float64 as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import onnx
import torch
from torch import nn

from repro.equivalence import FLOAT64, FLOAT64_RTOL, Diff, Tolerance, calibrated_tolerance, copy_model, float64_copy
from repro.export import ExportError, check
from repro.fuse import fold_in_place, foldable
from repro.onnx_graph import OnnxGraph, OnnxGraphError, from_proto, read, with_weights
from repro.verify._report import Level, VerifyReport
from repro.verify._run import (
    VerifyError, VerifyOptions, checked_input_size, compare_models, float32_error, prepare, randomize_reference,
    resolve_reference, verification_input,
)
from repro.verify._trace import Call, Sink, trace

RUNTIME_LEVEL = "ONNX Runtime"
NO_TRAIN_MODE = "not applicable: an ONNX inference graph has no train mode; the eval levels decide"
NO_RATES = "not applicable: an ONNX inference graph keeps no dropout or drop-path rates"
UNFOLDED_EXPORT = ("torch.onnx.export(..., dynamo=True, optimize=False), or with dynamo=False: "
                   "do_constant_folding=False or training=torch.onnx.TrainingMode.PRESERVE")


def verify_onnx(candidate: str | Path | onnx.ModelProto, reference: str | nn.Module,
                options: VerifyOptions) -> VerifyReport:
    """``repro.verify`` for an ONNX file or ``onnx.ModelProto`` as the candidate (see the module docstring).

    Raises ``VerifyError`` (one line) for a file that is missing, not ONNX, invalid or uses an operator
    the reader does not support, and for an input size that does not fit the graph."""
    if options.port_into_candidate:
        raise ValueError("port_into_candidate=True: repro.verify never changes an ONNX file")
    try:
        proto, where = read(candidate)
        graph = from_proto(proto, where)
    except OnnxGraphError as err:
        raise VerifyError(str(err)) from None
    input_size = _input_size(graph, proto, options.input_size)
    ref32, ref_name = resolve_reference(reference, options.reference_kwargs, to_randomize=options.port)
    report = VerifyReport(where, ref_name, input_size, (options.given_tolerance or FLOAT64).rtol)
    prepare(graph, ref32, report, options.output, options.seed)
    prepared = list(report.notes)  # what preparing the copies found: kept for each attempt
    if options.port:
        randomize_reference(ref32, report, options.seed)
    notes = [f"the candidate is an ONNX graph (opset {graph.opset}, {len(proto.graph.node)} nodes) read into torch "
             f"node by node; float32 bit-identity is not claimed for it (the float32 lines are torch's kernels running "
             f"it; what ONNX Runtime computes is a level of its own)"]
    x = verification_input(input_size, options.seed)
    folding = _folding(graph, ref32, x, options.wide_input_scale, notes)
    not_applicable = {"train step": NO_TRAIN_MODE if options.train else "not checked (train=False)",
                      "stochastic configuration": NO_RATES}
    # The likelier reading first (folded where exactly the foldable BatchNorms are missing from the graph); the
    # other where the first leaves the structures apart (a candidate that lacks a BatchNorm of its own).
    attempts = [ref32] if folding is None else (
        [folding.reference, ref32] if folding.likely else [ref32, folding.reference])
    if len(attempts) > 1:
        attempts.append(attempts[0])  # where neither compares, the likelier reading's report
    for attempt, ref in enumerate(attempts):
        if attempt:
            report.reset(keep_notes=prepared)
        folded = folding is not None and ref is folding.reference
        tolerance = options.given_tolerance
        if folded and not options.port and options.rtol is None:
            calibrated = calibrated_tolerance(float32_error(ref, float64_copy(ref), x),
                                              "the file's folded weights carry the exporter's float32 arithmetic "
                                              "(port=False compares the weights as they are)")
            tolerance = Tolerance("float64", calibrated.rtol, calibrated.basis)
        run = compare_models(graph, ref, report, port=options.port, train=False, tolerance=tolerance,
                             seed=options.seed, wide_input_scale=options.wide_input_scale,
                             whole_batch=graph_batch(graph) is not None, not_applicable=not_applicable,
                             more_levels=lambda cand32, ref32: [_runtime_level(proto, cand32, ref32, report)])
        if run.compared:
            break
    # After the comparison, which starts its notes afresh where float64 fails.
    report.notes[:0] = notes + ([folding.note] if folded else [])
    if RUNTIME_LEVEL not in report.levels:
        report.levels[RUNTIME_LEVEL] = Level(RUNTIME_LEVEL, None, detail="not compared: the structures differ")
    if folding is not None and not run.compared:
        report.notes.append(f"the structures differ with the reference folded and as it is alike (shown: "
                            f"{'folded' if folded else 'as it is'}); a convolution of the graph without the bias its "
                            f"folded partner has is a missing BatchNorm, or one at its initial values that the export "
                            f"folded to a zero bias and dropped (export the trained model, or without folding: "
                            f"{UNFOLDED_EXPORT})")
    _name_nodes(report, graph)
    report.bit_exact = False
    for level in report.levels.values():
        level.bit_exact = False
    return report


def graph_batch(graph: OnnxGraph) -> int | None:
    """The batch the graph's input fixes (an export with a static batch), or ``None`` where it is symbolic."""
    batch = graph.input_shapes[0][0] if graph.input_shapes and graph.input_shapes[0] else None
    return batch if isinstance(batch, int) and batch > 0 else None


def _input_size(graph: OnnxGraph, proto: onnx.ModelProto, given: Sequence[int] | None) -> tuple[int, ...]:
    if len(graph.input_names) != 1:
        raise VerifyError(f"{graph.source}: the graph takes {len(graph.input_names)} inputs "
                          f"({', '.join(graph.input_names)}); repro.verify feeds one")
    elem = next(i for i in proto.graph.input if i.name == graph.input_names[0]).type.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        raise VerifyError(f"{graph.source}: the graph's input is {onnx.TensorProto.DataType.Name(elem)}; "
                          f"repro.verify feeds floating-point images")
    dims = graph.input_shapes[0]
    shown = f"[{', '.join(map(str, dims))}]"
    if given is None:
        if any(not isinstance(d, int) or d < 1 for d in dims[1:]):
            raise VerifyError(f"{graph.source}: the graph's input {shown} has symbolic dimensions; give input_size")
        return checked_input_size((dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 2, *dims[1:]))
    sizes = checked_input_size(given)
    if len(sizes) != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, sizes)):
        raise VerifyError(f"{graph.source}: input_size {list(sizes)} does not fit the graph's input {shown}")
    return sizes


# -- BatchNorms the export folded -----------------------------------------------------------------------

class _Handoffs(Sink):
    """Each node's input and own result (its last ones), to see which node takes exactly another's result."""

    def __init__(self) -> None:
        self.inputs: dict[int, torch.Tensor] = {}
        self.cores: dict[int, torch.Tensor] = {}

    def node_input(self, call: Call, tensor, upstream, seq, producer, key) -> None:
        self.inputs[call.node] = tensor

    def core(self, call: Call, tensor, upstream, seq, key) -> None:
        self.cores[call.node] = tensor


def conv_batchnorm_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) module names where the BatchNorm's input is exactly the convolution's
    result and the convolution feeds nothing else: what an exporter folds. Found by running ``model``
    (in eval mode, restored afterwards) on ``x``."""
    handoffs = _Handoffs()
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            graph, _ = trace(model, x, handoffs)
    finally:
        for module, training in modes:
            module.training = training
    pairs = []
    for norm in graph.called():
        if norm.calls != 1 or len(norm.preds) != 1 or min(norm.preds) < 0:
            continue
        conv = graph.nodes[next(iter(norm.preds))]
        if conv.calls == 1 and conv.succs == {norm.id} and foldable(conv.module, norm.module) \
                and handoffs.inputs.get(norm.id) is handoffs.cores.get(conv.id):
            pairs.append((conv.name, norm.name))
    return pairs


@dataclass(frozen=True)
class _Folding:
    reference: nn.Module  # the reference with its foldable BatchNorms folded
    likely: bool  # whether the graph lacks exactly those BatchNorms
    note: str  # what the report says when it is the one compared


def _folding(graph: OnnxGraph, ref32: nn.Module, x: torch.Tensor, wide_input_scale: float | None,
             notes: list[str]) -> _Folding | None:
    """The reference with its BatchNorms folded as an exporter folds them (see the module docstring), when
    the graph has fewer BatchNormalization nodes than the reference has BatchNorms and folding is sound
    here; why not, in ``notes``, where it is not."""
    kept = sum(1 for step in graph.children() if step.op_type == "BatchNormalization")
    norms = sum(1 for m in ref32.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    if kept >= norms:
        return None
    pairs = conv_batchnorm_pairs(ref32, x[:1])
    if not pairs:
        return None
    ref64, folded64 = float64_copy(ref32).eval(), float64_copy(ref32).eval()
    fold_in_place(folded64, pairs)
    inputs = [x.double()] + ([x[:1 if graph_batch(graph) is None else None].double() * wide_input_scale]
                             if wide_input_scale else [])
    with torch.no_grad():
        error = max(Diff.of(folded64(t), ref64(t)).max_rel for t in inputs)
    said = (f"the graph has {kept} BatchNormalization nodes where the reference has {norms} BatchNorms: the export "
            f"folded BatchNorm into the convolutions")
    if not error <= FLOAT64_RTOL:
        notes.append(f"the graph has {kept} BatchNormalization nodes where the reference has {norms} BatchNorms, but "
                     f"folding the reference's {len(pairs)} convolution -> BatchNorm pairs changes its function here "
                     f"(float64 max rel {error:.3g}), so it is compared unfolded; export without folding to verify "
                     f"module by module: {UNFOLDED_EXPORT}")
        return None
    folded = copy_model(ref32)
    fold_in_place(folded, pairs)
    return _Folding(folded, kept == norms - len(pairs), (
        f"{said}. Compared with the reference with its {len(pairs)} convolution -> BatchNorm pairs folded the same "
        f"way (it computes the reference's function: float64 max rel {error:.3g}). A folded graph shows its "
        f"structure, not what those BatchNorms held (epsilon, statistics): that is inside convolution weights, which "
        f"the port replaces, so it is not checked. To verify module by module, export without folding: "
        f"{UNFOLDED_EXPORT}"))


# -- ONNX Runtime ---------------------------------------------------------------------------------------

def _runtime_level(proto: onnx.ModelProto, cand32: nn.Module, ref32: nn.Module, report: VerifyReport) -> Level:
    """Whether ONNX Runtime, running the graph with the candidate copy's (ported) weights, computes the
    reference's output within ``repro.export.check``'s calibrated tolerance."""
    try:
        import onnxruntime
    except ImportError:
        return Level(RUNTIME_LEVEL, None, detail="not checked: onnxruntime is not installed")
    state = onnxruntime.capi.onnxruntime_pybind11_state
    try:
        result = check(ref32, with_weights(proto, cand32), locate_on_failure=False)
    except ExportError as err:
        return Level(RUNTIME_LEVEL, None, detail=f"not checked: {err}")
    except (state.Fail, state.InvalidGraph, state.InvalidArgument, state.NotImplemented,
            state.RuntimeException) as err:
        return Level(RUNTIME_LEVEL, None, detail=f"ONNX Runtime cannot run the graph: {str(err).splitlines()[0]}")
    weights = "the ported weights" if report.port is not None else "the file's weights"
    runtime = f"ONNX Runtime {onnxruntime.__version__} (CPU) with {weights}"
    worst = max(result.inputs, key=lambda c: c.max_abs / c.allowed if c.allowed else float("inf"))
    inputs = ", ".join(f"{c.kind} {'x'.join(map(str, c.shape))}" for c in result.inputs)
    if result.equivalent:
        return Level(RUNTIME_LEVEL, True, detail=(
            f"{runtime} computes the reference's output within {result.factor:g}x PyTorch's own float32 error on "
            f"{inputs}; worst |ONNX Runtime - float64| {worst.max_abs:.3g} <= {worst.allowed:.3g}"))
    bad = next(c for c in result.inputs if not c.ok)
    torch_agrees = all(d.ok(report.rtol) for k, d in report.checks.items() if k.startswith("eval output"))
    return Level(RUNTIME_LEVEL, False, detail=(
        f"{runtime}: on {bad.kind} {'x'.join(map(str, bad.shape))}, |ONNX Runtime - float64| {bad.max_abs:.3g} > "
        f"allowed {bad.allowed:.3g} ({result.factor:g}x PyTorch's own float32 error)"
        + ("; the graph read by torch computes the reference's output, so ONNX Runtime computes the graph otherwise"
           if torch_agrees else "")))


# -- naming -------------------------------------------------------------------------------------------

def _name_nodes(report: VerifyReport, graph: OnnxGraph) -> None:
    """Say ONNX node names where the report says the candidate's module names (they differ where a node's
    name has a dot, which torch module names cannot, or none)."""
    renamed = {module: graph.node_name(module) for module in graph.onnx_names if graph.node_name(module) != module}
    pattern = re.compile("|".join(rf"(?<![\w./:]){re.escape(m)}(?![\w./:])" for m in sorted(renamed, key=len,
                                                                                              reverse=True)))

    def node(name: str | None) -> str | None:
        return renamed.get(name, name)

    def text(detail: str) -> str:
        return pattern.sub(lambda found: renamed[found.group(0)], detail) if renamed else detail

    for level in report.levels.values():
        level.detail, level.first_divergence = text(level.detail), node(level.first_divergence)
    report.divergence_detail, report.first_divergence = text(report.divergence_detail), node(report.first_divergence)
    report.structure = [text(line) for line in report.structure]
    if not report.layers.empty:
        report.layers["candidate"] = report.layers["candidate"].map(node)
