"""The house style's tooling gate: ruff and mypy are clean on the package and the tests (STYLE.md, 9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "fleetctl", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean(tmp_path: Path) -> None:
    result = _run("mypy", "--cache-dir", str(tmp_path / "mypy"), "fleetctl")
    assert result.returncode == 0, result.stdout + result.stderr
