"""`fleetctl build`: the manifest table and --json, reuse on a second run, and the compiler's error text with
exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.go_toolchain import find_go
from fleetctl.cli.app import main

HELLO_SRC = Path(__file__).resolve().parents[2] / "playbooks" / "hello" / "src"


def _playbook(tmp_path: Path) -> Path:
    try:
        find_go(HELLO_SRC)
    except ArtifactError as err:
        pytest.skip(str(err))
    shutil.copytree(HELLO_SRC, tmp_path / "src")
    path = tmp_path / "playbook.yml"
    path.write_text("name: hello\nartifact:\n  build:\n    go:\n      dir: src\n      goos: linux\n"
                    "install:\n  root: 'C:\\apps\\hello'\nservice:\n  name: hello\n")
    return path


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def test_build_json_then_reuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb = _playbook(tmp_path)
    dist = tmp_path / "dist"
    assert _run(["build", str(pb), "--version", "1.4.0", "--dist", str(dist), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "hello" and doc["version"] == "1.4.0" and doc["goos"] == "linux"
    assert Path(doc["path"]) == (dist / "hello-1.4.0-linux-amd64").resolve()
    assert (dist / "hello-1.4.0.json").is_file()
    # the human form: compiler lines (plain, not a terminal) then the manifest table; reused this time
    assert _run(["build", str(pb), "--version", "1.4.0", "--dist", str(dist)]) == 0
    out = capsys.readouterr().out
    assert "reusing hello-1.4.0-linux-amd64" in out and doc["sha256"] in out


def test_compile_error_exits_2_with_compiler_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb = _playbook(tmp_path)
    (tmp_path / "src" / "oops.go").write_text("package main\n\nfunc oops() { thisDoesNotExist() }\n")
    assert _run(["build", str(pb), "--version", "1.0", "--dist", str(tmp_path / "dist")]) == 2
    captured = capsys.readouterr()
    assert "oops.go:3" in captured.out  # streamed live
    assert "go build failed" in captured.err and "undefined: thisDoesNotExist" in captured.err


def test_bad_version_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pb = _playbook(tmp_path)
    assert _run(["build", str(pb), "--version", "1.0 beta", "--dist", str(tmp_path / "dist")]) == 2
    assert "--version" in capsys.readouterr().err
