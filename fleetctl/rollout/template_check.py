"""Every template a deploy would render for each targeted host, rendered now, and every undefined variable among
them collected (host, file, line, key) instead of stopping at the first: what `fleetctl plan` promises
(docs/playbook.md, "Undefined variables are errors (`fleetctl plan` shows them before anything changes)").

Checked per host: each templated value of the host sections of the playbook (service, install, health, traffic,
firewall, scheduled tasks ...) with that host's variables, and each `install.files` template file. The
host-independent sections are rendered once by `load_targets` already. Only undefined variables are collected:
a value that needs a secret from the environment (`env('X')` unset) is not an error for a plan, which never uses
it. Contacts no host, reads only project files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetctl.config.playbook import GLOBAL_SECTIONS
from fleetctl.config.project import find_project
from fleetctl.config.templating import UndefinedVariableError, render_string, template_strings
from fleetctl.errors import ConfigError
from fleetctl.targets import Targets

SHOWN_HOSTS = 3  # hosts named per undefined variable; the rest are counted
PLAN_VERSION = "0.0.0"  # `version` for the check when the playbook names none: plan builds nothing


@dataclass(frozen=True)
class UndefinedUse:
    """One template, on one or more hosts, that uses a variable nobody defined."""

    file: str
    line: int | None
    key: str
    undefined: str  # "'app_prt' is undefined (did you mean 'app_port'?)"
    hosts: tuple[str, ...]

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        shown = ", ".join(self.hosts[:SHOWN_HOSTS])
        more = f" and {len(self.hosts) - SHOWN_HOSTS} more" if len(self.hosts) > SHOWN_HOSTS else ""
        return f"{where}: key '{self.key}' on {shown}{more}: {self.undefined}"


def undefined_variables(targets: Targets) -> list[UndefinedUse]:
    """Each undefined variable of what a deploy of `targets` would render, grouped by place, in playbook order."""
    found: dict[tuple[str, int | None, str, str], list[str]] = {}
    builtins = {"version": targets.settings.artifact.version or PLAN_VERSION}
    doc = targets.source.document
    data = doc.data if isinstance(doc.data, dict) else {}
    for host in targets.hosts:
        variables = targets.host_variables(host, builtins)
        for section, tree in data.items():
            if section in GLOBAL_SECTIONS:
                continue
            for path, text in template_strings(tree, (section,)):
                line = doc.line_of(path)
                key = ".".join(str(p) for p in path)
                _check(found, host.name, text, variables, str(doc.path), line, key)
        _check_files(found, targets, host.name, variables)
    return [UndefinedUse(file, line, key, undefined, tuple(hosts))
            for (file, line, key, undefined), hosts in found.items()]


def refuse_undefined(targets: Targets) -> None:
    """A ConfigError (exit 2) listing every undefined variable, when there is one."""
    uses = undefined_variables(targets)
    if uses:
        lines = "\n".join(f"  {use.describe()}" for use in uses)
        raise ConfigError(f"{len(uses)} undefined variable(s) in what a deploy would render:\n{lines}")


def _check(found: dict[tuple[str, int | None, str, str], list[str]], host: str, text: str,
           variables: Mapping[str, Any], file: str, line: int | None, key: str) -> None:
    source = f"{file}:{line}" if line else file
    try:
        render_string(text, variables, source=source, key=key)
    except UndefinedVariableError as err:
        found.setdefault((file, line, key if err.key in (None, key) else f"{key} (via {err.key})", err.undefined),
                         []).append(host)
    except ConfigError:
        pass  # not an undefined variable (an unset env(), a file outside the project): deploy reports it


def _check_files(found: dict[tuple[str, int | None, str, str], list[str]], targets: Targets, host_name: str,
                 variables: Mapping[str, Any]) -> None:
    # The files' contents are templates too. Their paths are read from the document (rendering only `src`), so
    # an unrelated value that cannot render for a plan (an unset env()) does not hide them.
    doc = targets.source.document
    install = doc.data.get("install") if isinstance(doc.data, dict) else None
    items = install.get("files") if isinstance(install, dict) else None
    base = targets.source.path.parent
    for index, item in enumerate(items if isinstance(items, list) else []):
        src = item.get("src") if isinstance(item, dict) else None
        if not isinstance(src, str):
            continue
        key = f"install.files.{index}.src"
        try:
            path = render_string(src, variables, source=str(doc.path), key=key)
            full = find_project(base).readable(str(path), base=base, what="template", file=doc.path, key=key)
            text = full.read_text(encoding="utf-8")
        except UndefinedVariableError as err:
            found.setdefault((str(doc.path), doc.line_of(("install", "files", index, "src")), key, err.undefined),
                             []).append(host_name)
            continue
        except (ConfigError, OSError):
            continue  # outside the project or unreadable: deploy says so; a plan lists variables
        _check(found, host_name, text, variables, str(full), None, f"install.files.{index}")
