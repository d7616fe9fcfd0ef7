"""Where output goes: rich consoles for people, one JSON document for machines; both redacted.

Every string shown to people goes through `safe`: secrets masked, control characters escaped (`printable`).

On a terminal, tables are rich tables fitted to its width. Anywhere else (a pipe, a file, a CI log) output is
plain, unwrapped lines: a table becomes its title, a header line and one line per row, columns aligned with two
spaces and an empty cell shown as `-` (so `grep`, `awk` and `sort` work on it), and no line is folded or cut at
80 columns whatever its length. `stdout()` and `stderr()` are the one place consoles are made.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleetctl.config.connection import ConnectionSettings, insecure_hosts_warning
from fleetctl.config.control_chars import printable
from fleetctl.config.redaction import redact, redact_value


class FleetConsole(Console):
    """A rich console that prints plain, unwrapped lines when it is not a terminal (see the module docstring)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self.is_terminal or not objects:
            super().print(*objects, **kwargs)
            return
        kwargs["soft_wrap"] = True  # never fold a long line at the (unknown) width of a pipe
        super().print(*(plain_form(o) for o in objects), **kwargs)


def stdout() -> Console:
    return FleetConsole(highlight=False, soft_wrap=False)


def stderr() -> Console:
    return FleetConsole(stderr=True, highlight=False)


def plain_form(renderable: Any) -> Any:
    """What a non-terminal console prints instead of `renderable`: tables as aligned plain lines (also inside a
    Group); anything else unchanged."""
    if isinstance(renderable, Table):
        return Text("\n".join(table_lines(renderable)))
    if isinstance(renderable, Group):
        return Group(*(plain_form(r) for r in renderable.renderables))
    return renderable


def table_lines(table: Table) -> list[str]:
    """A table as plain lines: title, header, rows (a multi-line cell joined with spaces), caption."""
    columns = table.columns
    rows = [[_cell_text(c) for c in column.cells] for column in columns]
    lines = []
    if table.title:
        lines.append(_cell_text(table.title))
    grid = [[_cell_text(c.header) for c in columns]] if table.show_header else []
    grid += [[rows[c][r] or "-" for c in range(len(columns))] for r in range(table.row_count)]
    widths = [max((len(line[c]) for line in grid), default=0) for c in range(len(columns))]
    for line in grid:
        cells = [line[c].rjust(widths[c]) if columns[c].justify == "right" else line[c].ljust(widths[c])
                 for c in range(len(columns))]
        lines.append("  ".join(cells).rstrip())
    if table.caption:
        lines.append(_cell_text(table.caption))
    return lines


def _cell_text(cell: RenderableType | None) -> str:
    if cell is None:
        return ""
    if isinstance(cell, Text):
        text = cell.plain
    elif isinstance(cell, str):
        text = Text.from_markup(cell).plain  # a table reads str cells as markup: show what it would show
    else:
        capture = Console(width=10_000, color_system=None, soft_wrap=True)
        with capture.capture() as out:
            capture.print(cell)
        text = out.get()
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def safe(text: Any) -> str:
    """A value as text, secrets masked and control characters escaped; use for every string built from user
    or node data."""
    return printable(redact("" if text is None else str(text)))


def print_json(document: Any) -> None:
    """The `--json` output: exactly one document on stdout, secrets masked."""
    sys.stdout.write(json.dumps(redact_value(document), indent=2, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    from rich.markup import escape

    stderr().print(f"[yellow]warning:[/] {escape(safe(message))}")


def warn_insecure(connections: Iterable[ConnectionSettings]) -> None:
    """The one warning for hosts whose certificate validation is off (docs/transport.md), printed by every command that
    connects to nodes (ping, status, logs, deploy and its --dry-run, rollback, remove) before it connects."""
    warning = insecure_hosts_warning(connections)
    if warning:
        warn(warning)
