"""An ONNX graph as an ``nn.Module``: every node run by the torch function that computes it.

``load(source)`` reads an ONNX file or an ``onnx.ModelProto`` (never changing either), checks it with
``onnx.checker`` and returns an ``OnnxGraph``: an ``nn.Module`` with one child module per ONNX node,
named after the node, called in the graph's order (ONNX requires it to be topological). A node that
holds weights (``Conv``'s ``W`` and ``B``, ``Gemm``'s ``B`` and ``C``, ``BatchNormalization``'s scale,
bias, mean and variance, a ``Mul`` by a tensor such as a layer scale, ...) keeps them as its own
parameters and buffers, under torch's local names (``weight``, ``bias``, ``running_mean``,
``running_var``), and computes with the torch function a torch module of that kind uses
(``F.conv2d``, ``F.linear``, ``F.batch_norm``, ...). Every other operation is a parameter-free
child module calling one torch function. So the module can be traced, paired, ported into and
compared like any hand-written network (``repro.verify``), in float32 or, cast with ``.double()``,
in float64, and ``with_weights`` writes its weights back into a copy of the graph for ONNX Runtime.

Which inputs are weights: the weight inputs of the operators above, when they are initializers or
``Constant`` outputs (also through ``Identity`` nodes: the TorchScript exporter routes merged
initializers through them); and, for any other operator, a floating-point initializer of more than
one element in a data input (a layer scale, a position embedding). Scalars and integer tensors
(shapes, axes, the 3 and 6 of a hard-swish written out) are constants. Operator semantics follow
the ONNX specification (``onnx.defs``), at the opset the graph imports; an operator outside
``KERNELS``, another domain's operator or a subgraph raises ``OnnxGraphError`` naming the operator,
the node and the file.

Departures, and why:

* An initializer that several nodes use as a weight becomes one tensor per node, each written back
  under a name of its own: exporters merge equal initializers (an untrained network's BatchNorms
  share their ones and zeros), which says nothing about the network. A weight the network truly
  shares (one module called twice) therefore shows as two modules.
* ``MatMul`` by a weight is ``F.linear`` with the weight stored transposed (``[out, in]``, torch's
  layout), as is ``Gemm``'s ``B`` without ``transB``; a ``MatMul`` whose only consumer adds a bias
  vector is one module holding both (it is how exporters write a ``Linear`` on more than two
  dimensions); ``Gemm``'s ``C`` of ``N`` elements is a vector, a ``PRelu`` slope stays in the
  graph's shape. ``with_weights`` writes every tensor back in the graph's own layout and dtype.
* Casts between floating types, and floating constants, take the precision the module runs in:
  a float64 copy computes in float64 throughout, so that the comparison decides the function, not
  the graph's float32 (or float16) rounding. Half-precision initializers are read as float32.
* A float attribute (ONNX stores them in float32) or a float32 scalar constant is read as the number
  it stands for (``intended``: the simplest fraction that rounds to it): HardSigmoid's alpha 1/6 is
  0.16666667163 in the file, which a float64 comparison would otherwise see as a difference of
  3e-8 at every gate. The value read is never farther from the file's than float32 rounding.
* ``BatchNormalization`` also holds a ``num_batches_tracked`` count, as torch's BatchNorm does
  (zero, never used: an inference graph keeps no count), so that it pairs with a torch BatchNorm
  tensor for tensor; it is not written back. Training-mode operators (a ``BatchNormalization`` or
  ``Dropout`` in training mode) are refused: the module computes the inference graph in both of
  torch's modes.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from torch import nn

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
_DEFAULT_DOMAINS = ("", "ai.onnx")


class OnnxGraphError(ValueError):
    """A file that is not a readable, valid ONNX model, or a graph this module cannot run; one line."""


@dataclass(frozen=True)
class WeightSlot:
    """Where one weight of a module lives in the graph: an input of a node, with the graph's shape and
    element type for it (``transposed``: the module holds the transpose of the graph's matrix)."""

    node: int  # index in graph.node
    input: int
    shape: tuple[int, ...]
    elem_type: int
    transposed: bool = False


@dataclass(frozen=True)
class _Role:
    """A weight input of an operator: its torch local name and whether it is a buffer."""

    local: str
    buffer: bool = False


@dataclass(frozen=True)
class _Kernel:
    fn: Callable
    roles: dict[int, _Role]  # input -> weight role, whenever that input is constant
    control: frozenset[int]  # inputs that are shapes, axes, indices, bounds: never weights
    outputs: int  # how many outputs it computes (-1: as many as the node asks for)


KERNELS: dict[str, _Kernel] = {}


def _kernel(*ops: str, roles: dict[int, _Role] | None = None, control: Sequence[int] = (), outputs: int = 1):
    def register(fn: Callable) -> Callable:
        for op in ops:
            KERNELS[op] = _Kernel(fn, roles or {}, frozenset(control), outputs)
        return fn
    return register


class OnnxNode(nn.Module):
    """One ONNX node (or a ``MatMul`` and the ``Add`` of its bias): its weights, and the torch function
    that computes it. ``slots`` names, per input, the local tensor that stands in for it (``None``:
    the input is computed by the graph)."""

    def __init__(self, op_type: str, onnx_names: tuple[str, ...], attributes: dict, opset: int, outputs: int,
                 slots: tuple[str | None, ...]) -> None:
        super().__init__()
        self.op_type, self.onnx_names, self.attributes, self.opset = op_type, onnx_names, attributes, opset
        self.outputs, self.slots = outputs, slots
        self.weights: dict[str, WeightSlot] = {}

    def forward(self, *inputs: torch.Tensor | None, dtype: torch.dtype):
        args = [getattr(self, local) if local is not None else value for value, local in zip(inputs, self.slots,
                                                                                              strict=True)]
        return KERNELS[self.op_type].fn(self, args, dtype)

    def extra_repr(self) -> str:
        return f"{self.op_type} {' + '.join(self.onnx_names)!r}"


@functools.cache
def _node_class(op_type: str) -> type[OnnxNode]:
    """A subclass named after the operator, so that reports say ``Conv`` or ``BatchNormalization``."""
    return type(op_type, (OnnxNode,), {"__module__": __name__, "__doc__": f"The ONNX operator {op_type}."})


class OnnxGraph(nn.Module):
    """An ONNX graph run by torch functions (see the module docstring). ``onnx_names`` maps each child
    module's name to the ONNX node names it computes; ``input_shapes`` holds each graph input's
    dimensions (an ``int``, or the name of a symbolic one)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.input_names: list[str] = []
        self.input_shapes: list[tuple[int | str, ...]] = []
        self.output_names: list[str] = []
        self.plan: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []  # (module, input values, output values)
        self.constant_buffers: dict[str, str] = {}  # value name -> buffer name
        self.scalars: dict[str, tuple[float, tuple[int, ...]]] = {}  # float32 scalar constants: value, shape
        self.onnx_names: dict[str, tuple[str, ...]] = {}
        self.opset = 0
        # Floating tensors the graph creates (casts, ConstantOfShape, Range) take this buffer's dtype.
        self.register_buffer("compute_dtype", torch.zeros((), dtype=torch.float32), persistent=False)

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"{self.source} takes {len(self.input_names)} inputs, got {len(inputs)}")
        dtype = self.compute_dtype.dtype
        env: dict[str, torch.Tensor | None] = dict(zip(self.input_names, inputs, strict=True))
        env.update((value, getattr(self, buffer)) for value, buffer in self.constant_buffers.items())
        env.update((value, torch.full(shape, number, dtype=dtype)) for value, (number, shape) in self.scalars.items())
        for name, ins, outs in self.plan:
            result = self._modules[name](*[env[i] if i else None for i in ins], dtype=dtype)
            results = result if isinstance(result, tuple) else (result,)
            for value, tensor in zip(outs, results, strict=False):
                if value:
                    env[value] = tensor
        outputs = tuple(env[o] for o in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def node_name(self, module: str) -> str:
        """The ONNX node name(s) behind a child module's name."""
        return " + ".join(self.onnx_names.get(module, (module,)))


# -- reading -------------------------------------------------------------------------------------

def read(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The model and the name to call it by; ``OnnxGraphError`` (one line) when it cannot be read or is invalid."""
    if isinstance(source, onnx.ModelProto):
        proto, where = source, f"the ONNX model {source.graph.name or '(unnamed graph)'}"
    else:
        where = str(source)
        path = Path(source)
        if not path.is_file():
            raise OnnxGraphError(f"{where}: no such file")
        try:
            proto = onnx.load(str(path))
        except DecodeError as err:
            raise OnnxGraphError(f"{where}: not an ONNX model (cannot be parsed: {err})") from None
        except (OSError, onnx.checker.ValidationError) as err:  # external data it names but cannot find
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise OnnxGraphError(f"{where}: cannot be read: {first}") from None
    if not proto.graph.node:
        raise OnnxGraphError(f"{where}: not an ONNX model (it holds no graph)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise OnnxGraphError(f"{where}: not a valid ONNX model: {first}") from None
    return proto, where


def _simplest(low: Fraction, high: Fraction) -> Fraction:
    """The fraction with the smallest denominator strictly between ``0 <= low < high``."""
    whole = math.floor(low)
    if whole + 1 < high:
        return Fraction(whole + 1)
    if low == whole:
        return whole + Fraction(1, math.floor(1 / (high - whole)) + 1)
    return whole + 1 / _simplest(1 / (high - whole), 1 / (low - whole))


def intended(value: float) -> float:
    """The number a float32 stands for: the fraction with the smallest denominator among those that
    round to it (1/6 for 0.16666667163, 0.01 for 0.0099999998, 1e-5 for 9.99999975e-06; an exact
    value such as 0.5 or 6 is itself). Never farther from ``value`` than float32's rounding."""
    single = np.float32(value)
    if not np.isfinite(single) or single == 0:
        return float(single)
    magnitude = abs(single)
    below = np.nextafter(magnitude, np.float32(0))
    above = np.nextafter(magnitude, np.float32(np.inf))
    middle = Fraction(float(magnitude))
    found = _simplest((Fraction(float(below)) + middle) / 2, (middle + Fraction(float(above))) / 2)
    return math.copysign(float(found), float(single))


def _array(tensor: onnx.TensorProto) -> np.ndarray:
    values = numpy_helper.to_array(tensor)
    return values.astype(np.float32) if tensor.data_type in _FLOAT_TYPES - {onnx.TensorProto.DOUBLE} else values


def _torch(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(values, copy=True))


def _attributes(node: onnx.NodeProto, where: str) -> dict:
    attributes = {}
    for attribute in node.attribute:
        if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise OnnxGraphError(f"{where}: node {node.name!r} ({node.op_type}) holds a subgraph, which is not "
                                 f"supported")
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif attribute.type == onnx.AttributeProto.FLOAT:
            value = intended(value)
        elif attribute.type == onnx.AttributeProto.FLOATS:
            value = [intended(v) for v in value]
        elif isinstance(value, onnx.TensorProto):
            value = _array(value)
            if value.dtype == np.float32 and value.size == 1:
                value = np.full(value.shape, intended(float(value.reshape(-1)[0])))
        attributes[attribute.name] = value
    return attributes


def _constant_value(node: onnx.NodeProto, where: str) -> tuple[np.ndarray, int]:
    """A ``Constant`` node's value and its ONNX element type."""
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return _array(value), value.data_type
        if attribute.name in ("value_float", "value_floats"):
            return np.asarray(value, dtype=np.float32), onnx.TensorProto.FLOAT
        if attribute.name in ("value_int", "value_ints"):
            return np.asarray(value, dtype=np.int64), onnx.TensorProto.INT64
    raise OnnxGraphError(f"{where}: node {node.name!r} (Constant) holds a "
                         f"{', '.join(a.name for a in node.attribute)} value, which is not supported")


def _module_name(node: onnx.NodeProto, index: int, graph: OnnxGraph, taken: set[str]) -> str:
    """The node's name as a module name: dots (torch's path separator) become underscores; an unnamed
    node is called after its operator and position; a clash gets a prefix or a suffix."""
    base = node.name.replace(".", "_") if node.name else f"{node.op_type}_{index}"
    if hasattr(graph, base):
        base = f"node_{base}"
    name, k = base, 2
    while name in taken or hasattr(graph, name):
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


@dataclass
class _Graph:
    """What ``load`` knows about the graph before it builds modules."""

    proto: onnx.ModelProto
    where: str
    constants: dict[str, np.ndarray]  # initializers, Constant outputs, and Identity nodes' outputs of them
    elem_types: dict[str, int]
    consumers: dict[str, list[int]]
    outputs: set[str]

    def linear_bias(self, node: onnx.NodeProto) -> tuple[int, int] | None:
        """(the Add node, its input) that adds a bias vector to ``node``, a MatMul by a weight matrix, when
        the Add is the MatMul's only consumer: how exporters write a torch Linear on more than 2 dimensions."""
        weight = self.constants.get(node.input[1])
        users = self.consumers.get(node.output[0], [])
        if weight is None or weight.dtype.kind != "f" or weight.ndim != 2 or node.output[0] in self.outputs \
                or len(users) != 1:
            return None
        add = self.proto.graph.node[users[0]]
        if add.op_type != "Add" or len(add.input) != 2 or list(add.input).count(node.output[0]) != 1:
            return None
        slot = 1 - list(add.input).index(node.output[0])
        bias = self.constants.get(add.input[slot])
        if bias is None or bias.dtype.kind != "f" or bias.ndim != 1 or bias.shape[0] != weight.shape[1]:
            return None
        return users[0], slot


def load(source: str | Path | onnx.ModelProto) -> OnnxGraph:
    """The graph in ``source`` (a file or a ``ModelProto``, never changed) as an ``OnnxGraph``."""
    return from_proto(*read(source))


def from_proto(proto: onnx.ModelProto, where: str) -> OnnxGraph:
    """``proto`` (checked by ``read``; not changed) as an ``OnnxGraph`` called ``where`` in messages."""
    graph = proto.graph
    module = OnnxGraph(where)
    module.opset = next((o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS), 0)
    known = _Graph(proto, where, {i.name: _array(i) for i in graph.initializer},
                   {i.name: i.data_type for i in graph.initializer}, {}, {o.name for o in graph.output})
    skipped: set[int] = set()  # Constant nodes, and Identity nodes of constants: values, not steps
    for index, node in enumerate(graph.node):
        for value in node.input:
            known.consumers.setdefault(value, []).append(index)
        if node.domain not in _DEFAULT_DOMAINS:
            raise OnnxGraphError(f"{where}: node {node.name!r} is {node.domain}.{node.op_type}, an operator of "
                                 f"another domain than ONNX's, which is not supported")
        if node.op_type == "Constant":
            known.constants[node.output[0]], known.elem_types[node.output[0]] = _constant_value(node, where)
            skipped.add(index)
        elif node.op_type == "Identity" and node.input[0] in known.constants:
            known.constants[node.output[0]] = known.constants[node.input[0]]
            known.elem_types[node.output[0]] = known.elem_types[node.input[0]]
            skipped.add(index)

    inputs = [i for i in graph.input if i.name not in known.constants]
    module.input_names = [i.name for i in inputs]
    module.input_shapes = [tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                                 for d in i.type.tensor_type.shape.dim) for i in inputs]
    module.output_names = [o.name for o in graph.output]
    taken: set[str] = set()
    used_constants: set[str] = set()
    for index, node in enumerate(graph.node):
        if index in skipped:
            continue
        kernel = KERNELS.get(node.op_type)
        if kernel is None:
            raise OnnxGraphError(f"{where}: node {node.name!r} is the operator {node.op_type}, which repro's ONNX "
                                 f"reader does not support")
        if kernel.outputs >= 0 and sum(1 for o in node.output if o) > kernel.outputs:
            raise OnnxGraphError(f"{where}: node {node.name!r} ({node.op_type}) asks for {len(node.output)} outputs, "
                                 f"of which only the first {kernel.outputs} (inference) are supported")
        names, ins, outs = (node.name,), list(node.input), tuple(node.output)
        sources = [(index, k) for k in range(len(ins))]
        roles = dict(kernel.roles)
        fused = known.linear_bias(node) if node.op_type == "MatMul" else None
        if fused is not None:  # a Linear: the MatMul by a weight and the Add of its bias, one module
            add_index, slot = fused
            skipped.add(add_index)
            add = graph.node[add_index]
            names, outs = (node.name, add.name), tuple(add.output)
            ins.append(add.input[slot])
            sources.append((add_index, slot))
            roles = {1: _Role("weight"), 2: _Role("bias")}
        attributes = _attributes(node, where)
        slots: list[str | None] = []
        held: list[tuple[str, np.ndarray, WeightSlot, bool]] = []
        for k, value in enumerate(ins):
            array = known.constants.get(value)
            role = roles.get(k)
            if array is None or k in kernel.control or (role is None and (array.dtype.kind != "f" or array.size < 2)):
                slots.append(None)
                if array is not None:
                    used_constants.add(value)
                continue
            if role is None:
                role = _Role({"Add": "bias", "Sub": "bias"}.get(node.op_type, "weight") if k < 2 else f"input{k}")
            local = role.local if all(h[0] != role.local for h in held) else f"{role.local}{k}"
            # Matrix weights in torch's [out, in] layout: MatMul's B always, Gemm's B unless transB says it is.
            transposed = array.ndim == 2 and k == 1 and (
                node.op_type == "MatMul" or (node.op_type == "Gemm" and not attributes.get("transB", 0)))
            values = array.T if transposed else array
            if node.op_type == "Gemm" and k == 2 and array.ndim >= 1 and array.size == array.shape[-1]:
                values = array.reshape(-1)  # C of N values, broadcast along the rows: a bias vector
            slot = WeightSlot(*sources[k], tuple(array.shape), known.elem_types.get(value, onnx.TensorProto.FLOAT),
                              transposed)
            held.append((local, values, slot, role.buffer))
            slots.append(local)
        step = _node_class(node.op_type)(node.op_type, names, attributes, module.opset, len(outs), tuple(slots))
        for local, values, slot, buffer in held:
            tensor = _torch(values)
            if buffer:
                step.register_buffer(local, tensor)
            else:
                step.register_parameter(local, nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))
            step.weights[local] = slot
        if node.op_type == "BatchNormalization":
            step.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))
        name = _module_name(node, index, module, taken)
        module.add_module(name, step)
        module.onnx_names[name] = names
        module.plan.append((name, tuple("" if local is not None else v for v, local in zip(ins, slots, strict=True)),
                            outs))
    for value in sorted(used_constants | (known.outputs & set(known.constants))):
        array = known.constants[value]
        if array.dtype == np.float32 and array.size == 1:  # created in the module's precision, as intended
            module.scalars[value] = (intended(float(array.reshape(-1)[0])), tuple(array.shape))
            continue
        buffer = f"constant_{len(module.constant_buffers)}"
        module.register_buffer(buffer, _torch(array), persistent=False)
        module.constant_buffers[value] = buffer
    return module


