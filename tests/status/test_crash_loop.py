"""The crash-loop verdict of `fleetctl status` (a pure function over the node's service info), and the playbook
rules of scheduled-task guards and service hosting."""

from __future__ import annotations

import pytest

from fleetctl.config.playbook import ScheduledTask, Service
from fleetctl.node.results import ServiceInfo
from fleetctl.status.collect import crash_loop_verdict


def info(state: str | None, restarts: int, recent: int, exists: bool = True) -> ServiceInfo:
    return ServiceInfo(exists, state, 1, None, restarts, "C:\\x.exe", recent)


@pytest.mark.parametrize(("service", "loop"), [
    (None, False),
    (info("Running", 0, 0), False),
    (info("Running", 9, 2), False),  # restarted often long ago, quiet now
    (info("Running", 3, 3), True),  # caught Running between two crashes: still a loop
    (info("Stopped", 5, 4), True),
    (info("Paused", 7, 6), True),  # NSSM throttling a program that keeps exiting
    (info(None, 0, 5, exists=False), False),
])
def test_crash_loop_verdict(service: ServiceInfo | None, loop: bool) -> None:
    verdict = crash_loop_verdict(service)
    assert (verdict is not None) == loop
    if verdict:
        assert f"{service.recent_restarts} restarts in the last 10 min" in verdict  # type: ignore[union-attr]


@pytest.mark.parametrize(("fields", "problem"), [
    ({}, "give at least one trigger"),
    ({"every": 90}, "whole minutes"),
    ({"every": 30}, "at least 1m"),
    ({"at_startup": True, "restart_interval": 10}, "whole minutes, at least 1m"),
    ({"at": "25:00"}, "pattern"),
])
def test_scheduled_task_rules(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ScheduledTask(name="guard", execute="C:\\x.exe", **fields)  # type: ignore[arg-type]


def test_scheduled_task_minutes() -> None:
    task = ScheduledTask(name="guard", execute="C:\\x.exe", at_startup=True, every=300,  # type: ignore[arg-type]
                         execution_time_limit=0)  # type: ignore[arg-type]
    assert (task.every_minutes, task.execution_time_limit_minutes) == (5, 0)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"hosting": "winsw"}, "winsw' is not implemented"),
    ({"working_directory": "C:\\x"}, "needs hosting: nssm"),
    ({"hosting": "nssm", "working_directory": "x"}, "absolute Windows path"),
    ({"nssm": {"throttle": 2}}, "need hosting: nssm"),
])
def test_service_hosting_rules(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Service(name="svc", **fields)  # type: ignore[arg-type]


def test_recovery_actions_become_sc_tokens() -> None:
    from fleetctl.config.playbook import Recovery

    recovery = Recovery(actions=[{"restart": "5s"}, {"restart": "30s"}, "none"], reset_after="1h")  # type: ignore[list-item,arg-type]
    assert recovery.sc_actions() == ("restart/5000", "restart/30000", "none/0")
    assert Recovery().sc_actions() == ()
    with pytest.raises(ValueError):
        Recovery(actions=[])
