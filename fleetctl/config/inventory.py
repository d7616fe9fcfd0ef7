"""Load Ansible-compatible inventories (files or directories, several merged) into `Inventory` values.

Variables merge as Ansible resolves them (`ansible-inventory --list`): inline `all` vars, then inline vars of the
host's other groups ordered by (depth, ansible_group_priority, name), then group_vars/ files (`all` first, then
the same group order, source by source), then inline host vars, then host_vars/ files. Merges are shallow.
Values are kept raw (untemplated), as ansible-inventory shows them; `templating.render_vars` resolves them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fleetctl.config.inventory_data import GroupData, InventoryBuilder
from fleetctl.config.inventory_ini import parse_ini_inventory
from fleetctl.config.inventory_vars import VarsDirectory
from fleetctl.config.inventory_yaml import (
    YamlSyntaxError,
    line_of,
    load_yaml_file,
    parse_inventory_text,
    parse_yaml_inventory,
)
from fleetctl.config.patterns import select_hosts
from fleetctl.config.project import register_inventory_dir
from fleetctl.config.redaction import is_secret_name, register_secret
from fleetctl.config.templating import is_template
from fleetctl.errors import ConfigError

_YAML_EXTENSIONS = (".yml", ".yaml", ".json")
# What Ansible skips when an inventory source is a directory (IGNORED_ALWAYS + INVENTORY_IGNORE_EXTS).
_IGNORED_IN_DIRECTORY = re.compile(
    r"^\.|^host_vars$|^group_vars$|^vars_plugins$|"
    r"(\.pyc|\.pyo|\.swp|\.bak|~|\.rpm|\.md|\.txt|\.rst|\.orig|\.cfg|\.retry)$")


@dataclass(frozen=True)
class Host:
    """One inventory host with its merged, untemplated variables."""

    name: str
    vars: Mapping[str, Any] = field(hash=False)
    groups: tuple[str, ...] = field(default=())  # 'all' first, then in variable precedence order

    @property
    def address(self) -> str:
        """Where to connect: `ansible_host` if set, else the inventory name."""
        return str(self.vars.get("ansible_host") or self.name)


@dataclass(frozen=True)
class Inventory:
    """Hosts in inventory order, groups with every host in them or their descendants, and where they came from."""

    hosts: dict[str, Host]
    groups: dict[str, tuple[str, ...]]
    sources: tuple[Path, ...]
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> direct child groups
    direct_hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> hosts listed in it

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            where = ", ".join(str(s) for s in self.sources)
            from fleetctl.config.suggest import did_you_mean

            hint = did_you_mean(name, self.hosts)
            raise ConfigError(f"host '{name}' is not in the inventory{hint}", file=where or None, key=name) from None

    def select(self, pattern: str | None) -> list[Host]:
        """The hosts a `--limit` pattern selects, in inventory order; ConfigError if it selects none."""
        names = select_hosts(self, pattern)
        return [self.hosts[n] for n in names]

    def to_json(self) -> dict[str, Any]:
        """The `inventory list --json` document: {"hostvars": {host: vars}, "groups": {group: [hosts]}}."""
        return {
            "hostvars": {name: dict(h.vars) for name, h in self.hosts.items()},
            "groups": {name: sorted(members) for name, members in self.groups.items()},
        }


def load_inventory(paths: Sequence[str | Path]) -> Inventory:
    """Read every `-i` source (a file, or a directory of them) into one inventory, as Ansible would."""
    if not paths:
        raise ConfigError("no inventory given: pass -i PATH (a file or a directory)", key="-i")
    builder = InventoryBuilder()
    sources: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise ConfigError("inventory not found: expected a file or a directory", file=path, key="-i")
        sources.append(path)
        register_inventory_dir(path)
        _read_source(path, builder)
    builder.reconcile()
    return _resolve(builder, tuple(sources))


def _read_source(path: Path, builder: InventoryBuilder) -> None:
    if path.is_dir():
        try:
            entries = sorted(os.listdir(path))
        except OSError as err:
            raise ConfigError(f"cannot list inventory directory: {err.strerror}", file=path) from None
        for entry in entries:
            if not _IGNORED_IN_DIRECTORY.search(entry):
                _read_source(path / entry, builder)
        return
    _read_file(path, builder)


def _read_file(path: Path, builder: InventoryBuilder) -> None:
    suffix = path.suffix.lower()
    if suffix == ".toml":
        raise ConfigError("TOML inventories are not supported: expected YAML or INI", file=path)
    if suffix in _YAML_EXTENSIONS:
        parse_yaml_inventory(path, load_yaml_file(path), builder)
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read inventory: {err}", file=path) from None
    if "\x00" in text:
        raise ConfigError("the file holds a NUL character", file=path, line=text.count("\n", 0, text.index("\x00")) + 1)
    if text.startswith("#!"):
        raise ConfigError("dynamic inventory scripts are not supported: expected a YAML or INI file", file=path)
    if not suffix:
        # Like Ansible, a file without an extension is YAML if it reads as a YAML mapping, else INI.
        try:
            data = parse_inventory_text(text, path)
        except YamlSyntaxError:
            data = None
        if isinstance(data, dict):
            parse_yaml_inventory(path, data, builder)
            return
    parse_ini_inventory(path, text.splitlines(), builder)


def _depths(groups: dict[str, GroupData]) -> dict[str, int]:
    """Each group's depth: the longest path from 'all', which is what Ansible sorts group vars by."""
    depth: dict[str, int] = {}

    def visit(name: str) -> int:
        if name not in depth:
            parents = groups[name].parents
            depth[name] = max((visit(p) + 1 for p in parents), default=0)
        return depth[name]

    for name in groups:
        visit(name)
    return depth