# -- writing the weights back -------------------------------------------------------------------------

def with_weights(proto: onnx.ModelProto, module: OnnxGraph) -> onnx.ModelProto:
    """A copy of ``proto`` computing with ``module``'s weights: each weight a new initializer (in the
    graph's shape, layout and element type) that its node reads; initializers no node reads any more
    are dropped. ``proto`` itself is not changed."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    graph = copy.graph
    names = {v for n in graph.node for v in list(n.input) + list(n.output)} | {i.name for i in graph.initializer}
    names |= {v.name for v in list(graph.input) + list(graph.output)}
    for module_name, step in module.named_children():
        for local, slot in step.weights.items():
            values = getattr(step, local).detach().cpu()
            values = (values.T if slot.transposed else values).reshape(slot.shape).numpy()
            name, k = f"{module_name}.{local}", 1
            while name in names:
                name, k = f"{module_name}.{local}.{k}", k + 1
            names.add(name)
            dtype = onnx.helper.tensor_dtype_to_np_dtype(slot.elem_type)
            graph.initializer.append(numpy_helper.from_array(values.astype(dtype), name))
            graph.node[slot.node].input[slot.input] = name
    read = {v for n in graph.node for v in n.input} | {v.name for v in list(graph.output) + list(graph.input)}
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return copy


# -- operators ----------------------------------------------------------------------------------------
# Each kernel takes the node, its inputs (weights already in place; None for an omitted optional input)
# and the dtype floating tensors are created in, and returns its output or a tuple of outputs.

def _float(dtype_of: torch.dtype, compute: torch.dtype) -> torch.dtype:
    return compute if dtype_of.is_floating_point else dtype_of


_ONNX_TO_TORCH = {onnx.TensorProto.INT64: torch.int64, onnx.TensorProto.INT32: torch.int32,
                  onnx.TensorProto.INT16: torch.int16, onnx.TensorProto.INT8: torch.int8,
                  onnx.TensorProto.UINT8: torch.uint8, onnx.TensorProto.BOOL: torch.bool}


def _cast_dtype(to: int, compute: torch.dtype) -> torch.dtype:
    if to in _FLOAT_TYPES:
        return compute
    if to not in _ONNX_TO_TORCH:
        raise OnnxGraphError(f"a cast to {onnx.TensorProto.DataType.Name(to)} is not supported")
    return _ONNX_TO_TORCH[to]


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axes(node: OnnxNode, args: list, position: int = 1) -> list[int] | None:
    """An operator's axes: an attribute in older opsets, an input since."""
    if "axes" in node.attributes:
        return list(node.attributes["axes"])
    return _ints(args[position]) if len(args) > position else None


