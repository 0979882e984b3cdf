"""Forward latency of each hand-written model beside its timm and torchvision references.

Grouped per model / batch / resolution / device / dtype / memory format, so each pytest-benchmark
table compares the implementations of one model measured in the same run. ``--benchmark-json``
output is what ``python -m repro.report --from-json`` reads.
"""

import pytest
import torch

from repro.bench import BenchmarkConfigError, prepare_with_setup, validate


def test_forward_latency(benchmark, bench_case):
    try:
        validate(bench_case)
    except BenchmarkConfigError as err:
        raise pytest.UsageError(str(err)) from None
    if bench_case.device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no GPU here")
    prepared = prepare_with_setup(bench_case)
    benchmark.group = bench_case.group
    benchmark.extra_info.update(
        model=bench_case.model, implementation=bench_case.implementation, batch=bench_case.batch,
        resolution=bench_case.resolution, device=bench_case.device, dtype=bench_case.dtype,
        memory_format=bench_case.memory_format, torch_threads=torch.get_num_threads(),
        setup_s={k: round(v, 3) for k, v in prepared.setup_s.items()},  # build, export, session, warm-up: untimed
    )
    out = benchmark(prepared.run)
    assert out.shape == (bench_case.batch, 1000)
