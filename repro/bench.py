"""Benchmark cases shared by ``pytest --benchmark-only`` and the report's latency tables.

A case is one model (hand-written name), one implementation, one device, dtype, memory format,
batch and resolution. An implementation is ``ours`` or a reference spec (``timm:resnet50``),
then optional suffixes in this order:

- ``+fused``: ``repro.fuse(model)`` (BatchNorm folded; channels-last inside, NCHW accepted);
  ``+frozen``: ``repro.fuse(model, freeze=True, ...)`` (also TorchScript-frozen, CPU only);
- ``+channels_last``: the model and its input in NHWC, whatever the case's memory format;
- ``+compile``: ``torch.compile`` of the above;
- ``+onnxruntime`` (alone): the model exported to ONNX (``repro.export``, the exporter torch
  recommends, at the case's input shape) and run by ONNX Runtime's CPU execution provider with as
  many intra-op threads as torch uses (fp32, CPU only).

``prepare`` returns a zero-argument callable running one inference forward pass;
``prepare_with_setup`` also returns what building it cost (model build, export, session build,
warm-up incl. compilation), which the sweep and the benchmarks report apart from latency.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

import reference
from repro import export as onnx_export
from repro.environment import environment
from repro.fuse import fuse
from repro.registry import MODELS, create_model, references_for

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
MODES = ("eager", "fused", "frozen", "channels_last", "compile", "onnxruntime")
SUFFIXES = ("+fused", "+frozen", "+channels_last", "+compile", "+onnxruntime")
CPU_ONLY = ("+frozen", "+onnxruntime")


class BenchmarkConfigError(ValueError):
    """A benchmark option that names something unknown or impossible here."""


@dataclass(frozen=True)
class BenchCase:
    model: str
    implementation: str  # "ours", "ours+fused", "ours+frozen" (CPU), "timm:resnet50", "timm:resnet50+compile", ...
    batch: int = 1
    resolution: int = 224
    device: str = "cpu"
    dtype: str = "fp32"
    memory_format: str = "nchw"

    @property
    def group(self) -> str:
        return f"{self.model} b{self.batch} {self.resolution}px {self.device} {self.dtype} {self.memory_format}"

    @property
    def id(self) -> str:
        return (f"{self.model}-{self.implementation}-b{self.batch}-{self.resolution}-{self.device}-{self.dtype}"
                f"-{self.memory_format}")


def parse_implementation(implementation: str) -> tuple[str, set[str]]:
    """``"timm:resnet50+channels_last+compile"`` -> ``("timm:resnet50", {"+channels_last", "+compile"})``."""
    base, *rest = implementation.split("+")
    suffixes = ["+" + r for r in rest]
    unknown = [x for x in suffixes if x not in SUFFIXES]
    if unknown or suffixes != sorted(suffixes, key=SUFFIXES.index) or len(set(suffixes)) != len(suffixes):
        raise BenchmarkConfigError(
            f"implementation {implementation!r}: suffixes must be among {', '.join(SUFFIXES)}, in that order")
    for alone in ("+frozen", "+onnxruntime"):
        if alone in suffixes and len(suffixes) > 1:
            raise BenchmarkConfigError(f"implementation {implementation!r}: {alone} stands alone")
    if {"+fused", "+channels_last"} <= set(suffixes):
        raise BenchmarkConfigError(f"implementation {implementation!r}: +fused is already channels-last")
    if base != "ours" and ({"+fused", "+frozen"} & set(suffixes)):
        raise BenchmarkConfigError(f"implementation {implementation!r}: only ours is fused")
    return base, set(suffixes)


def implementations(model: str, modes: tuple[str, ...] = ("eager", "fused", "frozen")) -> list[str]:
    """The implementations to compare for ``model``: ours (fused, frozen), each registered
    reference, then (mode ``channels_last``) ours and the references in NHWC, then (mode
    ``compile``) compiled versions of all but the frozen one, then (mode ``onnxruntime``) ours and
    the references in ONNX Runtime."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise BenchmarkConfigError(f"unknown benchmark modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    eager = ["ours"] + [e.spec for e in references_for(model)]
    ours = ["ours"] + (["ours+fused"] if "fused" in modes else []) + (["ours+frozen"] if "frozen" in modes else [])
    impls = ours + eager[1:]
    if "channels_last" in modes:
        impls += [f"{impl}+channels_last" for impl in eager]
    if "compile" in modes:
        impls += [f"{impl}+compile" for impl in list(impls) if not impl.endswith("+frozen")]
    if "onnxruntime" in modes:
        impls += [f"{impl}+onnxruntime" for impl in eager]
    return impls


