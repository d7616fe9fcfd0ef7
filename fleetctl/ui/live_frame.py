"""The live view's frame on a terminal, drawn from `RunProgress`: the run, a progress bar with the ETA, the current
batch, what the run was told (halting, Ctrl-C), one row per host at work or queued, and the failures so far.

It always fits the terminal's height: beyond `ROW_LIMIT` rows (or what the height leaves), queued hosts collapse
into counts per batch range (`312 queued in batches 4–9`) and the in-flight hosts past the room into one line per
step; failures with the same reason share one line. A 500-host run stays within one screen.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from fleetctl.rollout.events import GateProgress, HostOutcome
from fleetctl.ui.console import safe
from fleetctl.ui.live_state import HostRow, RunProgress
from fleetctl.ui.report import counts_line, outcome_counts

ROW_LIMIT = 15  # host rows (in flight or queued) shown one by one; more collapse into counts
FAILURE_LINES = 5  # failure lines (one per distinct reason) before "… and N more"
_FIXED_LINES = 6  # head, bar, batch line, halting, Ctrl-C notice, table header


def render_frame(progress: RunProgress, now: float, height: int) -> RenderableType:
    """The frame at `now`, at most `height` lines (for a height of at least 16)."""
    parts: list[RenderableType] = []
    run = progress.run
    if run is not None:
        head = _line(f"{run.kind} ", style="bold")
        head.append(safe(f"{run.playbook} {run.version or run.release or ''}").strip(), style="bold cyan")
        head.append(safe(f"  {run.strategy}  run {run.run_id}  by {run.user}"), style="dim")
        parts.append(head)
    parts.append(_bar(progress, now))
    parts.append(_batch_line(progress, now))
    if progress.halting:
        parts.append(_line(f"halting: {safe(progress.halting)}", style="bold red"))
    if progress.interrupted is not None:
        parts.append(_line(safe(progress.interrupted.message), style="bold magenta"))
    failure_lines = _failure_lines(progress.failures(), progress)
    room = max(3, min(ROW_LIMIT, height - _FIXED_LINES - len(failure_lines) - 1))
    parts.extend(_hosts(progress, now, room))
    parts.extend(failure_lines)
    return Group(*parts)


def gate_text(gate: GateProgress) -> str:
    """`try 12/40: 500`, then `stable 2/10 s`."""
    if gate.phase == "stability":
        return f"stable {int(gate.held)}/{gate.window:g} s"
    return f"try {gate.attempt}/{gate.retries}: {safe(gate.answer)}"


def row_detail(row: HostRow) -> str:
    """What a host at work is doing, in its row's detail column (and the plain log)."""
    if row.gate is not None:
        return gate_text(row.gate) if row.step == "health" else f"health {gate_text(row.gate)}"
    detail = safe(row.detail)
    if row.total > 0:
        detail = f"{detail} {100 * row.done // row.total}%".strip()
    return detail


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def batch_range(numbers: list[int]) -> str:
    """`batch 4`, `batches 4–9`, or `batches 2, 5` when they are not consecutive."""
    ordered = sorted(set(numbers))
    if len(ordered) == 1:
        return f"batch {ordered[0]}"
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"batches {ordered[0]}–{ordered[-1]}"
    return "batches " + ", ".join(str(n) for n in ordered)


def _line(text: str, style: str = "") -> Text:
    # One screen line each: a long reason is cut with an ellipsis rather than wrapped past the frame's budget.
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def _bar(progress: RunProgress, now: float) -> Table:
    done, total = len(progress.finished()), progress.host_count
    bar = Table.grid(padding=(0, 1))
    cells: list[RenderableType] = [
        ProgressBar(total=max(total, 1), completed=done, width=30),
        _line(f"{done}/{total} hosts"),
        _line(safe(counts_line(outcome_counts(progress.finished())))),
        _line(f"elapsed {duration(now - progress.started)}", style="dim"),
    ]
    eta = progress.eta(now)
    if eta is not None:
        cells.append(_line(f"ETA {duration(eta)}", style="cyan"))
    for _ in cells:
        bar.add_column(no_wrap=True)
    bar.add_row(*cells)
    return bar


