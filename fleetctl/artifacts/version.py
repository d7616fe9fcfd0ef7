"""Which version an artifact gets: `--version`, else the playbook's `artifact.version`, else
`git describe --tags --always --dirty` of the source; and the git commit recorded in the manifest."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fleetctl.artifacts.manifest import check_version
from fleetctl.errors import ConfigError


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(check=False, args=["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def git_describe(source_dir: Path) -> str | None:
    return _git(["describe", "--tags", "--always", "--dirty"], source_dir)


def git_commit(source_dir: Path) -> str | None:
    return _git(["rev-parse", "HEAD"], source_dir)


def resolve_version(explicit: str | None, from_playbook: str | None, source_dir: Path) -> str:
    """The version to stamp, checked to be usable in file names and `-ldflags`."""
    if explicit is not None:  # an empty --version is refused, not taken for "none given"
        return check_version(explicit, key="--version")
    if from_playbook:
        return check_version(from_playbook, key="artifact.version")
    described = git_describe(source_dir)
    if described is None:
        raise ConfigError(f"no version: give --version or artifact.version ({source_dir} is not in a git "
                          "repository with commits, so `git describe` has nothing to say)", key="artifact.version")
    return check_version(described, key="artifact.version")


def uncommitted_changes(directory: Path) -> list[str] | None:
    """Tracked files with uncommitted changes in the git work tree holding `directory` (what makes `git describe
    --dirty` say dirty), as `git status --porcelain` lines; None when `directory` is not in a git work tree."""
    if _git(["rev-parse", "--is-inside-work-tree"], directory) != "true":
        return None
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory, check=False,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [line for line in done.stdout.splitlines() if line.strip()]
