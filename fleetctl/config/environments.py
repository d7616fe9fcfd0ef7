"""Environments of `fleet.yml` (`staging`, `prod`, like Kamal's destinations): each may name an inventory, extra
variables and rollout defaults, and a command picks one with `-E NAME` (else $FLEETCTL_ENVIRONMENT, else the
project's `default_environment`). Parsing and validating them is here, and so is the one environment the running
command chose (`active_environment()`), which the loaders of inventories, variables and rollout settings consult.

```yaml
environments:
  staging: {inventory: inventory/staging, vars: {log_level: debug}, rollout: {canary: 1, batch: 50%}}
  prod:    {inventory: inventory/prod.yml, vars_files: [vars/prod.yml], rollout: {canary: 10%, batch: 20%}}
default_environment: staging
```

Precedence, lowest first (docs/environments.md): the playbook's `vars:` and `rollout:` < inventory host variables
< fleetctl's built-ins < the environment's `vars_files` < its `vars` < `-e` on the command line; for rollout
settings the environment's `rollout:` wins over the playbook's and `--canary`/`--batch`/`--max-failed`/`--forks`/
`--strategy` win over both; the inventory is `-i`, else the environment's, else $FLEETCTL_INVENTORY, else
fleet.yml's top-level `inventory`, else `./inventory`.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fleetctl.config.playbook import Playbook, Rollout, load_vars_file, parse_extra_vars
from fleetctl.config.project import Project, find_project
from fleetctl.config.suggest import did_you_mean
from fleetctl.config.yamlfile import YamlDocument, load_yaml
from fleetctl.errors import ConfigError

ENV_VAR = "FLEETCTL_ENVIRONMENT"
# Every key an environment may hold; anything else is refused, never ignored.
ENVIRONMENT_KEYS = ("inventory", "vars", "vars_files", "rollout")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Environment:
    """One environment of fleet.yml, validated: where its hosts are, its variables, its rollout defaults."""

    name: str
    file: Path  # the fleet.yml that defines it
    chosen_by: str  # "-E", "$FLEETCTL_ENVIRONMENT" or "default_environment": said in headers and errors
    inventory: tuple[Path, ...] | None = None  # absolute; None: fall back to the top-level inventory
    variables: Mapping[str, Any] = field(default_factory=dict)  # vars_files merged in order, then vars on top
    rollout: Rollout | None = None  # only the keys it sets count (`model_fields_set`)

    def apply_rollout(self, settings: Playbook) -> Playbook:
        """The playbook's host-independent settings with this environment's rollout keys on top."""
        if self.rollout is None:
            return settings
        return settings.model_copy(update={"rollout": _overlay(settings.rollout, self.rollout)})


def _overlay(base: BaseModel, top: BaseModel) -> Any:
    # Only what the environment wrote replaces the playbook's value; nested sections (timeouts) merge key by key.
    update: dict[str, Any] = {}
    for name in top.model_fields_set:
        value, under = getattr(top, name), getattr(base, name)
        update[name] = _overlay(under, value) if isinstance(value, BaseModel) and isinstance(under, BaseModel) \
            else value
    return base.model_copy(update=update)


# --- the environment of the running command ---------------------------------------------------------------------

_ACTIVE: ContextVar[Environment | None] = ContextVar("fleetctl_environment", default=None)


def active_environment() -> Environment | None:
    """The environment the running command chose (`-E`), or None."""
    return _ACTIVE.get()


@contextmanager
def environment_active(environment: Environment | None) -> Iterator[None]:
    """Make `environment` the running command's for the duration of the block (tests, the CLI's option)."""
    token = _ACTIVE.set(environment)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def extra_variables(pairs: list[str] | None) -> dict[str, Any]:
    """`-e` pairs parsed, over the active environment's variables (the command line wins)."""
    environment = active_environment()
    below = dict(environment.variables) if environment is not None else {}
    return {**below, **parse_extra_vars(pairs)}


# --- choosing and loading ----------------------------------------------------------------------------------------


def choose_environment(name: str | None, *, start: Path | None = None) -> Environment | None:
    """The environment `name` (from `-E`), else $FLEETCTL_ENVIRONMENT's, else the project's
    `default_environment`, else None. Every environment of fleet.yml is validated whenever one is looked for, so a
    typo in `prod` is found while working on `staging`. An unknown name is a ConfigError with the nearest one."""
    project = find_project(start)
    table = load_environments(project)
    chosen_by = "-E"
    if not name:
        name, chosen_by = os.environ.get(ENV_VAR) or None, f"${ENV_VAR}"
    if not name:
        name, chosen_by = table.default, "default_environment"
    if not name:
        return None
    key = "--environment" if chosen_by == "-E" else ENV_VAR
    if project.file is None:
        raise ConfigError(f"environment {name!r} was asked for, but there is no fleet.yml in {project.root} or a "
                          "parent directory to define it (environments: NAME: {inventory: ...})", key=key)
    found = table.environments.get(name)
    if found is None:
        known = ", ".join(sorted(table.environments)) or "none defined"
        raise ConfigError(f"unknown environment {name!r}{did_you_mean(name, table.environments)}; "
                          f"{project.file} defines: {known}", key=key)
    return replace(found, chosen_by=chosen_by)


@dataclass(frozen=True)
class EnvironmentTable:
    """fleet.yml's environments by name, and its `default_environment`."""

    environments: Mapping[str, Environment] = field(default_factory=dict)
    default: str | None = None


