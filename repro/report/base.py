"""What every report page is made of: tables, pages, errata rows with their outcome, options, and
the jobs (one-core computations) pages declare. Page modules import this module, never the
``repro.report`` package (which imports them to list them)."""

from __future__ import annotations

import enum
import fnmatch
import functools
import importlib
import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import torch
from tqdm import tqdm

from repro.environment import in_processes

MAX_PAGE_COLUMNS = 10  # a wider table shows only its page_columns on the page; its CSV keeps every column
DEFAULT_DEGRADATION_DIR = Path("reports/degradation")
DEFAULT_ATLAS_RESULTS = Path("reports/atlas.json")
DEFAULT_RUNTIMES_RESULTS = Path("reports/runtimes.json")
ATLAS_TIMEOUT_S = 300.0  # per pair of a full atlas run
# Larger models are not verified by the atlas: the verification holds several copies of both models (float32
# and float64), which for ViT-H/14 or RegNetY-128GF (over 600M parameters) is tens of GB.
ATLAS_MAX_PARAMS = 200_000_000


class ReportError(Exception):
    """Bad arguments or an unusable output directory: printed as one line, exit code 2."""


def _of_types(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int to isinstance: a true/false where a number belongs is refused all the same
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def read_results(path: Path, kind: str, results_format: int, rerun: str,
                 fields: Mapping[str, tuple[type, ...]] | None = None,
                 records: tuple[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """A page's saved results (``atlas.json``, ``runtimes.json``), checked to be of the format this code
    reads: a file written by an older version, or edited by hand, is a one-line error naming how to re-make
    it, not a KeyError deep in the page. ``fields`` names the top-level entries the page reads and their
    types; ``records`` names the list of records and the keys each record must have."""
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not readable as {kind} results ({type(err).__name__}: {err})") from None
    found = results.get("format") if isinstance(results, dict) else None
    if found != results_format:
        raise ReportError(f"{path}: {kind} results of format {found}, this code reads format {results_format}; "
                          f"re-make them with `{rerun}`")
    fields = dict(fields or {})
    if records is not None:
        fields[records[0]] = (list,)
    wrong = [f"{name} ({'missing' if name not in results else type(results[name]).__name__}, not "
             f"{' or '.join(t.__name__ for t in types)})"
             for name, types in fields.items() if not _of_types(results.get(name), types)]
    if not wrong and records is not None:
        name, keys = records
        wrong = [f"{name}[{i}] (" + ("no " + ", ".join(k for k in keys if k not in r) if isinstance(r, dict)
                                      else "not an object") + ")"
                 for i, r in enumerate(results[name]) if not isinstance(r, dict) or not all(k in r for k in keys)][:3]
    if wrong:
        raise ReportError(f"{path}: not {kind} results as this code writes them: {'; '.join(wrong)}; "
                          f"re-make them with `{rerun}`")
    return results


@contextmanager
def built_from(path: Path, kind: str, rerun: str):
    """Around building a page from saved results that passed ``read_results``: a field deeper in them that is
    missing or of another type (a record's ``report``, the environment's ``date``) is a one-line ``ReportError``
    naming it, not a traceback."""
    try:
        yield
    except (KeyError, TypeError, IndexError) as err:
        raise ReportError(f"{path}: not {kind} results as this code writes them ({type(err).__name__}: {err}); "
                          f"re-make them with `{rerun}`") from None


@dataclass
class Table:
    slug: str  # file stem of its CSV
    title: str
    frame: pd.DataFrame
    note: str = ""
    page_columns: tuple[str, ...] = ()  # the columns shown on the page (default: all); the CSV has all

    def shown(self) -> pd.DataFrame:
        columns = list(self.page_columns) or list(self.frame.columns)
        if len(columns) > MAX_PAGE_COLUMNS:
            raise ValueError(
                f"table {self.slug}: {len(columns)} columns on the page (at most {MAX_PAGE_COLUMNS}); "
                "name the page_columns to show (the CSV keeps all)"
            )
        missing = [c for c in columns if c not in self.frame.columns]
        if missing:
            raise ValueError(f"table {self.slug}: page_columns not in the frame: {missing}")
        return self.frame[columns]


class Outcome(enum.Enum):
    """A verdict on one claim of the seed: exactly three. A claim with parts is split into rows, one
    checkable statement each, each with its own outcome and evidence."""

    HOLDS = "✓"
    FAILS = "✗"
    UNDECIDED = "not decided here"  # the evidence available here cannot decide it (the row says what would)

    @classmethod
    def of(cls, holds: bool) -> "Outcome":
        return cls.HOLDS if holds else cls.FAILS


@dataclass(frozen=True)
class Erratum:
    section: str  # seed section, e.g. "3.2" or "7, pitfall 3"
    claim: str
    outcome: Outcome | bool  # a bool means HOLDS or FAILS
    measured: str  # the evidence, with its source
    page: str = ""  # slug of the page that shows the evidence
    decide: str = ""  # UNDECIDED: what would decide it
    note: str = ""  # a caveat, or a second fact beside the verdict (e.g. torchvision's value beside the paper's)

    def __post_init__(self):
        if isinstance(self.outcome, bool):
            object.__setattr__(self, "outcome", Outcome.of(self.outcome))
        if self.outcome is Outcome.UNDECIDED and not self.decide:
            raise ValueError(f"{self.claim!r}: an undecided claim must say what would decide it")

    @property
    def holds(self) -> bool:
        return self.outcome is Outcome.HOLDS


def section_key(section: str) -> tuple[int, ...]:
    """Sort key of a seed section label: '2.1' -> (2, 1); '7, pitfall 3' -> (7, 0, 3)."""
    numbers = [int(n) for n in re.findall(r"\d+", section)]
    major, *rest = numbers
    minor = rest.pop(0) if "." in section.split(",")[0] and rest else 0
    return (major, minor, *rest)


@dataclass
class Page:
    slug: str
    title: str
    intro: str = ""  # opens with the page's findings in a few lines
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, PNG bytes)
    errata: list[Erratum] = field(default_factory=list)  # the seed's claims this page's tables decide
    seconds: float = 0.0  # wall time spent building it (set by build_pages)
    files: list[tuple[str, bytes]] = field(default_factory=list)  # other files it writes (name, bytes), e.g. JSON

    def __post_init__(self):
        self.errata = [
            e if e.page else Erratum(e.section, e.claim, e.outcome, e.measured, self.slug, e.decide, e.note)
            for e in self.errata
        ]


@dataclass
class Options:
    full: bool = False
    models: tuple[str, ...] = ()  # fnmatch patterns over hand-written model names; empty: all
    from_json: tuple[Path, ...] = ()  # pytest-benchmark JSON files to merge into the latency tables
    pages: tuple[str, ...] = ()  # page slugs to build; empty: all
    degradation_dir: Path = DEFAULT_DEGRADATION_DIR  # the degradation CLI's output, read in quick mode
    atlas_results: Path = DEFAULT_ATLAS_RESULTS  # a full atlas run's JSON, read in quick mode
    runtimes_results: Path = DEFAULT_RUNTIMES_RESULTS  # a runtimes page's measurements, read in quick mode
    # A full atlas run (--full): the pairs whose candidate matches (fnmatch), worker processes, seconds per
    # pair, and the parameter count above which a pair is not run (memory).
    atlas_pairs: tuple[str, ...] = ("*",)
    atlas_workers: int = 2
    atlas_timeout_s: float = ATLAS_TIMEOUT_S
    atlas_max_params: int = ATLAS_MAX_PARAMS

    def selected(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        if not self.models:
            return names
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.models)]


class Computed:
    """A page's one-core computation of one (hashable) argument, made once per report run: by a
    call, here, or for many arguments at once by ``run_jobs(f.jobs(args))`` in worker processes.
    ``seconds(arg)``: rough seconds on one core, only to start the longest first."""

    def __init__(self, fn: Callable[[Any], Any], seconds: Callable[[Any], float] | None = None):
        functools.update_wrapper(self, fn)
        if "<locals>" in fn.__qualname__:
            raise TypeError(f"{fn.__qualname__}: a computation must be defined at module level (workers import it)")
        self.fn, self.seconds, self.results = fn, seconds or (lambda arg: 1.0), {}

    def __call__(self, arg: Any) -> Any:
        if arg not in self.results:
            self.results[arg] = self.fn(arg)
        return self.results[arg]

    def jobs(self, args: Iterable[Any]) -> list["Job"]:
        """The arguments not yet computed, as jobs for ``run_jobs``."""
        return [Job(self, arg) for arg in dict.fromkeys(args) if arg not in self.results]


def computed(seconds: Callable[[Any], float] | None = None) -> Callable[[Callable[[Any], Any]], Computed]:
    return lambda fn: Computed(fn, seconds)


@dataclass(frozen=True)
class Job:
    computation: Computed
    arg: Any


MAX_WORKERS = 4


def _run_job(item: tuple[int, str, str, Any]) -> Any:
    """In a worker: compute one job (its computation found by name, so only the argument travels)."""
    _, module, name, arg = item
    return getattr(importlib.import_module(module), name).fn(arg)


def run_jobs(todo: list[Job], workers: int | None = None, desc: str = "checks and experiments") -> float:
    """Run ``todo`` longest first in ``workers`` processes (default: one per intra-op thread, at most
    MAX_WORKERS; see ``repro.environment.in_processes``), storing each result as it arrives.
    Returns the seconds it took."""
    start = time.perf_counter()
    workers = workers or min(torch.get_num_threads(), MAX_WORKERS)
    order = sorted(range(len(todo)), key=lambda i: -todo[i].computation.seconds(todo[i].arg))
    items = [(i, todo[i].computation.__module__, todo[i].computation.__qualname__, todo[i].arg) for i in order]
    with tqdm(total=len(todo), desc=desc, unit="job", disable=not todo) as progress:
        for (index, *_), result in in_processes(_run_job, items, workers):
            todo[index].computation.results[todo[index].arg] = result
            progress.update()
    return time.perf_counter() - start


# ---- markdown -------------------------------------------------------------------------------------


def markdown_table(frame: pd.DataFrame) -> str:
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        whole = values.dtype.kind in "iu" or (
            values.dtype.kind == "f"
            and values.notna().any()
            and (values.dropna() % 1 == 0).all()
            and values.abs().max() >= 1000
        )
        if whole:  # counts as 11,689,512 (tabulate would print a float column's 1.16895e+07); gaps stay empty
            frame[column] = [f"{int(v):,}" if pd.notna(v) else "" for v in values]
        elif values.dtype.kind not in "biufcmM":  # text: a '|' inside a cell would end the cell
            frame[column] = [v.replace("|", "\\|") if isinstance(v, str) else v for v in values]
    frame = frame.astype(object).where(frame.notna(), None)  # a gap prints empty, not "nan"
    frame.columns = [str(c).replace("|", "\\|") for c in frame.columns]
    return frame.to_markdown(index=False, floatfmt=".6g", missingval="")


def environment_line(env: dict[str, str]) -> str:
    return "_Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + "_"


def render_page(page: Page, env: dict[str, str]) -> str:
    lines = [f"# {page.title}", "", environment_line(env), ""]
    if page.intro:
        lines += [page.intro.strip(), ""]
    for table in page.tables:
        lines += [f"## {table.title}", ""]
        if table.note:
            lines += [table.note.strip(), ""]
        hidden = len(table.frame.columns) - len(table.shown().columns)
        csv = f"CSV: [{table.slug}.csv]({table.slug}.csv)" + (f" ({hidden} more columns)" if hidden else "")
        lines += [markdown_table(table.shown()), "", csv, ""]
    for name, _ in page.images:
        lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


def findings(errata: list[Erratum], lead: str = "") -> str:
    """A page's opening lines, read off its errata rows: which claims fail, are undecided, hold."""
    parts = [lead] if lead else []
    for outcome, label in (
        (Outcome.FAILS, "does not hold"),
        (Outcome.UNDECIDED, "not decided here"),
        (Outcome.HOLDS, "holds"),
    ):
        claims = [f"{e.claim} ({e.section})" for e in errata if e.outcome is outcome]
        if claims:
            parts.append(f"{label}: " + "; ".join(claims))
    if not parts:
        return ""
    # A verdict is read with its evidence: each claim's row, measured and sourced, is on the errata page.
    evidence = " Each verdict's evidence (what was measured, against which source) is its row on the " \
        "[errata page](errata.md), in the seed's order." if errata else ""
    return "Findings. " + ". ".join(parts) + "." + evidence


# ---- timing ---------------------------------------------------------------------------------------

# Every page that times on a CPU times batch 1 on this many intra-op threads, for the reason below.
TIMING_THREADS = 1
TIMING_THREADS_WHY = (
    "on a CPU shared with other work, multi-threaded batch-1 timing measures the contention between threads "
    "as much as the model"
)
