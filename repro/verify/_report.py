"""``VerifyReport``: the verdict of ``repro.verify`` and everything that explains it."""

from __future__ import annotations

import json
import re
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd

from repro.equivalence import FLOAT64, Diff, Tolerance
from repro.porting import PortReport
from repro.verify._compare import CandidateCapture
from repro.verify._pairing import Pairing
from repro.verify._stochastic import StochasticLayer
from repro.verify._trace import Graph

LAYER_COLUMNS = (
    "candidate", "reference", "kind", "shape", "reference_shape", "input_max_rel", "eval_max_abs", "eval_max_rel",
    "wide_max_rel", "train_max_rel", "grad_max_rel", "buffer_max_rel", "bit_exact", "ok",
)
_SHORT_COLUMNS = ("candidate", "reference", "shape", "eval_max_rel", "wide_max_rel", "train_max_rel", "grad_max_rel",
                  "buffer_max_rel")


UNDECIDED = "SAME EVAL FUNCTION, TRAIN STEP UNDECIDED"
EVAL_UNDECIDED = "UNDECIDED"  # the eval function itself cannot be decided here (its level says why)
# The modules do not pair one to one, so the weights could not be ported nor the functions compared.
STRUCTURES_DIFFER = "STRUCTURES DIFFER, NOT COMPARED"


def _words(detail: str) -> str:
    """A divergence's words without the pass they were found in (``eval: ...``, ``train: ...``)."""
    return re.sub(r"^[\w ,.x]*?: ", "", detail, count=1)


@dataclass
class Level:
    """One level of the verdict: whether it holds (``None``: not checked, or cannot be decided
    here, ``detail`` says why), whether float32 is bit-identical too, and its first divergence."""

    name: str
    holds: bool | None
    bit_exact: bool = False
    first_divergence: str | None = None
    detail: str = ""

    @property
    def state(self) -> str:
        if self.holds is None:
            return "undecided" if self.detail and not self.detail.startswith("not ") else "not checked"
        if not self.holds:
            return "DIFFERS"
        return "bit-identical" if self.bit_exact and self.name != "stochastic configuration" else (
            "same" if self.name == "stochastic configuration" else "equivalent")

    def line(self, said_already: str = "") -> str:
        """The level in one line, its detail in brackets unless ``said_already`` says it (the report's first
        divergence: the same words, whichever pass they were found in)."""
        where = f" at {self.first_divergence}" if self.first_divergence and self.holds is False else ""
        said = self.detail and _words(self.detail) != _words(said_already)
        if said and self.detail.startswith(self.state):  # "not checked (train=False)": the state said once
            return f"{self.name}: {self.detail}"
        return f"{self.name}: {self.state}{where}" + (f" ({self.detail})" if said else "")

    def to_dict(self) -> dict[str, Any]:
        return {"holds": self.holds, "state": self.state, "bit_exact": self.bit_exact,
                "first_divergence": self.first_divergence, "detail": self.detail}


