"""Benchmark cases shared by ``pytest --benchmark-only`` and the report's latency tables.

A case is one model (hand-written name), one implementation (``ours``, ``ours+fused`` or a
reference spec, optionally ``+compile``), one device, dtype, memory format, batch and resolution.
``prepare`` returns a zero-argument callable running one inference forward pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


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
        return f"{self.model}-{self.implementation}-b{self.batch}-{self.resolution}-{self.device}-{self.dtype}-{self.memory_format}"


def implementations(model: str, modes: tuple[str, ...] = ("eager", "fused", "frozen")) -> list[str]:
    """The implementations to compare for ``model``: ours (and fused), then each registered reference."""
    from repro.registry import references_for

    impls = ["ours"] + (["ours+fused"] if "fused" in modes else []) + (["ours+frozen"] if "frozen" in modes else [])
    impls += [e.spec for e in references_for(model)]
    if "compile" in modes:
        impls += [f"{impl}+compile" for impl in list(impls) if not impl.endswith(("+fused", "+frozen"))]
    return impls


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
    if case.implementation.startswith("ours+frozen") and case.device != "cpu":
        raise BenchmarkConfigError("ours+frozen (TorchScript freezing for oneDNN) is a CPU mode")


def build(case: BenchCase) -> nn.Module:
    import reference
    from repro.fuse import fuse
    from repro.registry import create_model

    base = case.implementation.removesuffix("+compile")
    if base == "ours":
        model = create_model(case.model)
    elif base == "ours+fused":
        model = fuse(create_model(case.model))
    elif base == "ours+frozen":
        example = torch.randn(case.batch, 3, case.resolution, case.resolution).contiguous(memory_format=FORMATS[case.memory_format])
        return fuse(create_model(case.model).to(memory_format=FORMATS[case.memory_format]), freeze=True, example_input=example)
    else:
        model = reference.create(base)
    model = model.eval().to(case.device, memory_format=FORMATS[case.memory_format])
    if case.implementation.endswith("+compile"):
        model = torch.compile(model)
    return model


def prepare(case: BenchCase) -> Callable[[], torch.Tensor]:
    """Build the model and input; return the timed callable (inference mode, autocast if bf16)."""
    validate(case)
    if case.device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkConfigError("device cuda requested but no GPU is available")
    model = build(case)
    x = torch.randn(case.batch, 3, case.resolution, case.resolution, device=case.device)
    x = x.contiguous(memory_format=FORMATS[case.memory_format])
    dtype = DTYPES[case.dtype]
    autocast = torch.autocast(case.device, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    synchronize = torch.cuda.synchronize if case.device == "cuda" else (lambda: None)

    def run() -> torch.Tensor:
        with torch.inference_mode(), autocast:
            out = model(x)
        synchronize()
        return out

    run()  # warm-up (and compilation, for +compile)
    run()
    return run


def measure_interleaved(cases: list[BenchCase], rounds: int = 5, min_run_time: float = 0.1) -> list[dict[str, float]]:
    """Time several implementations of one model fairly: round-robin over the cases, ``rounds``
    times, so drift in machine load hits all of them alike. Returns per case the median and
    interquartile range (ms) over every timed run of every round."""
    import statistics

    from torch.utils.benchmark import Timer

    runs = [prepare(case) for case in cases]
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            timer = Timer("run()", globals={"run": run}, num_threads=torch.get_num_threads())
            times[i] += timer.blocked_autorange(min_run_time=min_run_time).times
    results = []
    for samples in times:
        q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
        results.append({"median_ms": statistics.median(samples) * 1e3, "iqr_ms": (q[2] - q[0]) * 1e3, "runs": len(samples)})
    return results
