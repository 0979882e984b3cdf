"""Capturing both models at the shared points, comparing them, and locating the first divergence.

Points of two shapes are compared as the same numbers reshaped; where that differs and both end in
the same dimension (the features a Linear acts on), also with their rows in each other order of
their leading dimensions (an attention computed sequence-first against one computed batch-first),
keeping the closest: a row-wise operation computes the same rows whichever order they come in, and
where the order matters the next point or the model output, compared as it is, tells. Shapes that are a
permutation of each other (channels-last against channels-first) are also compared in each order of
dimensions that fits. The report names the points compared in another order."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any
from dataclasses import dataclass, field

import torch
from torch import nn

from repro.equivalence import Diff
from repro.verify._trace import INPUT_POINT, Call, PointKey, Sink, squeezed


MAX_ROW_ORDERS = 24  # the orders of at most four leading dimensions


def _row_orders(actual: torch.Tensor, expected: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``actual`` and ``expected`` in one shape, with the rows of the side that has more leading dimensions taken
    in each other order of those dimensions, where both end in the same dimension (the features a Linear acts on)
    and hold as many numbers (sequence-first against batch-first: ``[L, N, E]`` or ``[L * N, E]`` against
    ``[N, L, E]``); none otherwise."""
    lead = [[d for d in t.shape[:-1] if d != 1] for t in (actual, expected)]
    if actual.ndim < 2 or expected.ndim < 2 or actual.shape[-1] != expected.shape[-1] or lead[0] == lead[1]:
        return []
    finer = 0 if len(lead[0]) >= len(lead[1]) else 1
    dims = lead[finer]
    if math.factorial(len(dims)) > MAX_ROW_ORDERS:
        return []
    rows = (actual, expected)[finer].reshape(*dims, actual.shape[-1])
    other = (actual, expected)[1 - finer]
    pairs = []
    for order in itertools.permutations(range(len(dims))):
        if list(order) != sorted(order):
            arranged = rows.permute(*order, len(dims)).reshape(other.shape)
            pairs.append((other, arranged) if finer else (arranged, other))
    return pairs


