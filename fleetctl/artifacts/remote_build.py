"""Remote builds: `go build` on a Linux build host over SSH. Uploads the source tree (.gitignore honoured),
builds there, fetches the artifact back over SFTP and checks its sha256 against the host's own."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fleetctl.artifacts.build import (
    OutputCallback,
    failure_tail,
    finish_go_artifact,
    go_build_fingerprint,
    plan_go_build,
    reusable,
    source_dir,
)
from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.go_toolchain import required_go, satisfies
from fleetctl.artifacts.manifest import Manifest, artifact_filename, sha256_file
from fleetctl.artifacts.source_tree import list_source_files, tar_gz
from fleetctl.artifacts.version import git_commit
from fleetctl.config.connection import SshSettings
from fleetctl.config.playbook import GoBuild
from fleetctl.transport import ssh

_GO_BINARY_VAR = "fleet_go"  # host var: where Go is on the build host, when not `go` on PATH
_BUILD_TIMEOUT = 1800.0


def build_go_remote(spec: GoBuild, *, host: str, hostvars: Mapping[str, Any], name: str, version: str,
                    base_dir: Path, dist_dir: Path, on_output: OutputCallback | None = None,
                    force: bool = False) -> Manifest:
    """Build on `host` (an inventory host with SSH connection variables) and bring the artifact home."""
    src = source_dir(base_dir, spec.dir, "artifact.build.go.dir")
    settings = SshSettings.from_hostvars(host, hostvars)
    go = str(hostvars.get(_GO_BINARY_VAR) or "go")
    out_name = spec.output_name or name
    files = list_source_files(src)
    if on_output:
        on_output(f"connecting to build host {host} ({settings.target})")
    conn = ssh.connect(settings)
    try:
        go_version = _remote_go_version(conn, host, go, spec, src)
        inputs = go_build_fingerprint(spec, version, go_version, src, files, where=f"ssh:{host}")
        if not force and (old := reusable(dist_dir, out_name, version, inputs)) is not None:
            if on_output:
                on_output(f"unchanged inputs: reusing {old.path.name}")
            return old
        started = time.monotonic()
        workdir = _make_workdir(conn, host)
        try:
            remote_src = _upload_source(conn, host, src, files, workdir, on_output)
            remote_out = posixpath.join(workdir, artifact_filename(out_name, version, spec.goos, spec.goarch))
            plan = plan_go_build(spec, version, remote_out, go=go)
            if on_output:
                on_output(f"$ {plan.describe()}   (on {host})")
            result = conn.run(plan.argv, env=plan.env, cwd=remote_src, on_output=on_output,
                             timeout=_BUILD_TIMEOUT)
            if not result.ok:
                raise ArtifactError(f"go build failed on build host {host} (exit {result.exited}):\n"
                                    f"{failure_tail(result.output)}", output=result.output,
                                    key="artifact.build.go")
            remote_sha = _remote_sha256(conn, host, remote_out)
            dist_dir.mkdir(parents=True, exist_ok=True)
            final = dist_dir / posixpath.basename(remote_out)
            partial = final.with_name(final.name + ".partial")
            conn.download(remote_out, partial)
            local_sha = sha256_file(partial)
            if local_sha != remote_sha:
                partial.unlink(missing_ok=True)
                raise ArtifactError(f"artifact fetched from build host {host} is corrupt: sha256 {local_sha} "
                                    f"here, {remote_sha} there")
            if on_output:
                on_output(f"fetched {final.name} over SFTP, sha256 verified")
        finally:
            conn.run(["rm", "-rf", "--", workdir], timeout=120)
        return finish_go_artifact(partial, final, spec, name=out_name, version=version, go_version=go_version,
                                  commit=git_commit(src), inputs=inputs, source=f"go@{host}", dist_dir=dist_dir,
                                  on_output=on_output, seconds=time.monotonic() - started)
    finally:
        conn.close()


def _remote_go_version(conn: ssh.SshSession, host: str, go: str, spec: GoBuild, src: Path) -> str:
    """The build host's GOVERSION, checked against the module's go.mod as a local Go would be."""
    result = conn.run([go, "env", "GOVERSION", "GOTOOLCHAIN"], env=spec.env or None, timeout=120)
    if result.exited == 127 or (not result.ok and "not found" in result.output.lower()):
        raise ArtifactError(f"Go is not installed on build host {host}: {go!r} not found on the remote PATH "
                            f"(install Go there, or set the host variable {_GO_BINARY_VAR} to its path)",
                            key="artifact.build.go.host")
    if not result.ok:
        raise ArtifactError(f"'go env GOVERSION' failed on build host {host}: {failure_tail(result.output)}",
                            key="artifact.build.go.host")
    # GOVERSION's line, then GOTOOLCHAIN's (empty before Go 1.21); a login banner may come first.
    lines = [line.strip() for line in result.output.splitlines()]
    at = next((i for i, line in enumerate(lines) if line.startswith(("go1", "devel "))), None)
    if at is None:
        raise ArtifactError(f"'go env GOVERSION' on build host {host} printed no Go version: "
                            f"{failure_tail(result.output)}", key="artifact.build.go.host")
    version, toolchain = lines[at], (lines[at + 1] if at + 1 < len(lines) else "")
    requirement = required_go(src)
    # A Go that may switch toolchains (GOTOOLCHAIN=auto or <name>+auto, Go >= 1.21) fetches a newer one itself.
    switches = toolchain == "auto" or toolchain.endswith("+auto")
    if requirement is not None and not satisfies(version, requirement) and not switches:
        raise ArtifactError(f"Go on build host {host} ({go!r}) is {version}, but {requirement.go_mod.name} needs Go "
                            f">= {requirement.version} (install a newer Go there, or set the host variable "
                            f"{_GO_BINARY_VAR} to one)", key="artifact.build.go.host")
    return version


def _make_workdir(conn: ssh.SshSession, host: str) -> str:
    result = conn.run(["mktemp", "-d", "/tmp/fleetctl-build.XXXXXXXX"], timeout=60)
    if not result.ok:
        raise ArtifactError(f"cannot create a work directory on build host {host}: {result.output.strip()}")
    return result.output.strip().splitlines()[-1]


def _upload_source(conn: ssh.SshSession, host: str, src: Path, files: list[Path], workdir: str,
                   on_output: OutputCallback | None) -> str:
    archive = tar_gz(src, files)
    remote_tar = posixpath.join(workdir, "source.tar.gz")
    remote_src = posixpath.join(workdir, "src")
    conn.upload(archive, remote_tar)
    if on_output:
        on_output(f"uploaded {len(files)} source files ({len(archive)} bytes) to {host}:{remote_src}")
    result = conn.run(["mkdir", "-p", "--", remote_src], timeout=60)
    if result.ok:
        result = conn.run(["tar", "-xzf", remote_tar, "-C", remote_src], timeout=300)
    if not result.ok:
        raise ArtifactError(f"cannot unpack the source on build host {host}: {result.output.strip()}")
    return remote_src


def _remote_sha256(conn: ssh.SshSession, host: str, path: str) -> str:
    result = conn.run(["sha256sum", "--", path], timeout=300)
    digest = result.output.split()[0] if result.ok and result.output.split() else ""
    if len(digest) != 64:
        raise ArtifactError(f"cannot checksum the artifact on build host {host}: {result.output.strip()}")
    return digest