def _pads(node: OnnxNode, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begins, ends) per spatial axis, from ``pads`` or ``auto_pad`` (SAME_UPPER puts the odd pixel at the end)."""
    n = len(kernel)
    auto = node.attributes.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else large)
            ends.append(large if auto == "SAME_UPPER" else small)
        return begins, ends
    if auto == "VALID":
        return [0] * n, [0] * n
    pads = list(node.attributes.get("pads", [0] * (2 * n)))
    return pads[:n], pads[n:]


def _torch_pads(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """Per-axis (begin, end) pads in ``F.pad``'s order: the last axis first."""
    return [p for b, e in zip(reversed(begins), reversed(ends), strict=True) for p in (b, e)]


def _window(node: OnnxNode, x: torch.Tensor, kernel: Sequence[int]):
    n = len(kernel)
    strides = list(node.attributes.get("strides", [1] * n))
    dilations = list(node.attributes.get("dilations", [1] * n))
    begins, ends = _pads(node, x.shape[2:], kernel, strides, dilations)
    return strides, dilations, begins, ends


def _fits_torch_padding(begins, ends, kernel, dilations) -> bool:
    """Symmetric, and at most half the (dilated) window: what torch's pooling pads itself."""
    return begins == ends and all(2 * p <= (k - 1) * d + 1 for p, k, d in zip(begins, kernel, dilations, strict=True))