def _dimension_orders(actual: torch.Tensor, expected: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``actual`` with its dimensions in each other order that gives ``expected``'s shape, where the shapes are
    a permutation of each other (a channels-last ``[N, H, W, C]`` map against ``[N, C, H, W]``: a layer scale
    applied before permuting back, as Hugging Face's ConvNeXt does, against after, as timm's does)."""
    if sorted(actual.shape) != sorted(expected.shape) or actual.ndim > 5:
        return []
    return [(actual.permute(order).contiguous(), expected) for order in itertools.permutations(range(actual.ndim))
            if list(order) != sorted(order) and tuple(actual.shape[i] for i in order) == tuple(expected.shape)]


def compare(actual: torch.Tensor, expected: torch.Tensor) -> Diff | None:
    """``Diff`` of two tensors, reshaping when they hold as many numbers (a Linear's ``[N, C]`` against a 1x1
    convolution's ``[N, C, 1, 1]``, a Linear on a flattened map against a KxK convolution's weight, a ``[C]``
    scale against a ``[C, 1, 1]`` one); ``None`` when the sizes differ. See ``compare_rows``."""
    found = compare_rows(actual, expected)
    return None if found is None else found[0]


def compare_output(actual: torch.Tensor, expected: torch.Tensor) -> Diff:
    """``Diff`` of two model outputs. Their shape is part of what a model computes (a ``squeeze()`` that drops
    the batch dimension of a single sample breaks its callers), so unlike a point inside the models they are
    not reshaped: ``MISMATCH`` where the shapes differ."""
    return _compare_same_shape(actual.detach(), expected.detach()) if actual.shape == expected.shape else MISMATCH


def compare_rows(actual: torch.Tensor, expected: torch.Tensor) -> tuple[Diff, bool] | None:
    """``compare``, where the reshaped tensors differ also with their rows in each other order
    (``_row_orders``), keeping the closest; and whether that was another order of rows."""
    actual, expected = actual.detach(), expected.detach()
    if actual.shape == expected.shape:
        return _compare_same_shape(actual, expected), False
    if actual.numel() != expected.numel():
        return None
    plain = _compare_same_shape(actual.reshape(expected.shape), expected)
    if plain.bit_exact:
        return plain, False
    distance = lambda d: (not d.finite, d.max_rel, d.max_abs)  # noqa: E731
    orders = _row_orders(actual, expected) + _dimension_orders(actual, expected)
    closest = min((_compare_same_shape(a, e) for a, e in orders), key=distance, default=None)
    if closest is None or distance(plain) <= distance(closest):
        return plain, False
    return closest, True


def _compare_same_shape(actual: torch.Tensor, expected: torch.Tensor) -> Diff:
    if actual.dtype == expected.dtype and torch.equal(actual, expected):  # the common case, without float64 copies
        # Equal tensors hold no NaN (NaN != NaN); a finite sum rules out infinities cheaply.
        finite = (not actual.is_floating_point() or bool(torch.isfinite(actual.sum()))
                  or bool(torch.isfinite(actual).all()))
        return Diff(0.0, 0.0, True, finite)
    return Diff.of(actual, expected)


MISMATCH = Diff(math.inf, math.inf, False, True)

_SETTING_TYPES = (bool, int, float, str)


def _settings(module: nn.Module) -> dict[str, object]:
    """A module's plain settings: its public attributes holding numbers, strings or tuples of them
    (``eps``, ``momentum``, ``stride``, ``padding``, ``groups``, ``approximate``, ...)."""
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and k != "training" and (isinstance(v, _SETTING_TYPES) or (
                isinstance(v, tuple) and all(isinstance(e, _SETTING_TYPES) for e in v)))}


def _setting(value: object) -> str:
    """A setting as a reader writes it: ``0.0003``, not ``0.00029999999999996696`` (1 - 0.9997)."""
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


def _same_setting(a: object, b: object) -> bool:
    """Equal, or floats equal to 1e-12 (``1 - 0.99`` against ``0.01``: no difference a comparison could show)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b


def settings_difference(candidate: nn.Module, reference: nn.Module, leave: frozenset[str] = frozenset(),
                        classes: bool = True) -> str:
    """What differs between two paired modules' settings, in words (empty when nothing visible does):
    their classes where those differ, then every setting both have with another value, candidate's first.
    A cause to read beside a numerical divergence, never a verdict: settings are named differently
    across libraries, and a setting may not matter (or be applied elsewhere, as TF "same" padding is: ``leave``
    names the settings to leave out, said otherwise by the caller). ``classes=False`` leaves the classes out;
    floats equal to 1e-12 (``_same_setting``) do not differ."""
    words = []
    if classes and type(candidate).__name__ != type(reference).__name__:
        words.append(f"{type(candidate).__name__} vs {type(reference).__name__}")
    ours, theirs = _settings(candidate), _settings(reference)
    for k in ours:
        if k in theirs and not _same_setting(ours[k], theirs[k]) and k not in leave:
            shown = (_setting(ours[k]), _setting(theirs[k]))
            if shown[0] == shown[1]:  # 0.09999999999999998 (1 - 0.9) vs 0.1: written in full, not as two equal numbers
                shown = (repr(ours[k]), repr(theirs[k]))
            words.append(f"{k} {shown[0]} vs {shown[1]}")
    return "; ".join(words)


_PROJECTION = torch.empty(2, 0)
_PROJECTION_SEED = torch.Generator().manual_seed(20240611)


def _projection(n: int) -> torch.Tensor:
    """Two fixed random rows of length ``n``: the first ``n`` columns of one growing matrix, so
    tensors of every size are summarized by the same numbers within a process."""
    global _PROJECTION
    if _PROJECTION.shape[1] < n:
        more = max(n - _PROJECTION.shape[1], 1 << 16)
        _PROJECTION = torch.cat([_PROJECTION, torch.empty(2, more).uniform_(-1.0, 1.0, generator=_PROJECTION_SEED)], 1)
    return _PROJECTION[:, :n]


class Fingerprints:
    """Cheap summaries of every tensor a model computes, to ask "does the reference compute this
    value anywhere?" without keeping the tensors: the largest magnitude and two random
    projections. Agreement within the relative tolerance (at several standard deviations of
    the projection noise) counts as a match. Used only to locate a divergence, never to decide one."""

    def __init__(self, rtol: float) -> None:
        self.rtol = rtol
        self.by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
        self._stacked: dict[tuple[int, ...], torch.Tensor] = {}

    def of(self, t: torch.Tensor) -> torch.Tensor:
        flat = t.detach().reshape(-1, 1).float().cpu()
        proj = (_projection(flat.shape[0]) @ flat)[:, 0]
        return torch.cat([flat.abs().amax(dim=0), proj]).double()

    def add(self, t: torch.Tensor) -> None:
        if t.numel() == 0 or not t.is_floating_point():
            return
        self.by_shape.setdefault(squeezed(t.shape), []).append(self.of(t))
        self._stacked.pop(squeezed(t.shape), None)

    def matches(self, t: torch.Tensor) -> bool:
        if t.numel() == 0 or not t.is_floating_point():
            return True
        key = squeezed(t.shape)
        if key not in self.by_shape:
            return False
        stacked = self._stacked.get(key)
        if stacked is None:
            stacked = self._stacked[key] = torch.stack(self.by_shape[key])
        fp = self.of(t)
        scale = stacked[:, 0].clamp_min(1e-30)
        tol_max = 4 * self.rtol * scale + 1e-6 * scale
        tol_proj = (6 * self.rtol * math.sqrt(t.numel()) + 1e-5 * math.sqrt(t.numel())) * scale
        close = (((stacked[:, 0] - fp[0]).abs() <= tol_max)
                 & ((stacked[:, 1:] - fp[1:]).abs() <= tol_proj[:, None]).all(1))
        return bool(close.any())


def keep_grad(tensor: torch.Tensor, into: dict, key: Any) -> None:
    """Keep ``tensor``'s gradient in ``into[key]`` when a backward pass reaches it (the gradient with respect to
    the value it holds now, even if an in-place operation changes it afterwards)."""
    if tensor.requires_grad:
        tensor.register_hook(lambda grad: into.__setitem__(key, grad.detach().clone()))


@dataclass
class GradPoint:
    """The gradient at one point of a train step, the candidate's against its partner's."""

    key: PointKey  # candidate's
    seq: int
    diff: Diff
    tensor_key: tuple[int, int] | None
    missing: str = ""  # the side no gradient reached ("candidate" / "reference"); the other's did
    carries_grad: bool = True  # whether the candidate's tensor there takes part in autograd at all


class StaleCaptureError(Exception):
    """A captured tensor was changed in place by an operation the recorder did not recognize as
    in-place (one on a view of it, say): the pass has to run again, copying every point."""


class ReferenceCapture(Sink):
    """The reference's side of one pass: every point and, when asked (to locate a divergence),
    fingerprints of every tensor it computes.

    Points are kept by reference and copied only when an in-place operation is about to change
    them (copy on write); a version check on reading guards against in-place operations the
    recorder did not recognize (``StaleCaptureError``; ``eager=True`` copies every point at once)."""

    def __init__(self, rtol: float, fingerprints: bool = False, eager: bool = False, grads: bool = False) -> None:
        self.points: dict[PointKey, tuple[torch.Tensor, int]] = {}
        # With ``grads`` (a pass with a backward), each point's gradient, to say where backward goes wrong.
        self.want_grads = grads
        self.grads: dict[PointKey, torch.Tensor] = {}
        self.fingerprints = Fingerprints(rtol) if fingerprints else None
        self.wants_ops = fingerprints
        self.eager = eager
        self.outputs: list[torch.Tensor] = []
        self.output_seq = 0
        self.random: list[tuple[str, str]] = []
        self.random_seqs: list[int] = []  # where in the pass each random draw happened
        self.seqs: dict[PointKey, int] = {}  # where in the pass each point was taken
        self._seen: set[tuple[int, int]] = set()
        self._held: dict[int, list[PointKey]] = {}  # id of a tensor held by reference -> its points
        self.ran: set[int] = set()  # the nodes called in this pass

    def _fingerprint(self, tensor: torch.Tensor, key: tuple[int, int]) -> None:
        if self.fingerprints is not None and key not in self._seen:
            self._seen.add(key)
            self.fingerprints.add(tensor)

    def _hold(self, key: PointKey, tensor: torch.Tensor) -> None:
        if self.eager:
            self.points[key] = (tensor.detach().clone(), -1)
            return
        self.points[key] = (tensor, tensor._version)
        self._held.setdefault(id(tensor), []).append(key)

    def before_write(self, tensor: torch.Tensor) -> None:
        for key in self._held.pop(id(tensor), ()):
            held, version = self.points[key]
            if version == held._version:
                self.points[key] = (held.detach().clone(), -1)

    def get(self, key: PointKey) -> torch.Tensor | None:
        entry = self.points.get(key)
        if entry is None:
            return None
        tensor, version = entry
        if version != -1 and tensor._version != version:
            raise StaleCaptureError(f"the reference's {key} changed in place after it was captured")
        return tensor.detach()

    def node_input(self, call: Call, tensor, upstream, seq, producer, key) -> None:
        self.ran.add(call.node)
        self._hold(("in", call.node, call.k), tensor)
        self.seqs[("in", call.node, call.k)] = seq
        self._fingerprint(tensor, key)
        if self.want_grads:
            keep_grad(tensor, self.grads, ("in", call.node, call.k))

    def core(self, call: Call, tensor, upstream, seq, key) -> None:
        self._hold(("core", call.node, call.k), tensor)
        self.seqs[("core", call.node, call.k)] = seq
        if self.want_grads:
            keep_grad(tensor, self.grads, ("core", call.node, call.k))

    def op_output(self, tensor, key) -> None:
        self._fingerprint(tensor, key)

    def call_end(self, call: Call, outputs) -> None:
        for t, key in zip(outputs, call.output_keys, strict=True):
            self._fingerprint(t, key)

    def random_op(self, where: str, function: str, seq: int) -> None:
        self.random.append((where, function))
        self.random_seqs.append(seq)

    def model_output(self, outputs, upstream, seq, producers, keys) -> None:
        self.outputs = [t.detach().clone() for t in outputs]
        self.output_seq = seq


ARRANGEMENTS_LOOKED_AT = 8  # the first differing points of a pass asked whether they hold the values otherwise


def arranged_otherwise(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> str:
    """How ``actual``, which differs from ``expected`` (of one shape), holds the same values otherwise: ``"channels"``
    where each position holds the same channel values in another order (a concatenation of its parts in another
    order, channels shuffled otherwise), ``"values"`` where all of them are the same values arranged otherwise,
    else ``""``. Values agree within ``rtol`` of the largest."""
    if actual.ndim == 0 or actual.numel() < 2:
        return ""

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return Diff.of(a, b).ok(rtol)

    if actual.ndim >= 2 and actual.shape[1] > 1 and same(actual.sort(dim=1).values, expected.sort(dim=1).values):
        return "channels"
    return "values" if same(actual.reshape(-1).sort().values, expected.reshape(-1).sort().values) else ""


@dataclass
class PointResult:
    key: PointKey  # candidate's key
    seq: int
    diff: Diff
    shapes: tuple[tuple[int, ...], tuple[int, ...]]  # candidate, reference
    upstream: frozenset
    tensor_key: tuple[int, int] | None  # (id, version) of the candidate tensor
    call: int  # the call it belongs to (for a core) or the innermost call that produced it
    reordered: bool = False  # compared with its rows in another order than the reference's (``compare_rows``)
    ref_seq: int | None = None  # where in the reference's pass its partner was taken
    arranged: str = ""  # where it differs: how it holds the reference's values otherwise (``arranged_otherwise``)

    def ok(self, rtol: float) -> bool:
        return self.diff.ok(rtol)


@dataclass
class CandidateCapture(Sink):
    """The candidate's side of one pass, compared at once against the reference's capture."""

    reference: ReferenceCapture
    node_map: dict[int, int]
    rtol: float
    eager: bool = False  # copy every core at once instead of comparing it when its node ends
    points: list[PointResult] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    random: list[tuple[str, str]] = field(default_factory=list)
    random_seqs: list[int] = field(default_factory=list)
    reference_random_seqs: list[int] = field(default_factory=list)  # kept when the reference's capture is dropped
    _cores: dict[tuple[int, int], tuple[torch.Tensor, int, frozenset, int, int, tuple]] = field(default_factory=dict)
    grads: dict[PointKey, torch.Tensor] = field(default_factory=dict)  # with a backward: each point's gradient
    grad_points: list[GradPoint] = field(default_factory=list)  # after ``compare_grads``
    _grad_keys: dict[PointKey, tuple[PointKey, int, tuple, bool]] = field(default_factory=dict)
    _arrangements_left: int = ARRANGEMENTS_LOOKED_AT

    def _result(self, key: PointKey, ref_key: PointKey, tensor, upstream, seq, tensor_key, call) -> None:
        if ref_key[1] not in self.reference.ran:
            return  # a module the reference does not run in this pass (an auxiliary head it runs in train mode alone)
        expected = self.reference.get(ref_key)
        found = None if expected is None else compare_rows(tensor, expected)
        diff, reordered = found or (MISMATCH, False)
        ref_shape = () if expected is None else tuple(expected.shape)
        arranged = ""
        if not diff.ok(self.rtol) and diff is not MISMATCH and not reordered and self._arrangements_left:
            self._arrangements_left -= 1
            arranged = arranged_otherwise(tensor.detach().reshape(expected.shape), expected, self.rtol)
        self.points.append(PointResult(key, seq, diff, (tuple(tensor.shape), ref_shape), upstream, tensor_key, call,
                                       reordered, self.reference.seqs.get(ref_key), arranged))
        if self.reference.want_grads:
            keep_grad(tensor, self.grads, key)
            self._grad_keys[key] = (ref_key, seq, tensor_key, tensor.requires_grad)

    def compare_grads(self) -> None:
        """After the backward pass of both: each point's gradient against its partner's, and the points a
        gradient reaches on one side only (a ``detach`` or ``torch.no_grad`` on the other)."""
        self.grad_points = []
        for key, (ref_key, seq, tensor_key, carries) in self._grad_keys.items():
            grad, expected = self.grads.get(key), self.reference.grads.get(ref_key)
            if grad is None and expected is None:
                continue
            missing = "candidate" if grad is None else "reference" if expected is None else ""
            found = None if missing else compare_rows(grad, expected)
            self.grad_points.append(GradPoint(key, seq, found[0] if found else MISMATCH, tensor_key, missing, carries))

    def node_input(self, call: Call, tensor, upstream, seq, producer, key) -> None:
        if call.node not in self.node_map:
            return
        ref_key = ("in", self.node_map[call.node], call.k)
        self._result(("in", call.node, call.k), ref_key, tensor, upstream, seq, key, producer)

    def core(self, call: Call, tensor, upstream, seq, key) -> None:
        # Compared when the node ends, or just before an in-place operation inside it (an
        # activation fused into a BatchNorm module) changes it.
        if self.eager:
            tensor = tensor.detach().clone()
        self._cores[(call.node, call.k)] = (tensor, tensor._version, upstream, seq, call.index, key)

    def _finish_core(self, node_call: tuple[int, int]) -> None:
        tensor, version, upstream, seq, index, key = self._cores.pop(node_call)
        if tensor._version != version:
            raise StaleCaptureError(f"the candidate's core {node_call} changed in place before it was compared")
        if node_call[0] in self.node_map:
            ref_key = ("core", self.node_map[node_call[0]], node_call[1])
            self._result(("core", *node_call), ref_key, tensor, upstream, seq, key, index)

    def before_write(self, tensor: torch.Tensor) -> None:
        target = id(tensor)
        for node_call, pending in list(self._cores.items()):
            if id(pending[0]) == target and pending[0]._version == pending[1]:
                self._finish_core(node_call)

    def node_end(self, call: Call) -> None:
        if (call.node, call.k) in self._cores:
            self._finish_core((call.node, call.k))

    def call_end(self, call: Call, outputs) -> None:
        if self.reference.fingerprints is not None:
            call.agrees = all(self.reference.fingerprints.matches(t) for t in outputs)
        self.calls.append(call)

    def random_op(self, where: str, function: str, seq: int) -> None:
        self.random.append((where, function))
        self.random_seqs.append(seq)

    def model_output(self, outputs, upstream, seq, producers, keys) -> None:
        expected = self.reference.outputs
        if len(outputs) != len(expected):
            self.points.append(PointResult(("out", 0), seq, MISMATCH, ((len(outputs),), (len(expected),)), frozenset(),
                                           None, 0))
            return
        for i, (t, e, up, producer, key) in enumerate(zip(outputs, expected, upstream, producers, keys, strict=True)):
            diff = compare_output(t, e)
            self.points.append(PointResult(("out", i), seq, diff, (tuple(t.shape), tuple(e.shape)), up, key, producer,
                                           ref_seq=self.reference.output_seq))

    def draws_may_explain(self, rtol: float) -> bool:
        """Whether random draws (on either side) may explain what differs in this pass: some forward point
        differs, and a draw came before the first such point on one side or the other. Where every point agrees,
        or the first difference arises before any draw, the draws explain nothing."""
        bad = [p for p in self.points if not p.ok(rtol)]
        if not bad:
            return False
        first = min(bad, key=lambda p: p.seq)
        before = any(seq < first.seq for seq in self.random_seqs)
        return before or first.ref_seq is None or any(seq < first.ref_seq for seq in self.reference_random_seqs)

    def diverges(self) -> bool:
        return not all(p.ok(self.rtol) for p in self.points)

    def output_diff(self) -> Diff:
        outs = [p.diff for p in self.points if p.key[0] == "out"]
        return max(outs, key=lambda d: (not d.finite, d.max_rel, d.max_abs)) if outs else MISMATCH


@dataclass
class Divergence:
    module: str  # candidate module name
    order: int  # end position of that module's call in the candidate's pass
    detail: str
    upstream: frozenset = frozenset()  # the points the first disagreeing one is computed from (its steps' too)


def locate(capture: CandidateCapture, pass_name: str, names: dict[PointKey, str]) -> Divergence | None:
    """``_blame``, with the points the first disagreeing one is computed from."""
    bad = [p for p in capture.points if not p.ok(capture.rtol)]
    found = _blame(capture, pass_name, names)
    if found is None or not bad:
        return found
    first = min(bad, key=lambda p: p.seq)
    return dataclasses.replace(found, upstream=first.upstream)


def _blame(capture: CandidateCapture, pass_name: str, names: dict[PointKey, str]) -> Divergence | None:
    """The innermost candidate module that explains the first disagreeing point of a pass.

    The first point that disagrees (in the candidate's execution order) was computed from points
    that all agree. If it is a node's own result, the node is to blame. Otherwise it was computed
    by parameter-free operations (activations, additions, pooling) from those points: the
    module to blame is the first call, among those computed from the same points, whose output
    is the disagreeing tensor itself or a value the reference never computes (unless a later call
    computes a value the reference does compute from it: a swish written as a sigmoid and a product).
    """
    rtol = capture.rtol
    bad = sorted((p for p in capture.points if not p.ok(rtol)), key=lambda p: p.seq)
    if not bad:
        return None
    first = bad[0]
    calls = sorted(capture.calls, key=lambda c: c.end)

    def intermediate(call: Call) -> bool:
        """Whether a later call computes, from this call's output, a value the reference computes: a step of
        an operation written in several (a swish as a sigmoid, then a product), not where it goes wrong."""
        keys = set(call.output_keys)
        return any(later.agrees is True and keys & set(later.input_keys) for later in calls
                   if later.end > call.end and later.end_seq <= first.seq)

    def inside_agreeing(call: Call) -> bool:
        """Whether ``call`` ran inside a module call whose output the reference computes (a hard-sigmoid's ReLU6
        inside a hard-swish written as modules): a step of an operation that comes out right."""
        return any(outer.agrees is True and outer.index < call.index and outer.end > call.end for outer in calls
                   if outer.end_seq <= first.seq)

    by_index = {c.index: c for c in capture.calls}
    where, how = _describe(first, names, rtol)
    if first.key[0] == "out" and first.diff is MISMATCH and math.prod(first.shapes[0]) == math.prod(first.shapes[1]):
        call = by_index.get(first.call)
        size_1 = squeezed(first.shapes[0]) == squeezed(first.shapes[1])
        why = ("dimensions of size 1 dropped or added (a squeeze() that drops the batch dimension of a single sample, "
               "say)" if size_1 else "the same number of values arranged otherwise (another layout, a flattening)")
        return Divergence((call.name if call else "") or "(root)", call.end if call else 0,
                          f"{pass_name}: the model output {how}: {why}")
    if first.key[0] == "core":
        call = by_index[first.call]
        return Divergence(call.name or "(root)", call.end, f"{pass_name}: {where} {how}, while its input agrees")
    agreed = {p.tensor_key for p in capture.points if p.ok(rtol) and p.seq < first.seq and p.tensor_key is not None}
    if first.key[0] == "in" and first.tensor_key in agreed:
        return _miswired(capture, first, names, pass_name, where, how)
    allowed = first.upstream | {INPUT_POINT}
    for call in calls:
        if call.end_seq > first.seq:
            break
        if not call.upstream or not call.upstream <= allowed:
            continue
        keys = set(call.output_keys)
        name = call.name or "(root)"
        if first.tensor_key in keys:
            return Divergence(name, call.end,
                              f"{pass_name}: the output of {name} ({where}) {how}, while its inputs agree")
        if keys and keys <= agreed:
            continue
        if call.agrees is False and not intermediate(call) and not inside_agreeing(call):
            return Divergence(name, call.end, f"{pass_name}: the output of {name} is a value the reference never "
                                              f"computes, while its inputs agree; {where}, computed from it, {how}")
    call = by_index.get(first.call)
    name = (call.name if call else "") or "(root)"
    return Divergence(name, call.end if call else 0,
                      f"{pass_name}: {where} {how}; it is computed in {name} from tensors that agree")


def enclosing(calls: list[Call], call: Call | None) -> Call | None:
    """The innermost module call that ``call`` ran inside: the module whose forward made it (for a module's
    tensors used outside a forward of its own, the module whose forward uses them)."""
    around = [] if call is None else [c for c in calls if c.index < call.index and c.end > call.end]
    return max(around, key=lambda c: c.index) if around else None


def _miswired(capture: CandidateCapture, first: PointResult, names: dict[PointKey, str], pass_name: str,
              where: str, how: str) -> Divergence:
    """A module's input that differs while the very tensor agrees where it is compared elsewhere (a block's
    shortcut fed its input where the reference feeds it the pre-activation): the tensor is right and goes to the
    wrong place. To blame is the module whose forward hands it over."""
    consumer = next((c for c in capture.calls if c.node == first.key[1] and c.k == first.key[2]), None)
    consumer_name = consumer.name if consumer is not None else "it"
    caller = enclosing(capture.calls, consumer)
    parent = (caller.name if caller is not None else "") or "(root)"
    elsewhere = next((names.get(p.key, str(p.key)) for p in capture.points
                      if p.tensor_key == first.tensor_key and p.ok(capture.rtol) and p.seq < first.seq), "elsewhere")
    order = caller.end if caller is not None else (consumer.end if consumer is not None else 0)
    handed = ("applies its own tensors to" if consumer_name == parent else f"hands {consumer_name}")
    return Divergence(parent, order,
                      f"{pass_name}: {where} {how}, though that tensor agrees with the reference's as {elsewhere}: "
                      f"{parent} {handed} another tensor than the reference's does (wired otherwise)")


def _describe(point: PointResult, names: dict[PointKey, str], rtol: float) -> tuple[str, str]:
    where = names.get(point.key, "the model output" if point.key[0] == "out" else str(point.key))
    if point.diff is MISMATCH:
        return where, f"has shape {list(point.shapes[0])} where the reference's has {list(point.shapes[1])}"
    finite = "" if point.diff.finite else ", non-finite values"
    arranged = {"channels": ": the reference's values with the channels (dimension 1) in another order at each "
                            "position (a concatenation of its parts in another order, say)",
                "values": ": the reference's values, arranged otherwise"}.get(point.arranged, "")
    return where, (f"differs from the reference's (max abs {point.diff.max_abs:.3g}, "
                   f"max rel {point.diff.max_rel:.3g} > {rtol:g}{finite}){arranged}")


def compared_in_rows(capture: CandidateCapture, names: dict[PointKey, str]) -> list[str]:
    """A note naming the points compared with their rows in another order (``compare_rows``), if any."""
    points = [f"{names.get(p.key, str(p.key))} {list(p.shapes[0])} against {list(p.shapes[1])}"
              for p in capture.points if p.reordered]
    if not points:
        return []
    more = f"; ... and {len(points) - 3} more" if len(points) > 3 else ""
    return [f"{len(points)} points hold their rows in another order than the reference's (sequence-first against "
            f"batch-first, say) and are compared in the closest order of their leading dimensions: "
            f"{'; '.join(points[:3])}{more}"]
