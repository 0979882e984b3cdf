"""Dataflow tracing: which parametrized module feeds which, observed by running the model.

A *node* is a module that holds parameters or persistent buffers itself (a convolution, a
BatchNorm, a Linear, ...). While the model runs, a ``TorchFunctionMode`` sees every torch
function and tensor method; each tensor produced records the set of nodes whose outputs reach
it without passing through another node (its *provenance*). When a node is called, the
provenance of its inputs is its set of predecessors. The graph this gives depends only on what
the model computes: not on module names, definition order or the order in which independent
branches run.

A node's tensors may also be used outside its own ``forward``: a module with child modules and a
Parameter of its own (a block's layer scale, a model's class token), a weight passed to a
functional call (``F.linear(x, self.fc.weight)``), or a module called without data that computes
from its own tensors alone (an ONNX graph's ``Reshape`` of a layer scale). Each operation that
combines such tensors with data is then a call of that node, and a container's tensors used in
different places become nodes of their own, each named by its module and largest tensor
(``(root)[params.conv1_weight]``). The root counts as a container (a network written as functional calls on
parameters of its own), and a module without a forward that only holds tensors (``nn.ParameterDict``,
``nn.ParameterList``) as part of its parent; a count no operation uses (a BatchNorm's ``num_batches_tracked``
kept beside ``F.batch_norm``) goes with the part whose tensor names share the longest prefix with its own.
Padding done by a separate op or module (``F.pad``,
``nn.ZeroPad2d``) belongs to the node it feeds: that node's input is the unpadded tensor; so does a
change of layout (``permute``, ``transpose``, ``contiguous``): timm's ``LayerNorm2d`` permutes inside
the module, an ONNX graph in ``Transpose`` nodes before it, and both take the tensor before the
permutation as the node's input. A ``torch.jit.script`` function runs as its Python source so that
its operations are seen; a scripted module is one operation (hooks cannot see inside it) and is
named in ``Graph.notes``.

A torch function implemented in Python that uses several modules' tensors at once
(``F.multi_head_attention_forward``: the in-projection of an ``nn.MultiheadAttention`` and the
out-projection of its child ``out_proj``, whose own forward never runs) is traced through: its
body runs with the recorder on (``python_body``: the same code with its override checks answering
as they would without the recorder; nothing of torch is changed), so that each operation inside
is a call of the module whose tensors it uses, and ``Graph.notes`` says so. Any other operation
that uses several modules' tensors at once is one step, named in ``Graph.notes``.

Architecture constants (``is_constant``: index tables and masks, not floating, not a scalar count)
are not a node's tensors, persistent or not: they neither pair nodes nor are ported; the pairing
compares them (``Node.constants``).

The same recorder, with a *sink* attached, captures what the comparison needs at *points*
every implementation of the same network shares:

* ``("in", node, k)``: the input of the k-th call of a node;
* ``("core", node, k)``: the node's own result: the last operation inside the node that combines
  data with the node's tensors (the convolution, the batch norm). A timm ``BatchNormAct2d``
  applies its activation after that; a separate ``ReLU`` module of another implementation is
  then compared at the next node's input instead;
* ``("out", i)``: the model's outputs.

Each point also records which earlier points its value was computed from (``upstream``), and
every module call records its outputs, so a divergence can be traced to the innermost module
that explains it.
"""

from __future__ import annotations

import dis
import functools
import inspect
import itertools
import math
import os
import types
from collections.abc import Hashable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode, has_torch_function, has_torch_function_unary, has_torch_function_variadic
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from repro.equivalence import frozen_batchnorm_vectors, is_frozen_batchnorm, vectors_of_one_length

INPUT = -1
OUTPUT = -2

PointKey = tuple  # ("in", node, k) | ("core", node, k) | ("out", i) | ("input",)
INPUT_POINT: PointKey = ("input",)

_AFFINE_FUNCTIONS = {"conv1d", "conv2d", "conv3d", "linear"}
# A BatchNorm frozen and written out (torchvision's ``FrozenBatchNorm2d``: ``x * scale + shift`` with ``scale =
# weight * (running_var + eps).rsqrt()``, ``shift = bias - running_mean * scale``): its four buffers, named as a
# BatchNorm's (``is_frozen_batchnorm``), combined with the data by elementwise arithmetic alone compute what an
# eval-mode BatchNorm computes, and pair with one.
_ELEMENTWISE_ARITHMETIC = {"add", "sub", "rsub", "mul", "div", "rsqrt", "sqrt", "reciprocal", "pow", "neg"}
# Padding: a convolution padded by a separate op or module (``F.pad``, ``nn.ZeroPad2d``) computes what one that
# pads inside (``padding=``, timm's ``Conv2dSame``) does; the node it feeds takes the unpadded tensor as its input.
# The same for a layout change: a norm over channels permuted to the last axis outside the module or inside it.
_PAD_FUNCTIONS = {"pad", "constant_pad_nd", "_pad"}
_ARRANGE_FUNCTIONS = _PAD_FUNCTIONS | {"permute", "transpose", "movedim", "swapaxes", "swapdims",
                      "contiguous"}
_CONV_FUNCTIONS = {"conv1d", "conv2d", "conv3d"}
# Concatenations keep their inputs apart: which slot a module's output fills is part of where it goes.
_CAT_FUNCTIONS = {"cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack", "column_stack"}
_RANDOM_FUNCTIONS = {
    "rand", "rand_like", "randn", "randn_like", "randint", "randint_like", "randperm", "normal", "normal_",
    "bernoulli", "bernoulli_", "uniform_", "exponential_", "geometric_", "cauchy_", "log_normal_", "random_",
    "multinomial", "poisson",
}
_DROPOUT_FUNCTIONS = {
    "dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "alpha_dropout_",
    "feature_alpha_dropout", "feature_alpha_dropout_", "feature_dropout", "feature_dropout_", "native_dropout",
}


# Functions that rearrange a tensor without computing anything: applied to a module's tensor alone (``gamma.reshape(
# 1, -1, 1, 1)``, ``table[index]``), they derive another view of it; what the module *is* is decided by the
# function that then combines it with data.
_VIEW_FUNCTIONS = {
    "reshape", "view", "view_as", "reshape_as", "expand", "expand_as", "unsqueeze", "squeeze", "flatten",
    "unflatten", "permute", "transpose", "t", "contiguous", "clone", "detach", "to", "float", "double", "half",
    "type_as", "movedim", "__getitem__", "index_select", "chunk", "split", "unbind", "narrow",
}


# Functions whose result takes only the shape, dtype and device of a tensor, not its values: no dataflow.
_FACTORY_FUNCTIONS = {
    "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor", "zeros_like", "ones_like", "empty_like",
    "full_like", "rand_like", "randn_like", "randint_like",
}


@functools.lru_cache(maxsize=None)
def indexing_visible() -> bool:
    """Whether this torch passes single-index tensor indexing (``x[0]``, ``x[idx]``) to torch-function
    modes, through which the trace sees every operation. torch 2.2 does not (only tuple indices such as
    ``x[:, 0]`` reach a mode); 2.14 does. Where it does not, dataflow through such indexing is invisible."""
    seen: list[Callable] = []

    class Probe(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func)
            return func(*args, **(kwargs or {}))

    x, index = torch.zeros(2), torch.tensor([1])
    with Probe():
        x[0], x[index]
    return len(seen) == 2