@_kernel("Conv", roles={1: _Role("weight"), 2: _Role("bias")})
def _conv(node, args, dtype):
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    kernel = w.shape[2:]
    strides, dilations, begins, ends = _window(node, x, kernel)
    conv = (F.conv1d, F.conv2d, F.conv3d)[w.ndim - 3]
    group = node.attributes.get("group", 1)
    if begins == ends:
        return conv(x, w, b, strides, begins, dilations, group)
    return conv(F.pad(x, _torch_pads(begins, ends)), w, b, strides, 0, dilations, group)


@_kernel("ConvTranspose", roles={1: _Role("weight"), 2: _Role("bias")})
def _conv_transpose(node, args, dtype):
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    n = w.ndim - 2
    a = node.attributes
    if a.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in a:
        raise OnnxGraphError(f"ConvTranspose {node.onnx_names[0]!r}: auto_pad and output_shape are not supported")
    pads = list(a.get("pads", [0] * (2 * n)))
    if pads[:n] != pads[n:]:
        raise OnnxGraphError(f"ConvTranspose {node.onnx_names[0]!r}: asymmetric pads are not supported")
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    return conv(x, w, b, list(a.get("strides", [1] * n)), pads[:n], list(a.get("output_padding", [0] * n)),
                a.get("group", 1), list(a.get("dilations", [1] * n)))


