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
    GateProgress,
    Halting,
    HostFinished,
    HostOutcome,
    HostProgress,
    HostStepFinished,
    HostStepStarted,
    Interrupting,
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
    bus.emit(BatchStarted(0, True, ("a",)))  # the engine's index, from 0: people read "batch 1"
    bus.emit(HostStepStarted("a", "transfer", "4.0 MiB"))
    for done in range(0, 101, 5):
        bus.emit(HostProgress("a", "transfer", done, 100))
    bus.emit(HostFinished(HostOutcome("a", "deployed", "1.0-abc", None, {"transfer": 1.0})))
    bus.emit(BatchFinished(0, True, counts={"deployed": 1}))
    bus.emit(Baking(30))
    bus.emit(BatchStarted(1, False, ("b", "c")))
    bus.emit(HostStepStarted("b", "health"))
    bus.emit(HostFinished(HostOutcome("b", "rolled_back", "0.9-x", "health: status 500 [bad]", {"health": 2.0})))
    bus.emit(BatchFinished(1, False, ("b",), counts={"rolled_back": 1, "not_started": 1}))
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
    assert any(line.endswith("b: ROLLED_BACK in 2.0s: health: status 500 [bad]") for line in lines)
    assert "canary batch 1/2: 1 deployed, 0 failed in 0.0 s" in out
    assert "batch 2/2: 0 deployed, 1 failed (1 rolled back), 1 not started in 0.0 s — FAILED: b" in out
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
    view.record(BatchStarted(1, False, ("b", "c")))
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


# --- what the frame explains (issue 17 item 1) ----------------------------------------------------------------


def frame_text(view: LiveView, width: int = 120) -> str:
    frame = Console(file=io.StringIO(), width=width, force_terminal=False)
    frame.print(view._render())
    return frame.file.getvalue()  # type: ignore[attr-defined]


def terminal_view(clock: list[float], height: int = 40) -> tuple[LiveView, io.StringIO]:
    buf = io.StringIO()
    view = LiveView(Console(file=buf, width=120, height=height, force_terminal=True), clock=lambda: clock[0],
                    refresh_per_second=50)
    return view, buf


def test_a_gated_host_shows_its_try_and_answer_then_its_stability_window() -> None:
    clock = [0.0]
    view, _ = terminal_view(clock)
    view.record(run_started())
    view.record(BatchStarted(0, True, ("a",)))
    view.record(HostStepStarted("a", "health"))
    view.record(GateProgress("a", "probe", attempt=12, retries=40, answer="500"))
    clock[0] = 6.0
    assert re.search(r"a\s+health\s+try 12/40: 500\s+6\.0s", frame_text(view))
    view.record(GateProgress("a", "probe", attempt=13, retries=40, answer="connection refused"))
    assert "try 13/40: connection refused" in frame_text(view)
    view.record(GateProgress("a", "stability", held=2.4, window=3))
    assert re.search(r"a\s+health\s+stable 2/3 s", frame_text(view))
    # A rollback's own gate says it is a health gate inside the rollback step.
    view.record(HostStepStarted("a", "rollback", "health"))
    view.record(GateProgress("a", "probe", attempt=1, retries=40, answer="timeout"))
    assert re.search(r"a\s+rollback\s+health try 1/40: timeout", frame_text(view))
    view.close()


def test_hosts_of_later_batches_read_queued_with_their_batch_not_lock() -> None:
    clock = [0.0]
    view, _ = terminal_view(clock)
    view.record(RunStarted("run-1", "deploy", "pb.yml", "hello", "1.0", None, "rolling", "ops",
                           (("a",), ("b",), ("c",)), True))
    for host in "abc":
        view.record(HostStepStarted(host, "lock"))
    text = frame_text(view)
    assert "connecting and locking: 0/3 hosts locked" in text and re.search(r"b\s+lock", text)
    for host in "abc":
        view.record(HostStepFinished(host, "lock", 0.0, 0.1))
    view.record(BatchStarted(0, True, ("a",)))
    view.record(HostStepStarted("a", "transfer"))
    clock[0] = 30.0
    text = frame_text(view)
    assert "canary batch 1/3: 1 hosts" in text
    assert re.search(r"b\s+queued \(batch 2\)", text) and re.search(r"c\s+queued \(batch 3\)", text)
    assert not re.search(r"[bc]\s+lock", text)
    view.close()


def test_an_unreachable_host_is_failed_in_the_frame_as_soon_as_it_is_announced() -> None:
    clock = [0.0]
    view, _ = terminal_view(clock)
    view.record(RunStarted("run-1", "deploy", "pb.yml", "hello", "1.0", None, "rolling", "ops",
                           (("a",), ("b",), ("c",)), False))
    view.record(HostStepStarted("c", "lock"))
    view.record(HostStepFinished("c", "lock", 0.0, 0.1, failed=True))
    view.record(HostFinished(HostOutcome("c", "failed", None, "connect: connection refused")))
    text = frame_text(view)
    assert "1/3 hosts" in text and "✗ c failed: connect: connection refused" in text
    assert not re.search(r"c\s+queued", text)
    view.close()


