"""Host patterns for `--limit`, with Ansible's syntax and meaning.

A pattern is terms joined by `,` or `:`: names of hosts or groups, globs (`web*`), regexes (`~web\\d+`),
subscripts (`web[0]`, `web[0:2]`), unions `a:b`, intersections `a:&b` and exclusions `a:!b`. As in Ansible,
unions apply first, then intersections, then exclusions, whatever their order. Unlike Ansible, which only warns,
a term that matches nothing is an error: a typo in `--limit` must never widen or empty a deploy silently.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from fleetctl.config.inventory_ranges import split_port
from fleetctl.errors import ConfigError


class HostIndex(Protocol):
    """What matching needs of an inventory (`config.inventory.Inventory` is one): hosts in inventory order, each
    group's members, and the files it came from (for error messages)."""

    @property
    def hosts(self) -> Mapping[str, object]: ...
    @property
    def groups(self) -> Mapping[str, Sequence[str]]: ...
    @property
    def sources(self) -> Sequence[object]: ...

# A `:` inside brackets belongs to a range or subscript, never to the pattern list.
_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_SUBSCRIPT = re.compile(r"^(.+)\[(?:(-?[0-9]+)|(-?[0-9]+)?:(-?[0-9]+)?)\]$")
_GLOB_CHARS = (".", "?", "*", "[")


def split_pattern(pattern: str) -> list[str]:
    """'web:&dc1:!web3' -> ['web', '&dc1', '!web3'] (commas or colons; a lone `host:port` stays whole)."""
    if "," in pattern:
        parts = pattern.split(",")
    elif ":" not in pattern or split_port(pattern)[1] is not None or pattern.startswith("["):
        parts = [pattern]
    else:
        parts = _TERM.findall(pattern)
    return [p.strip() for p in parts if p.strip()]


def select_hosts(inventory: HostIndex, pattern: str | None) -> list[str]:
    """Host names selected by `pattern` (None or '' = all), in inventory order; ConfigError if none."""
    if not inventory.hosts:
        raise ConfigError("the inventory has no hosts", file=_sources(inventory))
    if pattern is None or not pattern.strip():
        return list(inventory.hosts)
    terms = split_pattern(pattern)
    union = [t for t in terms if t[0] not in "&!"]
    intersect = [t[1:] for t in terms if t[0] == "&"]
    exclude = [t[1:] for t in terms if t[0] == "!"]
    selected: set[str] = set()
    for term in union or ["all"]:
        selected |= _match_term(inventory, term, pattern)
    for term in intersect:
        selected &= _match_term(inventory, term, pattern)
    for term in exclude:
        selected -= _match_term(inventory, term, pattern)
    if not selected:
        raise ConfigError(f"pattern '{pattern}' matches no host", file=_sources(inventory), key="--limit")
    return [name for name in inventory.hosts if name in selected]


def _sources(inventory: HostIndex) -> str | None:
    return ", ".join(str(s) for s in inventory.sources) or None


def _match_term(inventory: HostIndex, term: str, pattern: str) -> set[str]:
    if not term:
        raise ConfigError(f"pattern '{pattern}' has an empty term after '&' or '!'", key="--limit")
    subscript: tuple[int, int | None] | None = None
    expr = term
    if term[0] != "~":
        m = _SUBSCRIPT.match(term)
        if m:
            expr, index, start, end = m.groups()
            subscript = (int(index), None) if index is not None else (int(start or 0), int(end or -1))
    hosts = _enumerate(inventory, expr, pattern)
    if subscript is not None:
        hosts = _apply_subscript(hosts, subscript, term)
    if not hosts:
        hint = ""
        if not any(c in expr for c in _GLOB_CHARS) and not expr.startswith("~"):
            from fleetctl.config.suggest import did_you_mean

            hint = did_you_mean(expr, [*inventory.hosts, *inventory.groups])
        raise ConfigError(f"'{term}' in pattern '{pattern}' matches no host or group{hint}",
                          file=_sources(inventory), key="--limit")
    return set(hosts)


def _compile(expr: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(expr[1:]) if expr[0] == "~" else re.compile(fnmatch.translate(expr))
    except re.error as err:
        raise ConfigError(f"'{expr}' in pattern '{pattern}' is not a valid regular expression: {err}",
                          key="--limit") from None


def _enumerate(inventory: HostIndex, expr: str, pattern: str) -> list[str]:
    # Ansible's rule: a term names groups first; it matches host names when no group matched, or when it is
    # a regex or glob (which may well mean both).
    if expr in inventory.groups and expr[0] != "~" and not any(c in expr for c in _GLOB_CHARS):
        return _in_inventory_order(inventory, set(inventory.groups[expr]))
    if expr in inventory.hosts and expr[0] != "~" and not any(c in expr for c in _GLOB_CHARS):
        return [expr]
    regex = _compile(expr, pattern)
    found: set[str] = set()
    matched_group = False
    for group, members in inventory.groups.items():
        if regex.match(group):
            matched_group = True
            found.update(members)
    if not matched_group or expr[0] == "~" or any(c in expr for c in _GLOB_CHARS):
        found.update(h for h in inventory.hosts if regex.match(h))
    return _in_inventory_order(inventory, found)


def _in_inventory_order(inventory: HostIndex, names: set[str]) -> list[str]:
    if len(names) == len(inventory.hosts):
        return list(inventory.hosts)
    return [h for h in inventory.hosts if h in names]


def _apply_subscript(hosts: list[str], subscript: tuple[int, int | None], term: str) -> list[str]:
    start, end = subscript
    if not hosts:
        return hosts
    if end is None:
        try:
            return [hosts[start]]
        except IndexError:
            raise ConfigError(f"'{term}': index {start} is out of range ({len(hosts)} hosts)",
                              key="--limit") from None
    if end == -1:
        end = len(hosts) - 1
    # Ansible's subscripts include the end: web[0:2] is three hosts.
    return hosts[start:end + 1]