@_kernel("Gemm", roles={1: _Role("weight"), 2: _Role("bias")})
def _gemm(node, args, dtype):
    a = node.attributes
    x, w = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if a.get("transA", 0):
        x = x.t()
    if node.slots[1] is None:  # B computed by the graph: into torch's [out, in] layout as a held weight is
        w = w if a.get("transB", 0) else w.t()
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha == 1.0 and beta == 1.0 and (c is None or (c.ndim == 1 and c.shape[0] == w.shape[0])):
        return F.linear(x, w, c)
    y = F.linear(x, w)
    y = y * alpha if alpha != 1.0 else y
    return y if c is None else y + (c * beta if beta != 1.0 else c)


@_kernel("MatMul")
def _matmul(node, args, dtype):
    if node.slots[1] is not None and node.weights[node.slots[1]].transposed:  # a matrix held as [out, in]
        return F.linear(args[0], args[1], args[2] if len(args) > 2 else None)  # (with the bias of its Add)
    return torch.matmul(args[0], args[1])


@_kernel("BatchNormalization", roles={1: _Role("weight"), 2: _Role("bias"), 3: _Role("running_mean", True),
                                      4: _Role("running_var", True)})
def _batch_norm(node, args, dtype):
    a = node.attributes
    if a.get("training_mode", 0) or not a.get("spatial", 1):
        raise OnnxGraphError(f"BatchNormalization {node.onnx_names[0]!r}: training mode and spatial=0 are not "
                             f"supported")
    x, scale, bias, mean, var = args
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, a.get("epsilon", 1e-5))


