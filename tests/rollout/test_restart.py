"""`fleetctl restart`'s procedure on the fake fleet: every host's service is stopped and started again behind the
deploy's gate, its release untouched; a failing gate fails the host (nothing to roll back, and it says so), marks
no release failed and halts the run like a failed deploy batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.rollout.events import Event, EventBus, RunStarted
from fleetctl.rollout.restart import prepare_restart, run_restart
from fleetctl.rollout.runner import prepare_deploy, run_deploy

from .fakes import FakeFleet, options, write_project


@pytest.fixture
def deployed(tmp_path: Path) -> tuple[tuple[Path, Path, Path], FakeFleet]:
    project = write_project(tmp_path, hosts=4)
    fleet = FakeFleet(["n01", "n02", "n03", "n04"])
    result = run_deploy(prepare_deploy(options(project)), EventBus(), connect=fleet.connect)
    assert result.exit_code == 0
    return project, fleet


def test_restart_stops_and_starts_every_host_behind_its_gate_and_keeps_its_release(
        deployed: tuple[tuple[Path, Path, Path], FakeFleet]) -> None:
    project, fleet = deployed
    before = {n: (node.current, node.pid) for n, node in fleet.nodes.items()}
    for node in fleet.nodes.values():
        node.operations.clear()
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    result = run_restart(prepare_restart(options(project, batch="1")), bus, connect=fleet.connect)
    bus.close()
    assert result.exit_code == 0, result.message
    assert {h: o.outcome for h, o in result.outcomes.items()} == dict.fromkeys(fleet.nodes, "restarted")
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.kind == "restart" and started.batches == (("n01",), ("n02",), ("n03",), ("n04",))
    for name, node in fleet.nodes.items():
        assert node.current == before[name][0] and result.outcomes[name].release == node.current
        assert node.pid != before[name][1]  # a new process
        ops = node.operations
        assert ops.index("Stop-FleetService") < ops.index("Start-FleetService") < ops.index("Test-FleetHealth")
        assert not {"Install-FleetRelease", "Switch-FleetRelease", "Set-FleetService"} & set(ops)
        assert "Lock-FleetApp" in ops and "Unlock-FleetApp" in ops
    assert "4 restarted" in result.message


def test_a_failing_gate_fails_the_host_marks_nothing_and_halts(
        deployed: tuple[tuple[Path, Path, Path], FakeFleet]) -> None:
    project, fleet = deployed
    broken = fleet.nodes["n02"]
    assert broken.service is not None
    broken.service["Arguments"] = [*broken.running_args(), "unhealthy"]  # answers 500 once restarted
    release = broken.current
    result = run_restart(prepare_restart(options(project, batch="1")), EventBus(), connect=fleet.connect)
    assert {h: o.outcome for h, o in result.outcomes.items()} == {
        "n01": "restarted", "n02": "failed", "n03": "not_started", "n04": "not_started"}
    failed = result.outcomes["n02"]
    assert failed.release == release and failed.failed_release is None
    assert failed.error is not None and f"its release {release} is unchanged: nothing to roll back" in failed.error
    assert "status 500" in failed.error
    assert "Set-FleetReleaseVerdict" not in broken.operations  # the restart marked no release failed
    assert all(r.get("gate_failed") is None for r in broken.releases)
    assert result.exit_code == 3  # halted partway, as a failed deploy batch halts
    assert "some hosts were restarted, the others not; every host keeps its release" in (result.message or "")
    assert "mixed releases" not in (result.message or "")


def test_a_host_with_nothing_installed_is_skipped(tmp_path: Path) -> None:
    project = write_project(tmp_path, hosts=2)
    fleet = FakeFleet(["n01", "n02"])
    result = run_restart(prepare_restart(options(project)), EventBus(), connect=fleet.connect)
    assert {h: o.outcome for h, o in result.outcomes.items()} == {"n01": "skipped", "n02": "skipped"}
    assert "nothing to restart" in (result.outcomes["n01"].error or "")
    assert not any("Stop-FleetService" in n.operations for n in fleet.nodes.values())
