"""The end of a rollout for machines and people: the `--json` document subscriber and the summary table.

Wiring (deploy/rollback): `report = JsonReport(); report.subscribe(bus)`; after the engine returns or raises,
`print_json(report.document(exit_code=code))` when `--json` was given. `summary_table(outcomes, title, options)`
renders the same outcomes for people, cut down for a big fleet (problems first, identical rows collapsed,
`--all`, `--failed-only`), and `summary_line` is the one line that ends the run; the live view prints both at
`RunFinished`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from fleetctl.config.redaction import redact, redact_value
from fleetctl.rollout.events import (
    Event,
    EventBus,
    HostFinished,
    HostOutcome,
    Notice,
    RunFinished,
    RunStarted,
)
from fleetctl.ui.console import safe
from fleetctl.ui.host_rows import RowOptions, arrange, error_key, with_note

OUTCOME_STYLE = {
    "deployed": "green",
    "removed": "green",
    "restarted": "green",
    "skipped": "dim",
    "rolled_back": "yellow",
    "failed": "bold red",
    "unknown": "bold red",
    "not_started": "magenta",
}


class JsonReport:
    """Collects a rollout's outcomes into the `--json` document:
    `{"deploy_id", "exit_code", "message", "notes", "hosts": {HOST: {"outcome", "release", "error"}}}`.

    Every planned host appears: one the engine never finished is `not_started`. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.run_id: str | None = None
        self.exit_code: int | None = None
        self._planned: list[str] = []
        self._outcomes: dict[str, HostOutcome] = {}
        self.message: str | None = None
        self._notes: list[str] = []
        self._buses: list[EventBus] = []  # flushed before reading: events still being delivered count

    def subscribe(self, bus: EventBus) -> None:
        self._buses.append(bus)
        bus.subscribe(self.record)

    def record(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self.run_id = event.run_id
                self._planned = [h for batch in event.batches for h in batch]
            elif isinstance(event, HostFinished):
                self._outcomes[event.result.host] = event.result
            elif isinstance(event, Notice):
                self._notes.append(event.message)
            elif isinstance(event, RunFinished):
                self.run_id = self.run_id or event.run_id
                self.exit_code = event.exit_code
                self.message = event.message or None
                self._outcomes.update(event.outcomes)

    def outcomes(self) -> dict[str, HostOutcome]:
        """Every host's outcome so far, planned hosts first (in plan order)."""
        for bus in self._buses:
            bus.flush()
        with self._lock:
            names = self._planned + [h for h in self._outcomes if h not in set(self._planned)]
            return {h: self._outcomes.get(h) or HostOutcome(host=h, outcome="not_started") for h in names}

    def document(self, exit_code: int | None = None) -> dict[str, Any]:
        """The final document; `exit_code` overrides the run's (for a run that ended by an exception)."""
        outcomes = self.outcomes()
        code = exit_code if exit_code is not None else self.exit_code
        return {
            "deploy_id": redact(self.run_id) if self.run_id else None,
            "exit_code": code,
            "message": redact(self.message) if self.message else None,  # the run's one-line summary
            "notes": [redact(n) for n in self._notes],  # remarks about the run (e.g. a lock left behind)
            "hosts": {redact(h): redact_value(o.to_json()) for h, o in outcomes.items()},
        }


SUCCESS_OUTCOMES = ("deployed", "removed", "restarted", "skipped")
# Problems first, in this order; a rollback's own success (`rolled_back`) is not one of them there.
_PROBLEM_RANK = {"failed": 0, "unknown": 0, "rolled_back": 1, "not_started": 2}


@dataclass(frozen=True)
class SummaryOptions:
    """How the end-of-run table is cut down (`--all`, `--failed-only`, addresses for grouping errors) and which
    outcomes are a success for this kind of run."""

    rows: RowOptions = field(default_factory=RowOptions)
    kind: str = "deploy"

    def problem_rank(self, outcome: str) -> int | None:
        if self.kind == "rollback" and outcome == "rolled_back":
            return None
        return _PROBLEM_RANK.get(outcome, None if outcome in SUCCESS_OUTCOMES else 0)


def summary_table(outcomes: Mapping[str, HostOutcome], title: str = "Summary",
                  options: SummaryOptions | None = None) -> RenderableType:
    """One row per host (outcome, release, total time, the reason for a failure), failed and rolled-back hosts
    first. Above `MAX_ROWS` hosts (unless --all) identical rows collapse into one: `web[001:455]  455 deployed
    2.0.0`, and hosts that failed the same way share a row with the error once."""
    options = options or SummaryOptions()
    rows = options.rows
    # (host, outcome) pairs: the mapping's key names the host (as every caller and the journal do).
    arranged = arrange(list(outcomes.items()), host=lambda r: r[0], options=rows,
                       key=lambda r: (r[1].outcome, _version(r[1].release), error_key(r[1].error, r[0], rows)),
                       problem=lambda r: options.problem_rank(r[1].outcome),
                       failed_alike=lambda r: bool(r[1].error) and options.problem_rank(r[1].outcome) is not None)
    table = Table(title=title, title_justify="left")
    table.add_column("host")
    table.add_column("outcome")
    table.add_column("release")
    table.add_column("time", justify="right")
    table.add_column("error", overflow="fold")
    for group in arranged.groups:
        name, first = group.items[0]
        style = OUTCOME_STYLE.get(first.outcome, "")
        # Text cells, not markup: a host name or error may contain brackets that rich would read as styles.
        if not group.collapsed:
            total = sum(first.timings.values())
            table.add_row(Text(safe(name)), Text(first.outcome, style=style), Text(safe(first.release or "-")),
                          f"{total:.1f}s" if first.timings else "-", Text(safe(first.error or "")))
            continue
        totals = [sum(o.timings.values()) for _, o in group.items if o.timings]
        took = "-" if not totals else (f"{min(totals):.1f}s" if max(totals) - min(totals) < 0.05 else
                                       f"{min(totals):.1f}–{max(totals):.1f}s")
        table.add_row(Text(safe(group.host_cell())), Text(f"{len(group.items)} {first.outcome}", style=style),
                      Text(safe(_version(first.release) or "-")), took,
                      Text(safe(error_key(first.error, name, rows))))
    if arranged.hidden_hosts:
        table.add_row(Text(f"… {arranged.hidden_hosts} more host(s)", style="dim"), "", "", "", "")
    return with_note(table, arranged.note(len(outcomes)))


def summary_line(exit_code: int, message: str | None, outcomes: Mapping[str, HostOutcome]) -> Text:
    """The one line that ends a run: `exit code 1: halted: ... (2 failed, 4 not started)`. The engine's message
    already carries the counts; they are added only when it says nothing."""
    text = Text(f"exit code {exit_code}", style="green" if exit_code == 0 else "bold red")
    text.append(f": {safe(message or counts_line(outcome_counts(outcomes)) or 'no hosts')}")
    return text


def _version(release: str | None) -> str | None:
    """A release id's version (`2.0.0-1a2b3c4d` -> `2.0.0`): ids also hash each host's rendered files, so hosts
    on one version have different ids and a collapsed row shows what they share."""
    if not release:
        return None
    return _RELEASE_HASH.sub("", release)


_RELEASE_HASH = re.compile(r"-[0-9a-f]{8}$")


def outcome_counts(outcomes: Mapping[str, HostOutcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes.values():
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    return counts


def counts_line(counts: Mapping[str, int]) -> str:
    """`3 deployed, 1 failed` in a fixed order."""
    order = list(OUTCOME_STYLE) + sorted(k for k in counts if k not in OUTCOME_STYLE)
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