@_kernel("InstanceNormalization", roles={1: _Role("weight"), 2: _Role("bias")})
def _instance_norm(node, args, dtype):
    return F.instance_norm(args[0], weight=args[1], bias=args[2], eps=node.attributes.get("epsilon", 1e-5))


@_kernel("LayerNormalization", roles={1: _Role("weight"), 2: _Role("bias")})
def _layer_norm(node, args, dtype):
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    shape = x.shape[node.attributes.get("axis", -1) % x.ndim:]
    eps = node.attributes.get("epsilon", 1e-5)
    if w.shape == shape and (b is None or b.shape == shape):
        return F.layer_norm(x, shape, w, b, eps)
    y = F.layer_norm(x, shape, None, None, eps) * w
    return y if b is None else y + b


@_kernel("PRelu", roles={1: _Role("weight")})
def _prelu(node, args, dtype):
    x, slope = args
    # A slope that broadcasts along the channel axis only (``[C, 1, 1]``, ``[C]`` for a 2-D input, one value) is
    # torch's PReLU weight; any other shape, the definition.
    aligned = (1,) * (x.ndim - slope.ndim) + tuple(slope.shape)
    if slope.numel() == 1 or (x.ndim >= 2 and all(d == 1 for i, d in enumerate(aligned) if i != 1)):
        return F.prelu(x, slope.reshape(-1))
    return torch.where(x >= 0, x, x * slope)


@_kernel("MaxPool")
def _max_pool(node, args, dtype):
    x = args[0]
    kernel = list(node.attributes["kernel_shape"])
    strides, dilations, begins, ends = _window(node, x, kernel)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(kernel) - 1]
    ceil = bool(node.attributes.get("ceil_mode", 0))
    if _fits_torch_padding(begins, ends, kernel, dilations):
        return pool(x, kernel, strides, begins, dilations, ceil_mode=ceil)
    if ceil:
        raise OnnxGraphError(f"MaxPool {node.onnx_names[0]!r}: ceil_mode with asymmetric pads is not supported")
    return pool(F.pad(x, _torch_pads(begins, ends), value=-math.inf), kernel, strides, 0, dilations)


@_kernel("AveragePool")
def _average_pool(node, args, dtype):
    x = args[0]
    kernel = list(node.attributes["kernel_shape"])
    strides, dilations, begins, ends = _window(node, x, kernel)
    if any(d != 1 for d in dilations):
        raise OnnxGraphError(f"AveragePool {node.onnx_names[0]!r}: dilations are not supported")
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(kernel) - 1]
    ceil = bool(node.attributes.get("ceil_mode", 0))
    include = bool(node.attributes.get("count_include_pad", 0))
    if _fits_torch_padding(begins, ends, kernel, dilations):
        return pool(x, kernel, strides, begins, ceil, include)
    pads = _torch_pads(begins, ends)
    total = pool(F.pad(x, pads), kernel, strides, 0, ceil, True)
    if include:
        return total
    # Excluding the pads: divide by each window's share of real pixels (the same divisor cancels).
    return total / pool(F.pad(torch.ones_like(x[:1, :1]), pads), kernel, strides, 0, ceil, True)


@_kernel("GlobalAveragePool")
def _global_average_pool(node, args, dtype):
    return args[0].mean(dim=tuple(range(2, args[0].ndim)), keepdim=True)


@_kernel("GlobalMaxPool")
def _global_max_pool(node, args, dtype):
    return args[0].amax(dim=tuple(range(2, args[0].ndim)), keepdim=True)


# Activations and other element-wise functions of one tensor.
_UNARY = {
    "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "HardSwish": F.hardswish, "Mish": F.mish,
    "Erf": torch.erf, "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal,
    "Neg": torch.neg, "Abs": torch.abs, "Floor": torch.floor, "Ceil": torch.ceil, "Sin": torch.sin,
    "Cos": torch.cos, "Not": torch.logical_not, "Softsign": F.softsign, "Sign": torch.sign,
}


@_kernel(*_UNARY)
def _unary(node, args, dtype):
    return _UNARY[node.op_type](args[0])