def applicable(implementation: str, device: str, dtype: str) -> bool:
    """Whether ``implementation`` runs on ``device`` at ``dtype`` (frozen and ONNX Runtime: CPU; ONNX Runtime: fp32)."""
    suffixes = parse_implementation(implementation)[1]
    if device != "cpu" and suffixes & set(CPU_ONLY):
        return False
    return not ("+onnxruntime" in suffixes and dtype != "fp32")


def validate(case: BenchCase) -> None:
    if case.batch < 1:
        raise BenchmarkConfigError(f"batch size must be positive, got {case.batch}")
    if case.resolution < 32:
        raise BenchmarkConfigError(f"resolution must be at least 32, got {case.resolution}")
    if case.dtype not in DTYPES:
        raise BenchmarkConfigError(f"dtype must be one of {sorted(DTYPES)}, got {case.dtype!r}")
    if case.memory_format not in FORMATS:
        raise BenchmarkConfigError(f"memory format must be one of {sorted(FORMATS)}, got {case.memory_format!r}")
    if case.device not in ("cpu", "cuda"):
        raise BenchmarkConfigError(f"device must be cpu or cuda, got {case.device!r}")
    suffixes = parse_implementation(case.implementation)[1]
    if "+frozen" in suffixes and case.device != "cpu":
        raise BenchmarkConfigError("ours+frozen (TorchScript freezing for oneDNN) is a CPU mode")
    if "+onnxruntime" in suffixes and (case.device != "cpu" or case.dtype != "fp32"):
        raise BenchmarkConfigError("+onnxruntime (the CPU execution provider) runs fp32 on the CPU")


def input_format(case: BenchCase) -> torch.memory_format:
    if "+channels_last" in parse_implementation(case.implementation)[1]:
        return torch.channels_last
    return FORMATS[case.memory_format]


def example_input(case: BenchCase) -> torch.Tensor:
    """The case's input on CPU: the same numbers for every implementation (own generator)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch, 3, case.resolution, case.resolution, generator=generator)
    return x.contiguous(memory_format=input_format(case))


def build(case: BenchCase) -> nn.Module:
    """The case's PyTorch model (every implementation but ``+onnxruntime``)."""
    base, suffixes = parse_implementation(case.implementation)
    if "+onnxruntime" in suffixes:
        raise BenchmarkConfigError(f"{case.implementation} is not a PyTorch model: prepare() builds its session")
    if "+frozen" in suffixes:
        example = example_input(case)
        return fuse(create_model(case.model), freeze=True, example_input=example)
    model = create_model(case.model) if base == "ours" else reference.create(base)
    if "+fused" in suffixes:
        model = fuse(model).to(case.device)  # keeps its own (channels-last) layout
    else:
        model = model.eval().to(case.device, memory_format=input_format(case))
    if "+compile" in suffixes:
        model = torch.compile(model)
    return model


@dataclass
class Prepared:
    """The timed callable and what it cost to make, in seconds (``build``: the PyTorch model;
    ``export`` and ``session``: ONNX export and ONNX Runtime session; ``warmup``: the two untimed
    calls, which include torch.compile's compilation)."""

    run: Callable[[], torch.Tensor]
    setup_s: dict[str, float] = field(default_factory=dict)