def load_environments(project: Project) -> EnvironmentTable:
    """Every environment of the project's fleet.yml, validated (empty without fleet.yml or environments)."""
    if project.file is None:
        return EnvironmentTable()
    stat = project.file.stat()
    return _load(project.file, project.root, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _load(path: Path, root: Path, _mtime: int, _size: int) -> EnvironmentTable:
    # Cached per file version, as project.py caches fleet.yml itself.
    doc = load_yaml(path, what="project file")
    data = doc.data if isinstance(doc.data, dict) else {}
    table = data.get("environments")
    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise ConfigError("expected a mapping of environment names to settings (inventory, vars, vars_files, "
                          "rollout)", file=path, line=doc.line_of(("environments",)), key="environments")
    parsed = {str(name): _parse_one(str(name), raw, doc, root) for name, raw in table.items()}
    default = data.get("default_environment")
    if default is not None and (not isinstance(default, str) or default not in parsed):
        known = ", ".join(sorted(parsed)) or "none defined"
        raise ConfigError(f"expected the name of an environment defined under environments"
                          f"{did_you_mean(str(default), parsed)}; defined: {known}", file=path,
                          line=doc.line_of(("default_environment",)), key="default_environment")
    return EnvironmentTable(parsed, default)


def _parse_one(name: str, raw: Any, doc: YamlDocument, root: Path) -> Environment:
    where = ("environments", name)
    key = f"environments.{name}"
    if not _NAME.match(name):
        raise ConfigError("expected an environment name: letters, digits, '.', '_', '-'", file=doc.path,
                          line=doc.line_of(where), key=key)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a mapping ({', '.join(ENVIRONMENT_KEYS)})", file=doc.path,
                          line=doc.line_of(where), key=key)
    for item in raw:
        if item not in ENVIRONMENT_KEYS:
            raise ConfigError(f"unknown key{did_you_mean(str(item), ENVIRONMENT_KEYS)}; expected one of: "
                              f"{', '.join(ENVIRONMENT_KEYS)}", file=doc.path, line=doc.line_of((*where, item)),
                              key=f"{key}.{item}")
    return Environment(name=name, file=doc.path, chosen_by="-E", inventory=_inventory(raw, doc, root, where),
                       variables=_variables(raw, doc, root, where), rollout=_rollout(raw, doc, where))


def _inventory(raw: dict[str, Any], doc: YamlDocument, root: Path, where: tuple[str, str]) -> tuple[Path, ...] | None:
    value = raw.get("inventory")
    if value is None:
        return None
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError("expected an inventory path or a list of them (relative to the project directory)",
                          file=doc.path, line=doc.line_of((*where, "inventory")), key=_dotted(where, "inventory"))
    return tuple(Path(p) if Path(p).is_absolute() else root / p for p in paths)


def _variables(raw: dict[str, Any], doc: YamlDocument, root: Path, where: tuple[str, str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    files = raw.get("vars_files") or []
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list):
        raise ConfigError("expected a list of YAML files of variables (relative to the project directory)",
                          file=doc.path, line=doc.line_of((*where, "vars_files")), key=_dotted(where, "vars_files"))
    for index, entry in enumerate(files):
        item_key = f"{_dotted(where, 'vars_files')}[{index}]"
        line = doc.line_of((*where, "vars_files", index))
        if not isinstance(entry, str) or not entry:
            raise ConfigError("expected a file path", file=doc.path, line=line, key=item_key)
        path = entry if Path(entry).is_absolute() else str(root / entry)
        if not Path(path).is_file():
            raise ConfigError(f"vars file {entry!r} not found (looked for {path})", file=doc.path, line=line,
                              key=item_key)
        merged.update(load_vars_file(path, key=item_key))
    inline = raw.get("vars")
    if inline is None:
        return merged
    if not isinstance(inline, dict):
        raise ConfigError("expected a mapping of variable names to values", file=doc.path,
                          line=doc.line_of((*where, "vars")), key=_dotted(where, "vars"))
    for name in inline:
        if not isinstance(name, str) or not _VARIABLE.match(name):
            raise ConfigError("expected a variable name (letters, digits, _; not starting with a digit)",
                              file=doc.path, line=doc.line_of((*where, "vars", name)),
                              key=f"{_dotted(where, 'vars')}.{name}")
    merged.update(inline)
    return merged


def _rollout(raw: dict[str, Any], doc: YamlDocument, where: tuple[str, str]) -> Rollout | None:
    value = raw.get("rollout")
    if value is None:
        return None
    base = (*where, "rollout")
    if not isinstance(value, dict):
        raise ConfigError("expected a mapping of rollout settings (canary, batch, max_failed, forks, ...)",
                          file=doc.path, line=doc.line_of(base), key=_dotted(where, "rollout"))
    for item in value:
        if item not in Rollout.model_fields:
            raise ConfigError(f"unknown key{did_you_mean(str(item), Rollout.model_fields)}; an environment's "
                              "rollout takes the playbook's rollout keys (docs/playbook.md)", file=doc.path,
                              line=doc.line_of((*base, item)), key=f"{_dotted(where, 'rollout')}.{item}")
    try:
        return Rollout.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p[:1].isupper()))
        message = str(first["msg"]).removeprefix("Value error, ")
        if first.get("input") is not None and isinstance(first["input"], (str, int, float)):
            message += f", got {first['input']!r}"
        raise ConfigError(message, file=doc.path, line=doc.line_of((*base, *loc)),
                          key=".".join([_dotted(where, "rollout"), *(str(p) for p in loc)])) from None


def _dotted(where: tuple[str, str], item: str) -> str:
    return f"{where[0]}.{where[1]}.{item}"
