"""Host tables that stay readable at 500 hosts: problem rows first, identical rows collapsed into one row with a
compact host range (`web[001:455]`), identical errors grouped ("480 hosts: authentication failed ...").

Used by the deploy/rollback summary (ui/report.py), `status` and `ping`. Pure: values in, groups out; each
renderer decides what a row shows and what makes two rows "identical" (its `key`).

Errors are grouped by their text with the host's own name and address taken out (`<host>`, `<address>`): an
authentication failure "at 10.0.0.7:5986" on one host and "at 10.0.0.8:5986" on another is one fault. Only
those two are normalised: any other difference (a user name, a port, a status code) keeps errors apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleetctl.ui.hostranges import compact_hosts

# Above this many rows a table collapses (unless --all); 20 rows plus titles and notes fit a 40-line screen.
MAX_ROWS = 20
# Widest host list in a collapsed row or a grouped error line (the rest is counted: "… (480 hosts)").
HOSTS_CELL_CHARS = 48

T = TypeVar("T")


@dataclass(frozen=True)
class RowOptions:
    """How a host table is cut down: `--all` (never collapse), `--failed-only` (problem hosts only), and each
    host's address (so errors that differ only by it are grouped)."""

    show_all: bool = False
    failed_only: bool = False
    addresses: Mapping[str, str] = field(default_factory=dict)
    max_rows: int = MAX_ROWS


@dataclass(frozen=True)
class RowGroup(Generic[T]):
    """One row as shown: a single host's item, or several identical ones collapsed."""

    items: tuple[T, ...]
    hosts: tuple[str, ...]
    problem: bool

    @property
    def collapsed(self) -> bool:
        return len(self.items) > 1

    def host_cell(self) -> str:
        return compact_hosts(self.hosts, max_chars=HOSTS_CELL_CHARS)


@dataclass(frozen=True)
class Arranged(Generic[T]):
    groups: tuple[RowGroup[T], ...]
    hidden_hosts: int  # hosts in rows left out beyond max_rows (say "--all lists them")
    filtered_out: int  # hosts left out by --failed-only
    collapsed: bool  # some rows stand for several hosts

    def note(self, total: int) -> str:
        """What the reader should know about rows not shown one per host (empty when every host has its row)."""
        parts = []
        if self.collapsed:
            parts.append(f"{total} hosts, alike ones in one row (--all: a row each)")
        if self.hidden_hosts:
            parts.append(f"{self.hidden_hosts} more not shown (--all lists them)")
        if self.filtered_out:
            parts.append(f"{self.filtered_out} without a problem left out (--failed-only)")
        return "; ".join(parts)


def arrange(
    items: Sequence[T],
    *,
    host: Callable[[T], str],
    key: Callable[[T], Hashable],
    problem: Callable[[T], int | None],
    options: RowOptions,
    failed_alike: Callable[[T], bool] = lambda _: False,
) -> Arranged[T]:
    """Order and collapse `items` (one per host). `problem` gives a problem's rank (lower first) or None;
    `key` is what two rows must share to be shown as one. Rows for which `failed_alike` is true (an error) are
    grouped by key at any size, unless --all: twenty hosts refusing the same password are one row."""
    ranked = [(problem(i), n, i) for n, i in enumerate(items)]
    chosen = [r for r in ranked if r[0] is not None] if options.failed_only else ranked
    filtered_out = len(ranked) - len(chosen)
    # Problems first by rank, then everything else in the given (inventory / plan) order.
    chosen.sort(key=lambda r: (r[0] is None, r[0] if r[0] is not None else 0, r[1]))
    if options.show_all:
        groups = tuple(RowGroup((i,), (host(i),), p is not None) for p, _, i in chosen)
        return Arranged(groups, 0, filtered_out, False)
    small = len(chosen) <= options.max_rows
    by_key: dict[Hashable, list[tuple[int | None, int, T]]] = {}
    for r in chosen:
        # Below the size only alike failures share a row; every other host keeps its own (its index is unique).
        alike = not small or failed_alike(r[2])
        by_key.setdefault((r[0] is not None, key(r[2])) if alike else ("own", r[1]), []).append(r)
    merged = [RowGroup(tuple(i for _, _, i in rs), tuple(host(i) for _, _, i in rs), rs[0][0] is not None)
              for rs in by_key.values()]
    shown, rest = merged[:options.max_rows], merged[options.max_rows:]
    if rest:  # the last visible slot says how many more: never silently cut
        shown = merged[:options.max_rows - 1]
        rest = merged[options.max_rows - 1:]
    return Arranged(tuple(shown), sum(len(g.hosts) for g in rest), filtered_out,
                    any(g.collapsed for g in shown))


def with_note(table: Table, note: str) -> RenderableType:
    """The table, then the note on its own line (a caption would wrap at the table's width)."""
    return Group(table, Text(note, style="dim")) if note else table


# --- errors ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorGroup:
    """Hosts that failed the same way; `text` is the one host's own error, or the shared text normalised."""

    text: str
    hosts: tuple[str, ...]

    def line(self) -> str:
        """`480 hosts: authentication failed for user 'x' (web[001:480])`, or `web007: <its error>`."""
        if len(self.hosts) == 1:
            return f"{self.hosts[0]}: {self.text}"
        return f"{len(self.hosts)} hosts: {self.text} ({compact_hosts(self.hosts, max_chars=HOSTS_CELL_CHARS)})"


def normalise_error(error: str, host: str, address: str | None = None) -> str:
    """`error` with this host's own address and name replaced by `<address>` and `<host>` (whole words only:
    host `web1` is not taken out of `web10`); a leading `HOST: ` is dropped."""
    text = error.removeprefix(f"{host}: ")
    for value, placeholder in ((address, "<address>"), (host, "<host>")):
        if value:
            text = re.sub(rf"(?<![\w.-]){re.escape(value)}(?![\w-])(?!\.\w)", placeholder, text)
    return text


def group_errors(errors: Mapping[str, str], addresses: Mapping[str, str] | None = None) -> list[ErrorGroup]:
    """Group `host -> error` by normalised text, largest group first (then first seen)."""
    by_text: dict[str, list[str]] = {}
    for h, error in errors.items():
        by_text.setdefault(normalise_error(error, h, (addresses or {}).get(h)), []).append(h)
    groups = [ErrorGroup(text if len(hs) > 1 else errors[hs[0]].removeprefix(f"{hs[0]}: "), tuple(hs))
              for text, hs in by_text.items()]
    return sorted(groups, key=lambda g: -len(g.hosts))


def error_key(error: str | None, host: str, options: RowOptions) -> str:
    """What a row's error contributes to its collapse key."""
    return normalise_error(error, host, options.addresses.get(host)) if error else ""
