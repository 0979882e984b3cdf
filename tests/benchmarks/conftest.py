"""Parametrizes the benchmarks from the --bench-* options (declared in tests/conftest.py)."""

import fnmatch

import pytest

from repro.registry import references_for


def _selected(config):
    from repro.registry import MODELS

    patterns = [p for p in config.getoption("--bench-models").split(",") if p]
    return [n for n in sorted(MODELS) if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def pytest_generate_tests(metafunc):
    if "bench_case" not in metafunc.fixturenames:
        return
    config = metafunc.config
    cases = []
    for model in _selected(config):
        impls = ["ours"] + [e.spec for e in references_for(model)]
        for batch in (int(b) for b in config.getoption("--bench-batch").split(",")):
            if batch < 1:
                raise pytest.UsageError(f"--bench-batch must be positive, got {batch}")
            cases += [(model, impl, batch) for impl in impls]
    metafunc.parametrize("bench_case", cases, ids=[f"{m}-{i}-b{b}" for m, i, b in cases])