_ADDRESS_VARS = ("fleet_host", "ansible_host")
_PORT_VARS = ("fleet_port", "ansible_port", "ansible_winrm_port")


def _literal(variables: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = variables.get(name)
        if value is not None and value != "":
            return None if is_template(value) else value
    return ""


def _refuse_shared_addresses(builder: InventoryBuilder, hosts: dict[str, Host]) -> None:
    """Two inventory names for one node (same address and port) would deploy to it twice at once, each run
    thinking it has the node to itself. Addresses compare without case, as DNS does; templated ones cannot be
    known here and are left to the connection."""
    seen: dict[tuple[str, str], str] = {}
    for name, host in hosts.items():
        address = _literal(host.vars, _ADDRESS_VARS)
        port = _literal(host.vars, _PORT_VARS)
        if address is None or port is None:
            continue
        ident = (str(address or name).strip().rstrip(".").lower(), str(port))
        first = seen.setdefault(ident, name)
        if first == name:
            continue
        where = builder.hosts[name].where
        line = where.line
        if line is None and where.keys is not None:
            line = line_of(where.file, where.keys)
        shown = ident[0] + (f":{ident[1]}" if ident[1] else "")
        raise ConfigError(f"hosts '{first}' and '{name}' have the same address {shown}: one node under two names "
                          "would be deployed to twice at once; remove one or give each its own address",
                          file=where.file, line=line, key=name)


def _resolve(builder: InventoryBuilder, sources: tuple[Path, ...]) -> Inventory:
    groups = builder.groups
    depth = _depths(groups)
    ancestors: dict[str, frozenset[str]] = {}

    def ancestors_of(name: str) -> frozenset[str]:
        if name not in ancestors:
            found = set(groups[name].parents)
            for parent in groups[name].parents:
                found |= ancestors_of(parent)
            ancestors[name] = frozenset(found)
        return ancestors[name]

    bases = [s if s.is_dir() else s.parent for s in sources]
    dirs: dict[Path, tuple[VarsDirectory, VarsDirectory]] = {}
    for base in bases:
        if base not in dirs:
            dirs[base] = (VarsDirectory(base / "group_vars"), VarsDirectory(base / "host_vars"))
    layers = [dirs[b] for b in bases]

    # Hosts in the same groups get the same group-derived vars; compute each combination once.
    by_membership: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, Any]]] = {}
    members: dict[str, list[str]] = {name: [] for name in groups}
    hosts: dict[str, Host] = {}
    secret_keys: dict[str, bool] = {}
    for name, data in builder.hosts.items():
        direct = tuple(data.groups)
        cached = by_membership.get(direct)
        if cached is None:
            all_groups: set[str] = set(direct)
            for g in direct:
                all_groups |= ancestors_of(g)
            ordered = sorted(all_groups - {"all"}, key=lambda g: (depth[g], groups[g].priority, g))
            merged: dict[str, Any] = dict(groups["all"].vars)
            for g in ordered:
                merged.update(groups[g].vars)
            for group_vars, _ in layers:
                merged.update(group_vars.vars_for("all"))
            for group_vars, _ in layers:
                for g in ordered:
                    merged.update(group_vars.vars_for(g))
            cached = by_membership[direct] = (("all", *ordered), merged)
        host_groups, group_merged = cached
        merged_vars = dict(group_merged)
        merged_vars.update(data.vars)
        for _, host_vars in layers:
            merged_vars.update(host_vars.vars_for(name))
        for key, value in merged_vars.items():
            secret = secret_keys.get(key)
            if secret is None:
                secret = secret_keys[key] = is_secret_name(key)
            if secret and isinstance(value, str) and not is_template(value):
                register_secret(value)
        for g in host_groups:
            members[g].append(name)
        hosts[name] = Host(name, MappingProxyType(merged_vars), host_groups)
    _refuse_shared_addresses(builder, hosts)
    return Inventory(
        hosts=hosts,
        groups={g: tuple(m) for g, m in members.items()},
        sources=sources,
        children={g: tuple(d.children) for g, d in groups.items()},
        direct_hosts={g: tuple(d.hosts) for g, d in groups.items()},
    )
