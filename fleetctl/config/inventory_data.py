"""The inventory as parsers build it: groups, hosts, inline vars and parent/child links, before any merging.

It mirrors Ansible's `InventoryData`: every source adds into one builder, `all` and `ungrouped` always exist,
and `reconcile()` applies Ansible's rules (orphan groups go under `all`, hosts in no group go to `ungrouped`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl.config.control_chars import has_control, printable
from fleetctl.errors import ConfigError


@dataclass
class Where:
    """Where an entity or value was first defined, for error messages."""

    file: Path
    line: int | None = None
    keys: tuple[Any, ...] | None = None  # YAML: the key path, for finding the line on the error path only


@dataclass
class GroupData:
    name: str
    where: Where | None
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    host_set: set[str] = field(default_factory=set)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    priority: int = 1


@dataclass
class HostData:
    name: str
    where: Where
    vars: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


class InventoryBuilder:
    """Collects what the INI and YAML parsers find, in the order they find it."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupData] = {}
        self.hosts: dict[str, HostData] = {}
        self.add_group("all", None)
        self.add_group("ungrouped", None)
        self.add_child("all", "ungrouped", None)

    def add_group(self, name: str, where: Where | None) -> GroupData:
        if not isinstance(name, str) or not name or has_control(name):
            file = where.file if where else None
            shown = printable(name) if isinstance(name, str) else name
            raise ConfigError(f"group name {shown!r} is not valid: expected a non-empty string without control "
                              "or bidi characters", file=file, line=where.line if where else None)
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = GroupData(name, where)
        return group

    def add_host(self, name: str, group: str | None, port: int | None, where: Where) -> HostData:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"host name {name!r} is not valid: expected a non-empty string",
                              file=where.file, line=where.line)
        if has_control(name):
            # A bidi override makes `lab-node01` print as something else; a name must read as what it is.
            raise ConfigError(f"host name {printable(name)!r} holds control or bidi characters",
                              file=where.file, line=where.line, key=printable(name))
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = HostData(name, where)
            # Like Ansible, a port written with the host (`web1:2222`) counts only where the host first appears.
            if port:
                host.vars["ansible_port"] = port
        if group is not None:
            g = self.groups[group]
            if name not in g.host_set:
                g.host_set.add(name)
                g.hosts.append(name)
                host.groups.append(group)
        return host

    def set_group_var(self, group: str, key: str, value: Any, where: Where) -> None:
        _check_var_name(key, where)
        g = self.groups[group]
        if key != "ansible_group_priority":
            g.vars[key] = value
            return
        # Ansible keeps the priority on the group (it orders sibling groups' vars) and not as a variable.
        try:
            g.priority = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"expected an integer, got {value!r}", file=where.file, line=where.line,
                              key=f"{group}.vars.{key}") from None

    def set_host_var(self, host: str, key: str, value: Any, where: Where) -> None:
        _check_var_name(key, where)
        self.hosts[host].vars[key] = value

    def add_child(self, parent: str, child: str, where: Where | None) -> None:
        p, c = self.groups[parent], self.groups[child]
        if child in p.children:
            return
        if child == parent or parent in self._descendants(child):
            file = where.file if where else None
            raise ConfigError(f"adding group '{child}' as a child of '{parent}' creates a loop",
                              file=file, line=where.line if where else None, key=child)
        p.children.append(child)
        c.parents.append(parent)

    def _descendants(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for child in self.groups[stack.pop()].children:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen

    def reconcile(self) -> None:
        """Ansible's closing rules, applied once after every source is read."""
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self.add_child("all", name, None)
        ungrouped = self.groups["ungrouped"]
        leaving: set[str] = set()
        for host in self.hosts.values():
            real = [g for g in host.groups if g not in ("all", "ungrouped")]
            if real and "ungrouped" in host.groups:
                host.groups.remove("ungrouped")
                leaving.add(host.name)
            elif not real and "ungrouped" not in host.groups:
                self.add_host(host.name, "ungrouped", None, host.where)
        if leaving:
            ungrouped.host_set -= leaving
            ungrouped.hosts = [h for h in ungrouped.hosts if h not in leaving]


def _check_var_name(key: Any, where: Where) -> None:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"variable name {key!r} is not valid: expected a non-empty string",
                          file=where.file, line=where.line)
