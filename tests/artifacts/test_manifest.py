"""The manifest value and its JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetctl.artifacts.manifest import (
    Manifest,
    artifact_filename,
    check_version,
    load_manifest,
    manifest_path,
    save_manifest,
)
from fleetctl.errors import ConfigError


def test_round_trip_stores_the_artifact_path_relative(tmp_path: Path) -> None:
    exe = tmp_path / "dist" / "hello-1.0-windows-amd64.exe"
    m = Manifest(name="hello", version="1.0", sha256="ab" * 32, size=3, goos="windows", goarch="amd64", path=exe,
                 go_version="go1.19", git_commit="c" * 40, build_time="2024-01-01T00:00:00Z", source="go",
                 extras=("a.pdb",))
    path = save_manifest(m, manifest_path(tmp_path / "dist", "hello", "1.0"))
    assert path.name == "hello-1.0.json"
    assert json.loads(path.read_text())["path"] == "hello-1.0-windows-amd64.exe"
    # the dist directory can move: the path is resolved against the manifest's own directory
    moved = tmp_path / "elsewhere"
    (tmp_path / "dist").rename(moved)
    loaded = load_manifest(moved / "hello-1.0.json")
    assert loaded.path == (moved / exe.name).resolve()
    assert loaded.with_path(exe) == m


def test_artifact_filename() -> None:
    assert artifact_filename("hello", "1.2.3", "windows", "amd64") == "hello-1.2.3-windows-amd64.exe"
    assert artifact_filename("hello", "1.2.3", "linux", "arm64") == "hello-1.2.3-linux-arm64"


@pytest.mark.parametrize("text, problem", [("{", "not a readable JSON manifest"), ("[]", "expected a JSON object"),
                                           ('{"name": "x"}', "missing version, sha256")])
def test_bad_manifest_files(tmp_path: Path, text: str, problem: str) -> None:
    f = tmp_path / "m.json"
    f.write_text(text)
    with pytest.raises(ConfigError, match=problem) as err:
        load_manifest(f)
    assert str(f) in str(err.value)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="manifest file not found"):
        load_manifest(tmp_path / "nope.json")


@pytest.mark.parametrize("bad", ["1.0 beta", "../1.0", "-rc", "a/b", "v1;rm", ""])
def test_unusable_versions_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not usable"):
        check_version(bad)


@pytest.mark.parametrize("good", ["1.0.0", "v1.2.3-4-gabcdef-dirty", "2024.01.01+build.7", "abc1234"])
def test_usable_versions(good: str) -> None:
    assert check_version(good) == good
