"""The plain (non-terminal) log of a 500-host deploy through the engine and a fake fleet, as a CI log gets it:
a few dozen lines (lock progress counted, each batch's failures grouped by error with compact host ranges, every
failed host still named), per-host lines again with `--all`, and a run start line that says what the run does."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rollout.fakes import FakeFleet, options, write_project  # tests/ is on sys.path (tests/ui is a package)

from fleetctl.rollout.events import (
    BatchStarted,
    EventBus,
    Halting,
    HostFinished,
    HostOutcome,
    RunStarted,
)
from fleetctl.rollout.runner import prepare_deploy, run_deploy
from fleetctl.ui.console import FleetConsole
from fleetctl.ui.host_rows import RowOptions
from fleetctl.ui.live import LiveView
from fleetctl.ui.report import SummaryOptions

from .test_final_table_500 import HOSTS, _playbook

_HOST_LINE = re.compile(r"^\d\d:\d\d:\d\d n\d+: ")  # a plain-log line about one host


def _plain_run(tmp_path: Path, rows: RowOptions) -> list[str]:
    """500 hosts in 4 batches of 125: 20 of batch 1 refuse the credentials, 3 of batch 2 are lost after
    installing their release; the budget (30) lets the run finish."""
    project = write_project(tmp_path, HOSTS, playbook=_playbook())
    fleet = FakeFleet([f"n{i:02d}" for i in range(1, HOSTS + 1)])
    for i in range(101, 121):
        fleet.nodes[f"n{i}"].unreachable, fleet.nodes[f"n{i}"].lost_as = True, "auth-failure"
    for i in range(130, 133):
        fleet.nodes[f"n{i}"].lose_after = "Install-FleetRelease"
    buf = io.StringIO()
    console = FleetConsole(file=buf, width=120, height=40, force_terminal=False, color_system=None)
    view = LiveView(console, summary=SummaryOptions(rows))
    assert view.plain
    bus = EventBus()
    view.subscribe(bus)
    try:
        result = run_deploy(prepare_deploy(options(project, max_failed="30")), bus, connect=fleet.connect)
    finally:
        bus.close()
        view.close()
    assert result.exit_code == 1, result.message  # 23 failed within the budget
    return buf.getvalue().splitlines()


def test_plain_log_of_500_hosts_is_a_few_dozen_lines(tmp_path: Path) -> None:
    lines = _plain_run(tmp_path, RowOptions())
    log = "\n".join(lines)
    assert len(lines) < 60, log
    assert not [line for line in lines if _HOST_LINE.match(line)], log  # no line per host, failed or not
    locks = [line.split(" ", 1)[1] for line in lines if " locked " in f" {line.split(' ', 1)[1]}"]
    assert locks[:3] == ["locked 125/500", "locked 250/500", "locked 375/500"], log
    assert locks[-1] == "locked 480/500", log  # the 20 refusing the credentials never lock
    # Failures at their batch's end, grouped by error, every failed host named as a range.
    assert re.search(r"batch 1/4: 20 failed \(n\[101:120\]\): connect: the host refused the credentials", log), log
    assert re.search(r"batch 2/4: 3 failed \(n\[130:132\]\): ", log), log
    assert log.count("refused the credentials") == 2  # the batch line and the end table's one row
    assert "batch 1/4: 125 hosts: n[01:125]; 375 queued in batches 2–4" in log


def test_plain_log_with_all_has_each_hosts_lines(tmp_path: Path) -> None:
    lines = _plain_run(tmp_path, RowOptions(show_all=True))
    log = "\n".join(lines)
    assert any(line.endswith(" n05: lock") for line in lines)
    failed = {m.group(1) for line in lines if (m := re.search(r" (n\d+): FAILED", line))}
    assert failed == {f"n{i}" for i in (*range(101, 121), 130, 131, 132)}, log


@pytest.mark.parametrize("kind,version,said", [
    ("restart", "restart", "restart of the running release"),
    ("remove", None, "remove"),
    ("deploy", "2.0.0", "2.0.0"),
])
def test_run_start_line_says_what_the_run_does(kind: str, version: str | None, said: str) -> None:
    buf = io.StringIO()
    view = LiveView(FleetConsole(file=buf, width=200, force_terminal=False, color_system=None))
    view.record(RunStarted("run-1", kind, "pb.yml", "hello", version, None, "rolling", "me",  # type: ignore[arg-type]
                           (("a",),), False))
    first = buf.getvalue().splitlines()[0]
    assert f"{kind} pb.yml (hello) {said}, rolling, 1 hosts in 1 batches" in first
    assert "?" not in first


def test_big_run_plain_log_says_a_batch_progress_by_time_and_failures_left_at_a_halt() -> None:
    """Events by hand on a fixed clock: a progress line once `plain_every` seconds passed, not per host; a host of
    a later batch that failed while locking is named when the run halts before its batch."""
    hosts = tuple(f"web{i:03d}" for i in range(1, 51))
    clock = [100.0]
    buf = io.StringIO()
    view = LiveView(FleetConsole(file=buf, width=200, force_terminal=False, color_system=None),
                    clock=lambda: clock[0], plain_every=5.0)
    view.record(RunStarted("run-1", "deploy", "pb.yml", "hello", "2.0.0", None, "rolling", "me",
                           (hosts[:25], hosts[25:]), False))
    view.record(HostFinished(HostOutcome("web040", "failed", error="lock: the host refused the credentials")))
    view.record(BatchStarted(0, False, hosts[:25]))
    for n, host in enumerate(hosts[:10]):
        clock[0] += 1.0
        view.record(HostFinished(HostOutcome(host, "deployed" if n else "failed", error=None if n else "gate: 500")))
    view.record(Halting("canary failed on web001"))
    lines = [line.split(" ", 1)[1] for line in buf.getvalue().splitlines()]
    assert "batch 1/2: 25 hosts: web[001:025]; 25 queued in batch 2" in lines
    progress = [line for line in lines if "hosts done" in line]
    assert progress == ["batch 1/2: 5/25 hosts done, 1 failed", "batch 1/2: 10/25 hosts done, 1 failed"], lines
    # web001 failed in the running batch, web040 (batch 2) before it: both named, each with its own place.
    assert lines.index("before the first batch: 1 failed (web040): lock: the host refused the credentials") < \
        lines.index("batch 1/2: 25 hosts: web[001:025]; 25 queued in batch 2")
    assert lines[-2:] == ["batch 1/2: 1 failed (web001): gate: 500", "HALTING: canary failed on web001"], lines
    assert sum("web040" in line for line in lines) == 1  # named once
