"""Local builds: the go build plan, the real cross-compile, reuse of unchanged inputs, compiler failures, and
`build.command`."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest
from artifacts_support import HELLO_SRC, REPO, TEST_VERSION

from fleetctl.artifacts.build import build_command, build_go, plan_go_build
from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.manifest import Manifest, load_manifest, manifest_path, sha256_file
from fleetctl.artifacts.pe import inspect_executable
from fleetctl.config.playbook import CommandBuild, GoBuild


def test_plan_go_build_stamps_version_and_appends_user_flags() -> None:
    spec = GoBuild(ldflags=["-X main.Commit=abc"], tags=["netgo", "prod"], goarch="arm64", env={"GOAMD64": "v3"},
                   package="./cmd/svc", version_var="example.com/x/version.V")
    plan = plan_go_build(spec, "1.2.3", "out.exe")
    assert plan.argv == ("go", "build", "-trimpath", "-ldflags",
                         "-s -w -X example.com/x/version.V=1.2.3 -X main.Commit=abc",
                         "-tags", "netgo,prod", "-o", "out.exe", "./cmd/svc")
    assert plan.env == {"CGO_ENABLED": "0", "GOOS": "windows", "GOARCH": "arm64", "GOAMD64": "v3"}


def test_example_builds_as_pe32_plus_with_manifest(hello_windows: Manifest, built_dist: Path) -> None:
    assert hello_windows.path == built_dist / f"hello-{TEST_VERSION}-windows-amd64.exe"
    assert inspect_executable(hello_windows.path).format == "PE32+"  # type: ignore[union-attr]
    assert TEST_VERSION.encode() in hello_windows.path.read_bytes()
    on_disk = load_manifest(manifest_path(built_dist, "hello", TEST_VERSION))
    assert on_disk == hello_windows
    assert on_disk.sha256 == sha256_file(hello_windows.path)
    assert on_disk.size == hello_windows.path.stat().st_size
    assert on_disk.go_version and on_disk.go_version.startswith("go1.")
    assert (on_disk.goos, on_disk.goarch, on_disk.source) == ("windows", "amd64", "go")
    assert on_disk.build_time.endswith("Z")


def test_rebuild_of_unchanged_inputs_reuses_the_artifact(hello_windows: Manifest, built_dist: Path) -> None:
    mtime = hello_windows.path.stat().st_mtime_ns
    lines: list[str] = []
    started = time.monotonic()
    again = build_go(GoBuild(dir=str(HELLO_SRC)), name="hello", version=TEST_VERSION, base_dir=REPO,
                     dist_dir=built_dist, on_output=lines.append)
    assert time.monotonic() - started < 5
    assert again == hello_windows
    assert hello_windows.path.stat().st_mtime_ns == mtime
    assert any("reusing" in line for line in lines)


def _copy_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(HELLO_SRC, src)
    return src


def test_changed_source_or_tampered_artifact_rebuilds(go_available: None, tmp_path: Path) -> None:
    src = _copy_src(tmp_path)
    spec = GoBuild(dir=str(src), goos="linux")
    first = build_go(spec, name="hello", version="2.0.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")
    (src / "main.go").write_text((src / "main.go").read_text().replace('"hello"', '"hello2"'))
    second = build_go(spec, name="hello", version="2.0.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")
    assert second.inputs_sha256 != first.inputs_sha256 and second.sha256 != first.sha256
    second.path.write_bytes(b"tampered")
    third = build_go(spec, name="hello", version="2.0.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")
    assert third.sha256 == sha256_file(third.path) and third.path.read_bytes() != b"tampered"


def test_compiler_error_is_reported_with_the_compilers_text(go_available: None, tmp_path: Path) -> None:
    src = _copy_src(tmp_path)
    (src / "broken.go").write_text("package main\n\nfunc broken() int { return undefinedThing }\n")
    lines: list[str] = []
    with pytest.raises(ArtifactError, match=r"go build failed \(exit \d+\)") as err:
        build_go(GoBuild(dir=str(src), goos="linux"), name="hello", version="1.0", base_dir=tmp_path,
                 dist_dir=tmp_path / "dist", on_output=lines.append)
    assert "broken.go:3" in str(err.value) and "undefined: undefinedThing" in str(err.value)
    assert any("undefined: undefinedThing" in line for line in lines)  # streamed live, too
    assert err.value.exit_code == 2
    assert not list((tmp_path / "dist").glob("*.exe*")) and not list((tmp_path / "dist").glob("hello-1.0*"))


def test_missing_source_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="artifact.build.go.dir.*does not exist"):
        build_go(GoBuild(dir="nope"), name="hello", version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")


def test_wrong_version_var_is_caught(go_available: None, tmp_path: Path) -> None:
    src = _copy_src(tmp_path)
    with pytest.raises(ArtifactError, match="does not contain the version string"):
        build_go(GoBuild(dir=str(src), goos="linux", version_var="main.NoSuchVar"), name="hello",
                 version="7.7.7-unique", base_dir=tmp_path, dist_dir=tmp_path / "dist")


# --- build.command ------------------------------------------------------------------------------------------------

_FAKE_BUILD = """
import os, shutil, sys
os.makedirs("out", exist_ok=True)
shutil.copy(sys.argv[1], "out/app.exe")
open("out/app.pdb", "w").write(os.environ["FLEETCTL_VERSION"])
print("compiled", os.environ["FLEETCTL_VERSION"])
"""


def test_command_build_list_form(hello_windows: Manifest, tmp_path: Path) -> None:
    (tmp_path / "build.py").write_text(_FAKE_BUILD)
    spec = CommandBuild(run=[sys.executable, "build.py", str(hello_windows.path)], outputs=["out/*.exe", "out/*.pdb"])
    lines: list[str] = []
    m = build_command(spec, name="app", version="3.1.4", base_dir=tmp_path, dist_dir=tmp_path / "dist",
                      on_output=lines.append)
    assert m.path.name == "app-3.1.4-windows-amd64.exe" and m.sha256 == hello_windows.sha256
    assert (m.goos, m.goarch, m.source) == ("windows", "amd64", "command")
    assert m.extras == (str((tmp_path / "out" / "app.pdb").resolve()),)
    assert "compiled 3.1.4" in lines
    assert load_manifest(manifest_path(tmp_path / "dist", "app", "3.1.4")) == m


def test_command_build_shell_form_and_failure(tmp_path: Path) -> None:
    spec = CommandBuild(run="echo making $FLEETCTL_VERSION; echo 'error: no rule to make target' >&2; exit 3",
                        outputs=["app.exe"])
    with pytest.raises(ArtifactError, match=r"(?s)build command failed \(exit 3\).*making 1.0.*no rule to make"):
        build_command(spec, name="app", version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")


@pytest.mark.parametrize("files, problem", [([], "produced no file matching"),
                                            (["a.exe", "b.exe"], "matches 2 files, expected exactly one"),
                                            (["a.exe"], "is not an executable")])
def test_command_build_outputs_must_name_one_executable(tmp_path: Path, files: list[str], problem: str) -> None:
    for f in files:
        (tmp_path / f).write_text("not really an exe")
    spec = CommandBuild(run=["true"], outputs=["*.exe"])
    with pytest.raises(ArtifactError, match=problem):
        build_command(spec, name="app", version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")
