"""Synthetic runs written through the real journal, for the run-report tests (HTML, SVG timeline, JUnit)."""

from __future__ import annotations

import time
from pathlib import Path

from fleetctl.rollout.events import (
    BatchFinished,
    BatchStarted,
    EventBus,
    HostFinished,
    HostOutcome,
    HostStepFinished,
    HostStepStarted,
    RunFinished,
    RunStarted,
)
from fleetctl.state.journal import Journal, RunRecord

RUN_ID = "20261202T020000Z-feed01"
SECRET = "pa55-w0rd-XYZ"
DEPLOY_STEPS = ("connect", "transfer", "install", "service", "stop", "switch", "start", "health", "record")


def canary_run(directory: Path) -> RunRecord:
    """A canary deploy of 4 hosts: canary web1 passes, batch 2 (web2, web3) has web3 fail its health gate and roll
    back, which halts the run before batch 3 (web4). Each host's steps are recorded with their times (from now on,
    as if they had happened; the batch windows are the journal's own clock, so they are short)."""
    t0 = time.time()
    journal = Journal(directory / "history.db")
    bus = EventBus()
    journal.subscribe(bus)
    bus.emit(RunStarted(RUN_ID, "deploy", "playbooks/hello.yml", "hello", "1.4.0", "1.4.0-deadbeef", "rolling",
                        "ops@ctl", (("web1",), ("web2", "web3"), ("web4",)), True))

    def step(host: str, name: str, at: float, seconds: float, failed: bool = False, detail: str = "") -> None:
        bus.emit(HostStepStarted(host, name, detail))  # type: ignore[arg-type]
        bus.emit(HostStepFinished(host, name, t0 + at, seconds, failed, detail))  # type: ignore[arg-type]

    for i, host in enumerate(("web1", "web2", "web3", "web4")):
        step(host, "lock", 0.05 * i, 0.2)

    def deploy(host: str, at: float, fail_health: bool = False) -> float:
        for name in DEPLOY_STEPS:
            seconds = {"transfer": 1.2, "health": 2.5, "stop": 0.4, "start": 0.3}.get(name, 0.05)
            failed = fail_health and name == "health"
            step(host, name, at, seconds, failed, "status 500" if failed else "")
            at += seconds
            if failed:
                for part in ("service", "stop", "switch", "start", "health"):
                    step(host, "rollback", at, 0.3, detail=part)
                    at += 0.3
                break
        return at

    bus.emit(BatchStarted(0, True, ("web1",)))
    end1 = deploy("web1", 0.5)
    bus.emit(HostFinished(HostOutcome("web1", "deployed", "1.4.0-deadbeef", None, {"health": 2.5})))
    bus.emit(BatchFinished(0, passed=True))
    bus.emit(BatchStarted(1, False, ("web2", "web3")))
    deploy("web2", end1 + 0.1)
    deploy("web3", end1 + 0.1, fail_health=True)
    bus.emit(HostFinished(HostOutcome("web2", "deployed", "1.4.0-deadbeef", None, {"health": 2.5})))
    bus.emit(HostFinished(HostOutcome("web3", "rolled_back", "1.3.0-c0ffee",
                                      f"health: status 500 (login {SECRET} refused)", {"health": 2.5})))
    bus.emit(BatchFinished(1, passed=False, failed=("web3",)))
    for host in ("web1", "web2", "web3", "web4"):
        step(host, "unlock", end1 + 7.0, 0.05)
    bus.emit(RunFinished(RUN_ID, 3, {
        "web1": HostOutcome("web1", "deployed", "1.4.0-deadbeef"),
        "web2": HostOutcome("web2", "deployed", "1.4.0-deadbeef"),
        "web3": HostOutcome("web3", "rolled_back", "1.3.0-c0ffee", f"health: status 500 (login {SECRET} refused)"),
        "web4": HostOutcome("web4", "not_started")}, "halted: 1 failed host(s) exceed the failure budget of 0"))
    journal.close()
    reader = Journal(directory / "history.db")
    try:
        return reader.run(RUN_ID)
    finally:
        reader.close()
