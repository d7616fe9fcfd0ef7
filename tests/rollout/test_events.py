"""The event bus: emitters never wait for subscribers, order is kept, the journal writes batches, and no event is
lost when the run ends, the interpreter exits, Ctrl-C arrives or the program crashes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from fleetctl.rollout.events import (
    Event,
    EventBus,
    HostFinished,
    HostOutcome,
    HostStepStarted,
    Notice,
    RunStarted,
)
from fleetctl.state.journal import Journal

from .fakes import FakeFleet, write_project

REPO = Path(__file__).resolve().parents[2]


def test_emit_does_not_wait_for_a_blocked_subscriber() -> None:
    bus = EventBus()
    release = threading.Event()
    seen: list[Event] = []

    def stuck(event: Event) -> None:
        release.wait(30)
        seen.append(event)

    bus.subscribe(stuck)
    started = time.monotonic()
    def emit_many(i: int) -> None:
        for n in range(200):
            bus.emit(Notice(f"{i}-{n}"))

    threads = [threading.Thread(target=emit_many, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 1,600 events emitted while the subscriber could not take a single one (the old bus deadlocked here).
    assert time.monotonic() - started < 5
    assert not bus.flush(timeout=0.05)
    release.set()
    assert bus.flush(timeout=30)
    assert len(seen) == 1600


def test_every_subscriber_sees_the_events_in_emission_order_and_batches_concatenate_to_it() -> None:
    bus = EventBus()
    one: list[Event] = []
    batches: list[list[Event]] = []

    def slow(event: Event) -> None:
        if len(one) % 100 == 0:
            time.sleep(0.01)  # let events queue up, so later batches carry several
        one.append(event)

    bus.subscribe(slow)
    bus.subscribe_batches(lambda events: batches.append(list(events)))
    emitted = [Notice(str(n)) for n in range(2000)]
    for event in emitted:
        bus.emit(event)
    bus.flush()
    assert one == emitted
    assert [e for b in batches for e in b] == emitted
    assert len(batches) < len(emitted)  # delivered several at a time


def test_events_of_one_thread_keep_their_order_among_many_threads() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)

    def host(name: str) -> None:
        for step in ("connect", "transfer", "install", "stop", "switch", "start", "health"):
            bus.emit(HostStepStarted(name, step))  # type: ignore[arg-type]
        bus.emit(HostFinished(HostOutcome(name, "deployed")))

    threads = [threading.Thread(target=host, args=(f"h{i}",)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.flush()
    for i in range(50):
        mine = [e for e in seen if getattr(e, "host", None) == f"h{i}" or
                (isinstance(e, HostFinished) and e.result.host == f"h{i}")]
        assert [getattr(e, "step", "finished") for e in mine] == [
            "connect", "transfer", "install", "stop", "switch", "start", "health", "finished"]


def test_a_raising_subscriber_is_reported_once_and_the_others_get_everything(
        capsys: pytest.CaptureFixture[str]) -> None:
    bus = EventBus()
    good: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("display broke")

    bus.subscribe(broken)
    bus.subscribe(good.append)
    for n in range(10):
        bus.emit(Notice(str(n)))
    bus.flush()
    assert len(good) == 10
    assert capsys.readouterr().err.count("display broke") == 1


def test_flush_from_inside_a_subscriber_does_not_wait_for_itself() -> None:
    bus = EventBus()
    results: list[bool] = []
    bus.subscribe(lambda event: results.append(bus.flush(timeout=5)))
    bus.emit(Notice("x"))
    assert bus.flush(timeout=10) and results == [False]


def test_the_journal_writes_a_batch_of_events_in_one_transaction(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "history.db")
    bus = EventBus()
    gate = threading.Event()

    def held(event: Event) -> None:
        gate.wait(30)  # holds delivery until every event below is queued

    bus.subscribe(held)
    batches: list[int] = []
    original = journal.record_batch

    def counting(events: Sequence[Event]) -> None:
        batches.append(len(events))
        original(events)

    journal.record_batch = counting  # type: ignore[method-assign]
    journal.subscribe(bus)
    hosts = tuple(f"h{i:03d}" for i in range(100))
    bus.emit(RunStarted("r1", "deploy", "pb.yml", "hello", "1.0", "1.0-x", "rolling", "ops", (hosts,), False))
    for host in hosts:
        bus.emit(HostStepStarted(host, "connect"))
        bus.emit(HostFinished(HostOutcome(host, "skipped", "1.0-x")))
    gate.set()
    assert journal.run("r1").outcome_counts() == {"skipped": 100}
    assert sum(batches) == 201 and len(batches) <= 2
    journal.close()


def test_after_a_run_returns_every_subscriber_has_seen_run_finished(tmp_path: Path) -> None:
    from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy

    playbook, inventory, artifact = write_project(tmp_path, 3)
    options = DeployOptions(playbook=playbook, inventories=[inventory], artifact=artifact, version="1.0.0",
                            dist_dir=tmp_path / "dist", owner="tester@ctl")
    bus = EventBus()
    seen: list[Event] = []

    def slow(event: Event) -> None:
        time.sleep(0.005)
        seen.append(event)

    bus.subscribe(slow)
    result = run_deploy(prepare_deploy(options), bus, connect=FakeFleet(["n01", "n02", "n03"]).connect)
    assert result.exit_code == 0, result.message
    assert type(seen[-1]).__name__ == "RunFinished" and type(seen[0]).__name__ == "RunStarted"


# A controller that leaves while events are still queued behind a slow subscriber: the journal gets every one.
LEAVER = textwrap.dedent("""
    import os, signal, sys, time
    from fleetctl.rollout.events import EventBus, HostFinished, HostOutcome, HostStepStarted, RunStarted
    from fleetctl.state.journal import Journal
    bus = EventBus()
    bus.subscribe(lambda event: time.sleep(0.002))  # a slow screen: events queue up behind it
    Journal(sys.argv[1]).subscribe(bus)
    hosts = tuple(f"h{i:03d}" for i in range(300))
    bus.emit(RunStarted("leave-1", "deploy", "pb.yml", "hello", "2.0", "2.0-x", "rolling", "ops", (hosts,), False))
    for host in hosts:
        bus.emit(HostStepStarted(host, "switch"))
        bus.emit(HostFinished(HostOutcome(host, "deployed", "2.0-x")))
    how = sys.argv[2]
    if how == "crash":
        raise RuntimeError("a bug in the controller")
    if how == "exit":
        sys.exit(3)
    if how == "ctrl-c":
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job ignores it)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
""")


@pytest.mark.parametrize("how", ["crash", "exit", "ctrl-c", "end"])
def test_no_event_is_lost_when_the_controller_leaves(tmp_path: Path, how: str) -> None:
    path = tmp_path / "history.db"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", LEAVER, str(path), how], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode != 0 or how == "end", proc.stderr
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT count(*) FROM hosts WHERE run_id = 'leave-1' AND outcome = 'deployed'").fetchone()
    finally:
        db.close()
    assert rows == (300,), proc.stderr
