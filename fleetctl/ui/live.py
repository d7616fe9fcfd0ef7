"""The live view of a rollout: a rich display on a terminal, a plain one-line-per-event log otherwise.

Wiring (deploy/rollback): `view = LiveView(stdout()); view.subscribe(bus)`, run the engine, and `view.close()`
in a `finally` (it stops the display if the engine raised before `RunFinished`). With `--json`, give it a
stderr console or leave it out, so stdout holds only the JSON document.

On a terminal it shows the frame of `ui/live_frame.py` (progress and ETA, the current batch, each host at work
with its step, its health gate's try and answer, queued hosts with their batch, failures), and prints above it
the lines that should stay in the scrollback: one per finished batch, what Ctrl-C does, halting, notes. At
`RunFinished` a summary table. When the console is not a terminal (CI logs, pipes) it prints the same facts as
uncoloured lines, one per event (gate tries only when the answer changes or every `plain_every` seconds). A run
of more than MAX_ROWS hosts (unless `--all`) logs the run rather than each host, so 500 hosts are a few dozen
lines: lock progress as `locked 250/500` (at each quarter, or every `plain_every` seconds), a batch's progress
every `plain_every` seconds, and its failures at its end grouped by error with compact host ranges
(`batch 2/5: 3 failed (web[010:012]): health gate ...`); failures before any batch runs (locking) are grouped
when the next batch starts. Events
arrive from the engine's worker threads; the state (`ui/live_state.py`) is guarded by one lock, and the
display's refresh thread reads it under that lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
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
    HostStepFinished,
    HostStepStarted,
    Interrupting,
    Notice,
    RunFinished,
    RunStarted,
)
from fleetctl.ui.console import safe
from fleetctl.ui.host_rows import HOSTS_CELL_CHARS, MAX_ROWS, group_errors
from fleetctl.ui.hostranges import compact_hosts
from fleetctl.ui.live_frame import batch_range, duration, gate_text, render_frame
from fleetctl.ui.live_state import RunProgress
from fleetctl.ui.report import SummaryOptions, counts_line, outcome_counts, summary_line, summary_table
from fleetctl.ui.verbose import show_above

# Transfer progress arrives per chunk; the plain log shows it only at these fractions so CI logs stay short.
_PLAIN_PROGRESS_MARKS = (0.25, 0.5, 0.75)
_PLAIN_HOSTS = 20  # host names listed in a plain batch line before "and N more"
_LOCK_MARKS = (0.25, 0.5, 0.75, 1.0)  # a big run's plain log says `locked N/T` at these fractions (or by time)


def _stop(live: Live) -> None:
    """Stop the display and wait for its refresh thread: rich's stop() only tells that thread to end, and a frame
    it paints late would land after the summary."""
    refresher = getattr(live, "_refresh_thread", None)
    live.stop()
    if isinstance(refresher, threading.Thread) and refresher is not threading.current_thread():
        refresher.join(timeout=2.0)


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
        # The plain log of a big run (see the module docstring): what it said last, and which failures it named.
        self._fleet_log = False
        self._lock_told = (0, 0.0)  # (hosts locked, when) in the last `locked` line
        self._batch_told = 0.0  # when the running batch's last progress line was printed
        self._failures_told: set[str] = set()
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
                for plain in (self._fleet_lines(event, line, now) if self._fleet_log else [line]):
                    if plain is not None:
                        self._print_plain(plain)
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
                _stop(stop)
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
            _stop(live)
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
            show_all = self._summary is not None and self._summary.rows.show_all
            self._fleet_log = self.plain and progress.host_count > MAX_ROWS and not show_all
            self._lock_told = (0, now)
            what = _what(event)
            return (f"{event.kind} {event.playbook} ({event.service}) {what}, {event.strategy}, "
                    f"{progress.host_count} hosts in {len(event.batches)} batches, run {event.run_id} by "
                    f"{event.user}")
        if isinstance(event, BatchStarted):
            names = ", ".join(event.hosts[:_PLAIN_HOSTS])
            if len(event.hosts) > _PLAIN_HOSTS:
                names += f" and {len(event.hosts) - _PLAIN_HOSTS} more"
            return f"{self._head(event.canary, event.number)}: {len(event.hosts)} hosts: {names}" + self._queued(
                event.number)
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

    def _fleet_lines(self, event: Event, line: str | None, now: float) -> list[str | None]:
        """The plain log of a big run: `line` (the per-event line) for run-wide events only; hosts are counted,
        and their failures grouped, instead of one line each."""
        progress = self._progress
        if isinstance(event, HostStepFinished):
            return [self._lock_line(now)] if event.step == "lock" else []
        if isinstance(event, (HostStepStarted, HostProgress, GateProgress, HostFinished)):
            return [self._batch_progress(now)]
        if isinstance(event, BatchStarted):
            self._batch_told = now
            early = self._failure_lines("before the first batch" if event.number == 1
                                        else f"before batch {event.number}", exclude=set(event.hosts))
            names = compact_hosts(event.hosts, max_chars=HOSTS_CELL_CHARS)
            started = f"{self._head(event.canary, event.number)}: {len(event.hosts)} hosts: {names}"
            return [self._lock_line(now, final=True), *early, started + self._queued(event.number)]
        if isinstance(event, BatchFinished):
            batch = progress.batch(event.number)
            if batch is None:
                return []
            head = self._head(batch.canary, batch.number)
            done = progress.batch_line(batch) + ("" if event.passed else " — FAILED")
            eta = progress.eta(now)
            if eta is not None and len(progress.batches) < progress.batch_count:
                done += f"; ETA {duration(eta)}"
            return [done, *self._failure_lines(head, only=set(batch.hosts))]
        if isinstance(event, (Halting, RunFinished)):
            current = progress.current
            if current is None:
                head = "before any batch"
            else:
                head = self._head(current.canary, current.number)
                head = head if current.finished is None else f"after {head}"
            return [*self._failure_lines(head), line]
        return [line]

    def _lock_line(self, now: float, *, final: bool = False) -> str | None:
        """`locked 250/500` when the count crosses a quarter, or every `plain_every` seconds while it rises;
        `final` (a batch starts): the count reached, if not said yet."""
        total, locked = self._progress.host_count, self._progress.locked
        told, when = self._lock_told
        crossed = any(told < mark * total <= locked for mark in _LOCK_MARKS)
        if locked == told or not (final or crossed or now - when >= self._plain_every):
            return None
        self._lock_told = (locked, now)
        return f"locked {locked}/{total}"

    def _batch_progress(self, now: float) -> str | None:
        """The running batch's `batch 2/5: 60/125 hosts done, 3 failed` every `plain_every` seconds."""
        batch = self._progress.current
        if batch is None or batch.finished is not None or now - self._batch_told < self._plain_every:
            return None
        self._batch_told = now
        outcomes = [self._progress.row(h).outcome for h in batch.hosts]
        failed = sum(1 for o in outcomes if o is not None and o.outcome in self._progress.failed_outcomes)
        done = sum(1 for o in outcomes if o is not None)
        return f"{self._head(batch.canary, batch.number)}: {done}/{len(batch.hosts)} hosts done, {failed} failed"

    def _head(self, canary: bool, number: int) -> str:
        """`batch 2/5` / `canary batch 1/5`, as every batch line begins."""
        return f"{'canary batch' if canary else 'batch'} {number}/{self._progress.batch_count}"

    def _queued(self, number: int) -> str:
        """`; 375 queued in batches 2–4` after batch `number`'s start line (empty for the last)."""
        progress = self._progress
        later = range(number + 1, progress.batch_count + 1)
        queued = sum(len(progress.run.batches[n - 1]) for n in later) if progress.run else 0
        return f"; {queued} queued in {batch_range(list(later))}" if queued else ""

    def _failure_lines(self, head: str, *, only: Collection[str] | None = None,
                       exclude: Collection[str] = ()) -> list[str]:
        """Failures not yet named, grouped by error: `HEAD: 3 failed (web[010:012]): health gate ...`."""
        errors = {o.host: o.error or "no reason given" for o in self._progress.failures()
                  if o.host not in self._failures_told and o.host not in exclude and (only is None or o.host in only)}
        self._failures_told.update(errors)
        addresses = self._summary.rows.addresses if self._summary is not None else {}
        return [f"{head}: {len(g.hosts)} failed ({compact_hosts(g.hosts, max_chars=HOSTS_CELL_CHARS)}): {g.text}"
                for g in group_errors(errors, addresses)]

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


def _what(run: RunStarted) -> str:
    """What the run puts on its hosts, as its first line says it: a restart and a removal install no version."""
    if run.kind == "restart":
        return "restart of the running release"
    if run.kind == "remove":
        return "remove"
    return run.version or run.release or "?"
