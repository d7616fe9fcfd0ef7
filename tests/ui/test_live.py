"""The live view: plain log when not a terminal, rich display on one, safe with events from many threads."""

from __future__ import annotations

import io
import re
import threading
import time

from rich.console import Console

from fleetctl.config.redaction import forget_secrets, register_secret
from fleetctl.rollout.events import (
    Baking,
    BatchFinished,
    BatchStarted,
    EventBus,
    Halting,
    HostFinished,
    HostOutcome,
    HostProgress,
    HostStepStarted,
    RunFinished,
    RunStarted,
)
from fleetctl.ui.live import LiveView

ANSI = re.compile(r"\x1b\[")


def run_started(hosts: tuple[str, ...] = ("a", "b", "c")) -> RunStarted:
    return RunStarted("run-1", "deploy", "pb.yml", "hello", "1.0", "1.0-abc", "rolling", "ops",
                      (hosts[:1], hosts[1:]), True)


def a_rollout(bus: EventBus) -> None:
    bus.emit(run_started())
    bus.emit(BatchStarted(1, True, ("a",)))
    bus.emit(HostStepStarted("a", "transfer", "4.0 MiB"))
    for done in range(0, 101, 5):
        bus.emit(HostProgress("a", "transfer", done, 100))
    bus.emit(HostFinished(HostOutcome("a", "deployed", "1.0-abc", None, {"transfer": 1.0})))
    bus.emit(BatchFinished(1, True))
    bus.emit(Baking(30))
    bus.emit(BatchStarted(2, False, ("b", "c")))
    bus.emit(HostStepStarted("b", "health"))
    bus.emit(HostFinished(HostOutcome("b", "rolled_back", "0.9-x", "health: status 500 [bad]")))
    bus.emit(BatchFinished(2, False, ("b",)))
    bus.emit(Halting("failure budget exceeded (1 > 0)"))
    bus.emit(RunFinished("run-1", 1, {"a": HostOutcome("a", "deployed", "1.0-abc"),
                                      "b": HostOutcome("b", "rolled_back", "0.9-x", "health: status 500 [bad]"),
                                      "c": HostOutcome("c", "not_started")}, "1 rolled back; halted"))


def test_plain_log_when_not_a_terminal() -> None:
    buf = io.StringIO()
    view = LiveView(Console(file=buf, width=200))
    assert view.plain
    bus = EventBus()
    view.subscribe(bus)
    a_rollout(bus)
    view.close()
    out = buf.getvalue()
    assert not ANSI.search(out)
    lines = out.splitlines()
    assert "canary batch 1/2: 1 hosts: a" in out
    # Transfer progress is throttled to a few marks, not one line per chunk.
    assert [line.split(" ", 1)[1] for line in lines if "transfer " in line and "%" in line] == [
        "a: transfer 25%", "a: transfer 50%", "a: transfer 75%"]
    assert any(line.endswith("b: ROLLED_BACK in 0.0s: health: status 500 [bad]") for line in lines)
    assert "HALTING: failure budget exceeded (1 > 0)" in out
    assert "with exit code 1: 1 rolled back; halted" in out
    summary = out[out.index("Run run-1"):]
    for host, outcome in (("a", "deployed"), ("b", "rolled_back"), ("c", "not_started")):
        assert re.search(rf"{host}\s+│\s+{outcome}", summary), summary


def test_plain_log_masks_secrets() -> None:
    register_secret("pa55word-XYZ")
    try:
        buf = io.StringIO()
        bus = EventBus()
        LiveView(Console(file=buf, width=200)).subscribe(bus)
        bus.emit(run_started())
        bus.emit(HostFinished(HostOutcome("a", "failed", None, "login pa55word-XYZ refused")))
        bus.emit(RunFinished("run-1", 1, {"a": HostOutcome("a", "failed", None, "login pa55word-XYZ refused")}))
        bus.flush()
        assert "pa55word-XYZ" not in buf.getvalue() and "********" in buf.getvalue()
    finally:
        forget_secrets()


def test_terminal_frame_shows_progress_batch_in_flight_hosts_and_failures() -> None:
    clock = [100.0]
    console = Console(file=io.StringIO(), width=120, height=40, force_terminal=True)
    view = LiveView(console, clock=lambda: clock[0], refresh_per_second=50)
    assert not view.plain
    view.record(run_started())
    view.record(BatchStarted(2, False, ("b", "c")))
    view.record(HostStepStarted("b", "transfer", "4 MiB"))
    view.record(HostProgress("b", "transfer", 30, 60))
    view.record(HostStepStarted("c", "health"))
    view.record(HostFinished(HostOutcome("a", "failed", None, "disk full on C:")))
    clock[0] = 112.5
    frame = Console(file=io.StringIO(), width=120, force_terminal=False)
    frame.print(view._render())
    text = frame.file.getvalue()  # type: ignore[attr-defined]
    view.close()
    assert "1/3 hosts" in text and "batch 2/2: 2 hosts" in text
    assert re.search(r"b\s+transfer\s+4 MiB 50%\s+12\.5s", text), text
    assert re.search(r"c\s+health\s+12\.5s", text), text
    assert "a failed: disk full on C:" in text


def test_events_from_many_threads_while_the_display_refreshes() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=120, height=30, force_terminal=True)
    view = LiveView(console, refresh_per_second=100)
    bus = EventBus()
    view.subscribe(bus)
    hosts = tuple(f"h{i:02d}" for i in range(40))
    bus.emit(RunStarted("run-2", "deploy", "pb.yml", "hello", "1.0", None, "rolling", "ops", (hosts,), False))
    bus.emit(BatchStarted(1, False, hosts))

    def work(name: str) -> None:
        for step in ("connect", "lock", "transfer", "switch", "health"):
            bus.emit(HostStepStarted(name, step))  # type: ignore[arg-type]
            time.sleep(0.002)
        bus.emit(HostFinished(HostOutcome(name, "deployed", "1.0-abc")))

    threads = [threading.Thread(target=work, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bus.emit(RunFinished("run-2", 0, {}))
    view.close()
    out = buf.getvalue()
    # The summary table accounts for every host: 40 alike rows collapse into one (ui/report.py).
    assert "h[00:39]" in out and "40 deployed" in out
    assert "exit code 0" in out
    assert not [t for t in threading.enumerate() if type(t).__name__ == "_RefreshThread"]  # display stopped


def test_close_without_run_finished_stops_the_display_and_keeps_the_last_frame() -> None:
    buf = io.StringIO()
    view = LiveView(Console(file=buf, width=100, height=30, force_terminal=True), refresh_per_second=50)
    view.record(run_started())
    view.record(HostStepStarted("a", "switch"))
    view.close()
    view.close()  # twice is fine
    assert view._live is None
    assert "switch" in buf.getvalue()
