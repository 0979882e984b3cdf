#!/usr/bin/env bash
# The whole set-up, on a fresh machine or an old one:
#   bash run.sh report [ARGS...]   python -m repro.report (defaults: --quick, reports/)
#   bash run.sh test   [ARGS...]   ruff check ., the test suite (pytest -n auto), then the benchmarks' code once
#   bash run.sh bench  [ARGS...]   pytest --benchmark-only (serial)
# Each creates or reuses the virtual environment $VENV (default .venv) and installs what it needs.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

stamp="$VENV/.installed-$(cat pyproject.toml requirements-lock.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch/torchvision first and pinned: pip takes these from the machine's local wheels.
    "$VENV/bin/python" -m pip install -q -r requirements-lock.txt
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}   # no model hub here: fail fast instead of retrying

cmd=${1:-}
shift || true
case "$cmd" in
    report) exec "$VENV/bin/python" -m repro.report "$@" ;;
    test)
        # Lint first (configuration: pyproject.toml's [tool.ruff]): an unused import or an undefined name fails CI.
        "$VENV/bin/python" -m ruff check .
        "$VENV/bin/python" -m pytest -n auto "$@"
        # Benchmarks are skipped by plain pytest; run their code once, untimed, so it cannot rot.
        exec "$VENV/bin/python" -m pytest tests/benchmarks --benchmark-disable -q
        ;;
    bench) exec "$VENV/bin/python" -m pytest --benchmark-only "$@" ;;
    *) echo "usage: bash run.sh report|test|bench [ARGS...]" >&2; exit 2 ;;
esac
