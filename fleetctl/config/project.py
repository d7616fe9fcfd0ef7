"""The project: the directory holding `fleet.yml`, its settings, and which files templates and playbooks may read.

The root is found as git finds its repository: walking up from a start directory (the cwd, or the playbook's
directory) to the first `fleet.yml`. `file()`, `install.files[].src` and `collect.path` read only under that
root, so an inventory value or a playbook from a review cannot read `~/.ssh/id_rsa` or `/etc/shadow` into a
release or a log; directories outside it are readable only when `fleet.yml` lists them under
`allow_absolute_paths`. Without a `fleet.yml` the start directory is the root. The directory of each inventory
the command reads (`-i`) is readable too, as part of what the operator named: a lab's inventory keeps its
credentials file beside it.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetctl.errors import ConfigError

PROJECT_FILE = "fleet.yml"
STATE_DIR = ".fleetctl"  # the project's run state: history, logs, the lab
# Every key fleet.yml may hold; anything else is refused, never ignored.
PROJECT_KEYS = ("inventory", "allow_absolute_paths", "environments", "default_environment")
# environments and default_environment are validated by config/environments.py, whenever a command resolves one.


_inventory_dirs: set[Path] = set()
_inventory_lock = threading.Lock()


def register_inventory_dir(path: Path) -> None:
    """An inventory this command reads lives here: files under it are readable (process-wide, like secrets)."""
    resolved = Path(os.path.realpath(path))
    with _inventory_lock:
        _inventory_dirs.add(resolved if resolved.is_dir() else resolved.parent)


@dataclass(frozen=True)
class Project:
    """Where the project is and what its `fleet.yml` says."""

    root: Path  # resolved
    file: Path | None  # the fleet.yml, None when no project file was found
    inventory: tuple[str, ...] | None = None  # fleet.yml's inventory paths, relative to root
    allowed_dirs: tuple[Path, ...] = ()  # allow_absolute_paths, resolved

    def readable(self, path: str | Path, *, base: Path, what: str, file: str | Path | None, key: str | None,
                 line: int | None = None) -> Path:
        """`path` (relative to `base`) resolved, if it lies under the root or an allowed directory; else a
        ConfigError naming `file`/`key`. Symlinks are followed first, so a link cannot lead out."""
        given = Path(path).expanduser()
        full = Path(os.path.realpath(given if given.is_absolute() else base / given))
        if self.covers(full):
            return full
        where = f"{self.file}" if self.file else f"{self.root} (no {PROJECT_FILE} found)"
        raise ConfigError(
            f"{what} {str(path)!r} resolves to {full}, outside the project directory {self.root}; "
            f"only files under it (or beside the inventory) are read unless {PROJECT_FILE} lists the directory "
            f"under allow_absolute_paths "
            f"(project: {where})", file=file, key=key, line=line)

    def covers(self, path: Path) -> bool:
        """Whether `path` (absolute, resolved) may be read."""
        with _inventory_lock:
            inventories = tuple(_inventory_dirs)
        return any(path == d or path.is_relative_to(d) for d in (self.root, *self.allowed_dirs, *inventories))


def find_project_file(start: Path) -> Path | None:
    """The first fleet.yml in `start` or one of its parents."""
    here = Path(os.path.realpath(start))
    for directory in (here, *here.parents):
        candidate = directory / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def project_root(start: Path | None = None) -> Path:
    """The directory of the first fleet.yml in `start` (default: the cwd) or a parent, else `start` itself. Only
    looks for the file: a command that merely needs the root (the history) works even if fleet.yml is broken."""
    here = Path(os.path.realpath(start if start is not None else Path.cwd()))
    found = find_project_file(here)
    return found.parent if found is not None else here


def state_dir(start: Path | None = None) -> Path:
    """`.fleetctl/` at the project root: where history.db, schedule logs and the default lab live."""
    return project_root(start) / STATE_DIR


def find_project(start: Path | None = None) -> Project:
    """The project `start` (default: the cwd) belongs to; a malformed fleet.yml is a ConfigError."""
    here = Path(os.path.realpath(start if start is not None else Path.cwd()))
    found = find_project_file(here)
    if found is None:
        return Project(root=here, file=None)
    stat = found.stat()
    return _load_project(found, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _load_project(path: Path, _mtime: int, _size: int) -> Project:
    # Cached per file version: every file() call and every playbook path asks.
    from fleetctl.config.suggest import did_you_mean
    from fleetctl.config.yamlfile import load_yaml

    doc = load_yaml(path, what="project file")
    data: Any = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping ({', '.join(PROJECT_KEYS)})", file=path)
    for key in data:
        if key not in PROJECT_KEYS:
            raise ConfigError(f"unknown key{did_you_mean(str(key), PROJECT_KEYS)}; expected one of: "
                              f"{', '.join(PROJECT_KEYS)}", file=path,
                              line=doc.line_of((key,)), key=str(key))
    inventory = data.get("inventory")
    if isinstance(inventory, str):
        inventory = [inventory]
    if inventory is not None and (not isinstance(inventory, list)
                                  or not all(isinstance(p, str) and p for p in inventory)):
        raise ConfigError("expected a path or a list of paths", file=path, line=doc.line_of(("inventory",)),
                          key="inventory")
    allowed_raw = data.get("allow_absolute_paths") or []
    if not isinstance(allowed_raw, list):
        raise ConfigError("expected a list of absolute directories outside the project that file(), "
                          "install.files[].src and collect.path may read", file=path,
                          line=doc.line_of(("allow_absolute_paths",)), key="allow_absolute_paths")
    allowed: list[Path] = []
    for index, entry in enumerate(allowed_raw):
        if not isinstance(entry, str) or not Path(entry).expanduser().is_absolute():
            raise ConfigError(f"expected an absolute directory, got {entry!r}", file=path,
                              line=doc.line_of(("allow_absolute_paths", index)), key=f"allow_absolute_paths[{index}]")
        allowed.append(Path(os.path.realpath(Path(entry).expanduser())))
    return Project(root=path.parent, file=path, inventory=tuple(inventory) if inventory is not None else None,
                   allowed_dirs=tuple(allowed))
