"""Pairing the nodes of two dataflow graphs, and through them their tensors.

Nodes pair by their label (kind and tensor shapes) and their place in the dataflow, never by
name or definition order:

* forward: a node whose predecessors are all paired pairs with the one node of the other model
  that has the same label and the paired predecessors, when exactly one node on each side fits;
* backward: the same with successors, starting from the output.

Both run until nothing changes. Where several nodes fit the same place with the same label on
both sides (parallel branches of one shape, a block's shortcut 1x1 and its first 1x1), the wider
dataflow decides: colour refinement over both graphs (a node coloured by its label, then by the
colours of its neighbours, each edge labelled with the concatenation slots it passes through, at
most ``MAX_ROUNDS`` rounds) pairs the nodes whose colour is unique on both sides, and the report
notes each tie settled so. What even that leaves (two branches that differ only by a
parameter-free activation) is a tie the numbers must settle: ``UndecidedTie`` carries every
complete pairing that pairing the tied modules one way or another gives (at most
``MAX_ASSIGNMENTS``; more are refused), for ``repro.verify`` to try; ``PairingError`` lists the
candidates where nothing can be tried.

Where the labels of the two models differ, the structures may still be the same numbers arranged
otherwise: what shapes leave unpaired pairs by element counts (a Linear on a flattened CxKxK map
and a KxK convolution, ``[C]`` and ``[C, 1, 1]`` scales; the port and the comparison reshape).
Where they truly differ (a missing BatchNorm, another SE width), pairing first keeps to pairs that
also sit in the same place of the module hierarchy (so that an extra module is the one left
over), then looks through unpaired modules (a node's predecessors are taken to be the paired
modules that reach it through unpaired ones), so that the report can name every unpaired module
on both sides and the place where the structures part: the first module, in execution order, that
takes other inputs or has no counterpart. Unpaired modules that hold as many values together as
the other side's at the same place, in another number of modules (a fused ``[3E, E]`` qkv
projection against separate q, k, v ones), are named as such: a port copies tensors one to one.

Architecture constants (index tables, masks) of paired modules are compared, whether each model
stores them or only holds them; one stored by one model only is named in the notes, one that
differs is a structure difference.

Within a pair of nodes, tensors pair by local name (``weight``, ``running_mean``; a count one side
alone keeps, a BatchNorm's beside a frozen one's, is left alone and named); where the local names
differ, by the argument of the function that consumed them (the second argument of a convolution
is its weight), then by shape, then by element count, when that is unique.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from repro.verify._trace import INPUT, OUTPUT, Graph, Node, squeezed


MAX_ROUNDS = 12  # colour refinement: how far (in modules) the dataflow is looked at to break a tie
MAX_ASSIGNMENTS = 24  # a tie the dataflow cannot break is settled by trying at most this many ways of pairing it


class PairingError(ValueError):
    """The dataflow does not decide which module of one model is which of the other."""


class UndecidedTie(PairingError):
    """A tie the dataflow cannot break (``message`` lists it), with each complete pairing that settling it one way
    or another gives, and those ways in words: ``repro.verify`` tries them and keeps the one under which the
    models agree."""

    def __init__(self, message: str, assignments: list[tuple["Pairing", str]]) -> None:
        super().__init__(message)
        self.assignments = assignments


@dataclass
class Pairing:
    nodes: dict[int, int]  # candidate node id -> reference node id
    unpaired_candidate: list[int]
    unpaired_reference: list[int]
    tensors: list[tuple[str, str]] = field(default_factory=list)  # (reference state key, candidate state key)
    wiring: list[str] = field(default_factory=list)  # paired nodes whose paired neighbours differ
    undecided: list[str] = field(default_factory=list)
    divergence: int | None = None  # candidate node where the structures first part
    divergence_reason: str = ""
    reshapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # reference key -> candidate shape
    settled: list[str] = field(default_factory=list)  # ties the wider dataflow broke
    tried: str = ""  # a tie settled by trying each way of settling it (``UndecidedTie``), in words
    trace_notes: list[str] = field(default_factory=list)  # what the trace of either model could not see into
    # Architecture constants (``is_constant``) of paired modules: those stored on one side only, and those that
    # differ from their counterpart (a structure difference).
    stored_once: dict[str, list[str]] = field(default_factory=dict)  # "candidate" / "reference" -> entries
    constant_differences: list[str] = field(default_factory=list)
    # Counts of paired modules that only one side keeps (a BatchNorm's beside a frozen one's): (side, state key,
    # module type). Neither ported nor compared.
    counts_alone: list[tuple[str, str, str]] = field(default_factory=list)

    def notes(self, ref: Graph) -> list[str]:
        """What the report says about the pairing: what the traces could not see, the ties the wider dataflow
        settled, the tensors paired with the same numbers in another shape."""
        shapes = {k: list(t.shape) for n in ref.nodes for k, t in zip(n.state_keys(), n.tensors.values(), strict=True)}
        to_cand = dict(self.tensors)
        notes = list(self.trace_notes)
        for side, entries in self.stored_once.items():
            more = f"; ... and {len(entries) - 3} more" if len(entries) > 3 else ""
            notes.append(f"{len(entries)} constant{'s' if len(entries) > 1 else ''} only the {side} stores "
                         f"(architecture constants: compared where both models hold them, never ported): "
                         f"{'; '.join(entries[:3])}{more}")
        if self.settled:
            more = f"; ... and {len(self.settled) - 3} more" if len(self.settled) > 3 else ""
            notes.append(f"{len(self.settled)} ties settled by the dataflow: {'; '.join(self.settled[:3])}{more}")
        if self.tried:
            notes.append(self.tried)
        for side in ("candidate", "reference"):
            alone = [f"{key} ({module})" for who, key, module in self.counts_alone if who == side]
            if alone:
                other = "reference" if side == "candidate" else "candidate"
                more = f"; ... and {len(alone) - 3} more" if len(alone) > 3 else ""
                notes.append(f"{len(alone)} count{'s' if len(alone) > 1 else ''} only the {side} keeps, in modules "
                             f"paired with the {other}'s (a BatchNorm beside one written out without a count, "
                             f"a frozen one say; neither ported nor compared): {'; '.join(alone[:3])}{more}")
        if not self.reshapes:
            return notes
        pairs = [f"{to_cand[k]} {list(shape)} <- {k} {shapes[k]}" for k, shape in self.reshapes.items()]
        more = f"; ... and {len(pairs) - 3} more" if len(pairs) > 3 else ""
        return notes + [f"{len(pairs)} candidate tensors are paired with the same numbers in another shape "
                        f"(reshaped when ported and compared): {'; '.join(pairs[:3])}{more}"]

    @property
    def complete(self) -> bool:
        return not self.unpaired_candidate and not self.unpaired_reference


def _listing(lines: list[str], limit: int = 12) -> str:
    shown = "\n    ".join(lines[:limit])
    more = f"\n    ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"\n    {shown}{more}"


class _Matcher:
    def __init__(self, cand: Graph, ref: Graph) -> None:
        self.cand, self.ref = cand, ref
        self.c_nodes = [n.id for n in cand.called()]
        self.r_nodes = [n.id for n in ref.called()]
        self.m: dict[int, int] = {INPUT: INPUT, OUTPUT: OUTPUT}
        self.inv: dict[int, int] = {INPUT: INPUT, OUTPUT: OUTPUT}
        self.loose = False  # pair by element counts instead of shapes (only what shapes left unpaired)
        self.core = False  # pair by ``core_label``: modules that differ by vectors one side alone holds (set aside)
        # Where the structures differ, first pair only what also sits in the same place of the module
        # hierarchy, so that an extra module is left over rather than paired with its neighbour's partner.
        self.hierarchy = False
        # Where the structures differ, pair two nodes found by their predecessors (the strict forward step) only
        # where the kinds of their successors agree too: an extra module before a block is not paired with the
        # block's first one because both follow the same module (the backward step pairs that one).
        self.wary = False
        self._colors: dict[tuple[bool, bool], list[tuple[dict[int, int], dict[int, int]]]] = {}
        self.settled: list[str] = []  # ties the wider dataflow broke, in words

    def fork(self) -> _Matcher:
        """A copy to pair further on its own (the colours, which depend only on the graphs, are shared)."""
        other = copy.copy(self)
        other.m, other.inv, other.settled = dict(self.m), dict(self.inv), list(self.settled)
        return other

    def label(self, graph: Graph, node: int) -> tuple:
        node_ = graph.nodes[node]
        return node_.core_label if self.core else node_.loose_label if self.loose else node_.label

    def _same_parent(self, c: int, r: int) -> bool:
        """Whether the paired nodes first called inside the module call of ``c`` are all inside that of ``r``,
        and the other way round."""
        c_sibs, r_sibs = self.cand.siblings(c), self.ref.siblings(r)
        return all(self.m[s] in r_sibs for s in c_sibs if s in self.m) and \
            all(self.inv[s] in c_sibs for s in r_sibs if s in self.inv)

    def _same_kinds(self, neighbours: Callable[[Graph, int], set[int]], c: int, r: int) -> bool:
        """Whether ``c`` and ``r`` have as many neighbours of each label on that side of the dataflow."""
        def kinds(graph: Graph, node: int) -> Counter:
            return Counter(n if n in (INPUT, OUTPUT) else self.label(graph, n) for n in neighbours(graph, node))
        return kinds(self.cand, c) == kinds(self.ref, r)

    def colors(self) -> list[tuple[dict[int, int], dict[int, int]]]:
        """Colour refinement of both graphs at once: round 0 colours a node by its label, round d+1 by its
        round-d colour and the round-d colours of its predecessors and successors, each with the
        concatenation slots the edge passes through. Colours mean the same on both sides; the rounds stop
        when they no longer split any colour (at most ``MAX_ROUNDS``)."""
        if (self.loose, self.core) in self._colors:
            return self._colors[(self.loose, self.core)]
        intern: dict[tuple, int] = {}
        graphs = (self.cand, self.ref)
        node_lists = (self.c_nodes, self.r_nodes)
        rounds = [tuple({n: intern.setdefault(("label", self.label(g, n)), len(intern)) for n in nodes}
                        for g, nodes in zip(graphs, node_lists, strict=True))]
        for _ in range(MAX_ROUNDS):
            previous = rounds[-1]
            current = []
            for g, nodes, col in zip(graphs, node_lists, previous, strict=True):
                def color(n: int, col=col) -> int:
                    return col.get(n, n)  # the input and the output colour themselves (-1, -2)
                current.append({n: intern.setdefault((
                    col[n],
                    tuple(sorted((color(p), tuple(sorted(g.slots.get((p, n), ())))) for p in g.preds(n))),
                    tuple(sorted((color(c), tuple(sorted(g.slots.get((n, c), ())))) for c in g.succs(n))),
                ), len(intern)) for n in nodes})
            if all(len(set(c.values())) == len(set(p.values())) for c, p in zip(current, previous, strict=True)):
                break
            rounds.append(tuple(current))
        self._colors[(self.loose, self.core)] = rounds
        return rounds

    def _split(self, c_group: list[int], r_group: list[int]) -> list[tuple[int, int, int]]:
        """Pairs (candidate, reference, rounds) of a tie that the wider dataflow tells apart."""
        for depth, (c_col, r_col) in enumerate(self.colors()[1:], start=1):
            c_by, r_by = defaultdict(list), defaultdict(list)
            for c in c_group:
                c_by[c_col[c]].append(c)
            for r in r_group:
                r_by[r_col[r]].append(r)
            pairs = [(cs[0], r_by[k][0], depth) for k, cs in c_by.items() if len(cs) == 1 and len(r_by.get(k, ())) == 1]
            if pairs:
                return pairs
        return []

    @property
    def complete(self) -> bool:
        return len(self.m) - 2 == len(self.c_nodes) == len(self.r_nodes)

    def _step(self, neighbours: Callable[[Graph, int], set[int]], relaxed: bool,
              successors: Callable[[Graph, int], set[int]] | None = None) -> tuple[bool, list[tuple[list, list]]]:
        """Pair every node whose signature is unique on both sides; return whether any paired,
        and the groups that tie (several nodes with one signature on some side).

        Strict: a node is ready when all its neighbours are paired. Relaxed (only once the
        structures are known to differ): unpaired neighbours are looked through, replaced by
        their own neighbours, so that a missing or extra module between two paired ones does
        not stop the pairing of everything after it. With ``successors`` (the strict forward step, once wary), a
        unique pair whose successors are of other kinds waits."""
        groups: dict[tuple, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for side, graph, nodes in ((0, self.cand, self.c_nodes), (1, self.ref, self.r_nodes)):
            paired = self.m if side == 0 else self.inv
            for node in nodes:
                if node in paired:
                    continue
                if relaxed:
                    known = _through(graph, node, neighbours, paired)
                else:
                    known = set(neighbours(graph, node))
                    if any(n not in paired for n in known):
                        continue
                if not known:
                    continue
                key = frozenset(self.m[n] for n in known) if side == 0 else frozenset(known)
                groups[(self.label(graph, node), key)][side].append(node)
        progress, ties = False, []
        for c_group, r_group in groups.values():
            unique = len(c_group) == 1 and len(r_group) == 1
            if unique and self.hierarchy and not self._same_parent(c_group[0], r_group[0]):
                ties.append((c_group, r_group))
            elif unique and self.wary and successors and not self._same_kinds(successors, c_group[0], r_group[0]):
                continue  # deferred: the backward pass, or looking through what is left, decides
            elif unique:
                self.m[c_group[0]] = r_group[0]
                self.inv[r_group[0]] = c_group[0]
                progress = True
            elif c_group and r_group:
                split = self._split(c_group, r_group)
                for c, r, depth in split:
                    self.m[c], self.inv[r] = r, c
                    self.settled.append(f"{self.cand.name(c)} <-> {self.ref.name(r)}: among modules of one kind "
                                        f"and shape at one place, told apart by where the dataflow goes "
                                        f"{depth} module{'s' if depth > 1 else ''} away")
                    progress = True
                if len(split) < min(len(c_group), len(r_group)):
                    ties.append(([c for c in c_group if c not in self.m], [r for r in r_group if r not in self.inv]))
        return progress, ties

    def run(self, relaxed: bool) -> list[tuple[list[int], list[int]]]:
        preds = lambda g, n: g.preds(n)  # noqa: E731
        succs = lambda g, n: g.succs(n)  # noqa: E731
        while True:
            progress, ties_f = self._step(preds, relaxed=False, successors=succs)
            if progress:
                continue
            progress, ties_b = self._step(succs, relaxed=False)
            if progress:
                continue
            if relaxed:
                progress, ties_rf = self._step(preds, relaxed=True)
                if progress:
                    continue
                progress, ties_rb = self._step(succs, relaxed=True)
                if progress:
                    continue
                return ties_f + ties_b + ties_rf + ties_rb
            return ties_f + ties_b


def _describe_ties(cand: Graph, ref: Graph, ties: list[tuple[list[int], list[int]]]) -> list[str]:
    seen, lines = set(), []
    for c_group, r_group in ties:
        key = (tuple(sorted(c_group)), tuple(sorted(r_group)))
        if key in seen:
            continue
        seen.add(key)
        # Tied by their element counts (a relaxed pairing), modules of a group may hold other shapes: each is shown.
        shapes = sorted({node.label[1] for node in [cand.nodes[c] for c in c_group] + [ref.nodes[r] for r in r_group]})
        held = (f"{list(shapes[0])}" if len(shapes) == 1 else
                f"as many values each, in {' or '.join(str(list(shape)) for shape in shapes)}")
        lines.append(
            f"candidate {', '.join(cand.nodes[c].name for c in sorted(c_group, key=lambda c: cand.nodes[c].order))}"
            f" <-> reference {', '.join(ref.nodes[r].name for r in sorted(r_group, key=lambda r: ref.nodes[r].order))}"
            f" ({cand.nodes[c_group[0]].kind} {held})"
        )
    return lines


def _settlements(matcher: _Matcher, ties: list[tuple[list[int], list[int]]]) -> list[tuple[_Matcher, str]] | None:
    """Every complete pairing that settling the ties one way or another gives (a tie of n modules each way: n!
    of them; the pairing that follows may meet further ties), each with its choices in words; ``None`` when there
    are more than ``MAX_ASSIGNMENTS``."""
    found: list[tuple[_Matcher, str]] = []

    def search(m: _Matcher, ties: list[tuple[list[int], list[int]]], chosen: list[str]) -> bool:
        if m.complete:
            found.append((m, "; ".join(chosen)))
            return len(found) <= MAX_ASSIGNMENTS
        open_ties = [(c, r) for c, r in ties if len(c) == len(r) > 1 and not any(n in m.m for n in c)
                     and not any(n in m.inv for n in r)]
        if not open_ties:
            return True  # this way leaves modules unpaired: it settles nothing
        c_group, r_group = (sorted(g, key=lambda n, g_=graph: g_.nodes[n].order)
                            for g, graph in zip(open_ties[0], (m.cand, m.ref), strict=True))
        if math.factorial(len(c_group)) > MAX_ASSIGNMENTS:
            return False
        for order in itertools.permutations(r_group):
            branch = m.fork()
            for c, r in zip(c_group, order, strict=True):
                branch.m[c], branch.inv[r] = r, c
            words = ", ".join(f"{m.cand.name(c)} <-> {m.ref.name(r)}" for c, r in zip(c_group, order, strict=True))
            if not search(branch, branch.run(relaxed=False), [*chosen, words]):
                return False
        return True

    return found if search(matcher, ties, []) else None


def pair_nodes(cand: Graph, ref: Graph) -> Pairing:
    matcher = _Matcher(cand, ref)
    same_labels = Counter(n.label for n in cand.called()) == Counter(n.label for n in ref.called())
    if not same_labels:
        matcher.hierarchy = True
        matcher.run(relaxed=False)
        matcher.hierarchy, matcher.wary = False, True
    ties = matcher.run(relaxed=False)
    if not matcher.complete and not same_labels:
        # The same numbers arranged otherwise: pair what is left by element counts, at its place in the dataflow.
        matcher.loose = True
        ties = matcher.run(relaxed=False)
        same_labels = Counter(n.loose_label for n in cand.called()) == Counter(n.loose_label for n in ref.called())
    if not matcher.complete and not same_labels:
        _pair_past_vectors(matcher)
    if not matcher.complete and same_labels and ties:
        message = ("the dataflow does not decide which module of the candidate is which of the reference: "
                   "several modules of the same kind and shapes sit at the same place on both sides:"
                   + _listing(_describe_ties(cand, ref, ties)))
        settlements = _settlements(matcher, ties)
        if settlements is None:
            raise PairingError(f"{message}\n  more than {MAX_ASSIGNMENTS} ways to pair them: too many to try "
                               "(refusing to guess)")
        if not settlements:
            raise PairingError(f"{message}\n  no way of pairing them pairs every module (refusing to guess)")
        raise UndecidedTie(message, [(_pairing(cand, ref, m), words) for m, words in settlements])
    return _pairing(cand, ref, matcher)


def _pair_past_vectors(matcher: _Matcher) -> None:
    """Pair what is left by ``core_label`` (a convolution with a bias against one without), then set aside again
    each pair so made whose modules hold other tensors: a bias on every convolution leaves each of them unpaired
    and named (``_only_vectors``), and the modules between them paired, instead of one named and the rest tied."""
    before = set(matcher.m)
    matcher.core = True
    try:
        matcher.run(relaxed=False)
    finally:
        matcher.core = False
    cand, ref = matcher.cand, matcher.ref
    for c in [c for c in matcher.m if c not in before]:
        r = matcher.m[c]
        if cand.nodes[c].loose_label != ref.nodes[r].loose_label:
            del matcher.m[c], matcher.inv[r]


def _pairing(cand: Graph, ref: Graph, matcher: _Matcher) -> Pairing:
    """The pairing the matcher found, with what is left over, where the structures part and the constants."""
    complete = matcher.complete
    undecided: list[str] = []
    if not complete:
        undecided = _describe_ties(cand, ref, matcher.run(relaxed=True))
    nodes = {c: r for c, r in matcher.m.items() if c >= 0}
    pairing = Pairing(
        nodes=nodes,
        unpaired_candidate=[c for c in matcher.c_nodes if c not in nodes],
        unpaired_reference=[r for r in matcher.r_nodes if r not in matcher.inv],
        undecided=undecided,
        settled=matcher.settled,
        trace_notes=[f"the candidate: {n}" for n in cand.notes] + [f"the reference: {n}" for n in ref.notes],
    )
    _find_structure_divergence(cand, ref, pairing, matcher.m)
    _note_fused(cand, ref, pairing, matcher.m)
    compare_constants(cand, ref, pairing)
    never_called = any(n.order < 0 for n in cand.nodes + ref.nodes)
    if pairing.trace_notes and (not pairing.complete or never_called):
        # Say why the structures may look different: what the trace could not see.
        pairing.wiring += pairing.trace_notes
        if pairing.divergence is not None:
            pairing.divergence_reason += f" ({'; '.join(pairing.trace_notes)})"
    return pairing


def _through(graph: Graph, node: int, neighbours: Callable[[Graph, int], set[int]], paired: dict[int, int]) -> set[int]:
    """The paired nodes next to ``node``, looking through unpaired ones."""
    found, stack, seen = set(), list(neighbours(graph, node)), set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in paired:
            found.add(n)
        else:
            stack.extend(neighbours(graph, n))
    return found


def _find_structure_divergence(cand: Graph, ref: Graph, pairing: Pairing, m: dict[int, int]) -> None:
    """Where, in the candidate's execution order, the structures first part: an unpaired
    candidate node, a paired node whose paired neighbours (looking through unpaired modules)
    are not those of its partner, or the place after which the reference has a module the
    candidate lacks."""
    inv = {r: c for c, r in m.items()}
    preds = lambda g, n: g.preds(n)  # noqa: E731
    succs = lambda g, n: g.succs(n)  # noqa: E731
    places: list[tuple[float, int, str]] = []  # (candidate order, candidate node, reason)
    outputs_only: list[tuple[float, int, str]] = []
    unpaired_places = set()
    for node in cand.called():
        if node.id not in m:
            places.append((node.order, node.id, f"{node.describe()} has no counterpart in the reference"))
            unpaired_places.add(frozenset(m[n] for n in _through(cand, node.id, preds, m)))
            continue
        partner = m[node.id]
        problems = []
        for what, c_set, r_set in (
            ("inputs from", _through(cand, node.id, preds, m), _through(ref, partner, preds, inv)),
            ("outputs to", _through(cand, node.id, succs, m), _through(ref, partner, succs, inv)),
        ):
            c_mapped = {m[n] for n in c_set}
            if c_mapped != r_set:
                extra = sorted(cand.name(n) for n in c_set if m[n] not in r_set)
                missing = sorted(ref.name(n) for n in r_set - c_mapped)
                problems.append(
                    f"{what} {sorted(cand.name(n) for n in c_set)} where its partner {ref.name(partner)} has {what} "
                    f"{sorted(ref.name(n) for n in r_set)}" + (f" (only the candidate: {extra})" if extra else "")
                    + (f" (only the reference: {missing})" if missing else "")
                )
        if problems:
            pairing.wiring.append(f"{node.name}: " + "; ".join(problems))
            # Where the structures part is where a module takes other inputs; that a module's output goes
            # elsewhere is where it parts only when no module takes other inputs.
            (places if problems[0].startswith("inputs") else outputs_only).append(
                (node.order, node.id, f"{node.name} takes " + "; ".join(problems)))
    for r in pairing.unpaired_reference:
        before = _through(ref, r, preds, inv)
        if any(before <= place for place in unpaired_places):
            continue  # the candidate has another module at this place (or one fed by it), already named
        partners = [inv[n] for n in before if n >= 0]
        if not partners:
            continue
        after = max(partners, key=lambda c: cand.nodes[c].order)
        places.append((cand.nodes[after].order + 0.5, after,
                       f"the reference's {ref.nodes[r].describe()} has no counterpart in the candidate; in the "
                       f"reference it follows {', '.join(sorted(ref.name(n) for n in before))}, paired with the "
                       f"candidate's {cand.name(after)}"))
    places = places or outputs_only
    if places:
        _, pairing.divergence, pairing.divergence_reason = min(places, key=lambda p: p[0])


def _note_fused(cand: Graph, ref: Graph, pairing: Pairing, m: dict[int, int]) -> None:
    """Name the modules that hold the same numbers in another number of modules: unpaired modules of one kind on
    both sides that feed the same paired modules, as many values together on each side, but not as many modules
    (a fused ``[3E, E]`` qkv projection against three ``[E, E]`` ones). A port copies tensors one to one, so
    they stay unpaired; the report says what they seem to be."""
    inv = {r: c for c, r in m.items()}
    succs = lambda g, n: g.succs(n)  # noqa: E731
    groups: dict[tuple, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for side, graph, unpaired, paired in ((0, cand, pairing.unpaired_candidate, m),
                                          (1, ref, pairing.unpaired_reference, inv)):
        for n in unpaired:
            after = _through(graph, n, succs, paired)
            place = frozenset(m[p] for p in after) if side == 0 else frozenset(after)
            groups[(graph.nodes[n].kind, place)][side].append(n)
    one_sided = []  # modules that differ from the one in their place by vectors alone: (order, line, words)
    for (kind, place), (c_group, r_group) in groups.items():
        alone = _vectors_alone(cand.nodes[c_group[0]], ref.nodes[r_group[0]]) if len(c_group) == len(r_group) == 1 \
            else None
        line = _what_stands_there(cand, ref, kind, place, c_group, r_group, alone)
        if not line:
            continue
        if pairing.divergence in c_group:  # a module with a counterpart but for its vectors: said so instead
            pairing.divergence_reason = line if alone else f"{pairing.divergence_reason}; {line}"
        if alone is None:
            pairing.wiring.append(line)
        else:
            node = cand.nodes[c_group[0]]
            words = f"{node.display} <-> {ref.nodes[r_group[0]].display} (the {alone.side}'s {alone.listed})"
            one_sided.append((node.order, line, words))
    one_sided.sort(key=lambda entry: entry[0])
    if len(one_sided) <= 3:
        pairing.wiring += [line for _, line, _ in one_sided]
    else:  # a bias on every convolution: one line
        more = f"; ... and {len(one_sided) - 8} more" if len(one_sided) > 8 else ""
        pairing.wiring.append(
            f"{len(one_sided)} modules differ from the module standing in their place in the other model by vectors "
            f"one side alone holds, every other tensor of the same shape (a bias on one side only, for instance): "
            f"{'; '.join(words for _, _, words in one_sided[:8])}{more}")


def _what_stands_there(cand: Graph, ref: Graph, kind: str, place: frozenset, c_group: list[int],
                       r_group: list[int], alone: "VectorsAlone | None") -> str:
    """Words for unpaired modules of one kind that feed the same paired modules (``place``): one on each side (a
    bias on one side only, ``alone``, or other shapes), or as many values in another number of modules; empty
    otherwise."""
    feeds = ", ".join(sorted(ref.name(r) for r in place))
    if len(c_group) == 1 and len(r_group) == 1:
        c_node, r_node = cand.nodes[c_group[0]], ref.nodes[r_group[0]]
        return _only_vectors(c_node, r_node, kind, alone) if alone is not None else (
            f"the candidate's {c_node.describe()} stands where the reference's {r_node.describe()} does (both feed "
            f"{feeds or 'the output'}), with tensors of other shapes")
    values = [sum(t.numel() for n in group for t in graph.nodes[n].tensors.values())
              for group, graph in ((c_group, cand), (r_group, ref))]
    if not c_group or not r_group or values[0] != values[1]:
        return ""
    names = [list(dict.fromkeys(graph.name(n) for n in sorted(group, key=lambda n, g=graph: g.nodes[n].order)))
             for group, graph in ((c_group, cand), (r_group, ref))]
    if len(names[0]) == len(names[1]):
        return ""
    return (f"the candidate's {', '.join(names[0])} and the reference's {', '.join(names[1])} ({kind}) hold as many "
            f"values ({values[0]:,}) and feed the same modules ({feeds}), in {len(names[0])} "
            f"module{'s' if len(names[0]) > 1 else ''} against {len(names[1])}: the same numbers held in one fused "
            f"module by one model and split over several by the other, it seems; a port copies tensors one to one, "
            f"so they stay unpaired")


@dataclass(frozen=True)
class VectorsAlone:
    """Vectors one of two modules holds beyond every tensor shape of the other: which side, their local names
    and shapes."""

    side: str  # "candidate" or "reference"
    held: tuple[tuple[str, tuple[int, ...]], ...]  # (local name, shape)

    @property
    def listed(self) -> str:
        return ", ".join(f"{name} {list(shape)}" for name, shape in self.held)

    @property
    def what(self) -> str:
        """The vectors in words: a bias, an affine pair (a norm's weight and bias), or vectors."""
        names = [name.rpartition(".")[2] for name, _ in self.held]
        if all(name == "bias" for name in names):
            return "a bias on one side only"
        if sorted(names) == ["bias", "weight"]:
            return "an affine weight and bias on one side only"
        return "vectors on one side only"


def _vectors_alone(cand: Node, ref: Node) -> VectorsAlone | None:
    """Where one of two modules holds every tensor shape of the other and vectors besides (a convolution with a
    bias against one without, a head that drops it, a norm without its affine pair): which side holds them, and
    them; else ``None``."""
    shapes = [Counter(node.shape(n) for n in node.tensors) for node in (cand, ref)]
    for more, fewer, side in ((0, 1, "candidate"), (1, 0, "reference")):
        extra = shapes[more] - shapes[fewer]
        if shapes[fewer] - shapes[more] or not extra or any(len(shape) != 1 for shape in extra):
            continue
        node, other = (cand, ref)[more], (cand, ref)[fewer]
        # The ones the other lacks by name where names say it (an affine pair beside running statistics of one
        # shape), else the last ones of each shape.
        held = [n for n in node.tensors if n not in other.tensors]
        if Counter(node.shape(n) for n in held) != extra:
            left, held = Counter(extra), []
            for n in reversed(node.tensors):
                if left[node.shape(n)] > 0:
                    left[node.shape(n)] -= 1
                    held.insert(0, n)
        return VectorsAlone(side, tuple((n, tuple(node.tensors[n].shape)) for n in held))
    return None


def _only_vectors(cand: Node, ref: Node, kind: str, alone: VectorsAlone) -> str:
    """Words for two unpaired modules of one kind that feed the same modules and differ by the vectors one alone
    holds (``alone``)."""
    other = "reference" if alone.side == "candidate" else "candidate"
    return (f"the candidate's {cand.describe()} and the reference's {ref.describe()} ({kind}) feed the same "
            f"modules with tensors of the same shapes, and the {alone.side}'s also holds {alone.listed}, which the "
            f"{other}'s lacks ({alone.what}): structurally they differ by that alone")


def _numel(node: Node) -> Callable[[str], int]:
    return lambda local: node.tensors[local].numel()


def _same_numbers(c_shape: tuple[int, ...], r_shape: tuple[int, ...]) -> bool:
    """Shapes that need no reshape beyond the porting's own (a Linear weight and a 1x1 convolution's)."""
    return c_shape == r_shape or (squeezed(c_shape) == squeezed(r_shape) and len(c_shape) + len(r_shape) == 6
                                  and (c_shape[2:] == (1, 1) or r_shape[2:] == (1, 1)))


def pair_tensors(cand: Node, ref: Node) -> list[tuple[str, str]]:
    """Pairs (reference local name, candidate local name) of two paired nodes' tensors: by role (which argument
    of which function each is) where every floating tensor of both has one, the roles telling them apart and
    agreeing (two tokens in one concatenation pair by their slots, whatever they are named); else by local name
    where both use the same; else by role as far as roles go, the tensors no function uses (a BatchNorm's count)
    then by a shape, or else a number of values, only one of them has on each side."""
    c_names, r_names = list(cand.tensors), list(ref.tensors)
    by_role = _pair_by_role(cand, ref)
    if by_role is not None and all(n in node.roles for node in (cand, ref) for n in node.tensors
                                   if not _is_count(node, n)):
        return by_role
    if set(c_names) == set(r_names) and all(cand.shape(n) == ref.shape(n) for n in c_names):
        return [(n, n) for n in r_names]
    # The same names for every floating tensor, a count kept by one side alone (a frozen BatchNorm keeps none):
    # the counts both keep pair by name, the others stay alone (``Pairing.counts_alone``).
    c_float, r_float = [n for n in c_names if not _is_count(cand, n)], [n for n in r_names if not _is_count(ref, n)]
    if set(c_float) == set(r_float) and all(squeezed(cand.shape(n)) == squeezed(ref.shape(n)) for n in c_float):
        return [(n, n) for n in r_names if n in cand.tensors]
    if by_role is not None:
        return by_role
    pairs = _pair_by_size(cand, ref, c_names, r_names)
    if pairs is not None:
        return pairs
    raise PairingError(
        f"cannot decide which tensor of the candidate's {cand.describe()} is which of the reference's "
        f"{ref.describe()}: local names, uses and shapes all leave a choice (refusing to guess)"
    )


def _pair_by_role(cand: Node, ref: Node) -> list[tuple[str, str]] | None:
    """Pairs by role where each role is one tensor's on each side, the same roles on both with the same shapes; the
    tensors without one then by a shape or number of values only one has on each side, or left alone where they
    are counts one side alone keeps. ``None`` where roles do not decide."""
    c_names, r_names = list(cand.tensors), list(ref.tensors)
    c_used, r_used = [n for n in c_names if n in cand.roles], [n for n in r_names if n in ref.roles]
    c_roles, r_roles = {cand.roles[n]: n for n in c_used}, {ref.roles[n]: n for n in r_used}
    if not (c_used and len(c_roles) == len(c_used) and len(r_roles) == len(r_used) and set(c_roles) == set(r_roles)
            and all(cand.shape(c_roles[k]) == ref.shape(r_roles[k]) for k in c_roles)):
        return None
    c_rest, r_rest = [n for n in c_names if n not in c_used], [n for n in r_names if n not in r_used]
    rest = _pair_by_size(cand, ref, c_rest, r_rest)
    if rest is None and not (c_rest and r_rest) and all(_is_count(cand, n) for n in c_rest) \
            and all(_is_count(ref, n) for n in r_rest):
        rest = []  # a count one side alone keeps (F.batch_norm on tensors of its own, none kept): left alone
    return None if rest is None else [(r_roles[k], c_roles[k]) for k in r_roles] + rest


def _is_count(node: Node, local: str) -> bool:
    """A count a module keeps (a BatchNorm's ``num_batches_tracked``): a scalar that is not floating."""
    tensor = node.tensors[local]
    return tensor.ndim == 0 and not tensor.is_floating_point()


def _pair_by_size(cand: Node, ref: Node, c_names: list[str], r_names: list[str]) -> list[tuple[str, str]] | None:
    """Pairs of the given tensors by a shape, or else a number of values, that only one has on each side."""
    for c_size, r_size in ((cand.shape, ref.shape), (_numel(cand), _numel(ref))):
        c_sizes, r_sizes = Counter(c_size(n) for n in c_names), Counter(r_size(n) for n in r_names)
        if c_sizes == r_sizes and all(v == 1 for v in c_sizes.values()):
            by_size = {c_size(n): n for n in c_names}
            return [(n, by_size[r_size(n)]) for n in r_names]
    return None


def _pair_constants(cand: Node, ref: Node) -> list[tuple[str, str]]:
    """Pairs (reference local name, candidate local name) of two paired nodes' constants: by local name where
    both hold as many entries, then by a number of entries only one constant on each side has."""
    pairs = [(n, n) for n in ref.constants if n in cand.constants and
             ref.constants[n].numel() == cand.constants[n].numel()]
    c_left = [n for n in cand.constants if n not in {c for _, c in pairs}]
    r_left = [n for n in ref.constants if n not in {r for r, _ in pairs}]
    c_sizes = Counter(cand.constants[n].numel() for n in c_left)
    r_sizes = Counter(ref.constants[n].numel() for n in r_left)
    by_size = {cand.constants[n].numel(): n for n in c_left if c_sizes[cand.constants[n].numel()] == 1}
    return pairs + [(n, by_size[ref.constants[n].numel()]) for n in r_left
                    if r_sizes[ref.constants[n].numel()] == 1 and ref.constants[n].numel() in by_size]


def compare_constants(cand: Graph, ref: Graph, pairing: Pairing) -> None:
    """Compare the architecture constants of paired modules, persistent or not (an index table one model stores
    and the other computes without storing); name those stored on one side only and those that differ."""
    def key(node: Node, local: str) -> str:
        return f"{node.name}.{local}" if node.name else local

    for c, r in pairing.nodes.items():
        c_node, r_node = cand.nodes[c], ref.nodes[r]
        pairs = _pair_constants(c_node, r_node)
        for r_local, c_local in pairs:
            ct, rt = c_node.constants[c_local], r_node.constants[r_local]
            differ = int((ct.reshape(rt.shape).long() != rt.long()).sum())
            if differ:
                pairing.constant_differences.append(
                    f"the candidate's constant {key(c_node, c_local)} {list(ct.shape)} differs from the reference's "
                    f"{key(r_node, r_local)} {list(rt.shape)} in {differ} of {rt.numel()} entries")
        partner = {c_local: r_local for r_local, c_local in pairs}
        r_partner = {r_local: c_local for r_local, c_local in pairs}
        for side, node, other, mapped in (("candidate", c_node, r_node, partner), ("reference", r_node, c_node,
                                                                                      r_partner)):
            for local in sorted(node.stored - {n for n in mapped if mapped[n] in other.stored}):
                entry = f"{key(node, local)} {list(node.constants[local].shape)}"
                if local in mapped:
                    entry += (f" (compared with the {'reference' if side == 'candidate' else 'candidate'}'s "
                              f"{key(other, mapped[local])}, which it holds without storing)")
                pairing.stored_once.setdefault(side, []).append(entry)


def pair_state(cand: Graph, ref: Graph, pairing: Pairing) -> None:
    """Fill in (anew) which tensor of the reference is which of the candidate, and the reshapes."""
    pairing.tensors, pairing.reshapes, pairing.counts_alone = [], {}, []
    for c, r in pairing.nodes.items():
        c_node, r_node = cand.nodes[c], ref.nodes[r]
        c_prefix = f"{c_node.name}." if c_node.name else ""
        r_prefix = f"{r_node.name}." if r_node.name else ""
        pairs = pair_tensors(c_node, r_node)
        for side, node, prefix, paired in (("candidate", c_node, c_prefix, {c for _, c in pairs}),
                                           ("reference", r_node, r_prefix, {r for r, _ in pairs})):
            pairing.counts_alone += [(side, prefix + n, type(node.module).__name__) for n in node.tensors
                                     if n not in paired]
        for r_local, c_local in pairs:
            pairing.tensors.append((r_prefix + r_local, c_prefix + c_local))
            c_shape, r_shape = tuple(c_node.tensors[c_local].shape), tuple(r_node.tensors[r_local].shape)
            if not _same_numbers(c_shape, r_shape):
                pairing.reshapes[r_prefix + r_local] = c_shape


def reshaped_state(state: Mapping[str, torch.Tensor], pairing: Pairing) -> dict[str, torch.Tensor]:
    """The reference's state with each tensor the pairing reshapes in the candidate's shape (views, no copies)."""
    return {k: t.reshape(pairing.reshapes[k]) if k in pairing.reshapes else t for k, t in state.items()}
