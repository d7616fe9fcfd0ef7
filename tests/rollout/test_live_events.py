"""What the engine tells the live view (issue 17 item 1): gate progress (rate-limited, no body), failed hosts
announced when they fail, per-batch counts, and what Ctrl-C does said at once from the SIGINT path. Over fake
nodes, plus a 500-host fake fleet whose every live frame fits one 40-row screen."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

from fleetctl.node.probe import ProbeResult
from fleetctl.rollout.events import (
    BatchFinished,
    BatchStarted,
    Event,
    EventBus,
    GateProgress,
    HostFinished,
    Interrupting,
)
from fleetctl.rollout.health import GateReporter, HealthCheck, judge
from fleetctl.rollout.interruption import Interruption, RunStage, interruption_notice, sigint_handler
from fleetctl.rollout.runner import prepare_deploy, run_deploy
from fleetctl.ui.live import LiveView

from .fakes import PLAYBOOK, FakeFleet, options, write_project

# --- the gate's words ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("probe", "short"), [
    (ProbeResult(500, '{"secret": "s3cr3t body"}', 3), "500"),
    (ProbeResult(None, "", 3, "connection refused"), "connection refused"),
    (ProbeResult(None, "", 3000, "timed out"), "timeout"),
    (ProbeResult(200, '{"version": "0.9"}', 3), "200, version differs"),
    (ProbeResult(200, "not json at all", 3), "200, not JSON"),
    (ProbeResult(200, '{"version": "1.0"}', 3), "200"),
])
def test_a_probe_answer_in_a_few_words_never_quotes_the_body(probe: ProbeResult, short: str) -> None:
    verdict = judge(HealthCheck(url="http://x/", expect_json=(("version", "1.0"),)), probe)
    assert verdict.short == short
    assert "s3cr3t" not in verdict.short and "0.9" not in verdict.short


def test_gate_reporter_tells_a_change_at_once_and_the_same_answer_once_a_second() -> None:
    told: list[GateProgress] = []
    clock = [0.0]
    reporter = GateReporter("a", told.append, every=1.0, clock=lambda: clock[0])
    for attempt in range(1, 13):  # every 0.25 s for 3 s; the answer changes at try 6
        clock[0] = attempt * 0.25
        reporter.tried(attempt, 40, "connection refused" if attempt < 6 else "500")
    reporter.stable(0.0, 3.0)
    clock[0] += 0.5
    reporter.stable(0.5, 3.0)
    clock[0] += 0.5
    reporter.stable(1.0, 3.0)
    assert [(g.phase, g.attempt, g.answer, g.held) for g in told] == [
        ("probe", 1, "connection refused", 0.0), ("probe", 5, "connection refused", 0.0),
        ("probe", 6, "500", 0.0), ("probe", 10, "500", 0.0), ("stability", 0, "", 0.0), ("stability", 0, "", 1.0)]


# --- the engine ---------------------------------------------------------------------------------------------------


def run(tmp_path: Path, hosts: int, events: list[Event], playbook: str = PLAYBOOK, **kw: object) -> FakeFleet:
    project = write_project(tmp_path, hosts, playbook)
    fleet = FakeFleet([f"n{i:02d}" for i in range(1, hosts + 1)])
    for name, value in kw.pop("nodes", {}).items():  # type: ignore[attr-defined]
        setattr(fleet.nodes[name], *value)
    bus = EventBus()
    bus.subscribe(events.append)
    run_deploy(prepare_deploy(options(project, **kw)), bus, connect=fleet.connect)
    return fleet


def test_gates_emit_progress_and_an_unreachable_host_is_failed_before_any_batch(tmp_path: Path) -> None:
    events: list[Event] = []
    slow = PLAYBOOK.replace("stability_window: 0s", "stability_window: 0.3s")
    run(tmp_path, 6, events, slow, nodes={"n06": ("unreachable", True)}, max_failed="1")
    first_batch = next(i for i, e in enumerate(events) if isinstance(e, BatchStarted))
    failed = [i for i, e in enumerate(events) if isinstance(e, HostFinished) and e.result.host == "n06"]
    assert failed and failed[0] < first_batch  # n06 is in batch 3: announced when its connect failed
    assert len(failed) == 1  # once
    gates = [e for e in events if isinstance(e, GateProgress) and e.host == "n01"]
    assert gates[0].phase == "probe" and gates[0].attempt == 1 and gates[0].answer == "200"
    assert any(g.phase == "stability" and g.window == 0.3 for g in gates)
    batches = [e for e in events if isinstance(e, BatchFinished)]
    assert [(b.number, b.counts) for b in batches] == [(1, {"deployed": 2}), (2, {"deployed": 2}),
                                                       (3, {"deployed": 1, "failed": 1})]


# --- Ctrl-C -------------------------------------------------------------------------------------------------------


def test_notice_says_what_each_press_does() -> None:
    first = interruption_notice(1, RunStage("batch", in_flight=2, gating=1, batches_left=(3, 4, 5)))
    assert first == ("Ctrl-C: no new hosts start; batches 3–5 will not start; finishing 2 hosts in flight, 1 in a "
                     "health gate, then releasing the locks; Ctrl-C again to stop waiting for health gates")
    assert interruption_notice(1, RunStage("locking")).startswith("Ctrl-C: stopping before any host is changed")
    assert "the canary bake ends now" in interruption_notice(1, RunStage("baking", batches_left=(2,)))
    second = interruption_notice(2, RunStage("batch", in_flight=2, gating=2))
    assert second.startswith("Ctrl-C again: not waiting for health gates") and "previous release" in second
    assert "already stopping" in interruption_notice(3, RunStage("batch", in_flight=1))


def test_sigint_is_told_at_once_from_the_signal_path_not_the_next_check() -> None:
    interruption = Interruption()
    heard: list[tuple[int, float]] = []
    interruption.listen(lambda presses: heard.append((presses, time.monotonic())))
    before = signal.getsignal(signal.SIGINT)
    with sigint_handler(interruption):
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)
        # The main thread now blocks on something that is not the interruption: the watcher thread presses.
        blocked = threading.Event()
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            blocked.wait(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        while len(heard) < 2 and time.monotonic() < deadline:
            blocked.wait(0.01)
    assert [p for p, _ in heard] == [1, 2]
    assert heard[0][1] - sent < 0.5
    assert interruption.requested.is_set() and interruption.abort.is_set()
    assert signal.getsignal(signal.SIGINT) is before  # restored
    assert not [t for t in threading.enumerate() if t.name == "fleetctl-sigint"]  # the watcher ended


def test_the_engine_tells_ctrl_c_with_the_hosts_in_flight(tmp_path: Path) -> None:
    project = write_project(tmp_path, 4)
    fleet = FakeFleet(["n01", "n02", "n03", "n04"])
    interruption = Interruption()
    health = fleet.nodes["n01"].op_test_fleethealth

    def press_in_gate(p: dict[str, object], objects: object) -> object:
        if not interruption.requested.is_set():
            interruption.press()
        return health(p, objects)

    fleet.nodes["n01"].op_test_fleethealth = press_in_gate  # type: ignore[method-assign]
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    result = run_deploy(prepare_deploy(options(project)), bus, connect=fleet.connect, interruption=interruption)
    assert result.exit_code == 130
    [told] = [e for e in events if isinstance(e, Interrupting)]
    assert told.presses == 1
    assert "no new hosts start; batch 2 will not start; finishing" in told.message
    assert "in a health gate" in told.message and "Ctrl-C again to stop waiting for health gates" in told.message


# --- 500 hosts ----------------------------------------------------------------------------------------------------


class FrameRecorder(LiveView):
    """A live view that renders every frame it draws into text, to measure it."""

    heights: list[int]

    def _render(self) -> RenderableType:
        frame = super()._render()
        text = Console(file=io.StringIO(), width=self.console.width, force_terminal=False)
        text.print(frame)
        self.heights.append(len(text.file.getvalue().splitlines()))  # type: ignore[attr-defined]
        return frame


def test_a_500_host_run_keeps_every_live_frame_within_40_rows(tmp_path: Path) -> None:
    project = write_project(tmp_path, 500)
    fleet = FakeFleet([f"n{i:02d}" for i in range(1, 501)])
    for name in ("n07", "n300"):
        fleet.nodes[name].unreachable = True
    view = FrameRecorder(Console(file=io.StringIO(), width=120, height=40, force_terminal=True),
                         refresh_per_second=20)
    view.heights = []
    bus = EventBus()
    view.subscribe(bus)
    result = run_deploy(prepare_deploy(options(project, batch="50", max_failed="5", forks=40)), bus,
                        connect=fleet.connect)
    view.close()
    assert result.exit_code == 1, result.message  # two unreachable hosts, within the budget
    assert len(view.heights) > 5 and max(view.heights) <= 40, view.heights
    out = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", view.console.file.getvalue())  # type: ignore[attr-defined]
    assert "batch 1/10: 49 deployed, 1 failed in" in out and "batch 2/10: 50 deployed, 0 failed in" in out, [
        line for line in out.splitlines() if "batch" in line]
