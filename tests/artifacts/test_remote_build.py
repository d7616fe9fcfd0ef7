"""Remote builds against a real sshd on loopback: success with a verified sha256, and each failure's message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from artifacts_support import HELLO_SRC, SshServer

from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.go_toolchain import GoToolchain
from fleetctl.artifacts.manifest import load_manifest, manifest_path, sha256_file
from fleetctl.artifacts.pe import inspect_executable
from fleetctl.artifacts.remote_build import build_go_remote
from fleetctl.config.playbook import GoBuild
from fleetctl.protocol.errors import AuthenticationFailed, HostUnreachable, TransportError
from tests.support import free_port

pytestmark = pytest.mark.ssh


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(HELLO_SRC, src)
    return src


def test_remote_build_fetches_a_verified_artifact(go_toolchain: GoToolchain, sshd: SshServer,
                                                   tmp_path: Path) -> None:
    """The build host is this machine: its Go is the one a local build would pick (sshd's PATH may hold an
    older one, which the next tests show is refused)."""
    src = _src(tmp_path)
    (src / "junk.tmp").write_text("ignored")
    (src / ".gitignore").write_text("*.tmp\n")
    lines: list[str] = []
    hostvars = sshd.hostvars(fleet_go=go_toolchain.path)
    m = build_go_remote(GoBuild(dir="src", host="buildhost"), host="buildhost", hostvars=hostvars,
                        name="hello", version="4.5.6", base_dir=tmp_path, dist_dir=tmp_path / "dist",
                        on_output=lines.append)
    assert m.path == (tmp_path / "dist" / "hello-4.5.6-windows-amd64.exe").resolve()
    assert m.sha256 == sha256_file(m.path)
    assert inspect_executable(m.path).format == "PE32+"  # type: ignore[union-attr]
    assert m.source == "go@buildhost" and m.go_version == go_toolchain.version
    assert load_manifest(manifest_path(tmp_path / "dist", "hello", "4.5.6")) == m
    assert any("sha256 verified" in line for line in lines)
    uploaded = next(line for line in lines if line.startswith("uploaded"))
    # tmp_path is not a git work tree, so .gitignore is not consulted: every file goes
    expected = len([p for p in src.rglob("*") if p.is_file()])
    assert uploaded.startswith(f"uploaded {expected} source files") and "go.sum" in {p.name for p in src.iterdir()}
    # the remote work directory is removed afterwards
    assert not list(Path("/tmp").glob("fleetctl-build.*"))
    # unchanged inputs: the second call reuses the artifact without building again
    again: list[str] = []
    assert build_go_remote(GoBuild(dir="src", host="buildhost"), host="buildhost", hostvars=hostvars,
                           name="hello", version="4.5.6", base_dir=tmp_path, dist_dir=tmp_path / "dist",
                           on_output=again.append) == m
    assert any("reusing" in line for line in again)


def test_remote_compiler_failure_carries_the_remote_output(go_toolchain: GoToolchain, sshd: SshServer,
                                                          tmp_path: Path) -> None:
    src = _src(tmp_path)
    (src / "broken.go").write_text("package main\n\nvar _ = notDefinedAnywhere\n")
    with pytest.raises(ArtifactError, match=r"(?s)go build failed on build host buildhost.*"
                                            r"broken.go:3:9: undefined: notDefinedAnywhere"):
        build_go_remote(GoBuild(dir="src", goos="linux"), host="buildhost",
                        hostvars=sshd.hostvars(fleet_go=go_toolchain.path), name="hello", version="1.0",
                        base_dir=tmp_path, dist_dir=tmp_path / "dist")


def test_missing_go_on_the_host(sshd: SshServer, tmp_path: Path) -> None:
    _src(tmp_path)
    with pytest.raises(ArtifactError, match="Go is not installed on build host buildhost"):
        build_go_remote(GoBuild(dir="src"), host="buildhost", hostvars=sshd.hostvars(fleet_go="/opt/no-such-go/bin/go"),
                        name="hello", version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")


def _fake_go(tmp_path: Path, goversion: str, gotoolchain: str) -> str:
    """A `go` on the build host that reports the given GOVERSION and GOTOOLCHAIN (and can build nothing)."""
    fake = tmp_path / "old-go"
    fake.write_text(f"#!/bin/sh\nif [ \"$1\" = env ]; then printf '%s\\n%s\\n' {goversion} '{gotoolchain}'; exit 0; fi\n"
                    "echo 'fake go: cannot build'; exit 1\n")
    fake.chmod(0o755)
    return str(fake)


def test_a_build_host_go_older_than_go_mod_is_refused_before_uploading(sshd: SshServer, tmp_path: Path) -> None:
    src = _src(tmp_path)
    lines: list[str] = []
    with pytest.raises(ArtifactError, match=r"Go on build host buildhost \('.*old-go'\) is go1\.19\.8, but go\.mod "
                                            r"needs Go >= 1\.\d+.*fleet_go"):
        build_go_remote(GoBuild(dir="src"), host="buildhost",
                        hostvars=sshd.hostvars(fleet_go=_fake_go(tmp_path, "go1.19.8", "")), name="hello",
                        version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist", on_output=lines.append)
    assert not any(line.startswith("uploaded") for line in lines)
    assert (src / "go.mod").exists()


def test_a_build_host_go_that_switches_toolchains_is_let_through(sshd: SshServer, tmp_path: Path) -> None:
    """GOTOOLCHAIN=auto on the build host: its go fetches the toolchain go.mod asks for, so it is not refused
    (the fake go then fails the build itself, with its own output)."""
    _src(tmp_path)
    with pytest.raises(ArtifactError, match="(?s)go build failed on build host buildhost.*fake go: cannot build"):
        build_go_remote(GoBuild(dir="src"), host="buildhost",
                        hostvars=sshd.hostvars(fleet_go=_fake_go(tmp_path, "go1.21.0", "auto")), name="hello",
                        version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")


def test_auth_failure(sshd: SshServer, tmp_path: Path) -> None:
    _src(tmp_path)
    with pytest.raises(AuthenticationFailed, match="SSH authentication to .* failed"):
        build_go_remote(GoBuild(dir="src"), host="buildhost",
                        hostvars=sshd.hostvars(ansible_ssh_private_key_file=str(sshd.other_key)),
                        name="hello", version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")


def test_unreachable_host(sshd: SshServer, tmp_path: Path) -> None:
    _src(tmp_path)
    closed = free_port(sshd.address)
    with pytest.raises(HostUnreachable, match=f"buildhost: cannot reach {sshd.address}:{closed} over SSH"):
        build_go_remote(GoBuild(dir="src"), host="buildhost", hostvars=sshd.hostvars(ansible_port=closed),
                        name="hello", version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")


def test_unknown_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    _src(tmp_path)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(TransportError, match="unknown SSH host key"):
        build_go_remote(GoBuild(dir="src"), host="buildhost", hostvars=sshd.hostvars(fleet_ssh_known_hosts=str(empty)),
                        name="hello", version="1.0", base_dir=tmp_path, dist_dir=tmp_path / "dist")
