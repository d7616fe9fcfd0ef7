"""The live view of a rollout: a rich display on a terminal, a plain one-line-per-event log otherwise.

Wiring (deploy/rollback): `view = LiveView(stdout()); view.subscribe(bus)`, run the engine, and `view.close()`
in a `finally` (it stops the display if the engine raised before `RunFinished`). With `--json`, give it a
stderr console or leave it out, so stdout holds only the JSON document.

On a terminal it shows overall progress, the current batch, one line per in-flight host with its step and
elapsed time, failures with their reason, and at `RunFinished` a summary table. When the console is not a
terminal (CI logs, pipes) it prints one uncoloured line per event instead. Events arrive from the engine's
worker threads; all state is guarded by one lock, and the display's refresh thread reads it under that lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fleetctl.rollout.events import (
    Baking,
    BatchFinished,
    BatchStarted,
    Event,
    EventBus,
    Halting,
    HostFinished,
    HostOutcome,
    HostProgress,
    HostStepStarted,
    Notice,
    RunFinished,
    RunStarted,
)
from fleetctl.ui.console import safe
from fleetctl.ui.report import counts_line, outcome_counts, summary_table
from fleetctl.ui.verbose import show_above

# Transfer progress arrives per chunk; the plain log shows it only at these fractions so CI logs stay short.
_PLAIN_PROGRESS_MARKS = (0.25, 0.5, 0.75)
_FAILED = ("failed", "rolled_back", "unknown")
_FAILED_IN_ROLLBACK = ("failed", "unknown")  # a rollback run's success is `rolled_back`


@dataclass
class _InFlight:
    step: str
    detail: str
    since: float  # when the host's first step started
    done: int = 0
    total: int = 0


class LiveView:
    """Event subscriber that shows a rollout as it happens (see the module docstring for wiring)."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        plain: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        refresh_per_second: float = 8,
    ) -> None:
        self.console = console or Console(highlight=False)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self._clock = clock
        self._wall = wall_clock
        self._refresh = refresh_per_second
        # Re-entrant: rich's Live asks for its first frame from its constructor, which runs under the lock.
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._run: RunStarted | None = None
        self._started = 0.0
        self._batch: BatchStarted | None = None
        self._in_flight: dict[str, _InFlight] = {}
        self._finished: dict[str, HostOutcome] = {}
        self._bake_until: float | None = None
        self._halting: str | None = None
        self._progress_marks: dict[tuple[str, str], int] = {}
        self._closed = False
        self._buses: list[EventBus] = []  # flushed by close(): what was emitted is shown before the display stops

    def subscribe(self, bus: EventBus) -> None:
        self._buses.append(bus)
        bus.subscribe(self.record)

    # --- events ------------------------------------------------------------------------------------------------

    def record(self, event: Event) -> None:
        start: Live | None = None
        stop: Live | None = None
        with self._lock:
            line = self._apply(event)
            if self.plain:
                if line is not None:
                    self._print_plain(line)
                if isinstance(event, RunFinished):
                    self._print_summary(event)
                return
            if isinstance(event, RunStarted) and self._live is None and not self._closed:
                self._live = start = Live(
                    console=self.console, get_renderable=self._render_with_lock, transient=True,
                    refresh_per_second=self._refresh, redirect_stdout=False, redirect_stderr=False,
                )
            elif isinstance(event, RunFinished):
                stop, self._live = self._live, None
        # Starting and stopping the display happen outside the lock: its refresh thread takes the lock to
        # render, and stop() waits for that thread.
        if start is not None:
            start.start()
            show_above(self.console)  # -v lines print above the display, not through it (ui/verbose.py)
        if isinstance(event, RunFinished):
            if stop is not None:
                stop.stop()
                show_above(None)
            with self._lock:
                self._print_summary(event)

    def close(self) -> None:
        """Stop the display (safe to call twice); what was known so far stays on screen."""
        for bus in self._buses:
            bus.flush()
        with self._lock:
            live, self._live = self._live, None
            self._closed = True
            snapshot = self._render() if live is not None else None
        if live is not None:
            live.stop()
            show_above(None)
            if snapshot is not None:
                self.console.print(snapshot)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _apply(self, event: Event) -> str | None:
        """Update the state for `event`; return the plain-log line for it (None: nothing worth a line)."""
        now = self._clock()
        if isinstance(event, RunStarted):
            self._run, self._started = event, now
            hosts = sum(len(b) for b in event.batches)
            what = event.version or event.release or "?"
            return (f"{event.kind} {event.playbook} ({event.service}) {what}, {event.strategy}, {hosts} hosts "
                    f"in {len(event.batches)} batches, run {event.run_id} by {event.user}")
        if isinstance(event, BatchStarted):
            self._batch, self._bake_until = event, None
            kind = "canary batch" if event.canary else "batch"
            return f"{kind} {event.index}/{self._batch_count()}: {len(event.hosts)} hosts: {', '.join(event.hosts)}"
        if isinstance(event, HostStepStarted):
            flight = self._in_flight.get(event.host)
            if flight is None:
                self._in_flight[event.host] = _InFlight(event.step, event.detail, now)
            else:
                flight.step, flight.detail, flight.done, flight.total = event.step, event.detail, 0, 0
            return f"{event.host}: {event.step}" + (f" {event.detail}" if event.detail else "")
        if isinstance(event, HostProgress):
            flight = self._in_flight.setdefault(event.host, _InFlight(event.step, "", now))
            flight.done, flight.total = event.done, event.total
            return self._progress_line(event)
        if isinstance(event, HostFinished):
            result = event.result
            flight = self._in_flight.pop(result.host, None)
            self._finished[result.host] = result
            took = f" in {_duration(now - flight.since)}" if flight else ""
            if result.outcome in self._failed_outcomes():
                return f"{result.host}: {result.outcome.upper()}{took}: {result.error or 'no reason given'}"
            release = f" release {result.release}" if result.release else ""
            return f"{result.host}: {result.outcome}{release}{took}"
        if isinstance(event, BatchFinished):
            if event.passed:
                return f"batch {event.index} passed"
            return f"batch {event.index} FAILED" + (f": {', '.join(event.failed)}" if event.failed else "")
        if isinstance(event, Baking):
            self._bake_until = now + event.seconds
            return f"baking for {_duration(event.seconds)} before the next batch"
        if isinstance(event, Notice):
            return f"note: {event.message}"
        if isinstance(event, Halting):
            self._halting = event.reason
            return f"HALTING: {event.reason}"
        if isinstance(event, RunFinished):
            self._finished.update(event.outcomes)
            self._in_flight.clear()
            self._bake_until = None
            # The engine's message usually summarises the outcomes already; counts only when it says nothing.
            summary = event.message or counts_line(outcome_counts(event.outcomes))
            return f"finished in {_duration(now - self._started)} with exit code {event.exit_code}: {summary}"
        return None

    def _failed_outcomes(self) -> tuple[str, ...]:
        return _FAILED_IN_ROLLBACK if self._run is not None and self._run.kind == "rollback" else _FAILED

    def _progress_line(self, event: HostProgress) -> str | None:
        if event.total <= 0:
            return None
        key = (event.host, event.step)
        reached = sum(1 for mark in _PLAIN_PROGRESS_MARKS if event.done >= mark * event.total)
        if event.done < event.total and reached > self._progress_marks.get(key, 0):
            self._progress_marks[key] = reached
            return f"{event.host}: {event.step} {100 * event.done // event.total}%"
        return None

    # --- output --------------------------------------------------------------------------------------------------

    def _print_plain(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self._wall()))
        # markup/highlight off and no styles: CI logs get the text exactly, secrets masked.
        self.console.print(Text(f"{stamp} {safe(line)}"), markup=False, highlight=False, soft_wrap=True)

    def _print_summary(self, event: RunFinished) -> None:
        outcomes = self._ordered_outcomes(event.outcomes)
        if outcomes:
            self.console.print(summary_table(outcomes, title=f"Run {safe(event.run_id)}"))
        if not self.plain:
            style = "green" if event.exit_code == 0 else "bold red"
            text = Text(f"exit code {event.exit_code}", style=style)
            text.append(f"  {safe(counts_line(outcome_counts(outcomes)))}")
            if event.message:
                text.append(f"  {safe(event.message)}")
            self.console.print(text)

    def _ordered_outcomes(self, given: dict[str, HostOutcome]) -> dict[str, HostOutcome]:
        planned = [h for b in self._run.batches for h in b] if self._run else []
        names = planned + [h for h in {**self._finished, **given} if h not in set(planned)]
        merged: dict[str, HostOutcome] = {}
        for name in names:
            final, reported = given.get(name), self._finished.get(name)
            if final is not None and reported is not None and not final.timings:
                final = replace(final, timings=reported.timings)  # the engine's summary may omit timings
            merged[name] = final or reported or HostOutcome(host=name, outcome="not_started")
        return merged

    def _render_with_lock(self) -> RenderableType:
        with self._lock:
            return self._render()

    def _render(self) -> RenderableType:
        """The live frame; called with the lock held."""
        now = self._clock()
        parts: list[RenderableType] = []
        run = self._run
        total = sum(len(b) for b in run.batches) if run else 0
        if run is not None:
            head = Text(f"{run.kind} ", style="bold")
            head.append(safe(f"{run.playbook} {run.version or run.release or ''}").strip(), style="bold cyan")
            head.append(safe(f"  {run.strategy}  run {run.run_id}  by {run.user}"), style="dim")
            parts.append(head)
        done = len(self._finished)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(total, 1), completed=done, width=40),
            Text(f"{done}/{total} hosts"),
            Text(safe(counts_line(outcome_counts(self._finished)))),
            Text(f"elapsed {_duration(now - self._started)}", style="dim"),
        )
        parts.append(bar)
        if self._batch is not None:
            kind = "canary batch" if self._batch.canary else "batch"
            line = Text(f"{kind} {self._batch.index}/{self._batch_count()}: {len(self._batch.hosts)} hosts",
                        style="yellow" if self._batch.canary else "")
            if self._bake_until is not None and self._bake_until > now:
                line.append(f"  baking, {_duration(self._bake_until - now)} left", style="cyan")
            parts.append(line)
        if self._halting:
            parts.append(Text(f"halting: {safe(self._halting)}", style="bold red"))
        if self._in_flight:
            parts.append(self._in_flight_table(now))
        failures = [o for o in self._finished.values() if o.outcome in self._failed_outcomes()]
        for failure in failures[-10:]:
            line = Text(f"✗ {safe(failure.host)} {failure.outcome}: ", style="red")
            line.append(safe(failure.error or "no reason given"))
            parts.append(line)
        if len(failures) > 10:
            parts.append(Text(f"… and {len(failures) - 10} earlier failures", style="red"))
        return Group(*parts)

    def _in_flight_table(self, now: float) -> Table:
        table = Table(box=None, padding=(0, 2), show_header=True, header_style="dim")
        table.add_column("host")
        table.add_column("step")
        table.add_column("detail", overflow="ellipsis", no_wrap=True)
        table.add_column("elapsed", justify="right")
        # Keep the frame within the screen even with many forks; the rest is summarised in one line.
        room = max(5, self.console.height - 12)
        hosts = sorted(self._in_flight.items(), key=lambda item: item[1].since)
        for host, flight in hosts[:room]:
            detail = safe(flight.detail)
            if flight.total > 0:
                detail = f"{detail} {100 * flight.done // flight.total}%".strip()
            table.add_row(Text(safe(host)), Text(flight.step, style="cyan"), Text(detail),
                          _duration(now - flight.since))
        if len(hosts) > room:
            table.add_row(Text(f"… {len(hosts) - room} more", style="dim"), "", "", "")
        return table

    def _batch_count(self) -> int:
        return len(self._run.batches) if self._run else 0


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
