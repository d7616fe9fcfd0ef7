"""`deploy --if-changed` over fake nodes (issue 14.3): the comparison is read only and takes no lock; a release
that differs only in one host's rendered config, or a stopped service, counts as changed; the narrowed deploy
plans and locks only the hosts that differ."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.rollout.events import EventBus
from fleetctl.rollout.if_changed import compare_with_fleet, narrow_to
from fleetctl.rollout.runner import prepare_deploy, run_deploy

from .fakes import FakeFleet, options, write_project

HOSTS = [f"n{i:02d}" for i in range(1, 7)]


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_project(tmp_path, len(HOSTS))



def test_only_hosts_that_differ_are_planned_locked_and_deployed(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    assert run_deploy(prepare_deploy(options(project)), EventBus(), connect=fleet.connect).exit_code == 0
    for node in fleet.nodes.values():
        node.operations.clear()
    prepared = prepare_deploy(options(project))
    check = compare_with_fleet(prepared, connect=fleet.connect)
    assert check.unchanged and all(c.current == c.target for c in check.hosts.values())
    assert all(node.operations == ["Get-FleetState"] for node in fleet.nodes.values())  # read only, no lock
    # n02 runs a stopped service; n05's rendered config differs from the target (another -mode argument).
    fleet.nodes["n02"].state = "Stopped"
    changed_config = prepare_deploy(options(project, extra_vars=("hello_mode=slow",)))
    assert compare_with_fleet(changed_config, connect=fleet.connect).changed == tuple(HOSTS)
    check = compare_with_fleet(prepared, connect=fleet.connect)
    assert check.changed == ("n02",)
    for node in fleet.nodes.values():
        node.operations.clear()
    narrowed = narrow_to(prepared, options(project, canary="50%"), check.changed)
    assert narrowed.plan.hosts == ("n02",) and [b.hosts for b in narrowed.plan.batches] == [("n02",)]
    result = run_deploy(narrowed, EventBus(), connect=fleet.connect)
    assert result.exit_code == 0 and set(result.outcomes) == {"n02"}
    assert all(node.operations == [] for name, node in fleet.nodes.items() if name != "n02")
    assert "Lock-FleetApp" in fleet.nodes["n02"].operations and fleet.nodes["n02"].state == "Running"


def test_a_host_that_cannot_be_asked_counts_as_changed(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    assert run_deploy(prepare_deploy(options(project)), EventBus(), connect=fleet.connect).exit_code == 0
    fleet.nodes["n04"].unreachable = True
    check = compare_with_fleet(prepare_deploy(options(project)), connect=fleet.connect)
    assert check.changed == ("n04",) and "refused" in (check.hosts["n04"].error or "")
