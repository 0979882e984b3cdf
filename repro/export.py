"""ONNX export of any registered model, and proof that ONNX Runtime computes the same function.

``export(model, path)`` writes an ONNX file with the exporter the installed torch recommends:
``torch.onnx.export``'s own ``dynamo`` default (the ``torch.export``-based exporter in recent torch,
TorchScript tracing before it), read from its signature, never from a version string. The file
is written to a temporary name beside ``path`` and renamed into place, so a failed export leaves
nothing behind (and an existing file as it was).

``check(model, path)`` runs the file in ONNX Runtime (CPU) on several inputs and compares it with
the model. The tolerance is the model's own float32 error, not a fixed number: for each input,
PyTorch's float32 output is compared with the same model in float64 (the function itself), and
ONNX Runtime's output must be as close to float64 as ``FACTOR`` (32) times PyTorch's float32 error
(with a floor of ``FACTOR`` float32 ulps of the output's magnitude). Other kernels (BatchNorm folded
into the convolution, Winograd, other summation orders) round differently, not worse by orders
of magnitude; a wrong weight, padding or operator is off by far more than rounding.

Where the outputs differ, ``locate`` names the first diverging node: every module's output in
the ONNX graph (the value produced by the last node whose scope lies inside the module, from the
exporter's metadata: ``pkg.torch.onnx.name_scopes`` for the dynamo exporter, ``/a/b/Op`` node
names for TorchScript's) is exposed as an extra graph output, compared with the module's output
captured by a forward hook, under the same calibrated tolerance (per module, from the float32 vs
float64 hooks), and the first one in graph order that differs is reported with its module name.

Known pitfalls, checked rather than exported wrong: TensorFlow "same" padding (timm's
``Conv2dSame``, ours) depends on the input size; the exporter evaluates it for the exported
resolution, so the graph's spatial input size is fixed and ONNX Runtime refuses any other (it
never pads a different size wrongly). An operator the exporter cannot express, a batch size the
model's forward fixes (``--dynamic-batch``) and an opset the installed exporter cannot produce
raise ``ExportError`` with one line naming it.

Command line: ``python -m repro.export MODEL --out FILE [--opset N] [--dynamic-batch] [--check]``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import inspect
import logging
import math
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

import reference
from repro.registry import MODELS, REFERENCES, UnknownNameError, create_model
from repro.weights import WeightsError, load_weights_file

# ONNX Runtime may be this many times PyTorch's own float32 error away from float64. Measured ratios
# (randomized weights, 64 px): 0.8-1.5 for ResNet-18, DenseNet-121 and CIFAR ResNet-20, up to 3.7 for
# MobileNetV3 and 7.9 for EfficientNet-B0 (sigmoid-gated, large activations); 32 leaves room for
# that spread. A wrong weight or padding is off by orders of magnitude more (see tests/test_export.py).
FACTOR = 32.0
INPUT_NAME, OUTPUT_NAME = "input", "output"
_EPS32 = float(torch.finfo(torch.float32).eps)


class ExportError(ValueError):
    """Bad input or an export that cannot be made faithfully; the message is one line."""


# -- which exporter ------------------------------------------------------------------------------

def recommended_exporter() -> str:
    """``"dynamo"`` where ``torch.onnx.export`` defaults to ``dynamo=True``, else ``"torchscript"``."""
    parameter = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    return "dynamo" if parameter is not None and parameter.default is True else "torchscript"


def max_opset() -> int:
    """The newest opset the installed ``onnx`` package defines (no exporter can write a newer one)."""
    import onnx.defs

    return onnx.defs.onnx_opset_version()


# -- models by name ------------------------------------------------------------------------------

def create(name: str, weights: str | Path | None = None) -> nn.Module:
    """A registered model: a hand-written name (``resnet50``) or a reference spec (``timm:resnet50``)."""
    try:
        model = reference.create(name) if ":" in name else create_model(name)
    except UnknownNameError as err:
        raise ExportError(str(err)) from None
    if weights is not None:
        try:
            load_weights_file(model, weights)
        except WeightsError as err:
            raise ExportError(str(err)) from None
    return model


# -- export --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    input_size: tuple[int, ...]  # the example input's shape
    dynamic_batch: bool
    seconds: float


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every module's own train flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs tracebacks of fallbacks it recovers from (version conversion): not the user's
    error. Silenced for the block; what it could not do is checked on its result instead."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "torch.onnx", "torch.export", "torch._export")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def _one_line(err: BaseException) -> str:
    """The underlying cause of an exporter error, on one line. The dynamo exporter's message is a
    paragraph of advice, then an "Exception summary" whose first ``<class ...>: message`` line is
    the root cause (a missing ONNX function names the operator)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line.split(">: ", 1)[1] for line in lines if line.startswith("<class ") and ">: " in line]
    detail = causes[0] if causes else (lines[-1] if lines else type(err).__name__)
    return detail if len(detail) < 300 else detail[:297] + "..."


