"""A strategy is a procedure: one written here, knowing nothing of the engine's inside, runs through
`run_procedure` with batches, canary undo, follow-up and locks, as blue-green will (rollout/procedure.py)."""

from __future__ import annotations

import threading
from pathlib import Path

from fleetctl.rollout.events import Event, EventBus, HostFinished, HostOutcome, RunInfo, RunStarted
from fleetctl.rollout.host_steps import HostContext
from fleetctl.rollout.preparation import DeployOptions, load_fleet
from fleetctl.rollout.runner import run_procedure

from .fakes import FakeFleet, write_project


class RecordingProcedure:
    """Touches nothing on the nodes; says which part ran for which host, and fails the hosts it is told to."""

    notes = ("a third strategy",)

    def __init__(self, failing: set[str]) -> None:
        self.info = RunInfo("run-x", "deploy", "pb.yml", "hello", "9.9", None, "custom", "tester")
        self.failing = failing
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _note(self, part: str, host: str) -> None:
        with self._lock:
            self.calls.append((part, host))

    def stage(self, ctx: HostContext) -> object:
        self._note("stage", ctx.host)
        return f"staged {ctx.host}"

    def activate(self, ctx: HostContext, staged: object) -> HostOutcome:
        assert staged == f"staged {ctx.host}"
        self._note("activate", ctx.host)
        if ctx.host in self.failing:
            return HostOutcome(ctx.host, "failed", None, "told to fail", ctx.timings)
        return HostOutcome(ctx.host, "deployed", "new", None, ctx.timings)

    def follow_up(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        self._note("follow_up", ctx.host)
        return outcome

    def undo(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        self._note("undo", ctx.host)
        return HostOutcome(ctx.host, "rolled_back", "old", "undone", ctx.timings)


def _fleet(tmp_path: Path, canary: str | None) -> tuple[object, FakeFleet]:
    playbook, inventory, _ = write_project(tmp_path, 6)
    loaded = load_fleet(DeployOptions(playbook=playbook, inventories=[inventory], canary=canary, owner="t@ctl"),
                        {"version": "9.9"})
    return loaded, FakeFleet([f"n{i:02d}" for i in range(1, 7)])


def test_a_new_procedure_runs_every_host_through_its_four_parts(tmp_path: Path) -> None:
    loaded, nodes = _fleet(tmp_path, canary="1")
    procedure = RecordingProcedure(failing=set())
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    result = run_procedure(loaded, procedure, bus, connect=nodes.connect)  # type: ignore[arg-type]
    assert result.exit_code == 0, result.message
    assert {o.outcome for o in result.outcomes.values()} == {"deployed"}
    for host in nodes.nodes:
        mine = [part for part, h in procedure.calls if h == host]
        assert mine == ["stage", "activate", "follow_up"], (host, mine)
        assert nodes.nodes[host].operations == ["Lock-FleetApp", "Unlock-FleetApp"]  # locks are the engine's
    started = next(e for e in events if isinstance(e, RunStarted))
    assert (started.run_id, started.strategy) == ("run-x", "custom")


def test_a_failed_canary_undoes_the_canaries_that_passed_and_touches_nobody_else(tmp_path: Path) -> None:
    loaded, nodes = _fleet(tmp_path, canary="2")
    procedure = RecordingProcedure(failing={"n02"})
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    result = run_procedure(loaded, procedure, bus, connect=nodes.connect)  # type: ignore[arg-type]
    assert result.exit_code == 1 and result.halted and "canary failed on n02" in result.message
    assert result.outcomes["n01"].outcome == "rolled_back" and ("undo", "n01") in procedure.calls
    assert result.outcomes["n02"].outcome == "failed" and ("undo", "n02") not in procedure.calls
    assert {h for _, h in procedure.calls} == {"n01", "n02"}  # nothing staged beyond the canaries
    assert all(result.outcomes[h].outcome == "not_started" for h in ("n03", "n04", "n05", "n06"))
    assert all(node.lock is None for node in nodes.nodes.values())
    finished = [e.result.host for e in events if isinstance(e, HostFinished)]
    assert sorted(set(finished)) == [f"n{i:02d}" for i in range(1, 7)]  # every host ends reported
