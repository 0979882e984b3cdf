"""The lint that `bash run.sh test` runs before the tests (ruff, configured in pyproject.toml) catches what CI
promises to catch: an unused import, an undefined name, a line over 120 characters, and nothing else here."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_with_the_project_configuration_flags_what_ci_promises(tmp_path):
    source = tmp_path / "sample.py"
    longest_allowed = "x = '" + "a" * 114 + "'"
    assert len(longest_allowed) == 120
    source.write_text(f"import os\n\nprint(undefined_name)\n{longest_allowed}\ny = '{'b' * 116}'\n")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
         "--output-format", "concise", str(source)],
        capture_output=True, text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    flagged = sorted(line.split(":")[1:4] for line in result.stdout.splitlines() if line.startswith(str(source)))
    codes = {(row, code.split()[0]) for row, _, code in flagged}
    assert codes == {("1", "F401"), ("3", "F821"), ("5", "E501")}, result.stdout