def _check_out_path(out: Path) -> None:
    if out.is_dir():
        raise ExportError(f"--out {out}: is a directory")
    if not out.parent.is_dir():
        raise ExportError(f"--out {out}: directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise ExportError(f"--out {out}: directory {out.parent} is not writable")


def export(
    model: nn.Module | str,
    out: str | Path,
    *,
    input_size: Sequence[int] = (1, 3, 224, 224),
    opset: int | None = None,
    dynamic_batch: bool = False,
    exporter: str | None = None,
) -> ExportResult:
    """Write ``model`` (a module or a registered name) to ``out`` as ONNX, in eval mode.

    ``dynamic_batch``: the batch dimension is symbolic (traced at batch 2, since torch.export
    specializes a size-1 dimension). The model's modes are restored afterwards; nothing else of
    it is touched."""
    exporter = exporter or recommended_exporter()
    if exporter not in ("dynamo", "torchscript"):
        raise ExportError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    name = model if isinstance(model, str) else type(model).__name__
    module = create(model) if isinstance(model, str) else model
    out = Path(out)
    _check_out_path(out)
    if opset is not None and not 1 <= opset <= max_opset():
        raise ExportError(f"opset {opset}: the installed onnx {_onnx_version()} defines opsets 1 to {max_opset()}")
    size = tuple(int(s) for s in input_size)
    if len(size) != 4 or any(s < 1 for s in size):
        raise ExportError(f"input size must be 4 positive sizes (N, C, H, W), got {size}")
    if dynamic_batch and size[0] == 1:
        size = (2, *size[1:])
    x = torch.randn(size, generator=torch.Generator().manual_seed(0))

    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as err:
        raise ExportError(f"--out {out}: cannot write in {out.parent}: {err.strerror}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    start = time.perf_counter()
    try:
        with _eval_mode(module), _quiet_exporter(), torch.no_grad():
            written = _export_with(exporter, module, x, tmp, opset, dynamic_batch, name)
        seconds = time.perf_counter() - start
        if opset is not None and written != opset:
            raise ExportError(f"opset {opset}: the installed {exporter} exporter (torch {torch.__version__}) "
                              f"cannot write {name} at opset {opset}; it produced opset {written}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, exporter, written, size, dynamic_batch, seconds)


def _export_with(exporter: str, model: nn.Module, x: torch.Tensor, path: Path, opset: int | None,
                 dynamic_batch: bool, name: str) -> int:
    import onnx

    # What each exporter raises for a model or an opset it cannot write: the dynamo exporter wraps every failure
    # in OnnxExporterError; the TorchScript exporter raises it for an operator it cannot express, a ValueError
    # (torch 2.2) or a RuntimeError (its C++ check, later torch) for an opset outside its range, and a
    # RuntimeError for a forward it cannot trace.
    refusals = (torch.onnx.errors.OnnxExporterError,) if exporter == "dynamo" else (ValueError, RuntimeError)
    try:
        if exporter == "dynamo":
            dynamic = ({0: torch.export.Dim("batch", min=1, max=1 << 16)},) if dynamic_batch else None
            program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, dynamic_shapes=dynamic,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
            program.save(path, external_data=False)
        else:
            axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
            kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            torch.onnx.export(model, (x,), str(path), opset_version=opset, dynamic_axes=axes,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], **kwargs)
    except refusals as err:
        what = "with a dynamic batch " if dynamic_batch else ""
        raise ExportError(f"{name} cannot be exported {what}by the {exporter} exporter: {_one_line(err)}") from None
    proto = onnx.load(str(path), load_external_data=False)
    if dynamic_batch:
        # When the forward pins the batch size (a constant broadcast against it, a reshape to a literal
        # batch), the dynamo exporter falls back to a static input; the TorchScript exporter keeps the
        # symbolic input and output names it was given, and ONNX shape inference finds the fixed batch
        # in the output. Either way a dynamic graph was asked for and not made.
        shapes = _onnx_input_shape(proto), _onnx_output_shape(onnx.shape_inference.infer_shapes(proto))
        if not all(isinstance(shape[0], str) for shape in shapes):
            raise ExportError(f"{name} cannot be exported with a dynamic batch by the {exporter} exporter: its "
                              f"forward fixes the batch size (the graph came out with input shape {shapes[0]}, "
                              f"output shape {shapes[1]})")
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _onnx_version() -> str:
    import onnx

    return onnx.__version__


# -- ONNX Runtime --------------------------------------------------------------------------------

def session(model: str | Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (default: torch's), one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run_session(sess, x: torch.Tensor) -> torch.Tensor:
    """The graph's first output on ``x`` (fed to its first input), whatever the exporter named them."""
    y = sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: x.detach().cpu().contiguous().numpy()})[0]
    return torch.from_numpy(y)


# -- the check ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Divergence:
    """Where the ONNX graph first departs from the model: ``module`` (``""`` for the model itself)
    and the ONNX node producing the compared value."""

    module: str
    node: str
    op_type: str
    max_abs: float
    allowed: float
    weights: tuple[str, ...] = ()  # the node's initializers (a folded BatchNorm's conv shows here)
    also: tuple[str, ...] = ()  # enclosing modules whose output is the same value

    def __str__(self) -> str:
        where = self.module or "(root)"
        weights = f", weights {', '.join(self.weights)}" if self.weights else ""
        return (f"first divergence at module {where} (ONNX node {self.node}, {self.op_type}{weights}): "
                f"max |ONNX Runtime - float64| {self.max_abs:.3g} > allowed {self.allowed:.3g}")


@dataclass(frozen=True)
class InputCheck:
    shape: tuple[int, ...]
    kind: str  # how the input was drawn
    max_abs: float  # |ONNX Runtime - float64 PyTorch|
    torch_fp32_error: float  # |float32 PyTorch - float64 PyTorch|: the calibration
    allowed: float
    ok: bool


@dataclass
class CheckReport:
    path: Path | str
    equivalent: bool
    inputs: list[InputCheck] = field(default_factory=list)
    divergence: Divergence | None = None
    factor: float = FACTOR

    def __str__(self) -> str:
        lines = [f"{self.path}: {'same function in ONNX Runtime' if self.equivalent else 'NOT the same function'} "
                 f"(tolerance {self.factor:g}x PyTorch's own float32 error)"]
        for c in self.inputs:
            lines.append(f"  {'ok ' if c.ok else 'BAD'} {c.kind:<9} {'x'.join(map(str, c.shape)):<14} "
                         f"|ort - fp64| {c.max_abs:.3g}  |torch fp32 - fp64| {c.torch_fp32_error:.3g}  "
                         f"allowed {c.allowed:.3g}")
        if self.divergence is not None:
            lines.append(f"  {self.divergence}")
        return "\n".join(lines)


def allowed_error(fp32: torch.Tensor, fp64: torch.Tensor, factor: float = FACTOR) -> tuple[float, float]:
    """(PyTorch's own float32 error, the tolerance it calibrates) for one output."""
    own = float((fp32.double() - fp64).abs().max()) if fp64.numel() else 0.0
    floor = _EPS32 * float(fp64.abs().max()) if fp64.numel() else 0.0
    return own, factor * max(own, floor)


def _max_abs(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if actual.shape != expected.shape:
        return math.inf
    diff = (actual.double() - expected).abs()
    return math.inf if not bool(torch.isfinite(actual).all()) else float(diff.max()) if diff.numel() else 0.0


def check_inputs(input_size: Sequence[int], dynamic_batch: bool) -> list[tuple[str, torch.Tensor]]:
    """The inputs a check runs: standard normal, a ×8 normal (saturating activations show), image-like
    uniform [0, 1); and, for a dynamic batch, normal inputs at batch 1 and at one more than exported."""
    n, *rest = input_size
    gen = torch.Generator().manual_seed(1)
    inputs = [("normal", torch.randn(n, *rest, generator=gen)), ("normal x8", 8 * torch.randn(n, *rest, generator=gen)),
              ("uniform", torch.rand(n, *rest, generator=gen))]
    if dynamic_batch:
        inputs += [("normal", torch.randn(b, *rest, generator=gen)) for b in sorted({1, n + 1} - {n})]
    return inputs


def _onnx_input_shape(proto) -> tuple[int | str, ...]:
    return _shape(proto.graph.input[0])


def _onnx_output_shape(proto) -> tuple[int | str, ...]:
    return _shape(proto.graph.output[0])


def _shape(value_info) -> tuple[int | str, ...]:
    """A graph value's declared shape: sizes, symbolic names, ``"?"`` where unknown."""
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def check(model: nn.Module, path, *, dynamic_batch: bool | None = None, factor: float = FACTOR,
          locate_on_failure: bool = True) -> CheckReport:
    """Does the ONNX file at ``path`` (or an ``onnx.ModelProto``) compute ``model``'s eval-mode function
    in ONNX Runtime? Inputs at the graph's own input shape (``check_inputs``); the model's modes are restored."""
    import onnx

    if isinstance(path, onnx.ModelProto):
        proto, path = path, f"the ONNX model {path.graph.name or '(unnamed graph)'}"
    else:
        path = Path(path)
        if not path.is_file():
            raise ExportError(f"{path}: no such ONNX file")
        proto = onnx.load(str(path))
    shape = _onnx_input_shape(proto)
    if dynamic_batch is None:
        dynamic_batch = isinstance(shape[0], str)
    batch = shape[0] if isinstance(shape[0], int) else 2
    if any(isinstance(s, str) for s in shape[1:]):
        raise ExportError(f"{path}: only the batch dimension may be symbolic, input shape is {shape}")
    sess = session(proto.SerializeToString())
    report = CheckReport(path, equivalent=True, factor=factor)
    model64 = copy.deepcopy(model).double()
    with _eval_mode(model), _eval_mode(model64), torch.no_grad():
        for kind, x in check_inputs((batch, *shape[1:]), dynamic_batch):
            fp32, fp64 = model(x), model64(x.double())
            own, allowed = allowed_error(fp32, fp64, factor)
            got = _max_abs(run_session(sess, x), fp64)
            ok = got <= allowed
            report.inputs.append(InputCheck(tuple(x.shape), kind, got, own, allowed, ok))
            if not ok and report.equivalent:
                report.equivalent = False
                if locate_on_failure:
                    report.divergence = locate(model, proto, x, factor=factor, model64=model64)
    return report


# -- locating the first divergence ------------------------------------------------------------------

def node_scopes(node) -> list[str]:
    """The module paths enclosing an ONNX node, outermost first (``""`` the model itself), from what
    the installed exporter writes: ``pkg.torch.onnx.name_scopes`` (dynamo; its last entry is the
    FX node), else a TorchScript-style node name ``/layer1/layer1.0/conv1/Conv``."""
    props = {p.key: p.value for p in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" in props:
        scopes = ast.literal_eval(props["pkg.torch.onnx.name_scopes"])
        return [str(s) for s in scopes[:-1]] or [""]
    if node.name.startswith("/"):
        # TorchScript writes each scope as the name in its parent ("conv1"), except that a container's
        # children carry their parent's path ("layer1.0"): rebuild full module paths.
        scopes = [""]
        for part in (p for p in node.name.split("/")[1:-1] if p):
            parent = scopes[-1]
            scopes.append(part if not parent or part.startswith(parent + ".") else f"{parent}.{part}")
        return scopes
    return [""]


def module_outputs(proto) -> dict[str, tuple[str, object]]:
    """For every module with nodes in the graph: (the ONNX value it outputs, the node producing it):
    the first output of the last node, in graph order, inside the module's scope."""
    last: dict[str, object] = {}
    for node in proto.graph.node:
        if not node.output:
            continue
        for scope in node_scopes(node):
            last[scope] = node
    return {scope: (node.output[0], node) for scope, node in last.items()}


def _hook(model: nn.Module, x: torch.Tensor) -> dict[str, list[tuple[torch.Tensor | None, torch.Tensor]]]:
    """Every module's (first input, output) on ``x``, one pair per call (a module may be called twice:
    torchvision's blocks reuse one ReLU)."""
    captured: dict[str, list[tuple[torch.Tensor | None, torch.Tensor]]] = {}
    handles = []
    for name, module in model.named_modules():
        def hook(_m, inputs, output, name=name):
            if isinstance(output, torch.Tensor):
                first = inputs[0].detach().clone() if inputs and isinstance(inputs[0], torch.Tensor) else None
                captured.setdefault(name, []).append((first, output.detach().clone()))
        handles.append(module.register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return captured


def _consumers(captured: dict, name: str) -> list[str]:
    """Modules whose input is an output of module ``name`` (an exporter may fold one into its producer:
    the TorchScript exporter names a Conv with its BatchNorm folded in after the convolution)."""
    outputs = [out for _inp, out in captured[name]]
    return [other for other, calls in captured.items() if other != name and any(
        inp is not None and inp.shape == out.shape and torch.equal(inp, out) for inp, _ in calls for out in outputs)]


def locate(model: nn.Module, proto, x: torch.Tensor, *, factor: float = FACTOR,
           model64: nn.Module | None = None) -> Divergence | None:
    """The earliest module output, in graph order, where ONNX Runtime departs from the model on ``x``."""
    import onnx

    outputs = module_outputs(proto)
    model64 = model64 if model64 is not None else copy.deepcopy(model).double()
    with _eval_mode(model), _eval_mode(model64), torch.no_grad():
        fp32, fp64 = _hook(model, x), _hook(model64, x.double())
    by_value: dict[str, list[str]] = {}
    for scope, (value, _node) in outputs.items():
        if scope in fp32 and scope in fp64:
            by_value.setdefault(value, []).append(scope)
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    existing = {o.name for o in probe.graph.output}
    for value in by_value:
        if value not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
    names = list(by_value)
    initializers = {i.name for i in proto.graph.initializer}
    feed = {proto.graph.input[0].name: x.numpy()}
    values = dict(zip(names, session(probe.SerializeToString()).run(names, feed), strict=True))
    for node in proto.graph.node:
        if not node.output or node.output[0] not in by_value:
            continue
        scopes = sorted(by_value[node.output[0]], key=lambda s: (len(s.split(".")) if s else 0))
        inner = scopes[-1]
        got = torch.from_numpy(np.asarray(values[node.output[0]]))
        if all(got.shape != out.shape for _inp, out in fp64[inner]):
            continue  # not the module's output after all (its last node computes something else)

        def error(name: str) -> tuple[float, float]:
            """(error, allowed) against the call of module ``name`` that the value is closest to."""
            pairs = [(_max_abs(got, out64), allowed_error(out32, out64, factor)[1])
                     for (_i, out32), (_j, out64) in zip(fp32[name], fp64[name], strict=True)]
            return min(pairs, key=lambda p: p[0] / p[1] if p[1] else p[0])

        err, allowed = error(inner)
        if not err <= allowed and any(e <= a for e, a in map(error, _consumers(fp64, inner))):
            continue  # the node computes its consumer too (folded), and agrees with it
        if not err <= allowed:
            weights = tuple(i for i in node.input if i in initializers)
            return Divergence(inner, node.name, node.op_type, err, allowed, weights, tuple(reversed(scopes[:-1])))
    return None


# -- command line ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line, exit 2, no usage dump
            raise ExportError(message)

    parser = Parser(prog="python -m repro.export", description=(
        "Export a registered model (hand-written name or reference spec such as timm:resnet50) to ONNX "
        f"with the exporter torch recommends here ({recommended_exporter()}); --check runs it in ONNX Runtime."))
    parser.add_argument("model", help="hand-written model name (resnet50) or reference spec (timm:resnet50)")
    parser.add_argument("--out", required=True, help="output .onnx file (written atomically)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's own)")
    parser.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension")
    parser.add_argument("--input-size", type=int, default=None, help="resolution (default: the model's native one)")
    parser.add_argument("--weights", default=None, help="a .safetensors or torch state-dict file for the model")
    parser.add_argument("--check", action="store_true", help="run it in ONNX Runtime (exit 1: differs)")
    try:
        args = parser.parse_args(argv)
        model = create(args.model, args.weights)
        resolution = args.input_size or _native_resolution(args.model)
        result = export(model, args.out, input_size=(1, 3, resolution, resolution), opset=args.opset,
                        dynamic_batch=args.dynamic_batch)
        batch = "N" if result.dynamic_batch else result.input_size[0]
        print(f"wrote {result.path} ({result.exporter} exporter, opset {result.opset}, input "
              f"{batch}x3x{resolution}x{resolution}, {result.seconds:.1f} s)")
        if args.check:
            report = check(model, result.path)
            print(report)
            return 0 if report.equivalent else 1
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _native_resolution(name: str) -> int:
    if name in REFERENCES:
        return REFERENCES[name].resolution
    return MODELS[name].input_size if name in MODELS else 224


if __name__ == "__main__":
    raise SystemExit(main())
