"""The host plan: one pure decision per host (rollout/host_plan.py) that both `--dry-run` and the deploy carry out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fleetctl.node.results import NodeState, ReleaseInfo, ServiceInfo
from fleetctl.rollout import host_plan
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.host_plan import HostPlan, plan_host
from fleetctl.rollout.release import Release, ServiceDefinition
from fleetctl.rollout.runner import DeployOptions, dry_run, prepare_deploy, run_deploy

from .fakes import FakeFleet, write_project

SHA = "ab" * 32
SVC = ServiceDefinition(name="hello", binary_path="C:\\apps\\hello\\current\\hello.exe", arguments=("-mode", "ok"))
NEW = Release(id="2.0.0-aaaaaaaa", version="2.0.0", app="hello", root="C:\\apps\\hello", artifact_sha256=SHA,
              exe_name="hello.exe", files=(), service=SVC)


def state(current: str | None, *, kept: tuple[tuple[str, str], ...] = (), previous: str | None = None,
          service: str | None = "Running") -> NodeState:
    releases = tuple(ReleaseInfo(rid, version, SHA, None) for rid, version in kept)
    info = ServiceInfo(True, service, 5, None, 0, None) if service else None
    return NodeState(releases, current, previous, info, None)


OLD = ("1.0.0-bbbbbbbb", "1.0.0")


@pytest.mark.parametrize("node,skip,install,create,switch,restart,back", [
    # fresh host: everything, no way back
    (state(None, service=None), False, True, True, True, False, None),
    # running the old release: the new one goes next to it, the way back is the old one
    (state(OLD[0], kept=(OLD,)), False, True, False, True, True, OLD[0]),
    # already runs the new release: nothing
    (state(NEW.id, kept=(OLD, (NEW.id, "2.0.0")), previous=OLD[0]), True, False, False, False, True, OLD[0]),
    # on the new release but stopped: no install, no switch, start; the way back is the one before
    (state(NEW.id, kept=(OLD, (NEW.id, "2.0.0")), previous=OLD[0], service="Stopped"),
     False, False, False, False, False, OLD[0]),
    # the new release is kept (rolled back from earlier): no transfer or install, switch to it
    (state(OLD[0], kept=((NEW.id, "2.0.0"), OLD)), False, False, False, True, True, OLD[0]),
])
def test_plan_host(node: NodeState, skip: bool, install: bool, create: bool, switch: bool, restart: bool,
                   back: str | None) -> None:
    plan = plan_host(NEW, node)
    assert (plan.skip, plan.install, plan.create_service, plan.switch, plan.restart, plan.rollback_to) == \
        (skip, install, create, switch, restart, back)
    if back == OLD[0]:
        assert plan.rollback_version == "1.0.0"


def test_changes_say_the_plan_in_order() -> None:
    plan = plan_host(NEW, state(OLD[0], kept=(OLD,)))
    assert plan.changes(SHA, "hello") == [
        f"transfer artifact {SHA[:12]}", f"install release {NEW.id}", "update service hello definition (if changed)",
        f"switch {OLD[0]} -> {NEW.id}", "restart service"]
    cached = plan_host(NEW, state(OLD[0], kept=(OLD,)), artifact_cached=True)
    assert cached.changes(SHA, "hello")[0] == f"install release {NEW.id}"
    fresh = plan_host(NEW, state(None, service=None)).changes(SHA, "hello")
    assert "create service hello" in fresh and fresh[-1] == "start service" and f"switch (none) -> {NEW.id}" in fresh
    assert plan_host(NEW, state(NEW.id, kept=((NEW.id, "2.0.0"),))).changes(SHA, "hello") == []


def test_dry_run_and_deploy_carry_out_the_same_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Change the plan for one host (pretend n02 is current) and for another (pretend n03 has the release
    # installed): the dry run says it and the deploy does it.
    real = host_plan.plan_host
    planned: list[str] = []

    playbook, inventory, artifact = write_project(tmp_path, 3)
    options = DeployOptions(playbook=playbook, inventories=[inventory], artifact=artifact, version="1.0.0",
                            dist_dir=tmp_path / "dist", owner="tester@ctl")
    prepared = prepare_deploy(options)
    fleet = FakeFleet(["n01", "n02", "n03"])
    host_of = {id(r): h for h, r in prepared.releases.items()}

    def plan_for(release: Release, node: NodeState, **kw: object) -> HostPlan:
        plan = real(release, node, **kw)  # type: ignore[arg-type]
        host = host_of[id(release)]
        planned.append(host)
        if host == "n02":
            return replace(plan, skip=True)
        if host == "n03":
            return replace(plan, install=False, artifact_cached=True)
        return plan

    monkeypatch.setattr("fleetctl.rollout.runner.plan_host", plan_for)
    monkeypatch.setattr("fleetctl.rollout.deploy.plan_host", plan_for)
    previews = dry_run(prepared, connect=fleet.connect)
    assert previews["n02"].changes == ()
    assert not any(c.startswith(("transfer", "install")) for c in previews["n03"].changes)
    assert previews["n01"].changes[0].startswith("transfer artifact")
    assert all(node.operations.count("Install-FleetRelease") == 0 for node in fleet.nodes.values())  # read-only

    for node in fleet.nodes.values():
        node.operations.clear()
    result = run_deploy(prepared, EventBus(), connect=fleet.connect)
    assert sorted(planned) == ["n01", "n01", "n02", "n02", "n03", "n03"]  # once per host in each
    assert result.outcomes["n02"].outcome == "skipped"
    assert "Switch-FleetRelease" not in fleet.nodes["n02"].operations
    n03 = fleet.nodes["n03"].operations
    assert "Install-FleetRelease" not in n03 and "Receive-FleetArtifact" not in n03
    assert "Save-FleetArtifactFromUrl" not in n03
    # The only artifact check is the one read ahead with the lock (node/read_ahead.py): no round trip of its own.
    assert n03[:3] == ["Lock-FleetApp", "Get-FleetState", "Test-FleetArtifact"]
    assert n03.count("Test-FleetArtifact") == 1
    n01 = fleet.nodes["n01"].operations
    assert "Install-FleetRelease" in n01 and result.outcomes["n01"].outcome == "deployed"
