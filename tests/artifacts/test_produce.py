"""`produce_artifact`, the entry point deploy calls: each artifact route from a real playbook file, and
`--artifact PATH`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from artifacts_support import HELLO_SRC, SshServer, write_playbook

from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.go_toolchain import GoToolchain
from fleetctl.artifacts.manifest import Manifest, manifest_path, save_manifest
from fleetctl.artifacts.produce import produce_artifact
from fleetctl.errors import ConfigError


def test_go_build_route_with_explicit_version(hello_windows: Manifest, tmp_path: Path) -> None:
    pb = write_playbook(tmp_path / "pb", f"build:\n  go:\n    dir: {HELLO_SRC}\n")
    m = produce_artifact(pb, version="1.2.3-test", dist_dir=hello_windows.path.parent)
    assert m == hello_windows  # same inputs as the session build: reused


def test_version_from_playbook_then_git_describe(go_available: None, tmp_path: Path) -> None:
    shutil.copytree(HELLO_SRC, tmp_path / "pb" / "src")
    pb = write_playbook(tmp_path / "pb", "version: 5.0.0\nbuild:\n  go:\n    dir: src\n    goos: linux\n")
    assert produce_artifact(pb, dist_dir=tmp_path / "dist").version == "5.0.0"
    pb = write_playbook(tmp_path / "pb", "build:\n  go:\n    dir: src\n    goos: linux\n")
    with pytest.raises(ConfigError, match="no version: give --version"):
        produce_artifact(pb, dist_dir=tmp_path / "dist")
    git = ["git", "-C", str(tmp_path / "pb"), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(tmp_path / "pb")], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    subprocess.run([*git, "tag", "v0.9.0"], check=True)
    m = produce_artifact(pb, dist_dir=tmp_path / "dist")
    assert m.version == "v0.9.0" and m.git_commit and len(m.git_commit) == 40


def test_collect_path_route_and_given_artifact(hello_windows: Manifest, tmp_path: Path) -> None:
    shutil.copy(hello_windows.path, tmp_path / "prebuilt.exe")
    pb = write_playbook(tmp_path, "collect:\n  path: '*.exe'\n")
    m = produce_artifact(pb, version="2.2", dist_dir=tmp_path / "dist")
    assert m.sha256 == hello_windows.sha256 and m.source == "collect:path"
    given = produce_artifact(pb, version="2.3", artifact=tmp_path / "prebuilt.exe", dist_dir=tmp_path / "dist")
    assert given.source == "artifact" and given.version == "2.3"
    # a manifest given as --artifact is loaded and its artifact re-checked
    assert produce_artifact(pb, artifact=manifest_path(tmp_path / "dist", "hello", "2.2")) == m
    save_manifest(Manifest(**{**m.__dict__, "sha256": "0" * 64}), tmp_path / "bad.json")
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        produce_artifact(pb, artifact=tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        produce_artifact(pb, version="1", artifact=tmp_path / "nope.exe")


@pytest.mark.ssh
def test_remote_build_route_needs_the_host_in_the_inventory(go_toolchain: GoToolchain, sshd: SshServer,
                                                            tmp_path: Path) -> None:
    pb = write_playbook(tmp_path, f"build:\n  go:\n    dir: {HELLO_SRC}\n    goos: linux\n    host: buildhost\n")
    with pytest.raises(ConfigError, match="give an inventory"):
        produce_artifact(pb, version="3.0", dist_dir=tmp_path / "dist")
    with pytest.raises(ConfigError, match="'buildhost' is not in the inventory"):
        produce_artifact(pb, version="3.0", dist_dir=tmp_path / "dist", inventory={"other": {}})
    m = produce_artifact(pb, version="3.0", dist_dir=tmp_path / "dist", inventory={"buildhost": sshd.hostvars(fleet_go=go_toolchain.path)})
    assert m.source == "go@buildhost" and m.goos == "linux"
