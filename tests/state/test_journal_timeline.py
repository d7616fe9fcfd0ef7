"""The journal's timeline (schema 2): step spans and batch times as a run progresses, and old journals."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from fleetctl.config.redaction import forget_secrets, register_secret
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
from fleetctl.state import journal as journal_mod
from fleetctl.state.journal import Journal, StepSpan

START = RunStarted(run_id="r1", kind="deploy", playbook="pb.yml", service="hello", version="1.0", release="1.0-a",
                   strategy="rolling", user="ops", batches=(("a",), ("b",)), canary=True)


def step(bus: EventBus, host: str, name: str, at: float, seconds: float, failed: bool = False,
         detail: str = "") -> None:
    bus.emit(HostStepStarted(host, name, detail))  # type: ignore[arg-type]
    bus.emit(HostStepFinished(host, name, at, seconds, failed, detail))  # type: ignore[arg-type]


def test_steps_and_batches_are_kept_with_their_times(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "h.db")
    bus = EventBus()
    journal.subscribe(bus)
    t0 = time.time()
    bus.emit(START)
    step(bus, "a", "lock", t0, 0.1)
    step(bus, "b", "lock", t0, 0.2)
    bus.emit(BatchStarted(1, True, ("a",)))
    step(bus, "a", "transfer", t0 + 0.3, 1.0)
    step(bus, "a", "health", t0 + 1.5, 2.0, failed=True, detail="status 500")
    step(bus, "a", "rollback", t0 + 3.5, 0.5, detail="stop")
    bus.emit(HostFinished(HostOutcome("a", "rolled_back", "0.9-z", "health: status 500",
                                      {"lock": 0.1, "transfer": 1.0, "health": 2.0, "rollback": 0.5})))
    bus.emit(BatchFinished(1, passed=False, failed=("a",)))
    # Unlock happens after the host's outcome: still part of its timeline.
    step(bus, "a", "unlock", t0 + 4.2, 0.05)
    bus.emit(RunFinished("r1", 1, {"a": HostOutcome("a", "rolled_back", "0.9-z", "health: status 500"),
                                   "b": HostOutcome("b", "not_started")}))
    run = journal.run("r1")
    spans, recorded = run.hosts["a"].timeline()
    assert recorded
    assert [(s.step, s.failed) for s in spans] == [("lock", False), ("transfer", False), ("health", True),
                                                   ("rollback", False), ("unlock", False)]
    assert spans[2].start == pytest.approx(t0 + 1.5, abs=0.01) and spans[2].seconds == pytest.approx(2.0, abs=0.01)
    assert spans[2].detail == "status 500"
    assert [s.step for s in run.hosts["b"].timeline()[0]] == ["lock"]
    [batch] = run.batch_spans
    assert batch.index == 1 and batch.canary and batch.hosts == ("a",) and batch.passed is False
    assert batch.finished is not None and batch.finished >= batch.started
    doc = run.to_json()
    assert [s["step"] for s in doc["hosts"]["a"]["steps"]][:2] == ["lock", "transfer"]
    journal.close()


def test_a_crashed_run_keeps_the_steps_that_finished(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "h.db")
    bus = EventBus()
    journal.subscribe(bus)
    bus.emit(START)
    t0 = time.time()
    step(bus, "a", "lock", t0, 0.1)
    step(bus, "a", "transfer", t0 + 0.1, 0.4)
    bus.emit(HostStepStarted("a", "install"))  # the controller dies here
    journal.close()
    run = Journal(tmp_path / "h.db").run("r1")
    assert [s.step for s in run.hosts["a"].timeline()[0]] == ["lock", "transfer"]
    assert run.hosts["a"].step == "install"


def test_step_details_are_redacted(tmp_path: Path) -> None:
    register_secret("hunter2-secret")
    try:
        journal = Journal(tmp_path / "h.db")
        bus = EventBus()
        journal.subscribe(bus)
        bus.emit(START)
        step(bus, "a", "transfer", time.time(), 0.1, detail="from https://x/?token=hunter2-secret")
        bus.emit(RunFinished("r1", 0, {"a": HostOutcome("a", "deployed")}))
        journal.close()
        assert b"hunter2-secret" not in (tmp_path / "h.db").read_bytes()
    finally:
        forget_secrets()


def test_a_schema_1_journal_is_migrated_and_its_durations_become_a_timeline(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.executescript(journal_mod._MIGRATIONS[0])
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO runs (id, kind, playbook, playbook_key, service, version, release, strategy, user, canary,"
               " batches, started_at, finished_at, status, exit_code, message, controller, pid, pid_started)"
               " VALUES ('old1', 'deploy', 'pb.yml', 'pb.yml', 'hello', '0.9', '0.9-z', 'rolling', 'ops', 0,"
               " '[[\"a\"]]', 1000.0, 1010.0, 'succeeded', 0, '1 deployed', 'ctl', 1, NULL)")
    db.execute("INSERT INTO hosts (run_id, host, outcome, step, release, error, timings, started_at, finished_at)"
               " VALUES ('old1', 'a', 'deployed', 'health', '0.9-z', NULL,"
               " '{\"health\": 3.0, \"lock\": 0.5, \"transfer\": 2.0}', 1001.0, 1008.0)")
    db.commit()
    db.close()
    run = Journal(path).run("old1")
    spans, recorded = run.hosts["a"].timeline()
    assert not recorded
    assert spans == (StepSpan("lock", 1001.0, 1001.5), StepSpan("transfer", 1001.5, 1003.5),
                     StepSpan("health", 1003.5, 1006.5))
    assert run.batch_spans == ()
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(journal_mod.SCHEMA_VERSION),)
    db.close()


def test_notification_results_are_kept_with_the_run(tmp_path: Path) -> None:
    register_secret("https://hooks.example/T0K3N")
    try:
        journal = Journal(tmp_path / "h.db")
        bus = EventBus()
        journal.subscribe(bus)
        bus.emit(START)
        bus.emit(RunFinished("r1", 0, {"a": HostOutcome("a", "deployed")}))
        journal.record_notifications("r1", [
            {"webhook": 0, "format": "slack", "event": "success", "delivered": False, "attempts": 3,
             "seconds": 1.2, "status": 500, "error": "HTTP 500 from https://hooks.example/T0K3N"}])
        journal.close()
        run = Journal(tmp_path / "h.db").run("r1")
        [n] = run.notifications
        assert n["delivered"] is False and n["event"] == "success" and "T0K3N" not in n["error"]
        assert run.to_json()["notifications"] == [n]
        assert b"T0K3N" not in (tmp_path / "h.db").read_bytes()
    finally:
        forget_secrets()
