"""The end of a rollout for machines and people: the `--json` document subscriber and the summary table.

Wiring (deploy/rollback): `report = JsonReport(); report.subscribe(bus)`; after the engine returns or raises,
`print_json(report.document(exit_code=code))` when `--json` was given. `summary_table(outcomes)` renders the
same outcomes for people (the live view prints it at `RunFinished`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

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


def summary_table(outcomes: Mapping[str, HostOutcome], title: str = "Summary") -> Table:
    """One row per host: outcome, release, total time and the reason for a failure."""
    table = Table(title=title, title_justify="left")
    table.add_column("host")
    table.add_column("outcome")
    table.add_column("release")
    table.add_column("time", justify="right")
    table.add_column("error", overflow="fold")
    for name, o in outcomes.items():
        style = OUTCOME_STYLE.get(o.outcome, "")
        total = sum(o.timings.values())
        # Text cells, not markup: a host name or error may contain brackets that rich would read as styles.
        table.add_row(
            Text(safe(name)),
            Text(o.outcome, style=style),
            Text(safe(o.release or "-")),
            f"{total:.1f}s" if o.timings else "-",
            Text(safe(o.error or "")),
        )
    return table


def outcome_counts(outcomes: Mapping[str, HostOutcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes.values():
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
    return counts


def counts_line(counts: Mapping[str, int]) -> str:
    """`3 deployed, 1 failed` in a fixed order."""
    order = list(OUTCOME_STYLE) + sorted(k for k in counts if k not in OUTCOME_STYLE)
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
