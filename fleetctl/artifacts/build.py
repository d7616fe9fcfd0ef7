"""Local builds: `go build` (with the Go that go_toolchain picks for the module) cross-compiles a Go service with
its version stamped in (reused when nothing changed), or `build.command` runs the team's own build; both end as a
verified artifact and manifest in dist/."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.go_toolchain import find_go
from fleetctl.artifacts.manifest import (
    Manifest,
    artifact_filename,
    load_manifest,
    manifest_path,
    save_manifest,
    sha256_file,
    utc_now,
)
from fleetctl.artifacts.pe import inspect_executable, verify_executable
from fleetctl.artifacts.source_tree import fingerprint, list_source_files
from fleetctl.artifacts.version import git_commit
from fleetctl.config.playbook import CommandBuild, GoBuild
from fleetctl.config.redaction import redact
from fleetctl.errors import ConfigError

OutputCallback = Callable[[str], None]
# How much of a failed build's output an error message carries (the whole text went to on_output already).
_ERROR_TAIL_LINES = 40


@dataclass(frozen=True)
class GoBuildPlan:
    """What `go build` will be run with: pure data, the same for a local and a remote build."""

    argv: tuple[str, ...]
    env: Mapping[str, str]  # added to the build's environment
    output: str  # the -o path as given to go

    def describe(self) -> str:
        return shlex.join([*(f"{k}={v}" for k, v in self.env.items()), *self.argv])


def plan_go_build(spec: GoBuild, version: str, output: str, *, go: str = "go") -> GoBuildPlan:
    """The `go build` command line for `spec`: CGO off, -trimpath, stripped, version stamped with -X."""
    ldflags = " ".join(["-s", "-w", f"-X {spec.version_var}={version}", *spec.ldflags])
    argv = [go, "build", "-trimpath", "-ldflags", ldflags]
    if spec.tags:
        argv += ["-tags", ",".join(spec.tags)]
    argv += ["-o", output, spec.package]
    env = {"CGO_ENABLED": "0", "GOOS": spec.goos, "GOARCH": spec.goarch, **spec.env}
    return GoBuildPlan(tuple(argv), env, output)


def go_build_fingerprint(spec: GoBuild, version: str, go_version: str, source_root: Path,
                         files: list[Path], where: str = "local") -> str:
    """Equal fingerprints mean an identical build: same sources, settings, version and toolchain."""
    settings = spec.model_dump_json()
    return fingerprint(source_root, files, settings, version, go_version, where)


def run_streaming(argv: list[str], *, cwd: Path, env: Mapping[str, str], on_output: OutputCallback | None,
                  shell: bool = False) -> tuple[int, str]:
    """Run a build tool with stdout+stderr merged, passing each line to `on_output`; returns (exit code, text)."""
    full_env = {**os.environ, **env}
    try:
        proc = subprocess.Popen(argv if not shell else argv[0], cwd=cwd, env=full_env, shell=shell,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", bufsize=1)
    except FileNotFoundError:
        raise ArtifactError(f"cannot run {argv[0]!r}: not found (is it installed and on PATH?)") from None
    except OSError as err:
        raise ArtifactError(f"cannot run {argv[0]!r}: {err}") from None
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = redact(line.rstrip("\n"))
        lines.append(line)
        if on_output:
            on_output(line)
    return proc.wait(), "\n".join(lines)


def failure_tail(text: str) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-_ERROR_TAIL_LINES:])


def source_dir(base_dir: Path, spec_dir: str, key: str) -> Path:
    path = (base_dir / spec_dir).resolve()
    if not path.is_dir():
        raise ConfigError(f"directory {path} does not exist", key=key)
    return path


def reusable(dist_dir: Path, name: str, version: str, inputs: str) -> Manifest | None:
    """The manifest of an earlier identical build whose artifact is still intact, if any."""
    path = manifest_path(dist_dir, name, version)
    if not path.is_file():
        return None
    try:
        old = load_manifest(path)
    except ConfigError:
        return None
    if old.inputs_sha256 != inputs or not old.path.is_file() or old.path.stat().st_size != old.size:
        return None
    return old if sha256_file(old.path) == old.sha256 else None


def build_go(spec: GoBuild, *, name: str, version: str, base_dir: Path, dist_dir: Path,
             on_output: OutputCallback | None = None, force: bool = False) -> Manifest:
    """Cross-compile locally into dist/, verify the result, write its manifest; reuse an identical build."""
    src = source_dir(base_dir, spec.dir, "artifact.build.go.dir")
    out_name = spec.output_name or name
    go = find_go(src, {"CGO_ENABLED": "0", **spec.env})
    go_version = go.version
    files = list_source_files(src)
    inputs = go_build_fingerprint(spec, version, go_version, src, files)
    if not force and (old := reusable(dist_dir, out_name, version, inputs)) is not None:
        if on_output:
            on_output(f"unchanged inputs: reusing {old.path.name}")
        return old
    dist_dir.mkdir(parents=True, exist_ok=True)
    final = dist_dir / artifact_filename(out_name, version, spec.goos, spec.goarch)
    partial = final.with_name(final.name + ".partial")
    plan = plan_go_build(spec, version, str(partial), go=go.path)
    if on_output:
        on_output(f"$ {plan.describe()}   ({go.version}, from {go.origin})")
    started = time.monotonic()
    code, text = run_streaming(list(plan.argv), cwd=src, env=plan.env, on_output=on_output)
    if code != 0:
        partial.unlink(missing_ok=True)
        raise ArtifactError(f"go build failed (exit {code}) in {src}:\n{failure_tail(text)}", output=text,
                            key="artifact.build.go")
    return finish_go_artifact(partial, final, spec, name=out_name, version=version, go_version=go_version,
                              commit=git_commit(src), inputs=inputs, source="go", dist_dir=dist_dir,
                              on_output=on_output, seconds=time.monotonic() - started)


def finish_go_artifact(partial: Path, final: Path, spec: GoBuild, *, name: str, version: str, go_version: str,
                       commit: str | None, inputs: str, source: str, dist_dir: Path,
                       on_output: OutputCallback | None, seconds: float) -> Manifest:
    """Verify a freshly built file, move it into place and write its manifest (shared by local and remote)."""
    try:
        verify_executable(partial, spec.goos, spec.goarch, version=version)
    except ArtifactError:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, final)
    manifest = Manifest(
        name=name, version=version, sha256=sha256_file(final), size=final.stat().st_size, goos=spec.goos,
        goarch=spec.goarch, path=final.resolve(), go_version=go_version, git_commit=commit, build_time=utc_now(),
        source=source, inputs_sha256=inputs,
    )
    save_manifest(manifest, manifest_path(dist_dir, name, version))
    if on_output:
        on_output(f"built {final.name} ({manifest.size} bytes, sha256 {manifest.sha256[:12]}…) in {seconds:.1f} s")
    return manifest


def build_command(spec: CommandBuild, *, name: str, version: str, base_dir: Path, dist_dir: Path,
                  on_output: OutputCallback | None = None) -> Manifest:
    """Run the team's own build command (a list without a shell, a string with /bin/sh -c), then take its
    first output as the executable. FLEETCTL_VERSION tells the command which version to stamp."""
    work = source_dir(base_dir, spec.dir, "artifact.build.command.dir")
    env = {**spec.env, "FLEETCTL_VERSION": version}
    if isinstance(spec.run, str):
        argv, shell = [spec.run], True
        shown = spec.run
    else:
        if not spec.run:
            raise ConfigError("expected a command (a string or a non-empty list)", key="artifact.build.command.run")
        argv, shell = list(spec.run), False
        shown = " ".join(spec.run)
    if on_output:
        on_output(f"$ {shown}")
    started = time.monotonic()
    code, text = run_streaming(argv, cwd=work, env=env, on_output=on_output, shell=shell)
    if code != 0:
        raise ArtifactError(f"build command failed (exit {code}) in {work}:\n{failure_tail(text)}", output=text,
                            key="artifact.build.command.run")
    exe = _outputs(work, spec.outputs[0], 0)[0]
    extras = [p for i, pattern in enumerate(spec.outputs[1:], 1) for p in _outputs(work, pattern, i)]
    info = inspect_executable(exe)
    if info is None:
        raise ArtifactError(f"{exe} (the first of outputs) is not an executable (neither PE nor ELF)",
                            key="artifact.build.command.outputs")
    dist_dir.mkdir(parents=True, exist_ok=True)
    final = dist_dir / artifact_filename(name, version, info.goos, info.goarch)
    shutil.copyfile(exe, final)
    manifest = Manifest(
        name=name, version=version, sha256=sha256_file(final), size=final.stat().st_size, goos=info.goos,
        goarch=info.goarch, path=final.resolve(), git_commit=git_commit(work), build_time=utc_now(),
        source="command", extras=tuple(str(p) for p in extras),
    )
    save_manifest(manifest, manifest_path(dist_dir, name, version))
    if on_output:
        on_output(f"built {final.name} ({manifest.size} bytes) in {time.monotonic() - started:.1f} s")
    return manifest


def _outputs(work: Path, pattern: str, index: int) -> list[Path]:
    """The files an output pattern matches: at least one, and exactly one for the executable (index 0)."""
    matches = sorted(Path(p) for p in glob.glob(str(work / pattern)) if Path(p).is_file())
    key = f"artifact.build.command.outputs.{index}"
    if not matches:
        raise ArtifactError(f"the build command produced no file matching {pattern!r} in {work}", key=key)
    if len(matches) > 1 and index == 0:
        listed = ", ".join(str(m) for m in matches)
        raise ArtifactError(f"{pattern!r} matches {len(matches)} files, expected exactly one: {listed}", key=key)
    return [m.resolve() for m in matches]
