"""`group_vars/` and `host_vars/` beside an inventory, found and merged the way Ansible's host_group_vars does.

For an entity NAME the first of `NAME`, `NAME.yml`, `NAME.yaml`, `NAME.json` that exists is used; if it is a
directory, every file in it with one of those extensions (recursively, sorted, hidden files skipped) is merged in name order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fleetctl.config.inventory_yaml import load_yaml_file
from fleetctl.errors import ConfigError

_EXTENSIONS = ("", ".yml", ".yaml", ".json")


class VarsDirectory:
    """The group_vars/ or host_vars/ directory of one inventory source; lists it once and caches loaded files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # One listing instead of four stat calls per entity: with 10,000 hosts that is most of the cost.
        try:
            self._names: frozenset[str] = frozenset(os.listdir(path)) if path.is_dir() else frozenset()
        except OSError as err:
            raise ConfigError(f"cannot list directory: {err}", file=path) from None
        self._cache: dict[str, list[tuple[Path, dict[str, Any]]]] = {}

    def vars_for(self, name: str) -> dict[str, Any]:
        """The merged variables the files for entity `name` define ({} when there are none)."""
        merged: dict[str, Any] = {}
        for _, data in self.files_for(name):
            merged.update(data)
        return merged

    def files_for(self, name: str) -> list[tuple[Path, dict[str, Any]]]:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        found: list[tuple[Path, dict[str, Any]]] = []
        if self._names and not name.startswith(os.sep):
            for ext in _EXTENSIONS:
                if name + ext in self._names:
                    candidate = self.path / (name + ext)
                    paths = _dir_files(candidate) if candidate.is_dir() else [candidate]
                    found = [(p, d) for p in paths if (d := _load_vars_file(p))]
                    break
        self._cache[name] = found
        return found


def _dir_files(directory: Path) -> list[Path]:
    files: list[Path] = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):  # hidden files and editor backups
            continue
        full = directory / entry
        ext = os.path.splitext(entry)[1]
        if full.is_dir():
            if not ext:
                files.extend(_dir_files(full))
        elif full.is_file() and ext in _EXTENSIONS:
            files.append(full)
    return files


def _load_vars_file(path: Path) -> dict[str, Any]:
    data = load_yaml_file(path)
    if data is None:
        return {}  # an empty vars file is allowed, as in Ansible
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of variable names to values, got {type(data).__name__}",
                          file=path)
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"variable name {key!r} is not valid: expected a string", file=path, key=str(key))
    return data