INDEXING_INVISIBLE = (
    f"this torch ({torch.__version__}) does not pass single-index tensor indexing (`x[0]`, `x[idx]`) to "
    "torch-function modes, so the trace cannot see dataflow through it: a model that indexes tensors (a q/k/v "
    "split by `qkv[0]`, a relative-position table looked up by `table[index]`) shows a structure difference that "
    "may be only that; verify it with a newer torch (2.14 shows such indexing)"
)


def squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    """A shape without its dimensions of size 1: ``[1, C, 1, 1]`` and ``[C]`` alike are ``(C,)``."""
    return tuple(d for d in shape if d != 1)


def canonical_function(name: str) -> str:
    """One name per operation: ``__mul__``, ``__rmul__``, ``__imul__``, ``mul_`` and ``mul`` are all ``mul``."""
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name[:1] in "ri" and name[1:] in {"add", "sub", "mul", "truediv", "matmul", "pow", "and", "or"}:
            name = name[1:]
    name = name.rstrip("_")
    return {"truediv": "div", "multiply": "mul", "divide": "div", "subtract": "sub"}.get(name, name)


def function_name(func: Callable) -> str:
    """The name of a torch function or tensor method; an ATen operator called directly (a ``torch.export``
    program calls ``torch.ops.aten.conv2d.default``) by its operator's name (``conv2d``), overload left out."""
    packet = getattr(func, "overloadpacket", None)
    return getattr(packet or func, "__name__", None) or str(func)


def _writes_in_place(func: Callable, kwargs: dict) -> bool:
    """Whether a call changes its first argument (or ``out=``) in place, judged by its name
    (``relu_``, ``__iadd__``, ``__setitem__``) and arguments (``inplace=True``, ``out=``)."""
    if kwargs.get("inplace") is True or "out" in kwargs:
        return True
    name = function_name(func)
    return (name.endswith("_") and not name.startswith("__")) or name.startswith("__i") or name == "__setitem__"


def _rate_slot(name: str) -> tuple[str, int, float] | None:
    """Where a dropout call takes its rate: the argument's name, its position and its default; ``None`` for a
    function that is not a dropout."""
    if name == "scaled_dot_product_attention":
        return "dropout_p", 4, 0.0
    return ("p", 1, 0.5) if name in _DROPOUT_FUNCTIONS else None


def given_rate(name: str, args: tuple, kwargs: dict) -> tuple[str, float] | None:
    """The rate a dropout call is given, dropping or not (``F.dropout(x, 0.2, training=False)`` too): the argument
    holding it and its value; ``None`` for any other call."""
    slot = _rate_slot(name)
    if slot is None:
        return None
    key, position, default = slot
    return key, float(kwargs.get(key, args[position] if len(args) > position else default))


def dropout_rate(name: str, args: tuple, kwargs: dict) -> tuple[str, float] | None:
    """The rate of a dropout call that drops (``F.dropout(x, 0.2, training=True)``, attention's ``dropout_p``):
    as ``given_rate``; ``None`` for any other call, and for one at rate zero or in eval mode."""
    given = given_rate(name, args, kwargs)
    if given is None:
        return None
    training = (True if given[0] == "dropout_p" else
                kwargs.get("training", kwargs.get("train", args[2] if len(args) > 2 else True)))
    return given if bool(training) and given[1] > 0.0 else None


# Set while ``DropoutCallsOff`` is active: the dropout calls it sees are made at rate zero, so a mode that sees them
# before it does (a ``Recorder`` or ``RandomWatch`` entered inside it) does not count them as draws.
_DROPOUT_CALLS_OFF: ContextVar[bool] = ContextVar("dropout_calls_off", default=False)


def _is_random(name: str, args: tuple, kwargs: dict) -> bool:
    if name in _RANDOM_FUNCTIONS:
        return True
    if _rate_slot(name) is not None:
        return dropout_rate(name, args, kwargs) is not None and not _DROPOUT_CALLS_OFF.get()
    if name in ("rrelu", "rrelu_"):
        return bool(kwargs.get("training", args[3] if len(args) > 3 else False))
    return False


class DropoutCallsOff(TorchFunctionMode):
    """Every dropout call made while it is active is made at rate zero (an identity): a rate passed to
    ``F.dropout`` from wherever the model keeps it (``self.droprate``, a config), turned off at the call, for a
    train-mode pass. ``turned_off``: each such call (the function, the rate it was given), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.turned_off: list[tuple[str, float]] = []
        self._tokens: list = []

    def __enter__(self):
        self._tokens.append(_DROPOUT_CALLS_OFF.set(True))
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            _DROPOUT_CALLS_OFF.reset(self._tokens.pop())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = function_name(func)
        found = dropout_rate(name, args, kwargs)
        if found is not None:
            self.turned_off.append((name, found[1]))
            key, position, _ = _rate_slot(name)
            if key not in kwargs and len(args) > position:
                args = (*args[:position], 0.0, *args[position + 1:])
            else:
                kwargs = {**kwargs, key: 0.0}
        return func(*args, **kwargs)


def is_constant(tensor: torch.Tensor) -> bool:
    """Whether a buffer is an architecture constant, computed from the module's configuration rather than learned
    or accumulated: an index table or a mask, not floating and not a scalar. A scalar count (a BatchNorm's
    ``num_batches_tracked``) is state the module keeps, like its running mean."""
    return not tensor.is_floating_point() and tensor.ndim > 0


def stored_constants(model: nn.Module) -> set[str]:
    """The state-dict keys of ``model``'s architecture constants (persistent buffers only)."""
    return {f"{name}.{n}" if name else n for name, module in model.named_modules(remove_duplicate=False)
            for n, b in module._buffers.items()
            if b is not None and is_constant(b) and n not in module._non_persistent_buffers_set}


_SIDES = {1: ("left", "right"), 2: ("top", "bottom", "left", "right"),
          3: ("front", "back", "top", "bottom", "left", "right")}


@dataclass(frozen=True)
class ConvPadding:
    """How a convolution's input was padded, whoever padded it: the steps in words (``F.pad (0, 1, 0, 1) inside
    conv_stem``, then the convolution's own ``padding (0, 0)``); the zero padding they add up to on each side
    (``(before, after)`` per spatial dimension, height first), ``None`` where a step pads otherwise (reflect, a
    constant other than 0, a crop); and the steps as numbers (``how``). A convolution padding inside (``padding=1``)
    and one fed by ``F.pad`` or ``nn.ZeroPad2d`` compute the same where these sides agree, whatever their
    ``padding`` settings say."""

    steps: tuple[str, ...]
    sides: tuple[tuple[int, int], ...] | None
    how: tuple = ()

    def differs(self, other: "ConvPadding") -> bool:
        if self.sides is not None and other.sides is not None:
            return self.sides != other.sides
        return self.how != other.how

    def in_all(self) -> str:
        if self.sides is None:
            return "not by zeros alone"
        flat = [n for pair in self.sides for n in pair]
        if len(set(flat)) == 1:
            return f"{flat[0]} on every side"
        names = _SIDES.get(len(self.sides)) or [f"dimension {d} {end}" for d in range(len(self.sides))
                                                for end in ("before", "after")]
        return ", ".join(f"{name} {n}" for name, n in zip(names, flat, strict=True))


