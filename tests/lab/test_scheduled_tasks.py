"""Task Scheduler guards in the lab: triggers (at startup, every N minutes, daily), account, restart-on-failure and
time-limit settings recorded; every-N-minutes runs fired; each run's result reported in Get-FleetState."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_kit import error, install, next_address, ok

from fleetctl.lab.node import LabNode
from tests.support import wait_for

ROOT = "C:\\apps\\guard"
GUARD = f"""#!{sys.executable}
import sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
time.sleep(float(args.get("--sleep", "0")))
sys.exit(int(args.get("--exit", "0")))
""".encode()
EXE = f"{ROOT}\\current\\guard.exe"


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[LabNode]:
    lab_node = LabNode("lab-tasks", next_address(), tmp_path / "node")
    try:
        install(lab_node, GUARD, "1.0-g", root=ROOT, exe="guard.exe")
        yield lab_node
    finally:
        lab_node.close()


def tasks(node: LabNode, *names: str) -> dict[str, dict[str, object]]:
    state = ok(node, "Get-FleetState", App="hello", Root=ROOT, TaskNames=list(names))
    return {t["name"]: t for t in state["tasks"]}


def test_a_guard_with_startup_and_repeat_triggers_is_registered_with_its_settings(node: LabNode) -> None:
    first = ok(node, "Set-FleetScheduledTask", Name="guard", Execute=EXE, Arguments=["--exit", "0"], AtStartup=True,
               EveryMinutes=5, RestartCount=3, RestartIntervalMinutes=2, ExecutionTimeLimitMinutes=10)
    assert first == {"changed": True, "last_run": None, "last_result": None}
    recorded = {k: v for k, v in node.scheduled_tasks["guard"].items() if k not in ("timer", "last_pid")}
    assert recorded == {"execute": EXE, "arguments": ["--exit", "0"], "at": None, "at_startup": True,
                        "every_minutes": 5, "user": "SYSTEM", "restart_count": 3, "restart_interval_minutes": 2,
                        "execution_time_limit_minutes": 10, "last_run": None, "last_result": None}
    same = ok(node, "Set-FleetScheduledTask", Name="guard", Execute=EXE, Arguments=["--exit", "0"], AtStartup=True,
              EveryMinutes=5, RestartCount=3, RestartIntervalMinutes=2, ExecutionTimeLimitMinutes=10)
    assert same["changed"] is False
    assert "give a trigger" in error(node, "Set-FleetScheduledTask", "INVALID_ARGUMENT", Name="x",
                                     Execute=EXE)["message"]
    assert tasks(node, "guard", "absent") == {
        "guard": {"name": "guard", "exists": True, "state": "Ready", "last_run": None, "last_result": None,
                  "next_run": None},
        "absent": {"name": "absent", "exists": False, "state": None, "last_run": None, "last_result": None,
                   "next_run": None}}


def test_each_run_reports_its_result_and_the_repeat_trigger_fires(node: LabNode) -> None:
    ok(node, "Set-FleetScheduledTask", Name="failing", Execute=EXE, Arguments=["--exit", "4"], At="03:00", RunNow=True)
    wait_for(lambda: tasks(node, "failing")["failing"]["last_result"] == 4, 10, "the run's exit code")
    node.task_minute_s = 0.2  # a Task Scheduler minute, shortened for the test
    ok(node, "Set-FleetScheduledTask", Name="repeat", Execute=EXE, Arguments=["--exit", "0"], EveryMinutes=1)
    wait_for(lambda: tasks(node, "repeat")["repeat"]["last_result"] == 0, 10, "a run fired by the repeat trigger")
    first = tasks(node, "repeat")["repeat"]["last_run"]
    assert first is not None


def test_a_run_past_its_execution_time_limit_is_stopped(node: LabNode) -> None:
    ok(node, "Set-FleetScheduledTask", Name="slow", Execute=EXE, Arguments=["--sleep", "30"], At="03:00",
       ExecutionTimeLimitMinutes=1)
    node.scheduled_tasks["slow"]["execution_time_limit_minutes"] = 0.01  # type: ignore[index]  # 0.6 s
    ok(node, "Set-FleetScheduledTask", Name="slow", RunNow=True)
    wait_for(lambda: tasks(node, "slow")["slow"]["last_result"] == 0x41306, 10, "SCHED_S_TASK_TERMINATED")
