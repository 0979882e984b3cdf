"""Inside a tox environment, the versions are the ones the environment promises (tox.ini sets
EXPECTED_TORCH and EXPECTED_TIMM, PEP 440 specifiers, and EXPECTED_PINS, a constraints file), and the
lowest environment's pins are pyproject.toml's declared floors."""

import os
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from repro.environment import declared_floor

ROOT = Path(__file__).resolve().parent.parent
LOWEST = ROOT / "constraints" / "lowest.txt"


def _pins(path: Path) -> dict[str, Version]:
    """A constraints file's `name==version` lines, by normalized name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{path.name}: {line!r} is not an exact pin"
            pins[_normalized(req.name)] = Version(spec.version)
    return pins


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("variable, installed", [
    ("EXPECTED_TORCH", lambda: torch.__version__),
    ("EXPECTED_TIMM", lambda: version("timm")),
])
def test_versions_match_environment(variable, installed):
    expected = os.environ.get(variable)
    if not expected:
        pytest.skip(f"{variable} not set (not running under tox)")
    assert Version(installed()).public in SpecifierSet(expected), (variable, installed(), expected)


@pytest.mark.skipif(not os.environ.get("EXPECTED_PINS"), reason="EXPECTED_PINS not set (not the lowest environment)")
def test_environment_runs_every_pin_exactly():
    pins = _pins(Path(os.environ["EXPECTED_PINS"]))
    installed = {name: Version(Version(version(name)).public) for name in pins}
    assert installed == pins


def test_lowest_pins_are_the_declared_floors():
    """Every dependency of the package and of its `test` extra has a floor (>=), and constraints/lowest.txt
    pins exactly that floor, nothing more: `tox -e lowest` then tests every declared minimum at once."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for line in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(line)
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"pyproject.toml: {line!r} has no single floor (>=)"
        floors[_normalized(req.name)] = lower[0]
    assert _pins(LOWEST) == floors


def test_pins_are_read_exactly(tmp_path):
    """The check above can fail: a range in place of a pin is refused, and names are normalized."""
    path = tmp_path / "c.txt"
    path.write_text("# comment\nPytest_Xdist==3.3  # trailing\n")
    assert _pins(path) == {"pytest-xdist": Version("3.3.0")}
    path.write_text("timm>=0.9\n")
    with pytest.raises(AssertionError, match="not an exact pin"):
        _pins(path)


def test_deterministic_kernels_sets_and_restores():
    """The train-mode step of every equivalence check runs on one CPU thread with deterministic
    cuDNN (multi-threaded CPU conv backward is not run-to-run deterministic), so a serial run and a
    pytest-xdist run (one thread per worker) reach the same bit-identity verdicts."""
    from repro.environment import deterministic_kernels

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with deterministic_kernels():
            assert torch.get_num_threads() == 1
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.get_num_threads() == 2 and not torch.backends.cudnn.deterministic
    finally:
        torch.set_num_threads(before)


def test_in_processes_returns_every_item_and_raises_what_fn_raises():
    from repro.environment import in_processes

    assert dict(in_processes(abs, [-1, -2, 3], workers=1)) == {-1: 1, -2: 2, 3: 3}
    assert dict(in_processes(abs, [-1, -2, 3], workers=2)) == {-1: 1, -2: 2, 3: 3}
    with pytest.raises(ValueError, match="invalid literal"):
        list(in_processes(int, ["1", "x"], workers=2))


def test_declared_floor_reads_the_installed_requirements():
    """The equivalence page names timm's declared floor from the installed package's metadata: the same
    number pyproject.toml declares (and constraints/lowest.txt pins); None for what is not declared."""
    assert declared_floor("timm") == str(_pins(LOWEST)["timm"])
    assert declared_floor("no-such-dependency") is None
    assert declared_floor("timm", distribution="no-such-distribution") is None