def _batch_line(progress: RunProgress, now: float) -> Text:
    batch = progress.current
    if batch is None:
        return _line(f"connecting and locking: {progress.locked}/{progress.host_count} hosts locked")
    kind = "canary batch" if batch.canary else "batch"
    line = _line(f"{kind} {batch.number}/{progress.batch_count}: {len(batch.hosts)} hosts",
                 style="yellow" if batch.canary else "")
    if batch.finished is not None:
        line.append(f"  {'passed' if batch.passed else 'FAILED'}", style="green" if batch.passed else "bold red")
    if progress.bake_until is not None and progress.bake_until > now:
        line.append(f"  baking, {duration(progress.bake_until - now)} left", style="cyan")
    return line


def _hosts(progress: RunProgress, now: float, room: int) -> list[RenderableType]:
    """The host rows (a table) and, below it, the counts of what did not get a row of its own."""
    working, queued = progress.working(), progress.queued()
    if not working and not queued:
        return []
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="dim")
    table.add_column("host", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("step", no_wrap=True)
    table.add_column("detail", no_wrap=True, overflow="ellipsis")
    table.add_column("elapsed", justify="right", no_wrap=True)
    current = progress.current.number if progress.current else 0
    if len(working) + len(queued) <= room:
        shown_working, shown_queued = working, queued
    else:
        # Queued hosts go first into counts; in-flight hosts keep the rows, up to the room left.
        summary_lines = len({r.batch <= current for r in queued})  # waiting now, queued later
        shown_queued = []
        keep = max(1, room - summary_lines)
        shown_working = working if len(working) <= keep else working[: keep - 1]
    for row in shown_working:
        ahead = f" (batch {row.batch})" if current and row.batch > current else ""  # staging ahead of its batch
        since = row.since if row.since is not None else row.step_since
        table.add_row(_line(safe(row.host)), _line(f"{row.step or ''}{ahead}", style="cyan"),
                      _line(row_detail(row)), duration(now - since))
    rest = working[len(shown_working):]
    if rest:
        steps = Counter(r.step or "?" for r in rest)
        text = ", ".join(f"{n} {step}" for step, n in steps.most_common())
        table.add_row(_line(f"… {len(rest)} more", style="dim"), _line(text, style="dim"), "", "")
    for row in shown_queued:
        table.add_row(_line(safe(row.host)), _line(f"queued (batch {row.batch})", style="dim"),
                      _line("staged" if row.staged else "", style="dim"), "")
    counts = _queued_counts(queued, current) if queued and not shown_queued else []
    return [table, *(_line(f"  {line}", style="dim") for line in counts)]


def _queued_counts(queued: list[HostRow], current: int) -> list[str]:
    """`40 waiting in batch 2 (all workers busy)`, `312 queued in batches 4–9`."""
    lines = []
    waiting = [r for r in queued if r.batch <= current]
    later = [r for r in queued if r.batch > current]
    if waiting:
        lines.append(f"{len(waiting)} waiting in {batch_range([r.batch for r in waiting])} (all workers busy)")
    if later:
        staged = sum(1 for r in later if r.staged)
        note = f" ({staged} staged)" if staged else ""
        lines.append(f"{len(later)} queued in {batch_range([r.batch for r in later])}{note}")
    return lines


def _failure_lines(failures: list[HostOutcome], progress: RunProgress) -> list[Text]:
    """One line per distinct reason, newest reasons last; hosts sharing a reason are counted, not listed."""
    groups: dict[tuple[str, str], list[str]] = {}
    for failure in failures:
        groups.setdefault((failure.outcome, failure.error or "no reason given"), []).append(failure.host)
    lines = []
    for (outcome, reason), hosts in list(groups.items())[-FAILURE_LINES:]:
        who = safe(hosts[0]) if len(hosts) == 1 else f"{len(hosts)} hosts ({safe(hosts[0])}, …)"
        line = _line(f"✗ {who} {outcome}: ", style="red")
        line.append(safe(reason))
        lines.append(line)
    hidden = len(groups) - FAILURE_LINES
    if hidden > 0:
        lines.append(_line(f"… and {hidden} more reasons (the summary lists every host)", style="red"))
    return lines