def _onnxruntime_run(case: BenchCase, setup: dict[str, float]) -> Callable[[], torch.Tensor]:
    base = parse_implementation(case.implementation)[0]
    start = time.perf_counter()
    model = create_model(case.model) if base == "ours" else reference.create(base)
    setup["build"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        result = onnx_export.export(model, Path(tmp) / "model.onnx", input_size=tuple(example_input(case).shape))
        setup["export"] = result.seconds
        start = time.perf_counter()
        session = onnx_export.session(result.path, threads=torch.get_num_threads())
        setup["session"] = time.perf_counter() - start
    feed = {onnx_export.INPUT_NAME: example_input(case).numpy()}
    outputs = [onnx_export.OUTPUT_NAME]

    def run() -> torch.Tensor:
        return torch.from_numpy(session.run(outputs, feed)[0])

    return run


def prepare_with_setup(case: BenchCase) -> Prepared:
    """Build the model and input; return the timed callable (inference mode, autocast if bf16) and its setup costs."""
    validate(case)
    if case.device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkConfigError("device cuda requested but no GPU is available")
    setup: dict[str, float] = {}
    if "+onnxruntime" in parse_implementation(case.implementation)[1]:
        run = _onnxruntime_run(case, setup)
    else:
        start = time.perf_counter()
        model = build(case)
        setup["build"] = time.perf_counter() - start
        x = example_input(case).to(case.device)
        dtype = DTYPES[case.dtype]
        autocast = torch.autocast(case.device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        synchronize = torch.cuda.synchronize if case.device == "cuda" else (lambda: None)

        def run() -> torch.Tensor:
            with torch.inference_mode(), autocast:
                out = model(x)
            synchronize()
            return out

    start = time.perf_counter()
    run()  # warm-up (and compilation, for +compile)
    run()
    setup["warmup"] = time.perf_counter() - start
    return Prepared(run, setup)


def prepare(case: BenchCase) -> Callable[[], torch.Tensor]:
    """The timed callable of ``prepare_with_setup``."""
    return prepare_with_setup(case).run


def measure_interleaved(cases: list[BenchCase], rounds: int = 5, min_run_time: float = 0.1) -> list[dict]:
    """Time several implementations of one model fairly: round-robin over the cases, ``rounds``
    times, rotating the starting case, so drift in machine load hits all of them alike. Returns per case the median and
    interquartile range (ms) over every timed run of every round, each round's median (so a
    ratio between two cases can be given per round: its spread says how much the ratio is noise),
    and what preparing it cost (``setup_s``, outside the timings)."""
    # Imported here: importing torch.utils.benchmark loads torch's C++-extension machinery, which prints a
    # CUDA warning on CPU-only machines into every program that merely imports this module (the report).
    from torch.utils.benchmark import Timer

    if rounds < 1 or not (math.isfinite(min_run_time) and min_run_time > 0):
        raise BenchmarkConfigError(f"rounds must be >= 1 and min_run_time a positive finite number, got {rounds} and "
                                   f"{min_run_time}")
    prepared = [prepare_with_setup(case) for case in cases]
    runs = [p.run for p in prepared]
    times: list[list[list[float]]] = [[] for _ in cases]
    for r in range(rounds):
        # Each round starts at the next case, so no implementation always runs first (or right
        # after the same neighbour): an order effect becomes round-to-round spread, not a bias.
        for i in [(r + k) % len(runs) for k in range(len(runs))]:
            timer = Timer("run()", globals={"run": runs[i]}, num_threads=torch.get_num_threads())
            times[i].append(timer.blocked_autorange(min_run_time=min_run_time).times)
    results = []
    for per_round, ready in zip(times, prepared, strict=True):
        samples = [t for r in per_round for t in r]
        q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
        results.append({
            "median_ms": statistics.median(samples) * 1e3, "iqr_ms": (q[2] - q[0]) * 1e3, "runs": len(samples),
            "round_medians_ms": [statistics.median(r) * 1e3 for r in per_round],
            "setup_s": {k: round(v, 3) for k, v in ready.setup_s.items()},
        })
    return results


# -- command line: an interleaved sweep written as pytest-benchmark-style JSON --------------------

def _parse_args(argv: list[str] | None):
    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one line, exit 2, no usage dump
            raise BenchmarkConfigError(message)

    def csv(kind):
        return lambda text: [kind(v) for v in text.split(",") if v.strip()]

    parser = Parser(prog="python -m repro.bench", description=(
        "Time every implementation of each model interleaved round-robin (fairer than one after another) "
        "and write pytest-benchmark-style JSON for `python -m repro.report --from-json`."))
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        default=["resnet18", "resnet50", "efficientnet_b0", "mobilenetv3_small_100"],
                        help="hand-written model names or fnmatch patterns ('*' for all)")
    parser.add_argument("--batch", type=csv(int), default=[1], help="comma-separated batch sizes (default 1)")
    parser.add_argument("--resolution", type=int, default=None, help="default: native, capped by --max-resolution")
    parser.add_argument("--max-resolution", type=int, default=224,
                        help="cap on the native resolution (default 224; 0: none)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--format", default="nchw", choices=sorted(FORMATS))
    parser.add_argument("--modes", type=csv(str), default=["eager"],
                        help=f"comma-separated among {', '.join(MODES)} (default eager)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.1, help="seconds per implementation per round")
    parser.add_argument("--json", required=True, metavar="FILE", help="output file (written atomically)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or not (math.isfinite(args.min_run_time) and args.min_run_time > 0):  # nan, inf: never end
        raise BenchmarkConfigError(
            f"--rounds must be >= 1 and --min-run-time a positive finite number of seconds, got {args.rounds} and "
            f"{args.min_run_time}")
    if not args.batch:
        raise BenchmarkConfigError("--batch takes batch sizes, comma-separated (1,8): it got none")
    return args


def sweep_cases(args) -> list[list[BenchCase]]:
    models = [m for m in sorted(MODELS) if any(fnmatch.fnmatchcase(m, p) for p in args.models)]
    if not models:
        raise BenchmarkConfigError(f"--models {' '.join(args.models)} matches no hand-written model")
    groups = []
    for model in models:
        native = MODELS[model].input_size
        resolution = args.resolution or (min(native, args.max_resolution) if args.max_resolution else native)
        impls = [i for i in implementations(model, tuple(args.modes)) if applicable(i, args.device, args.dtype)]
        for batch in args.batch:
            cases = [BenchCase(model, impl, batch, resolution, args.device, args.dtype, args.format) for impl in impls]
            for case in cases:
                validate(case)
            groups.append(cases)
    return groups


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse_args(argv)
        groups = sweep_cases(args)
        if args.device == "cuda" and not torch.cuda.is_available():
            raise BenchmarkConfigError("--device cuda: no GPU is available here")
        out = Path(args.json)
        if not out.parent.is_dir():
            raise BenchmarkConfigError(f"--json {out}: directory {out.parent} does not exist")
        if out.exists() and not out.is_file():  # found before measuring, not after
            raise BenchmarkConfigError(f"--json {out}: exists and is not a file")
        benchmarks = []
        for cases in tqdm(groups, desc="bench", unit="group"):
            for case, stats in zip(cases, measure_interleaved(cases, args.rounds, args.min_run_time), strict=True):
                benchmarks.append({
                    "group": case.group, "name": case.id,
                    "stats": {"median": stats["median_ms"] / 1e3, "iq": stats["iqr_ms"] / 1e3, "rounds": stats["runs"],
                              "round_medians": [m / 1e3 for m in stats["round_medians_ms"]]},
                    "extra_info": {"model": case.model, "implementation": case.implementation, "batch": case.batch,
                                   "resolution": case.resolution, "device": case.device, "dtype": case.dtype,
                                   "memory_format": case.memory_format, "interleaved": True,
                                   "setup_s": stats["setup_s"]},
                })
    except BenchmarkConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps({"machine_info": environment(), "benchmarks": benchmarks}, indent=1))
    os.replace(tmp, out)
    print(f"wrote {len(benchmarks)} measurements to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
