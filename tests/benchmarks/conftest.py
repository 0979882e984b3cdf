"""Parametrizes the benchmarks from the --bench-* options (declared in tests/conftest.py)."""

import fnmatch

import pytest

from repro.bench import BenchCase, BenchmarkConfigError, applicable, implementations
from repro.registry import MODELS


def _csv(config, name):
    return [v.strip() for v in config.getoption(name).split(",") if v.strip()]


def bench_cases(config) -> list[BenchCase]:
    patterns = _csv(config, "--bench-models")
    models = [n for n in sorted(MODELS) if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not models:
        raise pytest.UsageError(f"--bench-models {','.join(patterns)} matches no hand-written model")
    modes = tuple(_csv(config, "--bench-modes"))
    try:
        batches = [int(b) for b in _csv(config, "--bench-batch")]
    except ValueError as err:
        raise pytest.UsageError(f"--bench-batch must be integers: {err}") from None
    cases = []
    for model in models:
        try:
            impls = implementations(model, modes)
        except BenchmarkConfigError as err:
            raise pytest.UsageError(f"--bench-modes: {err}") from None
        for device in _csv(config, "--bench-device"):
            cap = config.getoption("--bench-max-resolution") or (224 if device == "cpu" else None)
            native = MODELS[model].input_size
            resolution = config.getoption("--bench-resolution") or (min(native, cap) if cap else native)
            for dtype in _csv(config, "--bench-dtype"):
                for fmt in _csv(config, "--bench-format"):
                    for batch in batches:
                        for impl in impls:
                            if not applicable(impl, device, dtype):
                                continue
                            cases.append(BenchCase(model, impl, batch, resolution, device, dtype, fmt))
    return cases


def pytest_generate_tests(metafunc):
    if "bench_case" in metafunc.fixturenames:
        cases = bench_cases(metafunc.config)
        metafunc.parametrize("bench_case", cases, ids=[c.id for c in cases])
