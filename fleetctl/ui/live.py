"""The live view of a rollout: a rich display on a terminal, a plain one-line-per-event log otherwise.

Wiring (deploy/rollback): `view = LiveView(stdout()); view.subscribe(bus)`, run the engine, and `view.close()`
in a `finally` (it stops the display if the engine raised before `RunFinished`). With `--json`, give it a
stderr console or leave it out, so stdout holds only the JSON document.

On a terminal it shows the frame of `ui/live_frame.py` (progress and ETA, the current batch, each host at work
with its step, its health gate's try and answer, queued hosts with their batch, failures), and prints above it
the lines that should stay in the scrollback: one per finished batch, what Ctrl-C does, halting, notes. At
`RunFinished` a summary table. When the console is not a terminal (CI logs, pipes) it prints the same facts as
uncoloured lines, one per event (gate tries only when the answer changes or every `plain_every` seconds). Events
arrive from the engine's worker threads; the state (`ui/live_state.py`) is guarded by one lock, and the
display's refresh thread reads it under that lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Self

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from fleetctl.rollout.events import (
    Baking,
    BatchFinished,
    BatchStarted,
    Event,
    EventBus,
    GateProgress,
    Halting,
    HostFinished,
    HostOutcome,
    HostProgress,
    HostStepStarted,
    Interrupting,
    Notice,
    RunFinished,
    RunStarted,
)
from fleetctl.ui.console import safe
from fleetctl.ui.live_frame import batch_range, duration, gate_text, render_frame
from fleetctl.ui.live_state import RunProgress
from fleetctl.ui.report import SummaryOptions, counts_line, outcome_counts, summary_line, summary_table
from fleetctl.ui.verbose import show_above

# Transfer progress arrives per chunk; the plain log shows it only at these fractions so CI logs stay short.
_PLAIN_PROGRESS_MARKS = (0.25, 0.5, 0.75)
_PLAIN_HOSTS = 20  # host names listed in a plain batch line before "and N more"


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
        plain_every: float = 5.0,
        summary: SummaryOptions | None = None,
    ) -> None:
        self.console = console or Console(highlight=False)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self._clock = clock
        self._wall = wall_clock
        self._refresh = refresh_per_second
        self._plain_every = plain_every
        self._summary = summary  # how the end-of-run table is cut down (--all, --failed-only): ui/report.py
        # Re-entrant: rich's Live asks for its first frame from its constructor, which runs under the lock.
        self._lock = threading.RLock()
        self._live: Live | None = None
        self._progress = RunProgress()
        self._progress_marks: dict[tuple[str, str], int] = {}
        self._gate_told: dict[str, tuple[str, str, float]] = {}  # host -> (phase, answer, when) last in the log
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
            now = self._clock()
            self._progress.apply(event, now)
            line = self._log_line(event, now)
            if self.plain:
                if line is not None:
                    self._print_plain(line)
                if isinstance(event, RunFinished):
                    self._print_summary(event)
                return
            above = self._scrollback(event, line)
            if isinstance(event, RunStarted) and self._live is None and not self._closed:
                self._live = start = Live(
                    console=self.console, get_renderable=self._render_with_lock, transient=True,
                    refresh_per_second=self._refresh, redirect_stdout=False, redirect_stderr=False,
                )
            elif isinstance(event, RunFinished):
                stop, self._live = self._live, None
        # Starting and stopping the display, and printing above it, happen outside the lock: its refresh thread
        # takes the lock to render, and stop() waits for that thread.
        if start is not None:
            start.start()
            show_above(self.console)  # -v lines print above the display, not through it (ui/verbose.py)
        if above is not None:
            # Above the live region, which rich redraws below it: the line stays in the scrollback.
            self.console.print(above, highlight=False)
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

    def _scrollback(self, event: Event, line: str | None) -> Text | None:
        """On a terminal, the lines that stay once the frame is gone: finished batches, Ctrl-C, halting, notes."""
        if line is None:
            return None
        if isinstance(event, BatchFinished):
            return Text(safe(line), style="" if event.passed else "bold red")
        if isinstance(event, Interrupting):
            return Text(safe(line), style="bold magenta")
        if isinstance(event, Halting):
            return Text(safe(line), style="bold red")
        if isinstance(event, Notice):
            return Text(safe(line), style="dim")
        return None

    def _log_line(self, event: Event, now: float) -> str | None:
        """The plain-log line for `event` (None: nothing worth a line); on a terminal some of them are printed
        above the frame (`_scrollback`)."""
        progress = self._progress
        if isinstance(event, RunStarted):
            what = event.version or event.release or "?"
            return (f"{event.kind} {event.playbook} ({event.service}) {what}, {event.strategy}, "
                    f"{progress.host_count} hosts in {len(event.batches)} batches, run {event.run_id} by "
                    f"{event.user}")
        if isinstance(event, BatchStarted):
            kind = "canary batch" if event.canary else "batch"
            names = ", ".join(event.hosts[:_PLAIN_HOSTS])
            if len(event.hosts) > _PLAIN_HOSTS:
                names += f" and {len(event.hosts) - _PLAIN_HOSTS} more"
            later = range(event.number + 1, progress.batch_count + 1)
            queued = sum(len(progress.run.batches[n - 1]) for n in later) if progress.run else 0
            rest = f"; {queued} queued in {batch_range(list(later))}" if queued else ""
            return f"{kind} {event.number}/{progress.batch_count}: {len(event.hosts)} hosts: {names}{rest}"
        if isinstance(event, HostStepStarted):
            return f"{event.host}: {event.step}" + (f" {event.detail}" if event.detail else "")
        if isinstance(event, HostProgress):
            return self._progress_line(event)
        if isinstance(event, GateProgress):
            return self._gate_line(event, now)
        if isinstance(event, HostFinished):
            result = event.result
            took = f" in {duration(sum(result.timings.values()))}" if result.timings else ""
            if result.outcome in progress.failed_outcomes:
                return f"{result.host}: {result.outcome.upper()}{took}: {result.error or 'no reason given'}"
            release = f" release {result.release}" if result.release else ""
            return f"{result.host}: {result.outcome}{release}{took}"
        if isinstance(event, BatchFinished):
            batch = progress.batch(event.number)
            if batch is None:
                return None
            line = progress.batch_line(batch)
            if not event.passed:
                line += " — FAILED" + (f": {', '.join(event.failed[:_PLAIN_HOSTS])}" if event.failed else "")
            eta = progress.eta(now)
            if eta is not None and len(progress.batches) < progress.batch_count:
                line += f"; ETA {duration(eta)}"
            return line
        if isinstance(event, Baking):
            return f"baking for {duration(event.seconds)} before the next batch"
        if isinstance(event, Notice):
            return f"note: {event.message}"
        if isinstance(event, Halting):
            return f"HALTING: {event.reason}"
        if isinstance(event, Interrupting):
            return event.message
        if isinstance(event, RunFinished):
            # The engine's message usually summarises the outcomes already; counts only when it says nothing.
            summary = event.message or counts_line(outcome_counts(event.outcomes))
            return f"finished in {duration(now - progress.started)} with exit code {event.exit_code}: {summary}"
        return None

    def _progress_line(self, event: HostProgress) -> str | None:
        if event.total <= 0:
            return None
        key = (event.host, event.step)
        reached = sum(1 for mark in _PLAIN_PROGRESS_MARKS if event.done >= mark * event.total)
        if event.done < event.total and reached > self._progress_marks.get(key, 0):
            self._progress_marks[key] = reached
            return f"{event.host}: {event.step} {100 * event.done // event.total}%"
        return None

    def _gate_line(self, event: GateProgress, now: float) -> str | None:
        """A gate's try in the plain log: when its answer (or the phase) changes, else every `plain_every` s."""
        told = self._gate_told.get(event.host)
        if told is not None and told[:2] == (event.phase, event.answer) and now - told[2] < self._plain_every:
            return None
        self._gate_told[event.host] = (event.phase, event.answer, now)
        return f"{event.host}: health {gate_text(event)}"

    # --- output --------------------------------------------------------------------------------------------------

    def _print_plain(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self._wall()))
        # markup/highlight off and no styles: CI logs get the text exactly, secrets masked.
        self.console.print(Text(f"{stamp} {safe(line)}"), markup=False, highlight=False, soft_wrap=True)

    def _print_summary(self, event: RunFinished) -> None:
        outcomes = self._ordered_outcomes(event.outcomes)
        if outcomes:
            self.console.print(summary_table(outcomes, title=f"Run {safe(event.run_id)}", options=self._summary))
        if not self.plain:  # the plain log's `finished ...` line already said it
            self.console.print(summary_line(event.exit_code, event.message, outcomes))

    def _ordered_outcomes(self, given: dict[str, HostOutcome]) -> dict[str, HostOutcome]:
        run = self._progress.run
        reported = self._progress.finished()
        planned = [h for b in run.batches for h in b] if run else []
        names = planned + [h for h in {**reported, **given} if h not in set(planned)]
        merged: dict[str, HostOutcome] = {}
        for name in names:
            final, seen = given.get(name), reported.get(name)
            if final is not None and seen is not None and not final.timings:
                final = replace(final, timings=seen.timings)  # the engine's summary may omit timings
            merged[name] = final or seen or HostOutcome(host=name, outcome="not_started")
        return merged

    def _render_with_lock(self) -> RenderableType:
        with self._lock:
            return self._render()

    def _render(self) -> RenderableType:
        """The live frame; called with the lock held."""
        return render_frame(self._progress, self._clock(), self.console.height)
