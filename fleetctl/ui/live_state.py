"""What the live view knows about a run as it goes, built from the engine's events: each host's place (queued for
its batch, at a step, in its health gate, finished), each batch's start, end and outcome counts, the ETA those
give, and what the operator was told (halting, Ctrl-C). No rendering and no clock of its own (`now` is passed in),
so the terminal frame (`ui/live_frame.py`) and the plain log (`ui/live.py`) show the same facts.

Batches are numbered from 1 here, as everywhere people read them; events carry the plan's index from 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetctl.rollout.events import (
    Baking,
    BatchFinished,
    BatchStarted,
    Event,
    GateProgress,
    Halting,
    HostFinished,
    HostOutcome,
    HostProgress,
    HostStepFinished,
    HostStepStarted,
    Interrupting,
    RunFinished,
    RunStarted,
)

FAILED = ("failed", "rolled_back", "unknown")
FAILED_IN_ROLLBACK = ("failed", "unknown")  # a rollback run's success is `rolled_back`
_IDLE_AFTER = ("lock", "unlock")  # steps after which a host waits (for its batch, or for nothing)


@dataclass
class HostRow:
    """One host as the live view shows it."""

    host: str
    batch: int  # from 1; 0 for a host outside the plan
    step: str | None = None  # the step it is at (or last finished, within its batch)
    detail: str = ""
    running: bool = False  # a step started and has not finished
    since: float | None = None  # when its current stretch of work began (None: waiting)
    step_since: float = 0.0
    done: int = 0  # transfer progress of the current step
    total: int = 0
    gate: GateProgress | None = None  # the newest word from its health gate, within the current step
    staged: bool = False  # its release was staged before its batch began
    outcome: HostOutcome | None = None


@dataclass
class BatchRun:
    """A batch that started: when, and how it ended."""

    number: int
    canary: bool
    hosts: tuple[str, ...]
    started: float
    finished: float | None = None
    passed: bool | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class RunProgress:
    """The state of one run (see the module docstring); `apply` every event in order, from one thread or under a
    lock."""

    def __init__(self) -> None:
        self.run: RunStarted | None = None
        self.started = 0.0
        self.rows: dict[str, HostRow] = {}
        self.batches: list[BatchRun] = []
        self.bake_until: float | None = None
        self.halting: str | None = None
        self.interrupted: Interrupting | None = None
        self.locked = 0  # hosts whose lock step succeeded
        self.ended = False

    # --- events ------------------------------------------------------------------------------------------------

    def apply(self, event: Event, now: float) -> None:
        if isinstance(event, RunStarted):
            self.run, self.started = event, now
            for number, hosts in enumerate(event.batches, start=1):
                for host in hosts:
                    self.rows[host] = HostRow(host, number)
        elif isinstance(event, BatchStarted):
            self.bake_until = None
            self.batches.append(BatchRun(event.number, event.canary, event.hosts, now))
            for host in event.hosts:
                row = self.row(host)
                if not row.running:
                    row.since = None  # waiting for a worker until its first step of this batch
        elif isinstance(event, HostStepStarted):
            row = self.row(event.host)
            if row.since is None:
                row.since = now
            row.step, row.detail, row.running, row.step_since = event.step, event.detail, True, now
            row.done = row.total = 0
            row.gate = None
        elif isinstance(event, HostStepFinished):
            self._step_finished(event)
        elif isinstance(event, HostProgress):
            row = self.row(event.host)
            row.done, row.total = event.done, event.total
        elif isinstance(event, GateProgress):
            self.row(event.host).gate = event
        elif isinstance(event, HostFinished):
            row = self.row(event.result.host)
            row.outcome, row.running = event.result, False
        elif isinstance(event, BatchFinished):
            batch = self.batch(event.number)
            if batch is not None:
                batch.finished, batch.passed, batch.counts = now, event.passed, dict(event.counts)
        elif isinstance(event, Baking):
            self.bake_until = now + event.seconds
        elif isinstance(event, Halting):
            self.halting = event.reason
        elif isinstance(event, Interrupting):
            self.interrupted = event
        elif isinstance(event, RunFinished):
            self.ended = True
            self.bake_until = None
            for host, outcome in event.outcomes.items():
                row = self.row(host)
                row.outcome, row.running = outcome, False

    def _step_finished(self, event: HostStepFinished) -> None:
        row = self.row(event.host)
        row.running = False
        if event.step == "lock" and not event.failed:
            self.locked += 1
        current = self.current
        if event.step in _IDLE_AFTER or current is None or row.batch > current.number:
            # Locked, or staged ahead of its batch: the host now waits; no timer runs for it.
            if event.step not in _IDLE_AFTER and not event.failed:
                row.staged = True
            row.since, row.step, row.detail, row.gate = None, None, "", None

    def row(self, host: str) -> HostRow:
        row = self.rows.get(host)
        if row is None:
            row = self.rows[host] = HostRow(host, 0)
        return row

    # --- questions -----------------------------------------------------------------------------------------------

    @property
    def current(self) -> BatchRun | None:
        return self.batches[-1] if self.batches else None

    def batch(self, number: int) -> BatchRun | None:
        return next((b for b in self.batches if b.number == number), None)

    @property
    def batch_count(self) -> int:
        return len(self.run.batches) if self.run else 0

    @property
    def host_count(self) -> int:
        return len(self.rows)

    @property
    def failed_outcomes(self) -> tuple[str, ...]:
        return FAILED_IN_ROLLBACK if self.run is not None and self.run.kind == "rollback" else FAILED

    def finished(self) -> dict[str, HostOutcome]:
        return {h: r.outcome for h, r in self.rows.items() if r.outcome is not None}

    def working(self) -> list[HostRow]:
        """Hosts at work now (a step running, or between steps within their batch), longest at it first."""
        rows = [r for r in self.rows.values() if r.outcome is None and (r.running or r.since is not None)]
        return sorted(rows, key=lambda r: (r.since if r.since is not None else r.step_since, r.host))

    def queued(self) -> list[HostRow]:
        """Hosts waiting: for their batch, or (in the current batch) for a worker; in batch order."""
        rows = [r for r in self.rows.values() if r.outcome is None and not r.running and r.since is None]
        return sorted(rows, key=lambda r: r.batch)

    def failures(self) -> list[HostOutcome]:
        failed = self.failed_outcomes
        return [r.outcome for r in self.rows.values() if r.outcome is not None and r.outcome.outcome in failed]

    def eta(self, now: float) -> float | None:
        """Seconds left, from the batches finished so far: the mean of finished rolling batches (a canary batch and
        its bake say little about the others), the current batch's share of it still to go, and one mean per batch
        not started. None before any batch finished or once the run stops early."""
        done = [b for b in self.batches if b.seconds is not None]
        if not done or self.halting or self.interrupted or self.ended or self.run is None:
            return None
        rolling = [b.seconds for b in done if not b.canary and b.seconds is not None]
        sample = rolling or [b.seconds for b in done if b.seconds is not None]
        mean = sum(sample) / len(sample)
        current = self.current
        assert current is not None
        left_now = 0.0 if current.finished is not None else max(0.0, mean - (now - current.started))
        return left_now + mean * (self.batch_count - len(self.batches))

    def batch_line(self, batch: BatchRun) -> str:
        """`batch 2/5: 10 deployed, 0 failed in 14.2 s` — the line a finished batch leaves in the scrollback."""
        kind = "canary batch" if batch.canary else "batch"
        took = f" in {batch.seconds:.1f} s" if batch.seconds is not None else ""
        return f"{kind} {batch.number}/{self.batch_count}: {self.counts_text(batch.counts)}{took}"

    def counts_text(self, counts: dict[str, int]) -> str:
        """`8 deployed, 2 failed (2 rolled back), 1 skipped`: the run's success word and failures always."""
        kind = self.run.kind if self.run else "deploy"
        success = {"deploy": "deployed", "rollback": "rolled_back", "remove": "removed",
                   "restart": "restarted"}.get(kind, "deployed")
        failed = self.failed_outcomes
        parts = [f"{counts.get(success, 0)} {success.replace('_', ' ')}",
                 f"{sum(n for k, n in counts.items() if k in failed)} failed"]
        kinds = [k for k in failed if counts.get(k) and k != "failed"]
        if kinds:
            parts[-1] += " (" + ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in kinds) + ")"
        parts += [f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n and k != success and k not in failed]
        return ", ".join(parts)
