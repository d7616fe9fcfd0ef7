"""The history journal, driven by synthetic events: what it stores, redaction, crash detection, schema."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetctl.config.redaction import forget_secrets, register_secret
from fleetctl.errors import ConfigError
from fleetctl.rollout.events import (
    EventBus,
    HostFinished,
    HostOutcome,
    HostStepStarted,
    RunFinished,
    RunStarted,
)
from fleetctl.state import journal as journal_mod
from fleetctl.state.journal import Journal, writer_alive

REPO = Path(__file__).resolve().parents[2]


def started(run_id: str = "r1", *, playbook: str = "pb.yml", user: str = "ops@ctl",
            batches: tuple[tuple[str, ...], ...] = (("a", "b"), ("c",))) -> RunStarted:
    return RunStarted(run_id=run_id, kind="deploy", playbook=playbook, service="hello", version="1.0",
                      release="1.0-abc", strategy="rolling", user=user, batches=batches, canary=True)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "state" / "history.db")
    yield j
    j.close()


@pytest.fixture
def bus(journal: Journal) -> EventBus:
    b = EventBus()
    journal.subscribe(b)
    return b


def test_a_run_is_written_as_it_progresses(journal: Journal, bus: EventBus) -> None:
    bus.emit(started())
    # Immediately visible: a running run, with nothing finished yet.
    [run] = journal.runs()
    assert run.status == "running" and run.exit_code is None
    assert run.outcome_counts() == {"pending": 3}

    bus.emit(HostStepStarted("a", "connect"))
    bus.emit(HostStepStarted("a", "health"))
    assert journal.run("r1").hosts["a"].step == "health"
    bus.emit(HostFinished(HostOutcome("a", "deployed", "1.0-abc", None, {"transfer": 1.5, "health": 2.25})))
    bus.emit(HostFinished(HostOutcome("b", "rolled_back", "0.9-x", "health: status 500", {"health": 3.0})))
    bus.emit(RunFinished("r1", 1, {
        "a": HostOutcome("a", "deployed", "1.0-abc"),
        "b": HostOutcome("b", "rolled_back", "0.9-x", "health: status 500"),
        "c": HostOutcome("c", "not_started"),
    }, "1 deployed, 1 rolled back"))

    run = journal.run("r1")
    assert (run.status, run.exit_code, run.message) == ("failed", 1, "1 deployed, 1 rolled back")
    assert run.host_names == ["a", "b", "c"]
    assert run.hosts["a"].timings == {"transfer": 1.5, "health": 2.25}  # kept though RunFinished had none
    assert run.hosts["b"].error == "health: status 500"
    assert run.hosts["c"].outcome == "not_started" and run.hosts["c"].started_at is None
    assert run.outcome_counts() == {"deployed": 1, "rolled_back": 1, "not_started": 1}
    doc = run.to_json()
    assert doc["hosts"]["a"]["release"] == "1.0-abc" and doc["canary"] is True and doc["user"] == "ops@ctl"


def test_run_finished_has_the_final_word_on_a_host(journal: Journal, bus: EventBus) -> None:
    # A canary that passed is rolled back when another canary fails: the run's final outcome wins.
    bus.emit(started(batches=(("a", "b"),)))
    bus.emit(HostFinished(HostOutcome("a", "deployed", "1.0-abc", None, {"health": 1.0})))
    bus.emit(RunFinished("r1", 1, {"a": HostOutcome("a", "rolled_back", "0.9", "canary b failed"),
                                   "b": HostOutcome("b", "failed", None, "boom")}))
    host = journal.run("r1").hosts["a"]
    assert (host.outcome, host.release, host.error, host.timings) == ("rolled_back", "0.9", "canary b failed",
                                                                      {"health": 1.0})


@pytest.mark.parametrize("code,status", [(0, "succeeded"), (3, "halted"), (4, "locked"), (130, "interrupted")])
def test_status_follows_the_exit_code(journal: Journal, bus: EventBus, code: int, status: str) -> None:
    bus.emit(started())
    bus.emit(RunFinished("r1", code, {}))
    assert journal.run("r1").status == status


def test_secrets_never_reach_the_database(tmp_path: Path) -> None:
    secret = "hunter2-Sup3rSecret"
    register_secret(secret)
    try:
        path = tmp_path / "h.db"
        j = Journal(path)
        b = EventBus()
        j.subscribe(b)
        b.emit(started(user=f"ops {secret}", playbook=f"pb-{secret}.yml"))
        b.emit(HostStepStarted("a", "connect", detail=secret))
        b.emit(HostFinished(HostOutcome("a", "failed", None, f"auth failed with password {secret}")))
        b.emit(RunFinished("r1", 1, {"a": HostOutcome("a", "failed", None, f"pw {secret}")}, f"msg {secret}"))
        j.close()
        for file in tmp_path.iterdir():  # the database and any WAL/SHM side files
            assert secret.encode() not in file.read_bytes(), file.name
        run = Journal(path).run("r1")
        assert "********" in (run.hosts["a"].error or "") and "********" in run.user
    finally:
        forget_secrets()


def test_filter_by_playbook_path_or_service_and_limit(tmp_path: Path, journal: Journal, bus: EventBus,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    book = tmp_path / "pb.yml"
    book.write_text("name: x\n")
    monkeypatch.chdir(tmp_path)
    bus.emit(started("r1", playbook="pb.yml"))
    bus.emit(RunFinished("r1", 0, {}))
    bus.emit(started("r2", playbook="other.yml"))
    bus.emit(RunFinished("r2", 0, {}))
    bus.emit(started("r3", playbook=str(book)))  # same file by another path
    bus.emit(RunFinished("r3", 0, {}))
    assert [r.run_id for r in journal.runs()] == ["r3", "r2", "r1"]
    assert [r.run_id for r in journal.runs(playbook="pb.yml")] == ["r3", "r1"]
    assert [r.run_id for r in journal.runs(playbook="./pb.yml")] == ["r3", "r1"]
    assert [r.run_id for r in journal.runs(playbook="hello", limit=2)] == ["r3", "r2"]
    assert journal.runs(playbook="nothing.yml") == []


def test_run_lookup_by_prefix(journal: Journal, bus: EventBus) -> None:
    for run_id in ("20260101-aaa", "20260101-abb", "20260202-ccc"):
        bus.emit(started(run_id))
    assert journal.run("202602").run_id == "20260202-ccc"
    with pytest.raises(ConfigError, match="ambiguous"):
        journal.run("20260101-a")
    with pytest.raises(ConfigError, match="no run with id 'zzz'"):
        journal.run("zzz")


def test_reading_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    j = Journal(tmp_path / "none" / "history.db")
    assert j.runs() == []
    assert not (tmp_path / "none").exists()


def test_newer_schema_and_garbage_files_are_clear_errors(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="schema version 99") as err:
        Journal(newer).runs()
    assert str(newer) in str(err.value)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="cannot use the history database"):
        Journal(garbage).runs()


def test_schema_version_is_recorded(journal: Journal, bus: EventBus) -> None:
    bus.emit(started())
    journal.close()
    db = sqlite3.connect(journal.path)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
        str(journal_mod.SCHEMA_VERSION),)
    db.close()


def test_concurrent_host_events_from_worker_threads(journal: Journal, bus: EventBus) -> None:
    hosts = [f"h{i:03d}" for i in range(120)]
    bus.emit(started(batches=(tuple(hosts),)))

    def work(name: str) -> None:
        bus.emit(HostStepStarted(name, "connect"))
        bus.emit(HostFinished(HostOutcome(name, "deployed", "1.0-abc", None, {"connect": 0.1})))

    threads = [threading.Thread(target=work, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.emit(RunFinished("r1", 0, {}))
    run = journal.run("r1")
    assert run.outcome_counts() == {"deployed": 120}


def test_a_database_failure_mid_run_warns_once_and_does_not_break_the_rollout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    j = Journal(tmp_path / "h.db")
    b = EventBus()
    j.subscribe(b)
    b.emit(started())
    assert j._db is not None
    j._db.execute("DROP TABLE hosts")  # the file is damaged under our feet
    b.emit(HostFinished(HostOutcome("a", "deployed")))
    b.emit(HostFinished(HostOutcome("b", "deployed")))
    b.flush()
    err = capsys.readouterr().err
    assert err.count("history not recorded") == 1
    j.close()


def test_reused_pid_is_not_mistaken_for_the_writer() -> None:
    import socket

    me = socket.gethostname()
    marker = journal_mod.process_start_marker(os.getpid())
    assert writer_alive(me, os.getpid(), marker)
    if marker is not None:  # Linux: a different start time means a different process with the same pid
        assert not writer_alive(me, os.getpid(), str(int(marker) + 1))
    assert writer_alive("another-controller", 999_999_999, None)  # cannot be checked from here


WRITER = textwrap.dedent("""
    import sys, time
    from fleetctl.rollout.events import EventBus, HostStepStarted, RunStarted
    from fleetctl.state.journal import Journal
    bus = EventBus()
    Journal(sys.argv[1]).subscribe(bus)
    bus.emit(RunStarted("crash-1", "deploy", "pb.yml", "hello", "2.0", "2.0-x", "rolling", "ops",
                        (("a", "b"),), False))
    bus.emit(HostStepStarted("a", "switch"))
    bus.flush()
    print("ready", flush=True)
    time.sleep(120)
