"""``python -m repro.report``: the seed's tables reproduced with measured values, as markdown and CSV.

Pages are built by *sections* (``repro/report/<topic>.py``), each registered with ``@section``
and returning tables; seed claims are checked by ``@erratum`` functions and gathered on one
errata page. A page's one-core work (building and porting networks, small training runs) is
declared by a ``@jobs`` function: the jobs of every page run first, together, in worker processes,
so the cores stay busy and the timing pages afterwards measure on a quiet machine. Everything is
computed first and written last, file by file with atomic renames, so an interrupted or failed
run leaves the previous report intact.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import importlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import torch
from tqdm import tqdm

from repro.environment import environment, in_processes
from repro.registry import MODELS


@dataclass
class Table:
    slug: str  # file stem of its CSV
    title: str
    frame: pd.DataFrame
    note: str = ""


@dataclass
class Page:
    slug: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, PNG bytes)
    files: list[tuple[str, bytes]] = field(default_factory=list)  # other files it writes (name, bytes), e.g. JSON
    seconds: float = 0.0  # wall time spent building it (set by build_pages)


class Computed:
    """A page's one-core computation of one (hashable) argument, made once per report run: by a
    call, here, or for many arguments at once by ``run_jobs(f.jobs(args))`` in worker processes.
    ``cost(arg)``: rough seconds on one core, only to start the longest first."""

    def __init__(self, fn: Callable[[Any], Any], cost: Callable[[Any], float] | None = None):
        functools.update_wrapper(self, fn)
        if "<locals>" in fn.__qualname__:
            raise TypeError(f"{fn.__qualname__}: a computation must be defined at module level (workers import it)")
        self.fn, self.cost, self.results = fn, cost or (lambda arg: 1.0), {}

    def __call__(self, arg: Any) -> Any:
        if arg not in self.results:
            self.results[arg] = self.fn(arg)
        return self.results[arg]

    def jobs(self, args: Iterable[Any]) -> list["Job"]:
        """The arguments not yet computed, as jobs for ``run_jobs``."""
        return [Job(self, arg) for arg in dict.fromkeys(args) if arg not in self.results]


def computed(cost: Callable[[Any], float] | None = None) -> Callable[[Callable[[Any], Any]], Computed]:
    return lambda fn: Computed(fn, cost)


@dataclass(frozen=True)
class Job:
    computation: Computed
    arg: Any


@dataclass(frozen=True)
class Erratum:
    section: str  # seed section, e.g. "3.2"
    claim: str
    holds: bool
    measured: str


@dataclass
class Options:
    full: bool = False
    models: tuple[str, ...] = ()  # fnmatch patterns over hand-written model names; empty: all
    from_json: tuple[Path, ...] = ()  # pytest-benchmark JSON files to merge into the latency tables
    pages: tuple[str, ...] = ()  # page slugs to build; empty: all

    def selected(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        if not self.models:
            return names
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.models)]


# Pages in reading order (the seed's order); pages not listed come after, before nothing else.
PAGE_ORDER = ["resnet", "resnet_variants", "efficientnet", "densenet_mobilenet", "depthwise", "selection",
              "latency", "runtimes", "training", "equivalence", "atlas", "errata"]

SectionFn = Callable[[Options], Page | None]
ErratumFn = Callable[[Options], list[Erratum]]
JobsFn = Callable[[Options], list[Job]]
_SECTIONS: dict[str, SectionFn] = {}  # page slug -> the function building that page
_ERRATA: list[ErratumFn] = []
_JOBS: dict[str, JobsFn] = {}  # page slug -> the jobs that page needs (none yet computed)
MAX_WORKERS = 4


def _slug(fn: Callable, suffix: str) -> str:
    slug = fn.__name__.removesuffix(suffix)
    if slug == fn.__name__ or slug not in PAGE_ORDER:
        raise TypeError(f"{fn.__name__}: name it <slug>{suffix} with a slug from PAGE_ORDER")
    return slug


def section(fn: SectionFn) -> SectionFn:
    """Register ``<slug>_page`` as the builder of page ``<slug>``."""
    _SECTIONS[_slug(fn, "_page")] = fn
    return fn


def jobs(fn: JobsFn) -> JobsFn:
    """Register ``<slug>_jobs``: the one-core work page ``<slug>`` needs and has not yet computed."""
    _JOBS[_slug(fn, "_jobs")] = fn
    return fn


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
    order = sorted(range(len(todo)), key=lambda i: -todo[i].computation.cost(todo[i].arg))
    items = [(i, todo[i].computation.__module__, todo[i].computation.__qualname__, todo[i].arg) for i in order]
    with tqdm(total=len(todo), desc=desc, unit="job", disable=not todo) as progress:
        for (index, *_), result in in_processes(_run_job, items, workers):
            todo[index].computation.results[todo[index].arg] = result
            progress.update()
    return time.perf_counter() - start


def erratum(fn: ErratumFn) -> ErratumFn:
    _ERRATA.append(fn)
    return fn


class ReportError(Exception):
    """Bad arguments or an unusable output directory: printed as one line, exit code 2."""


def _markdown_table(frame: pd.DataFrame) -> str:
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        whole = values.dtype.kind in "iu" or (
            values.dtype.kind == "f" and values.notna().any() and (values.dropna() % 1 == 0).all() and values.abs().max() >= 1000
        )
        if whole:  # counts as 11,689,512 (tabulate would print a float column's 1.16895e+07); gaps stay empty
            frame[column] = [f"{int(v):,}" if pd.notna(v) else "" for v in values]
    frame = frame.astype(object).where(frame.notna(), None)  # a gap prints empty, not "nan"
    return frame.to_markdown(index=False, floatfmt=".6g", missingval="")


def render_page(page: Page, env: dict[str, str]) -> str:
    lines = [f"# {page.title}", "", _environment_line(env), ""]
    if page.intro:
        lines += [page.intro.strip(), ""]
    for table in page.tables:
        lines += [f"## {table.title}", ""]
        if table.note:
            lines += [table.note.strip(), ""]
        lines += [_markdown_table(table.frame), "", f"CSV: [{table.slug}.csv]({table.slug}.csv)", ""]
    for name, _ in page.images:
        lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


def _environment_line(env: dict[str, str]) -> str:
    return "_Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + "_"


def render_index(pages: list[Page], env: dict[str, str], options: Options, jobs_seconds: float = 0.0) -> str:
    mode = "full" if options.full else "quick"
    lines = [
        "# Reproduction report",
        "",
        _environment_line(env),
        "",
        f"Generated by `python -m repro.report` ({mode} mode"
        + (f", models {', '.join(options.models)}" if options.models else "")
        + (f", pages {', '.join(options.pages)}" if options.pages else "")
        + (f", latency from {', '.join(p.name for p in options.from_json)}" if options.from_json else "")
        + "). Each page reproduces a table of the seed document with measured values beside its claims.",
        "",
    ]
    lines += [f"- [{p.title}]({p.slug}.md)" for p in pages]
    total = jobs_seconds + sum(p.seconds for p in pages)
    if total:
        # The jobs of every page run first; a page's own time is what it built beyond them.
        jobs = [f"checks and experiments (worker processes) {jobs_seconds:.0f} s"] if jobs_seconds else []
        lines += ["", f"Built in {total:.0f} s: " + ", ".join(jobs + [f"{p.slug} {p.seconds:.0f} s" for p in pages]) + "."]
    return "\n".join(lines) + "\n"


def build_pages(options: Options) -> tuple[list[Page], float]:
    """The selected pages, in reading order, and the seconds their jobs took (run first, together)."""
    from repro.report import equivalence, latency, resnet  # noqa: F401  (register sections)
    from repro.report import densenet_mobilenet  # noqa: F401
    from repro.report import resnet_variants  # noqa: F401
    from repro.report import efficientnet  # noqa: F401
    from repro.report import selection, training  # noqa: F401
    from repro.report import atlas  # noqa: F401
    from repro.report import runtimes  # noqa: F401  (only under --full or --pages runtimes)
    from repro.report import errata as errata_page

    wanted = [slug for slug in _SECTIONS if not options.pages or slug in options.pages]
    jobs_seconds = run_jobs([job for slug in wanted if slug in _JOBS for job in _JOBS[slug](options)])
    pages = []
    for slug in wanted:
        fn = _SECTIONS[slug]
        start = time.perf_counter()
        page = fn(options)
        if page is not None:
            assert page.slug == slug, f"{fn.__name__} built page {page.slug!r}"
            page.seconds = time.perf_counter() - start
            pages.append(page)
    if not options.pages or "errata" in options.pages:
        start = time.perf_counter()
        pages.append(errata_page.build(options, _ERRATA))
        pages[-1].seconds = time.perf_counter() - start
    return sorted(pages, key=lambda p: PAGE_ORDER.index(p.slug) if p.slug in PAGE_ORDER else len(PAGE_ORDER)), jobs_seconds


def write_report(pages: list[Page], out: Path, options: Options, jobs_seconds: float = 0.0) -> list[Path]:
    """Write every file to a temporary directory, then move each into ``out`` atomically."""
    env = environment()
    files: dict[str, bytes] = {"index.md": render_index(pages, env, options, jobs_seconds).encode()}
    for page in pages:
        files[f"{page.slug}.md"] = render_page(page, env).encode()
        for table in page.tables:
            files[f"{table.slug}.csv"] = table.frame.to_csv(index=False).encode()
        files.update(dict(page.images))
        files.update(dict(page.files))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".tmp-report-") as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        for name in files:
            os.replace(Path(tmp) / name, out / name)
            written.append(out / name)
    return written


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise ReportError(message)


def parse_args(argv: list[str] | None) -> tuple[Options, Path]:
    parser = _Parser(prog="python -m repro.report", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: eval-mode checks, finishes in minutes on 2 CPU cores")
    mode.add_argument("--full", action="store_true", help="everything: train-mode equivalence (gradients, running stats) too")
    parser.add_argument("--models", nargs="+", default=(), metavar="NAME", help="hand-written model names or fnmatch patterns (e.g. 'resnet*')")
    parser.add_argument("--out", default="reports", help="output directory (default: reports/)")
    parser.add_argument("--pages", nargs="+", default=(), metavar="PAGE",
                        help=f"build only these pages (default: all): {', '.join(PAGE_ORDER)}")
    parser.add_argument("--from-json", nargs="+", default=(), metavar="FILE", type=Path,
                        help="pytest-benchmark JSON files (from any machines) to merge into the latency tables")
    args = parser.parse_args(argv)
    options = Options(full=args.full, models=tuple(args.models), from_json=tuple(args.from_json), pages=tuple(args.pages))
    unknown = [p for p in options.pages if p not in PAGE_ORDER]
    if unknown:
        raise ReportError(f"--pages: no page named {', '.join(unknown)}; pages: {', '.join(PAGE_ORDER)}")
    unreadable = [str(p) for p in options.from_json if not p.is_file()]
    if unreadable:
        raise ReportError(f"--from-json: no such file: {', '.join(unreadable)}")
    if options.from_json:  # fail before any measuring, not after
        from repro.report.latency import load_benchmark_json

        load_benchmark_json(list(options.from_json))
    if options.models and not options.selected(MODELS):
        raise ReportError(f"--models {' '.join(options.models)} matches no hand-written model; known: {', '.join(sorted(MODELS))}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} exists and is not a directory")
    return options, out


def main(argv: list[str] | None = None) -> int:
    try:
        options, out = parse_args(argv)
        pages, jobs_seconds = build_pages(options)
        written = write_report(pages, out, options, jobs_seconds)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the previous report was left as it was", file=sys.stderr)
        return 130
    print(f"wrote {len(written)} files to {out}/ (start at {out / 'index.md'})")
    return 0