def conv_padding(name: str, args: tuple, kwargs: dict, padded: list[tuple[tuple[int, ...], str, float, str]] | None,
                 owner: str) -> ConvPadding:
    """The ``ConvPadding`` of one call of a convolution function (``F.conv2d(x, w, b, stride, padding, ...)``)
    whose input the pad operations ``padded`` (``(pad, mode, value, where)``, first first) made."""
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    spatial = weight.ndim - 2
    padding = kwargs.get("padding", args[4] if len(args) > 4 else 0)
    dilation = kwargs.get("dilation", args[5] if len(args) > 5 else 1)
    dilation = (dilation,) * spatial if isinstance(dilation, int) else tuple(dilation)
    if padding == "same":  # what torch does for padding="same": the odd one at the end
        totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:], strict=True)]
        sides = [(t // 2, t - t // 2) for t in totals]
    elif padding == "valid":
        sides = [(0, 0)] * spatial
    else:
        own = (padding,) * spatial if isinstance(padding, int) else tuple(padding)
        sides = [(p, p) for p in own]
    shown = padding if isinstance(padding, str) else tuple(p for p, _ in sides)
    steps, zeros = [], True
    for pad, mode, value, where in padded or ():
        inside = where == owner or where.startswith(f"{owner}.")
        place = f"inside {owner or '(root)'}" if inside else f"in {where or '(root)'}"
        how = "" if mode == "constant" and not value else f" {mode}" if mode != "constant" else f" value {value:g}"
        steps.append(f"F.pad {tuple(pad)}{how} {place}")
        # Zeros added on the spatial sides alone; a crop (a negative pad) is not padding.
        zeros &= mode == "constant" and not value and all(p == 0 for p in pad[2 * spatial:]) and min(pad) >= 0
        for d in range(min(spatial, len(pad) // 2)):  # F.pad's pairs start from the last dimension
            before, after = sides[spatial - 1 - d]
            sides[spatial - 1 - d] = (before + pad[2 * d], after + pad[2 * d + 1])
    steps.append(f"padding {shown}")
    how = (tuple((tuple(pad), mode, value) for pad, mode, value, _ in padded or ()), shown)
    return ConvPadding(tuple(steps), tuple(sides) if zeros else None, how)


@dataclass
class Node:
    """A module holding parameters or persistent buffers of its own (architecture constants aside)."""

    id: int
    name: str
    module: nn.Module
    tensors: dict[str, torch.Tensor]  # local name -> parameter or buffer
    parameters: frozenset[str]
    order: int = -1  # position of its first call; -1: never called
    calls: int = 0
    preds: set[int] = field(default_factory=set)
    succs: set[int] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)  # torch functions that consumed its tensors
    roles: dict[str, str] = field(default_factory=dict)  # local name -> "function#argument" of its first use
    # A module with child modules and tensors of its own (a block's layer scale, a model's class token): its
    # place in the dataflow is where its tensors are used, each use a call of its own, not its whole forward.
    container: bool = False
    parent: int = -1  # the module call its first call ran inside (-1: none): its place in the module hierarchy
    # Its architecture constants, persistent or not (local name -> buffer): compared, never ported or paired by.
    constants: dict[str, torch.Tensor] = field(default_factory=dict)
    stored: frozenset[str] = frozenset()  # the constants in its state dict (persistent)
    # A part split off a module whose tensors are used in several places (a network written with functional calls
    # on parameters of its own): its first tensor, which names it beside the module.
    part: str = ""
    padding: ConvPadding | None = None  # a convolution's, from its first call

    @property
    def display(self) -> str:
        """How reports name it: its module, and for a part split off one, which (``(root)[params.conv1_weight]``);
        a part holding exactly the tensors of one module without a forward is named by that module (a ``torch.export``
        program keeps each layer's weights in one: ``layer1.0.conv1``)."""
        if not self.part:
            return self.name or "(root)"
        holder = {local.rpartition(".")[0] for local in self.tensors}
        if len(holder) == 1 and (prefix := holder.pop()):
            try:
                module = self.module.get_submodule(prefix)
            except AttributeError:
                module = None
            # A count (a BatchNorm's) joins its part only once the pass ends (``_place_counts``): left out.
            held = {f"{prefix}.{n}" for n, t in module.state_dict(keep_vars=True).items()
                    if not is_constant(t) and (t.ndim or t.is_floating_point())} if module is not None else set()
            if held == {n for n, t in self.tensors.items() if t.ndim or t.is_floating_point()}:
                return f"{self.name}.{prefix}" if self.name else prefix
        return f"{self.name or '(root)'}[{self.part}]"

    @property
    def kind(self) -> str:
        names = {canonical_function(n) for n in self.functions}
        if not names:
            return f"unused {type(self.module).__name__}"
        if names <= _AFFINE_FUNCTIONS:
            return "affine"  # convolutions and Linear: a Linear pairs with a 1x1 convolution
        if names == {"batch_norm"} or (names <= _ELEMENTWISE_ARITHMETIC and not self.part
                                        and is_frozen_batchnorm(self.module)):
            return "batchnorm"
        return "+".join(sorted(names))

    def channel_vectors(self) -> int:
        """How many floating tensors it holds, if they are all vectors of one length (``[C]``, ``[1, C, 1, 1]``);
        0 otherwise."""
        floating = [t for t in self.tensors.values() if t.is_floating_point()]
        return len(floating) if vectors_of_one_length(floating) else 0

    @property
    def frozen_norm(self) -> bool:
        """A BatchNorm holding its weight and bias as buffers beside its statistics (a frozen one, torchvision's
        ``FrozenBatchNorm2d``): no parameters, so no gradients."""
        return self.kind == "batchnorm" and frozen_batchnorm_vectors(self.module) is not None

    def _label_tensors(self) -> tuple[list[str], list[str]]:
        """The tensors a label sorts as parameters and as buffers. The four vectors of a BatchNorm are one group
        and its count is left out: a frozen one holds its weight and bias as buffers and keeps no count. (With
        fewer, the groups keep ``affine=False`` and ``track_running_stats=False`` apart.)"""
        if self.kind == "batchnorm" and self.channel_vectors() == 4:
            return [n for n, t in self.tensors.items() if t.is_floating_point()], []
        return [n for n in self.tensors if n in self.parameters], [n for n in self.tensors if n not in self.parameters]

    def shape(self, local: str) -> tuple[int, ...]:
        """The tensor's shape, a Linear weight ``[o, i]`` written as the 1x1 convolution ``[o, i, 1, 1]``."""
        shape = tuple(self.tensors[local].shape)
        if self.kind == "affine" and len(shape) == 2 and local in self.parameters:
            return (*shape, 1, 1)
        return shape

    @property
    def label(self) -> tuple:
        """What pairs nodes: their kind and tensor shapes. Not stride, eps or momentum: those
        are mistakes to find numerically, not reasons to leave a module unpaired."""
        params, buffers = self._label_tensors()
        return (self.kind, tuple(sorted(self.shape(n) for n in params)), tuple(sorted(self.shape(n) for n in buffers)))

    @property
    def loose_label(self) -> tuple:
        """The label with element counts for shapes: the same numbers arranged otherwise (a Linear on a
        flattened CxKxK map and a KxK convolution, a ``[C]`` and a ``[C, 1, 1]`` scale) play the same role
        when the dataflow puts them at the same place."""
        params, buffers = self._label_tensors()
        return (self.kind, tuple(sorted(self.tensors[n].numel() for n in params)),
                tuple(sorted(self.tensors[n].numel() for n in buffers)))

    @property
    def core_label(self) -> tuple:
        """The label without the vectors beside a module's larger tensors (a convolution's bias), or, where it holds
        vectors alone, with their lengths alone (a BatchNorm with or without its affine pair): modules that differ
        by a bias or an affine pair one side alone holds play the same role at the same place."""
        params, buffers = self._label_tensors()
        shapes = [self.shape(n) for n in params + buffers if self.tensors[n].is_floating_point()]
        larger = tuple(sorted(s for s in shapes if len(squeezed(s)) > 1))
        return (self.kind, larger) if larger else (self.kind, frozenset(math.prod(s) for s in shapes))

    def describe(self) -> str:
        shapes = ", ".join(f"{n} {list(t.shape)}" for n, t in self.tensors.items())
        return f"{self.name} ({type(self.module).__name__}: {shapes})"

    def state_keys(self) -> list[str]:
        prefix = f"{self.name}." if self.name else ""
        return [prefix + n for n in self.tensors]


def _holder(module: nn.Module) -> bool:
    """A module that only holds tensors for its parent, with no forward of its own nor in any module inside it
    (``nn.ParameterDict``, ``nn.ParameterList``; the plain modules a ``torch.export`` program keeps its weights
    in, ``layer1.0.conv1``): its tensors are the parent's, used where the parent's forward uses them."""
    # A scripted module's forward raises rather than being unimplemented.
    return all(getattr(type(m), "forward", None) is nn.Module.forward for m in module.modules())


def _holds_for_others(name: str, module: nn.Module) -> bool:
    """Whether a module's tensors are used where the model uses them rather than by a forward of the module's
    own: a module with child modules (a block's layer scale), the root (its forward is the whole model: a network
    written with functional calls on parameters of its own, or of a holder)."""
    return any(not _holder(child) for child in module.children()) or name == ""


def model_nodes(model: nn.Module) -> list[Node]:
    """One node per module holding parameters or persistent buffers of its own, a holder's (``_holder``) counted
    as its parent's, under their state-dict names relative to the parent (``params.conv1``)."""
    modules = dict(model.named_modules())
    owned: dict[str, tuple[dict[str, torch.Tensor], set[str], dict[str, torch.Tensor], set[str]]] = {}
    for name, module in modules.items():
        owner, prefix = name, ""
        while owner and _holder(modules[owner]):  # a holder's tensors belong to the nearest module that is not one
            parent, _, local = owner.rpartition(".")
            owner, prefix = parent, f"{local}.{prefix}"
        tensors, params, constants, stored = owned.setdefault(owner, ({}, set(), {}, set()))
        for n, p in module._parameters.items():
            if p is not None:
                tensors[prefix + n] = p
                params.add(prefix + n)
        for n, b in module._buffers.items():
            if b is None:
                continue
            if is_constant(b):
                constants[prefix + n] = b
                if n not in module._non_persistent_buffers_set:
                    stored.add(prefix + n)
            elif n not in module._non_persistent_buffers_set:
                tensors[prefix + n] = b
    nodes = []
    for name, (tensors, params, constants, stored) in owned.items():
        if tensors:
            module = modules[name]
            nodes.append(Node(len(nodes), name, module, tensors, frozenset(params),
                              container=_holds_for_others(name, module), constants=constants,
                              stored=frozenset(stored)))
    return nodes


@dataclass
class Graph:
    """The dataflow between a model's nodes, as observed in one forward pass."""

    nodes: list[Node]
    output_preds: set[int]
    # (producer, consumer) -> the concatenation slots the producer's output passed through to reach the consumer
    slots: dict[tuple[int, int], frozenset] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # regions the trace could not see into, or saw only by a detour

    def called(self) -> list[Node]:
        return sorted((n for n in self.nodes if n.order >= 0), key=lambda n: n.order)

    def preds(self, node: int) -> set[int]:
        return self.output_preds if node == OUTPUT else self.nodes[node].preds

    def succs(self, node: int) -> set[int]:
        if node == INPUT:
            return {n.id for n in self.nodes if INPUT in n.preds} | ({OUTPUT} if INPUT in self.output_preds else set())
        return self.nodes[node].succs

    def name(self, node: int) -> str:
        return {INPUT: "(input)", OUTPUT: "(output)"}.get(node) or self.nodes[node].display

    def siblings(self, node: int) -> set[int]:
        """The nodes first called inside the same module call as ``node`` (a block's convolutions and norms)."""
        if not hasattr(self, "_by_parent"):
            by_parent: dict[int, set[int]] = {}
            for n in self.called():
                by_parent.setdefault(n.parent, set()).add(n.id)
            self._by_parent = by_parent
        return self._by_parent.get(self.nodes[node].parent, set()) - {node}


@dataclass
class Call:
    """One call of one module."""

    index: int  # in call (start) order
    name: str
    node: int | None  # node id, when the module is a node
    k: int  # which call of that node
    end: int = -1  # position in end order: children end before their parents
    end_seq: int = -1
    output_keys: tuple = ()  # (id, version) of each output tensor at the end of the call
    input_keys: tuple = ()  # (id, version) of each tensor it was called with
    upstream: frozenset = frozenset()  # points its outputs were computed from
    agrees: bool | None = None  # whether its outputs have counterparts in the reference (candidate side)
    shapes: tuple = ()  # (its inputs' shapes, its outputs' shapes), each without the batch dimension


class Sink:
    """What a recorder reports to; the base class records nothing."""

    wants_ops = False  # whether ``op_output`` should be called for every operation's result

    def before_write(self, tensor: torch.Tensor) -> None:
        """``tensor`` is about to be changed in place."""

    def node_input(self, call: Call, tensor: torch.Tensor, upstream: frozenset, seq: int, producer: int,
                   key: tuple) -> None: ...
    def core(self, call: Call, tensor: torch.Tensor, upstream: frozenset, seq: int, key: tuple) -> None: ...
    def node_end(self, call: Call) -> None: ...
    def op_output(self, tensor: torch.Tensor, key: tuple[int, int]) -> None: ...
    def call_end(self, call: Call, outputs: list[torch.Tensor]) -> None: ...
    def random_op(self, where: str, function: str, seq: int) -> None: ...
    def random_call(self, where: str, func: Callable, args: tuple, kwargs: dict, on_data: bool) -> None:
        """The call that drew (``random_op``'s), with its arguments; ``on_data``: its first tensor is computed from
        the model's input (a dropout's), not made for the draw (drop-path's ``new_empty(...).bernoulli_()``)."""

    def model_output(self, outputs: list[torch.Tensor], upstream: list[frozenset], seq: int, producers: list[int],
                     keys: list[tuple]) -> None: ...


# What a torch function implemented in Python checks before handing itself to the mode (``torch.overrides``).
_OVERRIDE_CHECKS = (has_torch_function, has_torch_function_unary, has_torch_function_variadic)


def _no_override(*args: Any) -> bool:
    return False


def _writes_globals(code: types.CodeType) -> bool:
    return any(i.opname in ("STORE_GLOBAL", "DELETE_GLOBAL") for i in dis.get_instructions(code)) or any(
        _writes_globals(c) for c in code.co_consts if isinstance(c, types.CodeType))


def python_body(func: Callable) -> Callable | None:
    """The body of ``func``, a torch function implemented in Python (``F.multi_head_attention_forward``), as a
    function that runs it instead of handing the call to the active ``TorchFunctionMode`` again: the same code,
    defaults and closure, run with a snapshot of its module's globals in which the override checks it makes by
    name (``has_torch_function``) answer ``False``. Nothing of torch is changed. ``None`` for anything else, and
    for a function that writes its module's globals (the snapshot would not see it)."""
    if not isinstance(func, types.FunctionType):
        return None
    code = func.__code__
    checks = [n for n in code.co_names if any(func.__globals__.get(n) is c for c in _OVERRIDE_CHECKS)]
    if not checks or _writes_globals(code):
        return None
    snapshot = dict(func.__globals__)
    snapshot.update(dict.fromkeys(checks, _no_override))
    body = types.FunctionType(code, snapshot, func.__name__, func.__defaults__, func.__closure__)
    body.__kwdefaults__ = func.__kwdefaults__
    return body


class _ScriptedCall:
    """Stands for a TorchScript module's call in the recorder, which sees it as one operation."""

    def __init__(self, name: str) -> None:
        self.__name__ = name


# What a model (or a part of one) that cannot run on an input raises; anything else is a bug to see in full.
MODEL_FAILURES = (RuntimeError, ValueError, TypeError, LookupError, ArithmeticError, AttributeError, AssertionError,
                  NotImplementedError)


# Arguments that hold no tensor: passed over without asking ``tree_flatten``, which the recorder would otherwise
# call on every argument of every operation.
_NO_TENSORS = (int, float, complex, bool, str, bytes, type(None), slice, type(Ellipsis), torch.dtype, torch.device,
               torch.layout, torch.memory_format)


def _tensors(tree: Any) -> list[torch.Tensor]:
    """The tensors in ``tree``, in ``tree_flatten``'s order: plain tuples, lists and dicts opened here, anything
    else (a named tuple, a registered container) by ``tree_flatten``."""
    found: list[torch.Tensor] = []
    _collect(tree, found)
    return found


def _collect(value: Any, found: list[torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif type(value) in (tuple, list):
        for item in value:
            _collect(item, found)
    elif type(value) is dict:
        for item in value.values():
            _collect(item, found)
    elif not isinstance(value, _NO_TENSORS):
        found += [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]


@functools.lru_cache(maxsize=None)
def _signatures() -> dict[Callable, Callable]:
    """A Python signature for each torch function implemented in C++ (``torch.overrides``' dummies)."""
    return torch.overrides.get_testing_overrides()


def argument_names(func: Callable) -> tuple[str, ...] | None:
    """The names of a torch function's positional arguments, in order, a variable-length one written ``*tensors``:
    from an ATen operator's schema, a C++ function's documented signature or a Python function's own; ``None``
    where none is known. ``F.batch_norm`` takes the running statistics before the weight, ``torch.batch_norm`` and
    ``aten.batch_norm`` after it: a tensor's role is the argument it is passed as, by name."""
    if not isinstance(func, Hashable):
        return _argument_names(func)
    if func not in _ARGUMENT_NAMES:  # asked for every operation the recorder sees: each function read once
        _ARGUMENT_NAMES[func] = _argument_names(func)
    return _ARGUMENT_NAMES[func]


_ARGUMENT_NAMES: dict[Callable, tuple[str, ...] | None] = {}


def _argument_names(func: Callable) -> tuple[str, ...] | None:
    schema = getattr(func, "_schema", None)
    if schema is not None:
        return tuple(a.name for a in schema.arguments)
    try:
        parameters = inspect.signature(_signatures().get(func, func)).parameters.values()
    except (TypeError, ValueError):
        return None
    return tuple(f"*{p.name}" if p.kind is p.VAR_POSITIONAL else p.name for p in parameters
                 if p.kind is not p.VAR_KEYWORD)


def argument_of_each_tensor(func: Callable, args: tuple, kwargs: dict) -> list[str]:
    """For each tensor ``_tensors((args, kwargs))`` lists, the argument it is passed as: its name (a method's
    ``self`` called ``input``, as the function's first argument is), with its index inside a list or tuple
    (``tensors[1]`` of ``torch.cat``) or among variable-length arguments; its position where no name is known."""
    names = argument_names(func) or ()
    var = next((i for i, n in enumerate(names) if n.startswith("*")), None)
    labels = []
    for i, value in enumerate(args):
        if var is not None and i >= var:
            label = f"{names[var][1:]}[{i - var}]"
        else:
            label = names[i] if i < len(names) else str(i)
        labels += _element_labels("input" if label == "self" else label, value)
    for key, value in kwargs.items():
        labels += _element_labels(key, value)
    return labels


def _element_labels(label: str, value: Any) -> list[str]:
    """``label`` for a tensor, ``label[i]`` for each tensor inside a list or tuple (nested: ``label[i][j]``)."""
    if isinstance(value, torch.Tensor):
        return [label]
    if isinstance(value, (list, tuple)):
        return [inner for j, item in enumerate(value) for inner in _element_labels(f"{label}[{j}]", item)]
    return [label] * len(_tensors(value))


class RandomWatch(TorchFunctionMode):
    """Whether a pass calls a torch function that draws random numbers (``_is_random``: from the global
    generator or the model's own): a plain pass's light stand-in for a ``Recorder``, which also says where."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.seen and _is_random(function_name(func), args, kwargs):
            self.seen = True
        return func(*args, **kwargs)


class Recorder(TorchFunctionMode):
    """Runs a model once, recording its dataflow graph and reporting points to a sink."""

    def __init__(self, model: nn.Module, sink: Sink | None = None) -> None:
        super().__init__()
        self.model = model
        self.sink = sink or Sink()
        self.nodes = model_nodes(model)
        self.node_of_module = {id(n.module): n for n in self.nodes}
        self.owner: dict[int, tuple[Node, str]] = {
            id(t): (n, local) for n in self.nodes for local, t in n.tensors.items()}
        self.prov = WeakIdKeyDictionary()  # tensor -> frozenset of node ids
        self.pprov = WeakIdKeyDictionary()  # tensor -> frozenset of point keys
        self.derived = WeakIdKeyDictionary()  # tensor computed from one node's tensors alone -> (node id, locals)
        self.producer = WeakIdKeyDictionary()  # tensor -> index of the innermost call that last wrote it
        self.serial = WeakIdKeyDictionary()  # tensor -> number unique within the pass (ids are reused)
        self.arranged = WeakIdKeyDictionary()  # padded or permuted tensor -> (its source, the source's version)
        self.padded = WeakIdKeyDictionary()  # padded tensor -> the pad operations that made it (``conv_padding``)
        self._serials = itertools.count()
        self.rated_calls = 0  # dropout calls given a rate above zero, dropping or not (``given_rate``)
        self.calls: list[Call] = []
        self.stack: list[Call] = []
        self.node_stack: list[Call] = []
        self.core_upstream: dict[tuple[int, int], frozenset] = {}
        self.output_preds: set[int] = set()
        self.slots = WeakIdKeyDictionary()  # tensor -> frozenset of (node id, concatenation slots on the way)
        self.edge_slots: dict[tuple[int, int], set[tuple]] = {}
        self.seq = 0
        self.ended = 0
        self.first_calls = 0
        self._busy = False
        self._through: list[Callable] = []  # the torch functions whose Python bodies are running
        self.traced: dict[str, list[str]] = {}  # torch function traced through -> the modules it used, each call
        self.notes: list[str] = []  # what the trace could not see, or saw only by a detour

    # -- running ---------------------------------------------------------------------------
    def run(self, x: torch.Tensor) -> Any:
        handles = []
        scripted: dict[int, str] = {}  # TorchScript modules: no hooks of their own, their inside hidden from the trace
        for name, module in self.model.named_modules():
            if isinstance(module, torch.jit.ScriptModule):
                if not any(name.startswith(f"{outer}.") for outer in scripted.values()):
                    scripted[id(module)] = name
                continue
            handles.append(module.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True))
            handles.append(module.register_forward_hook(self._post_hook(), with_kwargs=True, always_call=True))
        if scripted:
            handles.append(nn.modules.module.register_module_forward_hook(self._scripted_hook(scripted)))
        self.prov[x] = frozenset({INPUT})
        self.pprov[x] = frozenset({INPUT_POINT})
        self._script_call = torch.jit.ScriptFunction.__call__
        recorder = self

        def scripted_function(function, *args, **kwargs):
            return recorder._scripted_function(function, *args, **kwargs)

        try:
            # A scripted function runs as its Python source, so that the trace sees its operations.
            torch.jit.ScriptFunction.__call__ = scripted_function
            with self:
                out = self.model(x)
        finally:
            torch.jit.ScriptFunction.__call__ = self._script_call
            for handle in handles:
                handle.remove()
        outputs = _tensors(out)
        self._busy = True
        try:
            upstream = []
            for i, t in enumerate(outputs):
                self.output_preds |= self.prov.get(t, frozenset())
                self._note_slots(t, OUTPUT, (i,))
                upstream.append(self.pprov.get(t, frozenset()))
            for p in self.output_preds:
                if p != INPUT:
                    self.nodes[p].succs.add(OUTPUT)
            self.seq += 1
            self.sink.model_output(outputs, upstream, self.seq, [self.producer.get(t, 0) for t in outputs],
                                   [self.key(t) for t in outputs])
        finally:
            self._busy = False
        return out

    def key(self, t: torch.Tensor) -> tuple[int, int]:
        """Which tensor, in which state: in-place operations bump the version."""
        serial = self.serial.get(t)
        if serial is None:
            serial = self.serial[t] = next(self._serials)
        return (serial, t._version)

    def _scripted_function(self, function: Any, *args, **kwargs) -> Any:
        source = getattr(function, "_torchdynamo_inline", None)  # kept by torch.jit.script
        name = getattr(function, "qualified_name", None) or function_name(function)
        if source is None:
            self.notes.append(f"the scripted function {name} runs opaquely: the trace cannot see what it computes")
            return self._script_call(function, *args, **kwargs)
        note = f"the scripted function {name} is traced by running its Python source"
        if note not in self.notes:
            self.notes.append(note)
        return source(*args, **kwargs)

    def _scripted_hook(self, scripted: dict[int, str]):
        """A TorchScript module is one operation to the trace: its outputs come from its inputs."""
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            name = scripted.get(id(module))
            if name is None or self._busy:
                return
            own = [t for t in module.parameters()] + [t for t in module.buffers()]
            note = (f"the scripted module {name or '(root)'} ({module.original_name}) is one opaque operation to the "
                    "trace" + (f": the modules inside it, holding {len(own)} tensors, cannot be paired" if own else ""))
            if note not in self.notes:
                self.notes.append(note)
            self._busy = True
            try:
                self._on_op(_ScriptedCall(f"scripted {name}"), args, {}, output)
            finally:
                self._busy = False
        return hook

    def _note_slots(self, t: torch.Tensor, consumer: int, suffix: tuple = ()) -> None:
        for p, path in self.slots.get(t, ()):
            self.edge_slots.setdefault((p, consumer), set()).add(path + suffix)
        if suffix and t not in self.slots:
            for p in self.prov.get(t, ()):
                self.edge_slots.setdefault((p, consumer), set()).add(suffix)

    def _unarranged(self, t: torch.Tensor) -> torch.Tensor:
        """The tensor ``t`` pads or permutes (through any chain of them), while it holds what it held; else ``t``."""
        source = self.arranged.get(t)
        if source is None or source[0]._version != source[1]:
            return t
        return source[0]

    def graph(self) -> Graph:
        self._place_counts()
        notes = list(self.notes)
        for function, places in self.traced.items():
            more = f"; ... ({len(places)} places in all)" if len(places) > 2 else ""
            notes.append(f"{function} uses the tensors of several modules at once, traced through its Python body: "
                         f"{'; '.join(places[:2])}{more}")
        return Graph(self.nodes, self.output_preds, {k: frozenset(v) for k, v in self.edge_slots.items()}, notes)

    def _place_counts(self) -> None:
        """A count no operation uses (a BatchNorm's ``num_batches_tracked`` registered beside functional calls)
        left on a module whose tensors were split by use goes with the part holding the tensors whose names share
        the longest prefix with its own, where one part does: where it would sit in a module of its own."""
        for node in [n for n in self.nodes if n.container]:
            parts = [n for n in self.nodes if n.module is node.module]
            if len(parts) < 2:
                continue
            for local in [n for n, t in node.tensors.items()
                          if not t.is_floating_point() and t.numel() == 1 and n not in node.roles]:
                shared = {part.id: max((len(os.path.commonprefix([local, other])) for other, t in part.tensors.items()
                                        if t.is_floating_point()), default=0) for part in parts}
                best = max(shared.values())
                winners = [parts_id for parts_id, n in shared.items() if n == best]
                if best and len(winners) == 1 and winners[0] != node.id:
                    self._move(node, local, self.nodes[winners[0]])
            # Counts their names do not place: one to each BatchNorm part without one, in execution order, where
            # there are as many.
            left = [n for n, t in node.tensors.items() if not t.is_floating_point() and t.numel() == 1
                    and n not in node.roles]
            norms = sorted((p for p in parts if p.kind == "batchnorm" and p.order >= 0
                            and all(t.is_floating_point() or (p is node and n in left) for n, t in p.tensors.items())),
                           key=lambda p: p.order)
            if left and len(left) == len(norms):
                for local, part in zip(left, norms, strict=True):
                    self._move(node, local, part)
            # Each node of a module split by use is a part: named by its largest tensor, the last one left too.
            if not node.part and any(p is not node and p.order >= 0 for p in parts) and node.tensors:
                node.part = max(node.tensors, key=lambda n: (n in node.parameters, node.tensors[n].numel(), n))

    def _move(self, node: Node, local: str, part: Node) -> None:
        part.tensors[local] = node.tensors.pop(local)
        self.owner[id(part.tensors[local])] = (part, local)

    # -- hooks -----------------------------------------------------------------------------
    def _pre_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._busy = True
            try:
                self.seq += 1
                node = self.node_of_module.get(id(module))
                if node is not None and node.container:
                    node = None  # called where its tensors are used
                inputs = _tensors((args, kwargs))
                if node is not None and not any(t in self.prov for t in inputs):
                    # It computes from its own tensors alone (a weight reshaped by a module of its own, as an ONNX
                    # graph does): what it returns is derived from its tensors, and it is called where that meets data.
                    node = None
                call = Call(len(self.calls), name, node.id if node else None, node.calls if node else 0,
                            input_keys=tuple(self.key(t) for t in inputs),
                            shapes=tuple(tuple(t.shape[1:]) for t in inputs))  # the outputs' added at its end
                self.calls.append(call)
                self.stack.append(call)
                if node is None:
                    return
                if node.calls == 0:
                    node.order = self.first_calls
                    self.first_calls += 1
                    node.parent = self.stack[-2].index if len(self.stack) > 1 else -1
                node.calls += 1
                self.node_stack.append(call)
                for t in inputs:
                    for p in self.prov.get(t, ()):
                        node.preds.add(p)
                        if p != INPUT:
                            self.nodes[p].succs.add(node.id)
                    self._note_slots(t, node.id)
                data = [t for t in inputs if t in self.prov]
                if data:
                    t = data[0]
                    upstream = self.pprov.get(t, frozenset())
                    point = self._unarranged(t)
                    self.sink.node_input(call, point, upstream, self.seq, self.producer.get(point, call.index),
                                         self.key(point))
                    self.pprov[t] = frozenset({("in", node.id, call.k)})
                    self.core_upstream[(node.id, call.k)] = frozenset({("in", node.id, call.k)})
            finally:
                self._busy = False

        return hook

    def _post_hook(self):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            self._busy = True
            try:
                self.seq += 1
                call = self.stack.pop()
                outputs = _tensors(output)
                if call.node is not None:
                    self.node_stack.pop()
                    for t in outputs:
                        self.prov[t] = frozenset({call.node})
                        if t in self.slots:
                            del self.slots[t]
                    self.sink.node_end(call)
                call.end = self.ended
                self.ended += 1
                call.end_seq = self.seq
                call.output_keys = tuple(self.key(t) for t in outputs)
                call.shapes = (call.shapes, tuple(tuple(t.shape[1:]) for t in outputs))
                call.upstream = frozenset().union(*(self.pprov.get(t, frozenset()) for t in outputs))
                for t in outputs:
                    if t not in self.producer:
                        self.producer[t] = call.index
                self.sink.call_end(call, outputs)
            finally:
                self._busy = False

        return hook

    # -- every torch function --------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self._busy:
            body = self._body_to_trace(func, args, kwargs)
            if body is not None:
                self._through.append(func)
                try:
                    with self:  # handing the call here took the mode off; its operations are to be seen
                        return body(*args, **kwargs)
                finally:
                    self._through.pop()
        if not self._busy and _writes_in_place(func, kwargs):
            self._busy = True
            try:
                for t in _tensors((args[:1], kwargs.get("out"))):
                    self.sink.before_write(t)
            finally:
                self._busy = False
        before = None
        if not self._busy and _writes_in_place(func, kwargs) and args and isinstance(args[0], torch.Tensor) \
                and args[0] in self.prov and any(id(t) in self.owner or t in self.derived for t in _tensors(args[1:])):
            before = args[0].detach().clone()  # a module's tensor applied in place (``x.mul_(gamma)``): its input
        out = func(*args, **kwargs)
        if self._busy:
            return out
        self._busy = True
        try:
            self._on_op(func, args, kwargs, out, before)
        finally:
            self._busy = False
        return out

    def _body_to_trace(self, func: Callable, args: tuple, kwargs: dict) -> Callable | None:
        """The Python body of a torch function that uses the tensors of several modules at once and data (the
        in- and out-projections of ``F.multi_head_attention_forward``), to run so that each of its operations
        is a call of the module whose tensors it uses; ``None``: the call is one operation."""
        if not isinstance(func, types.FunctionType) or func in self._through:
            return None  # most operations are implemented in C++
        tensors = _tensors((args, kwargs))
        used = [self.owner[id(t)][0] for t in tensors if id(t) in self.owner]
        used += [self.nodes[self.derived[t][0]] for t in tensors if t in self.derived]
        if len({id(n.module) for n in used}) < 2 or not any(t in self.prov for t in tensors):
            return None
        # Another mode or a tensor subclass would take the call where this recorder hands it on: left as it is.
        if has_torch_function(tensors):
            return None
        body = python_body(func)
        if body is not None:
            names = ", ".join(sorted({n.name or "(root)" for n in used}))
            places = self.traced.setdefault(function_name(func), [])
            if names not in places:
                places.append(names)
        return body

    def _use(self, node: Node, inputs: list[torch.Tensor], outs: list[torch.Tensor],
             before: torch.Tensor | None) -> None:
        """A call of ``node`` made by an operation that uses its tensors outside its own ``forward``
        (``F.linear(x, self.fc.weight)``, ``x * self.gamma`` in a block holding child modules)."""
        call = Call(len(self.calls), node.display if node.part else node.name, node.id, node.calls)
        self.calls.append(call)
        if node.calls == 0:
            node.order = self.first_calls
            self.first_calls += 1
            # Its place in the module hierarchy is its module's: where the module uses its own tensors in its own
            # forward (timm's BatchNormAct2d, a block's layer scale), the call enclosing that forward's call.
            around = self.stack[:-1] if self.stack and self.stack[-1].name == node.name else self.stack
            node.parent = around[-1].index if around else -1
        node.calls += 1
        data = [t for t in inputs if t in self.prov]
        for t in data:
            for p in self.prov[t]:
                node.preds.add(p)
                if p != INPUT:
                    self.nodes[p].succs.add(node.id)
            self._note_slots(t, node.id)
        t = data[0]
        point = before if before is not None and t is inputs[0] else self._unarranged(t)
        in_key, core_key = ("in", node.id, call.k), ("core", node.id, call.k)
        self.seq += 1
        self.sink.node_input(call, point, self.pprov.get(t, frozenset()), self.seq, self.producer.get(t, call.index),
                             self.key(point))
        others = frozenset().union(*(self.pprov.get(u, frozenset()) for u in data[1:]))
        self.pprov[t] = frozenset({in_key})
        self.seq += 1
        for o in outs:
            self.prov[o] = frozenset({node.id})
            self.pprov[o] = frozenset({core_key})
            self.producer[o] = call.index
            if o in self.slots:
                del self.slots[o]
        self.sink.core(call, outs[0], frozenset({in_key}) | others, self.seq, self.key(outs[0]))
        self.sink.node_end(call)
        call.end = self.ended
        self.ended += 1
        call.end_seq = self.seq
        call.output_keys = tuple(self.key(o) for o in outs)
        call.upstream = frozenset({core_key})
        self.sink.call_end(call, outs)

    def _claim(self, node: Node, locals_: frozenset) -> Node:
        """The node a container's tensors ``locals_`` form where they are used together with data: the
        container's own node when they are all of its floating-point tensors left, else a node of their own split off it
        (a model's class token and position embedding are used in two places, as two modules of
        another implementation may hold them)."""
        if not node.container or node.order >= 0:
            return node
        if not locals_ <= set(node.tensors):  # derived before they were split off
            return next((n for n in self.nodes if n.module is node.module and locals_ <= set(n.tensors)), node)
        if all(not node.tensors[n].is_floating_point() for n in set(node.tensors) - locals_):
            return node  # a count left over (a BatchNorm's: not floating, not a constant) belongs with what is used
        # Named by its largest parameter (a weight before its bias).
        named = max(locals_, key=lambda n: (n in node.parameters, node.tensors[n].numel(), n))
        part = Node(len(self.nodes), node.name, node.module, {n: node.tensors.pop(n) for n in sorted(locals_)},
                    node.parameters & locals_, container=True, part=named)
        node.parameters = node.parameters - locals_
        self.nodes.append(part)
        for local, t in part.tensors.items():
            self.owner[id(t)] = (part, local)
        return part

    def _where(self) -> str:
        return self.stack[-1].name if self.stack else ""

    def _on_op(self, func, args: tuple, kwargs: dict, out: Any, before: torch.Tensor | None = None) -> None:
        name = function_name(func)
        given = given_rate(name, args, kwargs)
        if given is not None and given[1] > 0.0:
            self.rated_calls += 1
        if _is_random(name, args, kwargs):
            where = self._where() or "(root)"
            self.sink.random_op(where, name, self.seq)
            first = next(iter(_tensors((args, kwargs))), None)
            self.sink.random_call(where, func, args, kwargs, first is not None and first in self.prov)
        outs = _tensors(out)
        if name == "__setitem__" and args and isinstance(args[0], torch.Tensor):
            outs.append(args[0])
        if not outs:
            return
        self.seq += 1
        inputs = _tensors((args, kwargs))
        data: frozenset = frozenset()
        upstream: frozenset = frozenset()
        uses: set[int] = set()
        consumed: list[tuple[int, Node, frozenset]] = []  # (argument position, node, its locals) of node tensors
        for position, t in enumerate(inputs):
            owned = self.owner.get(id(t))
            if owned is not None:
                consumed.append((position, owned[0], frozenset({owned[1]})))
                continue
            derived = self.derived.get(t)
            if derived is not None:
                consumed.append((position, self.nodes[derived[0]], derived[1]))
                continue
            p = self.prov.get(t) if name not in _FACTORY_FUNCTIONS else None
            if p is not None:
                data = data | p
                upstream = upstream | self.pprov.get(t, frozenset())
        if data:  # what one operation uses of a container's tensors is claimed together
            together: dict[int, frozenset] = {}
            for _, node, locals_ in consumed:
                together[node.id] = together.get(node.id, frozenset()) | locals_
            claimed = {n: self._claim(self.nodes[n], locals_) for n, locals_ in together.items()}
            consumed = [(position, claimed[node.id], locals_) for position, node, locals_ in consumed]
        derived_from: dict[int, frozenset] = {}
        arguments = argument_of_each_tensor(func, args, kwargs) if consumed else []
        for position, node, locals_ in consumed:
            uses.add(node.id)
            derived_from[node.id] = derived_from.get(node.id, frozenset()) | locals_
            if data or name not in _VIEW_FUNCTIONS:
                node.functions.add(name)
                role = "affine" if name in _AFFINE_FUNCTIONS else canonical_function(name)
                for local in locals_:
                    node.roles.setdefault(local, f"{role}#{arguments[position]}")
        if name in _CONV_FUNCTIONS and data and consumed and consumed[0][1].padding is None:
            node = consumed[0][1]
            source = args[0] if args else kwargs.get("input")
            node.padding = conv_padding(name, args, kwargs, self.padded.get(source), node.name)
        if data and uses:
            in_own_call = {c.node for c in self.node_stack}
            outside = [n for n in uses if self.nodes[n].container or n not in in_own_call]
            if len(uses) == 1 and outside:
                self._use(self.nodes[outside[0]], inputs, outs, before)
                self._fingerprint_ops(outs)
                return
            if outside:
                note = (f"{name} in {self._where() or '(root)'} uses the tensors of "
                        f"{', '.join(sorted({self.nodes[n].name or '(root)' for n in uses}))} at once: the trace sees "
                        f"one step where another implementation may have several")
                if note not in self.notes:
                    self.notes.append(note)
        where = self.stack[-1].index if self.stack else 0
        if name in _ARRANGE_FUNCTIONS and len(outs) == 1 and data and isinstance(args[0], torch.Tensor):
            source = self._unarranged(args[0])
            self.arranged[outs[0]] = (source, source._version)
            if name in _PAD_FUNCTIONS:
                pad = kwargs.get("pad", args[1] if len(args) > 1 else ())
                mode = "constant" if name == "constant_pad_nd" else kwargs.get("mode", args[2] if len(args) > 2 else
                                                                               "constant")
                value = kwargs.get("value", args[3 if name != "constant_pad_nd" else 2] if len(args) > (
                    3 if name != "constant_pad_nd" else 2) else None)
                self.padded[outs[0]] = [*self.padded.get(args[0], ()), (tuple(pad), mode, value or 0.0,
                                                                         self._where())]
        if data and (name in _CAT_FUNCTIONS or any(t in self.slots for t in inputs)):
            entries: set = set()
            for position, t in enumerate(inputs):
                base = self.slots.get(t) or {(p, ()) for p in self.prov.get(t, ())}
                entries |= {(p, path + (position,)) for p, path in base} if name in _CAT_FUNCTIONS else base
            for t in outs:
                self.slots[t] = frozenset(entries)
        for t in outs:
            self.producer[t] = where
            if data:
                self.prov[t] = data
                self.pprov[t] = upstream
            elif len(uses) == 1:
                node_id = next(iter(uses))
                self.derived[t] = (node_id, derived_from[node_id])
        current = self.node_stack[-1] if self.node_stack else None
        if current is not None and data and current.node in uses:
            key = (current.node, current.k)
            own = ("core", *key)
            before = self.core_upstream.get(key, frozenset())
            core_upstream = (upstream - {own}) | before
            self.core_upstream[key] = core_upstream
            for t in outs:
                self.pprov[t] = frozenset({own})
            self.sink.core(current, outs[0], core_upstream, self.seq, self.key(outs[0]))
        self._fingerprint_ops(outs)

    def _fingerprint_ops(self, outs: list[torch.Tensor]) -> None:
        if self.sink.wants_ops:
            for t in outs:
                if t.is_floating_point():
                    self.sink.op_output(t, self.key(t))


def trace(model: nn.Module, x: torch.Tensor, sink: Sink | None = None) -> tuple[Graph, Recorder]:
    recorder = Recorder(model, sink)
    recorder.run(x)
    return recorder.graph(), recorder