""")


def test_a_killed_controller_shows_as_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert Journal(path).run("crash-1").status == "running"  # its writer is alive
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    run = Journal(path).run("crash-1")
    assert run.status == "interrupted" and run.exit_code is None
    assert run.host_outcome("a") == "in_flight" and run.hosts["a"].step == "switch"
    assert run.host_outcome("b") == "not_started"


def test_gate_failures_are_kept_and_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "INSERT INTO meta VALUES ('schema_version', '1');" + journal_mod._MIGRATIONS[0])
    old.close()
    journal = Journal(path)
    bus = EventBus()
    journal.subscribe(bus)  # migrates 1 -> 3
    bus.emit(started())
    bus.emit(HostFinished(HostOutcome("a", "rolled_back", "0.9-old", "status 500", failed_release="1.0-abc")))
    bus.emit(RunFinished("r1", 1, {"a": HostOutcome("a", "rolled_back", "0.9-old", "status 500",
                                                     failed_release="1.0-abc"),
                                   "b": HostOutcome("b", "not_started")}))
    assert journal.gate_failures("hello") == {"a": {"1.0-abc": "status 500"}}
    assert journal.gate_failures("other") == {}
    journal.close()


def test_finished_run_says_when_a_run_ended_and_nothing_for_a_running_or_unknown_one(journal: Journal,
                                                                                    bus: EventBus) -> None:
    assert journal.finished_run("r9") is None  # no such run
    bus.emit(started("r9"))
    assert journal.finished_run("r9") is None  # still running: its locks are live
    bus.emit(RunFinished("r9", 3, {}, "halted"))
    text = journal.finished_run("r9")
    assert text is not None and text.startswith("finished at ") and text.endswith("(halted)")
    assert journal.finished_run("r") is None  # exact ids only, never a prefix