@_kernel("Identity")
def _identity(node, args, dtype):
    return args[0]


@_kernel("LeakyRelu")
def _leaky_relu(node, args, dtype):
    return F.leaky_relu(args[0], node.attributes.get("alpha", 0.01))


@_kernel("Elu")
def _elu(node, args, dtype):
    return F.elu(args[0], node.attributes.get("alpha", 1.0))


@_kernel("Selu")
def _selu(node, args, dtype):
    alpha = node.attributes.get("alpha", 1.67326319217681884765625)
    gamma = node.attributes.get("gamma", 1.05070102214813232421875)
    return gamma * F.elu(args[0], alpha)


@_kernel("Softplus")
def _softplus(node, args, dtype):
    return F.softplus(args[0])


@_kernel("HardSigmoid")
def _hard_sigmoid(node, args, dtype):
    a = node.attributes
    return torch.clamp(args[0] * a.get("alpha", 0.2) + a.get("beta", 0.5), 0.0, 1.0)


@_kernel("Gelu")
def _gelu(node, args, dtype):
    return F.gelu(args[0], approximate=node.attributes.get("approximate", "none"))


@_kernel("Clip", control=(1, 2))
def _clip(node, args, dtype):
    if node.opset < 11:
        low, high = node.attributes.get("min"), node.attributes.get("max")
    else:
        low = args[1] if len(args) > 1 else None
        high = args[2] if len(args) > 2 else None
    return args[0] if low is None and high is None else torch.clamp(args[0], low, high)


@_kernel("Softmax", "LogSoftmax")
def _softmax(node, args, dtype):
    x = args[0]
    fn = torch.softmax if node.op_type == "Softmax" else torch.log_softmax
    if node.opset >= 13:
        return fn(x, node.attributes.get("axis", -1))
    axis = node.attributes.get("axis", 1) % x.ndim  # before opset 13: over everything from ``axis`` on
    return fn(x.reshape(math.prod(x.shape[:axis]), -1), -1).reshape(x.shape)


@_kernel("Dropout", control=(1, 2), outputs=2)
def _dropout(node, args, dtype):
    if len(args) > 2 and args[2] is not None and bool(args[2]):
        raise OnnxGraphError(f"Dropout {node.onnx_names[0]!r} in training mode is not supported")
    return args[0] if node.outputs == 1 else (args[0], torch.ones_like(args[0], dtype=torch.bool))


# Element-wise functions of two or more tensors, with numpy broadcasting.
_BINARY = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow, "Equal": torch.eq, "Less": torch.lt,
    "Greater": torch.gt, "LessOrEqual": torch.le, "GreaterOrEqual": torch.ge, "And": torch.logical_and,
    "Or": torch.logical_or, "Xor": torch.logical_xor,
}


@_kernel(*_BINARY)
def _binary(node, args, dtype):
    return _BINARY[node.op_type](args[0], args[1])


@_kernel("Div")
def _div(node, args, dtype):
    a, b = args
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")  # integer division truncates
    return torch.div(a, b)


_VARIADIC = {"Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add, "Mean": torch.add}


@_kernel(*_VARIADIC)
def _variadic(node, args, dtype):
    out = functools.reduce(_VARIADIC[node.op_type], args)
    return out / len(args) if node.op_type == "Mean" else out


@_kernel("Where")
def _where(node, args, dtype):
    return torch.where(args[0], args[1], args[2])


_REDUCE = {"ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax, "ReduceMin": torch.amin}


@_kernel(*_REDUCE, control=(1,))
def _reduce(node, args, dtype):
    x = args[0]
    axes = _axes(node, args)
    if not axes:
        if node.attributes.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.ndim))
    return _REDUCE[node.op_type](x, dim=tuple(axes), keepdim=bool(node.attributes.get("keepdims", 1)))


@_kernel("Flatten")
def _flatten(node, args, dtype):
    x = args[0]
    axis = node.attributes.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@_kernel("Reshape", control=(1,))
def _reshape(node, args, dtype):
    x, shape = args[0], _ints(args[1])
    if not node.attributes.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]  # 0 keeps the input's size
    return x.reshape(shape)


@_kernel("Squeeze", control=(1,))
def _squeeze(node, args, dtype):
    axes = _axes(node, args)
    return args[0].squeeze() if not axes else args[0].squeeze(tuple(a % args[0].ndim for a in axes))


@_kernel("Unsqueeze", control=(1,))
def _unsqueeze(node, args, dtype):
    x = args[0]
    axes = _axes(node, args)
    rank = x.ndim + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


@_kernel("Transpose")
def _transpose(node, args, dtype):
    x = args[0]
    return x.permute(list(node.attributes.get("perm", range(x.ndim - 1, -1, -1))))


@_kernel("Concat")
def _concat(node, args, dtype):
    return torch.cat([t for t in args if t is not None], dim=node.attributes["axis"])