def test_finished_batches_stay_in_the_scrollback_and_give_an_eta() -> None:
    clock = [0.0]
    view, buf = terminal_view(clock)
    hosts = tuple(f"h{i}" for i in range(10))
    view.record(RunStarted("run-1", "deploy", "pb.yml", "hello", "1.0", None, "rolling", "ops",
                           (hosts[:2], hosts[2:4], hosts[4:6], hosts[6:8], hosts[8:]), False))
    view.record(BatchStarted(0, False, hosts[:2]))
    assert "ETA" not in frame_text(view)  # nothing to go by before a batch finished
    clock[0] = 14.2
    for host in hosts[:2]:
        view.record(HostFinished(HostOutcome(host, "deployed", "1.0-x")))
    view.record(BatchFinished(0, True, counts={"deployed": 2}))
    view.record(BatchStarted(1, False, hosts[2:4]))
    clock[0] = 18.2
    # 4 s into batch 2 of 5 at 14.2 s a batch: 10.2 s of it and 3 more batches, 42.6 s plus a bit: "52.8s".
    assert "ETA 52.8s" in frame_text(view)
    view.close()
    assert "batch 1/5: 2 deployed, 0 failed in 14.2 s" in buf.getvalue()


def test_ctrl_c_notice_is_printed_above_the_frame_and_shown_in_it() -> None:
    clock = [0.0]
    view, buf = terminal_view(clock)
    view.record(run_started())
    view.record(Interrupting(1, "Ctrl-C: no new hosts start; finishing 2 hosts in flight"))
    assert "Ctrl-C: no new hosts start; finishing 2 hosts in flight" in frame_text(view)
    view.close()
    assert buf.getvalue().count("Ctrl-C: no new hosts start") >= 2  # printed above, and in the last frame


def test_500_hosts_collapse_into_counts_and_the_frame_fits_the_screen() -> None:
    clock = [0.0]
    view, _ = terminal_view(clock, height=40)
    hosts = tuple(f"web{i:03d}" for i in range(1, 501))
    batches = (hosts[:5],) + tuple(hosts[i:i + 55] for i in range(5, 500, 55))
    view.record(RunStarted("run-1", "deploy", "pb.yml", "hello", "1.0", None, "rolling", "ops", batches, True))
    for host in hosts:
        view.record(HostStepFinished(host, "lock", 0.0, 0.1))
    view.record(BatchStarted(0, True, batches[0]))
    for host in batches[0]:
        view.record(HostFinished(HostOutcome(host, "failed", None, "health: unhealthy after 40 tries: status 500")))
    view.record(BatchFinished(0, False, batches[0], counts={"failed": 5}))
    view.record(BatchStarted(1, False, batches[1]))
    for host in batches[1][:50]:
        view.record(HostStepStarted(host, "health"))
        view.record(GateProgress(host, "probe", attempt=3, retries=40, answer="500"))
    text = frame_text(view)
    lines = text.splitlines()
    assert len(lines) <= 40, text
    assert "5 waiting in batch 2 (all workers busy)" in text
    assert "440 queued in batches 3–10" in text
    assert re.search(r"… 3\d more\s+3\d health", text), text
    assert "✗ 5 hosts (web001, …) failed: health: unhealthy after 40 tries: status 500" in text
    view.close()


def test_plain_log_says_the_same_with_gate_tries_rate_limited() -> None:
    clock = [0.0]
    buf = io.StringIO()
    view = LiveView(Console(file=buf, width=200), clock=lambda: clock[0], plain_every=5.0)
    view.record(RunStarted("run-1", "deploy", "pb.yml", "hello", "1.0", None, "rolling", "ops",
                           (("a",), ("b", "c"), ("d",)), False))
    view.record(BatchStarted(0, False, ("a",)))
    for attempt in range(1, 31):  # a try every 0.25 s for 7.5 s
        clock[0] = attempt * 0.25
        view.record(GateProgress("a", "probe", attempt=attempt, retries=40,
                                 answer="connection refused" if attempt < 10 else "500"))
    view.record(GateProgress("a", "stability", held=0, window=3))
    view.record(Interrupting(1, "Ctrl-C: no new hosts start; batches 2–3 will not start"))
    out = buf.getvalue()
    tries = [line.split(" ", 1)[1] for line in out.splitlines() if ": health " in line]
    # On a change of answer, else every 5 s, and the start of the stability window.
    assert tries == ["a: health try 1/40: connection refused", "a: health try 10/40: 500",
                     "a: health try 30/40: 500", "a: health stable 0/3 s"], tries
    assert "batch 1/3: 1 hosts: a; 3 queued in batches 2–3" in out
    assert "Ctrl-C: no new hosts start; batches 2–3 will not start" in out
