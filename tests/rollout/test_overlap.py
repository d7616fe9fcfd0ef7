"""How the engine overlaps hosts without weakening its guarantees (fake nodes): the next batch is staged
(transfer + install, service untouched) while the current batch is in its health gates; never during a canary
batch, so a failed canary leaves every other host untouched; a halt leaves staged hosts on their old release."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetctl.node.client import NodeClient
from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy
from fleetctl.transport.fake import FakeCall, FakeTransport

from .fakes import FakeFleet, write_project

HOSTS = [f"n{i:02d}" for i in range(1, 6)]  # batches of 2: (n01, n02) (n03, n04) (n05)
WAIT = 5.0  # how long a gate waits for the next batch's staging before the test calls it missing
Hook = Callable[[str, FakeCall], Any]


# A host locked and released, nothing else: the two reads ride on the lock's round trip (node/read_ahead.py).
LOCKED_ONLY = ["Lock-FleetApp", "Get-FleetState", "Test-FleetArtifact", "Unlock-FleetApp"]

def options(tmp: Path, **kw: object) -> DeployOptions:
    playbook, inventory, artifact = write_project(tmp, len(HOSTS))
    base: dict[str, Any] = {"playbook": playbook, "inventories": [inventory], "artifact": artifact,
                            "version": "1.0.0", "dist_dir": tmp / "dist", "owner": "tester@ctl"}
    base.update(kw)
    return DeployOptions(**base)


def run(fleet: FakeFleet, opts: DeployOptions, hook: Hook | None = None) -> RunResult:
    """Deploy through nodes whose calls pass `hook(host, call)` first (a non-None answer replaces the node's)."""
    def connect(host: str) -> NodeClient:
        node = fleet.nodes[host]

        def handler(call: FakeCall) -> Any:
            answer = hook(host, call) if hook else None
            return node(call) if answer is None else answer
        return NodeClient(FakeTransport(handler, host=host))

    return run_deploy(prepare_deploy(opts), EventBus(), connect=connect)


def test_next_batch_is_staged_while_the_current_batch_is_in_its_gates(tmp_path: Path) -> None:
    fleet = FakeFleet(HOSTS)
    staged = {h: threading.Event() for h in ("n03", "n04")}
    seen_in_gate: list[bool] = []

    def hook(host: str, call: FakeCall) -> Any:
        if call.operation == "Install-FleetRelease" and host in staged:
            staged[host].set()
        if call.operation == "Test-FleetHealth" and host in ("n01", "n02"):
            seen_in_gate.append(all(e.wait(WAIT) for e in staged.values()))
        return None

    result = run(fleet, options(tmp_path), hook)
    assert result.exit_code == 0, result.message
    assert seen_in_gate and all(seen_in_gate)
    for name in HOSTS:  # staged or not, every host went through the whole sequence once
        ops = [op for op in fleet.nodes[name].operations if op not in ("Get-FleetState", "Test-FleetHealth")]
        assert ops == ["Lock-FleetApp", "Test-FleetArtifact", "Receive-FleetArtifact", "Install-FleetRelease",
                       "Set-FleetFirewallRule", "Set-FleetService", "Stop-FleetService", "Switch-FleetRelease",
                       "Start-FleetService", "Remove-FleetRelease", "Unlock-FleetApp"], name


def test_failed_canary_leaves_every_other_host_untouched(tmp_path: Path) -> None:
    fleet = FakeFleet(HOSTS)
    assert run(fleet, options(tmp_path)).exit_code == 0
    for node in fleet.nodes.values():
        node.operations.clear()

    def unhealthy_canary(host: str, call: FakeCall) -> Any:
        if call.operation == "Test-FleetHealth" and host == "n01" and fleet.nodes[host].version() == "2.0.0":
            return {"status": 500, "body": "{}", "elapsed_ms": 1, "error": None}
        return None

    result = run(fleet, options(tmp_path, version="2.0.0", canary="1"), unhealthy_canary)
    assert result.exit_code == 1 and result.outcomes["n01"].outcome == "rolled_back"
    for name in HOSTS[1:]:
        assert fleet.nodes[name].operations == LOCKED_ONLY, name
        assert fleet.nodes[name].version() == "1.0.0"


def test_halt_leaves_staged_hosts_installed_but_never_activated(tmp_path: Path) -> None:
    fleet = FakeFleet(HOSTS)
    assert run(fleet, options(tmp_path)).exit_code == 0
    old = {n: fleet.nodes[n].current for n in HOSTS}
    for node in fleet.nodes.values():
        node.operations.clear()
    staged = {h: threading.Event() for h in ("n03", "n04")}

    def n02_fails_once_next_batch_staged(host: str, call: FakeCall) -> Any:
        if call.operation == "Install-FleetRelease" and host in staged:
            staged[host].set()
        if call.operation == "Test-FleetHealth" and host == "n02" and fleet.nodes[host].version() == "2.0.0":
            assert all(e.wait(WAIT) for e in staged.values()), "the next batch was not staged during the gates"
            return {"status": 500, "body": json.dumps({"status": "bad"}), "elapsed_ms": 1, "error": None}
        return None

    result = run(fleet, options(tmp_path, version="2.0.0"), n02_fails_once_next_batch_staged)
    assert result.exit_code == 3, result.message  # n01 on 2.0.0, the rest not: mixed
    assert result.outcomes["n02"].outcome == "rolled_back"
    for name in ("n03", "n04"):
        node = fleet.nodes[name]
        assert result.outcomes[name].outcome == "not_started"
        assert node.current == old[name] and node.state == "Running" and node.lock is None
        assert any(r["version"] == "2.0.0" for r in node.releases)  # installed, never activated
        assert not {"Set-FleetService", "Stop-FleetService", "Switch-FleetRelease"} & set(node.operations)
    assert fleet.nodes["n05"].operations == LOCKED_ONLY