@_kernel("Split", control=(1,), outputs=-1)
def _split(node, args, dtype):
    x = args[0]
    axis = node.attributes.get("axis", 0)
    sizes = _ints(args[1]) if len(args) > 1 and args[1] is not None else node.attributes.get("split")
    if sizes is None:
        parts = node.attributes.get("num_outputs", node.outputs)
        size = -(-x.shape[axis] // parts)
        sizes = [size] * (parts - 1) + [x.shape[axis] - size * (parts - 1)]
    return tuple(torch.split(x, list(sizes), dim=axis))


@_kernel("Slice", control=(1, 2, 3, 4))
def _slice(node, args, dtype):
    x = args[0]
    if node.opset < 10:
        a = node.attributes
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 else None
        steps = _ints(args[4]) if len(args) > 4 else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        axis %= x.ndim
        # Python's slice clamps out-of-range starts and ends exactly as ONNX specifies (numpy's rules).
        indices = range(*slice(start, end, step).indices(x.shape[axis]))
        if step > 0:
            x = x[(slice(None),) * axis + (slice(indices.start, indices.stop, indices.step),)]
        else:
            x = x.index_select(axis, torch.tensor(list(indices), dtype=torch.long, device=x.device))
    return x


@_kernel("Gather", control=(1,))
def _gather(node, args, dtype):
    data, indices = args
    axis = node.attributes.get("axis", 0) % data.ndim
    indices = torch.where(indices < 0, indices + data.shape[axis], indices).long()
    picked = data.index_select(axis, indices.reshape(-1))
    return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


@_kernel("Shape", control=(0,))  # only its input's shape is read: a weight there is no weight of it
def _shape(node, args, dtype):
    start, end = node.attributes.get("start", 0), node.attributes.get("end")
    return torch.tensor(list(args[0].shape)[start:end], dtype=torch.int64)


@_kernel("Size", control=(0,))
def _size(node, args, dtype):
    return torch.tensor(args[0].numel(), dtype=torch.int64)


@_kernel("Expand", control=(1,))
def _expand(node, args, dtype):
    x = args[0]
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(_ints(args[1]))))


@_kernel("Tile", control=(1,))
def _tile(node, args, dtype):
    return args[0].repeat(_ints(args[1]))


@_kernel("ConstantOfShape", control=(0,))
def _constant_of_shape(node, args, dtype):
    value = node.attributes.get("value", np.zeros(1, dtype=np.float32))
    fill = torch.from_numpy(np.asarray(value).reshape(-1)[:1].copy())
    return torch.full(_ints(args[0]), fill.item(), dtype=_float(fill.dtype, dtype))


@_kernel("Range", control=(0, 1, 2))
def _range(node, args, dtype):
    start, limit, delta = args
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=_float(start.dtype, dtype))


@_kernel("Cast")
def _cast(node, args, dtype):
    return args[0].to(_cast_dtype(node.attributes["to"], dtype))


@_kernel("CastLike", control=(1,))
def _cast_like(node, args, dtype):
    return args[0].to(args[1].dtype)


@_kernel("Pad", control=(1, 2, 3))
def _pad(node, args, dtype):
    x = args[0]
    a = node.attributes
    if node.opset < 11:
        pads, value, axes = list(a["pads"]), a.get("value", 0.0), None
    else:
        pads = _ints(args[1])
        value = args[2].item() if len(args) > 2 and args[2] is not None and args[2].numel() else 0.0
        axes = _ints(args[3]) if len(args) > 3 else None
    axes = [ax % x.ndim for ax in axes] if axes is not None else list(range(x.ndim))
    begins, ends = [0] * x.ndim, [0] * x.ndim
    for k, axis in enumerate(axes):  # pads: every axis's begin, then every axis's end
        begins[axis], ends[axis] = pads[k], pads[k + len(axes)]
    first = next((i for i in range(x.ndim) if begins[i] or ends[i]), x.ndim)
    torch_pads = _torch_pads(begins[first:], ends[first:])
    mode = a.get("mode", "constant")
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    return F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])


# Random numbers (a graph that draws them in inference is a finding, not an error): torch's generator, the
# graph's seed ignored, so that repro.verify sees them drawn and seeds them as it seeds a module's.
@_kernel("RandomUniformLike", "RandomNormalLike", "RandomUniform", "RandomNormal")
def _random(node, args, dtype):
    a = node.attributes
    like = args[0] if args else None
    shape = tuple(like.shape) if like is not None else tuple(a["shape"])
    to = a.get("dtype")
    kind = like.dtype if to is None and like is not None else _cast_dtype(to or onnx.TensorProto.FLOAT, dtype)
    kind = _float(kind, dtype)
    if "Uniform" in node.op_type:
        low, high = a.get("low", 0.0), a.get("high", 1.0)
        return torch.rand(shape, dtype=kind) * (high - low) + low
    return torch.randn(shape, dtype=kind) * a.get("scale", 1.0) + a.get("mean", 0.0)


@_kernel("Bernoulli")
def _bernoulli(node, args, dtype):
    to = node.attributes.get("dtype")
    drawn = torch.bernoulli(args[0])
    return drawn if to is None else drawn.to(_cast_dtype(to, dtype))


@_kernel("Einsum")
def _einsum(node, args, dtype):
    return torch.einsum(node.attributes["equation"], *args)

