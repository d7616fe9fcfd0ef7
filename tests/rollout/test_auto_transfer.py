"""`transfer: auto` in a deploy over fake nodes: the controller's pull server is started and nodes pull; a node
that cannot reach it falls back to push (and says so); a pull server that cannot start means push plus a notice;
`push` starts no server. The fake nodes download over real HTTP from the real pull server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetctl.rollout.events import Event, EventBus, HostStepStarted, Notice
from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy

from .fakes import PLAYBOOK, FakeFleet, write_project

HOSTS = [f"n{i:02d}" for i in range(1, 5)]
BASE = os.environ.get("FLEETCTL_TEST_ROLLOUT_BASE", "127.0.50.1")


def deploy(tmp: Path, fleet: FakeFleet, playbook: str = PLAYBOOK) -> tuple[dict[str, str | None], list[Event]]:
    playbook_path, inventory, artifact = write_project(tmp, len(HOSTS), playbook, address_base=BASE)
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    opts = DeployOptions(playbook=playbook_path, inventories=[inventory], artifact=artifact, version="1.0.0",
                         dist_dir=tmp / "dist", owner="tester@ctl")
    result = run_deploy(prepare_deploy(opts), bus, connect=fleet.connect)
    assert result.exit_code == 0, result.message
    return {h: o.transfer for h, o in result.outcomes.items()}, events


def test_auto_pulls_from_the_controller(tmp_path: Path) -> None:
    fleet = FakeFleet(HOSTS)
    methods, events = deploy(tmp_path, fleet)
    assert methods == dict.fromkeys(HOSTS, "pull")
    for node in fleet.nodes.values():
        assert "Save-FleetArtifactFromUrl" in node.operations and "Receive-FleetArtifact" not in node.operations
        assert node.pulled_bytes == (tmp_path / "hello.exe").stat().st_size
    assert not [e for e in events if isinstance(e, Notice)]


def test_a_node_that_cannot_reach_the_pull_server_falls_back_to_push(tmp_path: Path) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n03"].cut_off_from_controller = True
    methods, events = deploy(tmp_path, fleet)
    assert methods == {"n01": "pull", "n02": "pull", "n03": "push", "n04": "pull"}
    ops = fleet.nodes["n03"].operations
    assert ops.index("Save-FleetArtifactFromUrl") < ops.index("Receive-FleetArtifact")
    assert fleet.nodes["n03"].pulled_bytes == 0 and fleet.nodes["n03"].artifact_bytes > 0
    said = [e.detail for e in events if isinstance(e, HostStepStarted) and e.host == "n03" and e.step == "transfer"]
    assert any("pull failed (DOWNLOAD_FAILED" in d and "pushing" in d for d in said), said


def test_auto_pushes_with_a_notice_when_the_pull_server_cannot_start(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(addresses: list[str]) -> object:
        raise OSError(99, "Cannot assign requested address")

    monkeypatch.setattr("fleetctl.rollout.deploy.pull_server_for", refuse)
    fleet = FakeFleet(HOSTS)
    methods, events = deploy(tmp_path, fleet)
    assert methods == dict.fromkeys(HOSTS, "push")
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "pull server could not start" in notices[0] and "pushes" in notices[0]


def test_explicit_push_starts_no_pull_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_start(addresses: list[str]) -> object:
        raise AssertionError("transfer: push started a pull server")

    monkeypatch.setattr("fleetctl.rollout.deploy.pull_server_for", must_not_start)
    fleet = FakeFleet(HOSTS)
    methods, _ = deploy(tmp_path, fleet, PLAYBOOK.replace("rollout:\n", "transfer: push\nrollout:\n"))
    assert methods == dict.fromkeys(HOSTS, "push")
    assert all("Save-FleetArtifactFromUrl" not in n.operations for n in fleet.nodes.values())
