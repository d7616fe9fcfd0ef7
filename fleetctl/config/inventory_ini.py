"""INI inventories: `[group]`, `[group:vars]`, `[group:children]`, inline `key=value`, parsed as Ansible does.

Values are Python literals where they parse as one (`port=5986` is an int, `tags="['a']"` a list), else strings,
exactly like Ansible's ini plugin, so `fleetctl inventory list` and `ansible-inventory --list` agree on types.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

from fleetctl.config.inventory_data import InventoryBuilder, Where
from fleetctl.config.inventory_ranges import HostRangeError, expand_host_entry
from fleetctl.errors import ConfigError

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")
# Lines without quotes, escapes or comments split on whitespace exactly as shlex would, 20x faster.
_NEEDS_SHLEX = re.compile(r"""['"\\#]""")
_NOT_LITERAL = frozenset(("True", "False", "None"))


def parse_ini_value(text: str) -> Any:
    """Ansible's `_parse_value`: a Python literal when it is one, otherwise the text itself."""
    if text.isidentifier() and text not in _NOT_LITERAL:
        return text  # a bare word is never a literal; skip the parser
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    return _coerce(value)


def _checked(value: Any, where: Where, key: str) -> Any:
    """`value`, unless a NUL hides in it (`"a\\x00b"`): Windows APIs would end the string there."""
    def has_nul(v: Any) -> bool:
        if isinstance(v, str):
            return "\x00" in v
        if isinstance(v, list):
            return any(has_nul(i) for i in v)
        if isinstance(v, dict):
            return any(has_nul(k) or has_nul(i) for k, i in v.items())
        return False

    if has_nul(value):
        raise ConfigError("the value holds a NUL character", file=where.file, line=where.line, key=key)
    return value


def _coerce(value: Any) -> Any:
    # Ansible turns what literal_eval may return but YAML/JSON cannot hold into the nearest JSON value.
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_coerce(v) for v in value]
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else str(k)): _coerce(v) for k, v in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def parse_ini_inventory(path: Path, lines: list[str], builder: InventoryBuilder) -> None:
    """Add the groups and hosts of one INI inventory to `builder`."""
    # Ansible lets `[a:children]` name a group declared further down, and `[a:vars]` come before `[a]`;
    # these wait here until the declaration appears, and are errors if it never does.
    pending: dict[str, dict[str, Any]] = {}
    group, state = "ungrouped", "hosts"
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = Where(path, number)
        m = _SECTION.match(line)
        if m:
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise ConfigError(f"section [{group}:{state}] has unknown type '{state}': expected "
                                  f"[{group}], [{group}:vars] or [{group}:children]", file=path, line=number)
            if group not in builder.groups:
                if state == "vars" and group not in pending:
                    pending[group] = {"line": number, "state": "vars", "parents": []}
                builder.add_group(group, where)
            if group in pending and state != "vars":
                if pending[group]["state"] == "children":
                    _resolve_children(builder, group, pending, where)
                else:
                    del pending[group]
            continue
        if line.startswith("[") and line.endswith("]"):
            raise ConfigError(f"invalid section header {line!r}: expected [group], [group:vars] or "
                              "[group:children] with no spaces", file=path, line=number)
        if state == "hosts":
            _parse_host_line(path, number, line, group, builder)
        elif state == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"expected key=value, got {line!r}", file=path, line=number, key=group)
            builder.set_group_var(group, key.strip(), _checked(parse_ini_value(value.strip()), where, key.strip()), where)
        else:
            m = _GROUP_NAME.match(line)
            if not m:
                raise ConfigError(f"expected a group name, got {line!r}", file=path, line=number,
                                  key=f"{group}:children")
            child = m.group(1)
            if child in builder.groups:
                builder.add_child(group, child, where)
            elif child in pending:
                pending[child]["parents"].append(group)
            else:
                pending[child] = {"line": number, "state": "children", "parents": [group]}
    for name, decl in pending.items():
        if decl["state"] == "vars":
            raise ConfigError(f"section [{name}:vars] is for group '{name}', which is not defined",
                              file=path, line=decl["line"], key=name)
        raise ConfigError(f"section [{decl['parents'][-1]}:children] names group '{name}', which is not defined",
                          file=path, line=decl["line"], key=name)


def _resolve_children(builder: InventoryBuilder, group: str, pending: dict[str, dict[str, Any]],
                      where: Where) -> None:
    for parent in pending[group]["parents"]:
        builder.add_child(parent, group, where)
        if parent in pending and pending[parent]["state"] == "children":
            _resolve_children(builder, parent, pending, where)
    del pending[group]


def _parse_host_line(path: Path, number: int, line: str, group: str, builder: InventoryBuilder) -> None:
    if _NEEDS_SHLEX.search(line):
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as err:
            raise ConfigError(f"cannot parse host line {line!r}: {err}", file=path, line=number) from None
        if not tokens:
            return
    else:
        tokens = line.split()
    entry = tokens[0]
    if entry.strip() == "---":
        raise ConfigError("'---' is not a host name; this looks like a YAML file with an INI extension",
                          file=path, line=number)
    try:
        names, port = expand_host_entry(entry)
    except HostRangeError as err:
        raise ConfigError(str(err), file=path, line=number, key=entry) from None
    if entry.endswith(":") and port is None:
        raise ConfigError(f"host {entry!r} ends in ':' but gives no port: expected host or host:port",
                          file=path, line=number, key=entry)
    host_vars: dict[str, Any] = {}
    for token in tokens[1:]:
        key, sep, value = token.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value after the host name, got {token!r}", file=path, line=number,
                              key=entry)
        host_vars[key] = _checked(parse_ini_value(value), Where(path, number), key)
    where = Where(path, number)
    for name in names:
        builder.add_host(name, group, port, where)
        for key, value in host_vars.items():
            builder.set_host_var(name, key, value, where)
