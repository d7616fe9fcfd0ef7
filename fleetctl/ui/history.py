"""The history journal for people: the runs table, one run's header and its hosts table (`fleetctl history`)."""

from __future__ import annotations

import time

from rich.table import Table
from rich.text import Text

from fleetctl.state.journal import RunRecord
from fleetctl.ui.console import safe
from fleetctl.ui.report import OUTCOME_STYLE, counts_line

STATUS_STYLE = {"succeeded": "green", "running": "cyan", "interrupted": "magenta", "failed": "red",
                "halted": "bold red", "locked": "yellow", "bad-input": "yellow"}


def runs_table(runs: list[RunRecord], *, environment: str | None = None) -> Table:
    shown = f" in environment {safe(environment)}" if environment else ""
    table = Table(title=f"History{shown}, newest first (`fleetctl history show RUN_ID` for each host)",
                  title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("when", no_wrap=True)
    table.add_column("who", overflow="fold")
    table.add_column("what", overflow="fold")
    table.add_column("status", overflow="fold")
    table.add_column("hosts", overflow="fold")
    table.add_column("took", justify="right", no_wrap=True)
    for r in runs:
        what = f"{r.kind} {r.service} {r.version or r.release or ''}{' +canary' if r.canary else ''}"
        status = r.status if r.exit_code is None else f"{r.status} ({r.exit_code})"
        who = f"{r.user} (schedule {r.schedule})" if r.trigger == "scheduled" else r.user
        table.add_row(
            Text(safe(r.run_id)), _when(r.started_at), Text(safe(who)), Text(safe(what)),
            Text(status, style=STATUS_STYLE.get(r.status, "")), Text(safe(counts_line(r.outcome_counts()))),
            _took(r),
        )
    return table


def run_header(r: RunRecord) -> Text:
    text = Text(f"{r.kind} ", style="bold")
    text.append(safe(f"{r.playbook} ({r.service}) {r.version or ''} {r.release or ''}".rstrip()), style="bold cyan")
    text.append(f"\nrun {safe(r.run_id)} by {safe(r.user)} from {safe(r.controller)} (pid {r.pid}), "
                f"strategy {safe(r.strategy)}{' with canary' if r.canary else ''}")
    if r.trigger == "scheduled":
        text.append(f"\nscheduled: started by schedule {safe(r.schedule)} (unattended)")
    if r.inputs.get("environment"):
        text.append(f"\nenvironment {safe(r.inputs['environment'])}")
    text.append(f"\nstarted {_when(r.started_at)}, took {_took(r)}, status ")
    text.append(r.status, style=STATUS_STYLE.get(r.status, ""))
    text.append(f", exit code {'-' if r.exit_code is None else r.exit_code}")
    if r.message:
        text.append(f"\n{safe(r.message)}")
    return text


def hosts_table(r: RunRecord) -> Table:
    table = Table(title=f"{len(r.host_names)} host(s)", title_justify="left")
    for column in ("batch", "host", "outcome", "release", "took", "slowest steps", "error"):
        table.add_column(column, overflow="fold" if column == "error" else "ellipsis")
    batch_of = {h: i for i, batch in enumerate(r.batches, start=1) for h in batch}
    for name in r.host_names:
        record = r.hosts.get(name)
        outcome = r.host_outcome(name)
        if outcome == "in_flight" and record is not None and record.step:
            outcome = f"in_flight ({record.step})"
        steps = ""
        took = "-"
        if record is not None:
            slowest = sorted(record.timings.items(), key=lambda kv: kv[1], reverse=True)[:3]
            steps = ", ".join(f"{k} {v:.1f}s" for k, v in slowest)
            total = sum(record.timings.values()) if record.timings else record.duration
            took = f"{total:.1f}s" if total is not None else "-"
        table.add_row(
            str(batch_of.get(name, "-")), Text(safe(name)),
            Text(outcome, style=OUTCOME_STYLE.get(outcome.split(" ")[0], "magenta")),
            Text(safe(record.release if record and record.release else "-")), took, Text(safe(steps)),
            Text(safe(record.error if record and record.error else "")),
        )
    return table


def _when(ts: float) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(ts))


def _took(r: RunRecord) -> str:
    if r.finished_at is None:
        return "-"
    seconds = r.finished_at - r.started_at
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