@dataclass
class VerifyReport:
    """What ``verify`` found. ``equivalent`` is the verdict; ``str(report)`` explains it.

    ``levels`` splits it: ``eval`` (the eval function), ``train step`` (outputs, gradients and
    running statistics of one train-mode step with the stochastic layers of both models turned
    off) and ``stochastic configuration`` (their dropout and drop-path rates, side by side), each
    with its own first divergence. ``equivalent`` holds when every level does, an undecided
    stochastic configuration aside (the train step ran both with one seed and agreed); a train step
    that cannot be decided (random numbers drawn where no known rate turns them off, and a difference
    they may explain) leaves the verdict ``undecided``; ``bit_exact`` when float32 is bit-identical too.
    ``tolerance`` says in which precision and within what the verdict was decided.

    ``layers`` has one row per paired module, in the candidate's execution order: both names,
    the module's own output shape on both sides, the largest relative difference of its input
    (``input_max_rel``) and of its own output in each pass (``eval_``, ``wide_`` for the
    scaled-up sample, ``train_``), of its parameter gradients (relative to the module's largest
    gradient) and of its buffers after the train step. Relative differences are
    ``max|a - b| / max|b|``, as in ``repro.equivalence``.
    """

    candidate: str
    reference: str
    input_size: tuple[int, ...]
    rtol: float
    equivalent: bool = False
    bit_exact: bool = False
    max_abs_diff: float = math.nan  # over the model outputs, eval and train mode; nan when nothing was compared
    # candidate module name; "(root)" for the model itself; "module[tensor]" for the part of a module's tensors one
    # functional call uses (a network written as F.conv2d calls on a ParameterDict)
    first_divergence: str | None = None
    divergence_detail: str = ""
    layers: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LAYER_COLUMNS))
    checks: dict[str, Diff] = field(default_factory=dict)  # whole-model checks
    unpaired_candidate: list[str] = field(default_factory=list)  # "state key [shape] (module type)"
    unpaired_reference: list[str] = field(default_factory=list)
    structure: list[str] = field(default_factory=list)  # structure differences, one line each
    notes: list[str] = field(default_factory=list)
    port: PortReport | None = None
    tolerance: Tolerance = FLOAT64
    levels: dict[str, Level] = field(default_factory=dict)
    float32: dict[str, Diff] = field(default_factory=dict)  # the float32 passes, for bit-identity
    frozen_candidate: list[str] = field(default_factory=list)  # requires_grad=False, compared as trainable
    # The sides verified as float32 copies of a model in another precision (``prepare``): no bit-identity claimed.
    converted: list[str] = field(default_factory=list)
    frozen_reference: list[str] = field(default_factory=list)
    stochastic_candidate: list[StochasticLayer] = field(default_factory=list)
    stochastic_reference: list[StochasticLayer] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # which output was compared, candidate / reference

    def reset(self, keep_notes: Sequence[str] = ()) -> None:
        """Forget a comparison's results (keeping what was found before it ran: ``keep_notes``, the notes then)."""
        fresh = VerifyReport(self.candidate, self.reference, self.input_size, self.rtol)
        for name in ("equivalent", "bit_exact", "max_abs_diff", "first_divergence", "divergence_detail", "layers",
                     "checks", "unpaired_candidate", "unpaired_reference", "structure", "notes", "port", "levels",
                     "float32"):
            setattr(self, name, getattr(fresh, name))
        self.notes = list(keep_notes)

    @property
    def verdict(self) -> str:
        if self.bit_exact:
            return "bit-identical"
        if self.equivalent:
            return "EQUIVALENT"
        same = [self.levels.get(n) for n in ("eval", "train step")]
        stochastic = self.levels.get("stochastic configuration")
        if same[0] is not None and same[0].holds is None and (self.structure or not self.structure_matches):
            return STRUCTURES_DIFFER  # nothing was compared: what does not pair is the finding
        if any(level is None or level.holds is False for level in same) or self.structure:
            return "NOT EQUIVALENT"
        differs = stochastic is not None and stochastic.holds is False
        if any(level.state == "undecided" for level in same):
            verdict = EVAL_UNDECIDED if same[0].state == "undecided" else UNDECIDED
            return verdict + (", DIFFERENT STOCHASTIC CONFIGURATION" if differs else "")
        if not same[0].holds:
            return "NOT EQUIVALENT"
        return "SAME FUNCTION, DIFFERENT STOCHASTIC CONFIGURATION" if differs else "NOT EQUIVALENT"

    @property
    def undecided(self) -> bool:
        """Nothing was found to differ, but the eval function or the train step could not be decided here (its
        level says why and what would decide it): neither equivalent nor not."""
        return self.verdict in (UNDECIDED, EVAL_UNDECIDED)

    def compared_output(self) -> str:
        return "; ".join(f"{side}: {o.get('what', '?')}" for side, o in zip(("candidate", "reference"), self.outputs,
                                                                             strict=False))

    @property
    def structure_matches(self) -> bool:
        return not self.unpaired_candidate and not self.unpaired_reference and not self.structure

    def summary_lines(self) -> list[str]:
        verdict = self.verdict
        lines = [f"{self.candidate} vs {self.reference}, input {list(self.input_size)}: {verdict}",
                 # Nothing numerical decided a structure difference: no tolerance to state.
                 "decided by the structures alone (nothing compared numerically)" if verdict == STRUCTURES_DIFFER
                 else f"decided in {self.tolerance}"]
        if self.first_divergence is not None:
            lines += [f"first divergence: {self.first_divergence}", f"  {self.divergence_detail}"]
        said = self.divergence_detail if self.first_divergence is not None else ""
        lines += [f"level {level.line(said)}" for level in self.levels.values()]
        for name, d in self.checks.items():
            state = "exact" if d.bit_exact else ("ok" if d.ok(self.rtol) else "DIFFERS")
            lines.append(f"{name} ({self.tolerance.dtype}): max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g} ({state})")
        if self.float32:
            exact = [k for k, d in self.float32.items() if d.bit_exact]
            differ = [f"{k} (max rel {d.max_rel:.3g})" for k, d in self.float32.items() if not d.bit_exact]
            lines.append(f"float32 bit-identical: {', '.join(exact) or 'nothing'}"
                         + (f"; not bit-identical: {', '.join(differ)}" if differ else ""))
        if any(o.get("what", "the output tensor") != "the output tensor" for o in self.outputs):
            lines.append(f"compared output: {self.compared_output()}")
        for side, frozen in (("candidate", self.frozen_candidate), ("reference", self.frozen_reference)):
            if frozen:
                lines.append(f"frozen in the {side} (requires_grad=False; compared as trainable): {', '.join(frozen)}")
        if self.port is not None:
            lines.append(f"paired {len(self.layers)} modules; ported {len(self.port.pairs)} tensors "
                         f"({len(self.port.renamed)} under another name, {len(self.port.transformed)} reshaped)")
        elif not self.layers.empty:
            lines.append(f"paired {len(self.layers)} modules")
        for title, items in (
            ("structure differences", self.structure),
            ("candidate tensors without a partner", self.unpaired_candidate),
            ("reference tensors without a partner", self.unpaired_reference),
        ):
            lines.append(f"{title}: {len(items) if items else 'none'}")
            lines += [f"  {item}" for item in items]
        lines += [f"note: {note}" for note in self.notes]
        return lines

    def diverging_layers(self) -> pd.DataFrame:
        return self.layers[~self.layers["ok"].astype(bool)] if not self.layers.empty else self.layers

    def __str__(self) -> str:
        lines = self.summary_lines()
        bad = self.diverging_layers()
        if self.checks and not bad.empty:
            shown = bad[[c for c in _SHORT_COLUMNS if c in bad.columns]].head(15)
            lines += ["", f"diverging modules ({len(bad)} of {len(self.layers)}, first 15; .layers has them all):",
                      shown.to_string(index=False, float_format=lambda v: f"{v:.3g}")]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = ["# repro.verify", ""]
        lines += [f"  - {line.strip()}" if line.startswith("  ") else f"- {line}" for line in self.summary_lines()]
        if not self.layers.empty:
            lines += ["", "## Modules", "", self.layers.to_markdown(index=False, floatfmt=".3g")]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serializable (non-finite numbers become ``None``)."""

        def number(v: float) -> float | None:
            return None if v is None or not math.isfinite(v) else v

        return {
            "candidate": self.candidate,
            "reference": self.reference,
            "input_size": list(self.input_size),
            "rtol": self.rtol,
            "tolerance": {"dtype": self.tolerance.dtype, "rtol": self.tolerance.rtol, "basis": self.tolerance.basis},
            "verdict": self.verdict,
            "equivalent": self.equivalent,
            "bit_exact": self.bit_exact,
            "max_abs_diff": number(self.max_abs_diff),
            "first_divergence": self.first_divergence,
            "divergence_detail": self.divergence_detail,
            "checks": {k: {"max_abs": number(d.max_abs), "max_rel": number(d.max_rel), "bit_exact": d.bit_exact}
                       for k, d in self.checks.items()},
            "levels": {name: level.to_dict() for name, level in self.levels.items()},
            "float32": {k: {"max_abs": number(d.max_abs), "max_rel": number(d.max_rel), "bit_exact": d.bit_exact}
                        for k, d in self.float32.items()},
            "stochastic": {"candidate": [vars(s) for s in self.stochastic_candidate],
                           "reference": [vars(s) for s in self.stochastic_reference]},
            "frozen": {"candidate": self.frozen_candidate, "reference": self.frozen_reference},
            "compared_output": self.compared_output(),
            "structure": self.structure,
            "unpaired": {"candidate": self.unpaired_candidate, "reference": self.unpaired_reference},
            "notes": self.notes,
            "layers": json.loads(self.layers.to_json(orient="records")) if not self.layers.empty else [],
        }


def unpaired_tensors(graph: Graph, nodes: Sequence[int], never_called: Sequence[int]) -> list[str]:
    lines = []
    for nid, suffix in [(n, "") for n in nodes] + [(n, ", never called") for n in never_called]:
        node = graph.nodes[nid]
        lines += [f"{key} {list(node.tensors[local].shape)} ({type(node.module).__name__}{suffix})"
                  for key, local in zip(node.state_keys(), node.tensors, strict=True)]
    return lines


def layers_frame(cand: Graph, ref: Graph, pairing: Pairing, captures: Mapping[str, CandidateCapture],
                 grads: Mapping[str, Diff], buffers: Mapping[str, Diff], rtol: float, *,
                 trained: bool = False) -> pd.DataFrame:
    """One row per paired module: its worst difference in each compared pass (the passes recorded in
    ``captures``), and after a train step (``trained``) its gradients and buffers."""
    by_pass = {title: {p.key: p for p in capture.points} for title, capture in captures.items()}
    compared = bool(captures) or trained
    rows = []
    for node in cand.called():
        if node.id not in pairing.nodes:
            continue
        partner = ref.nodes[pairing.nodes[node.id]]
        row: dict[str, Any] = {"candidate": node.display, "reference": partner.display,
                               "kind": node.kind}
        checked = []
        for title, points in by_pass.items():
            cores = [points[key] for k in range(node.calls) if (key := ("core", node.id, k)) in points]
            inputs = [points[key] for k in range(node.calls) if (key := ("in", node.id, k)) in points]
            column = {"eval": "eval", "train": "train"}.get(title, "wide")
            if column == "eval":
                shapes = cores[0].shapes if cores else ((), ())
                row["shape"], row["reference_shape"] = list(shapes[0]), list(shapes[1])
                row["input_max_rel"] = max((p.diff.max_rel for p in inputs), default=math.nan)
            if cores:
                worst = max((p.diff for p in cores), key=lambda d: (not d.finite, d.max_rel))
                if column == "eval":
                    row["eval_max_abs"] = worst.max_abs
                row[f"{column}_max_rel"] = worst.max_rel
            checked += [p.diff for p in cores + inputs]
        if trained:
            node_grads = [grads[k] for k in node.state_keys() if k in grads]
            node_buffers = [buffers[k] for k in node.state_keys() if k in buffers]
            row["grad_max_rel"] = max((d.max_rel for d in node_grads), default=math.nan)
            row["buffer_max_rel"] = max((d.max_rel for d in node_buffers), default=math.nan)
            checked += node_grads + node_buffers
        row["bit_exact"] = compared and all(d.bit_exact for d in checked)
        row["ok"] = compared and all(d.ok(rtol) for d in checked)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(LAYER_COLUMNS))
    always = ("candidate", "reference", "kind", "bit_exact", "ok")
    return frame[[c for c in LAYER_COLUMNS if c in always or frame[c].notna().any()]]
