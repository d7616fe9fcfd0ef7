"""Change freezes over fake nodes (issue 14.6): `lock` freezes every targeted node or nothing, deploys and rollbacks
refuse a frozen node with exit 4 naming holder and reason, `unlock` lifts the freeze and frees only locks whose run
is provably gone, bad input exits 2 before any node is contacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.errors import EXIT_LOCKED, ConfigError
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.freeze import freeze, lock_states, prepare_freeze, unfreeze
from fleetctl.rollout.lock_keeper import HolderJudge
from fleetctl.rollout.runner import (
    DeployOptions,
    dry_run,
    prepare_deploy,
    prepare_rollback,
    run_deploy,
    run_rollback,
)

from .fakes import FakeFleet, write_project

HOSTS = [f"n{i:02d}" for i in range(1, 5)]
RUN = {"owner": "alice@ci", "deploy_id": "run-1", "acquired_at": "2024-01-01T00:00:00Z",
       "expires_at": "2099-01-01T00:00:00Z", "expired": False, "process": None, "reason": None}


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_project(tmp_path, len(HOSTS))


def options(project: tuple[Path, Path, Path], **kw: object) -> DeployOptions:
    playbook, inventory, artifact = project
    base = {"playbook": playbook, "inventories": [inventory], "artifact": artifact, "version": "1.0.0",
            "dist_dir": playbook.parent / "dist", "owner": "ops@ctl"}
    base.update(kw)
    return DeployOptions(**base)  # type: ignore[arg-type]


def test_a_freeze_is_held_on_every_node_and_deploy_and_rollback_refuse_it(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    request = prepare_freeze(options(project), reason="quarter close", ttl="2h")
    assert request.ttl_seconds == 7200
    result = freeze(request, connect=fleet.connect)
    assert result.exit_code == 0, result.message
    assert "4 host(s) frozen" in result.message and "quarter close" in result.message
    locks = {n: node.lock for n, node in fleet.nodes.items()}
    assert all(lock and lock["reason"] == "quarter close" and lock["owner"] == "ops@ctl" for lock in locks.values())
    assert len({lock["deploy_id"] for lock in locks.values() if lock}) == 1
    for run in (lambda: run_deploy(prepare_deploy(options(project)), EventBus(), connect=fleet.connect),
                lambda: run_deploy(prepare_deploy(options(project)), EventBus(), connect=fleet.connect, force=True),
                lambda: run_rollback(prepare_rollback(options(project)), EventBus(), connect=fleet.connect)):
        refused = run()
        assert refused.exit_code == EXIT_LOCKED
        assert "is frozen by ops@ctl" in refused.message and "quarter close" in refused.message, refused.message
        assert "fleetctl unlock" in refused.message
    assert {n: node.lock for n, node in fleet.nodes.items()} == locks  # the freeze outlived the refused runs
    preview = dry_run(prepare_deploy(options(project)), connect=fleet.connect)["n02"]
    assert preview.changes[0].startswith("would stop here (exit 4): n02 is frozen by ops@ctl"), preview
    assert not any("Install-FleetRelease" in node.operations for node in fleet.nodes.values())
    status = lock_states(prepare_freeze(options(project), lifting=True), HolderJudge(), connect=fleet.connect)
    assert {h.state for h in status.hosts.values()} == {"frozen"} and status.message == "4 frozen"
    # Locking again keeps the freeze as it is; unlocking lifts it everywhere, and the deploy goes through.
    again = freeze(prepare_freeze(options(project), reason="other", ttl="1h"), connect=fleet.connect)
    assert again.exit_code == 0 and "already were" in again.message
    assert all(node.lock and node.lock["reason"] == "quarter close" for node in fleet.nodes.values())
    lifted = unfreeze(prepare_freeze(options(project), lifting=True), HolderJudge(), connect=fleet.connect)
    assert lifted.exit_code == 0 and lifted.message == "4 host(s) unfrozen"
    assert all(node.lock is None for node in fleet.nodes.values())
    assert run_deploy(prepare_deploy(options(project)), EventBus(), connect=fleet.connect).exit_code == 0


def test_a_live_run_on_one_node_means_nothing_is_frozen(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n03"].lock = dict(RUN)
    result = freeze(prepare_freeze(options(project), reason="incident 42"), connect=fleet.connect)
    assert result.exit_code == EXIT_LOCKED
    assert "n03 is locked by alice@ci (deploy run-1" in result.message and "nothing was frozen" in result.message
    assert fleet.nodes["n03"].lock == RUN
    assert all(fleet.nodes[n].lock is None for n in HOSTS if n != "n03")


def test_unlock_frees_a_finished_runs_lock_but_never_a_live_one(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n01"].lock = dict(RUN)
    fleet.nodes["n02"].lock = dict(RUN, deploy_id="run-2", owner="bob@ci")
    judge = HolderJudge(finished=lambda run: "finished at 2024-01-01T00:10:00Z (halted)" if run == "run-1" else None)
    result = unfreeze(prepare_freeze(options(project), lifting=True), judge, connect=fleet.connect)
    assert result.exit_code == EXIT_LOCKED
    assert fleet.nodes["n01"].lock is None and result.hosts["n01"].action == "freed"
    assert fleet.nodes["n02"].lock is not None and result.hosts["n02"].action == "refused"
    assert "n02 is locked by bob@ci" in result.message and "1 lock(s) of finished runs freed" in result.message


def test_an_unreachable_node_is_named_and_a_second_lock_completes_the_freeze(
        project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n04"].unreachable = True
    result = freeze(prepare_freeze(options(project), reason="holiday"), connect=fleet.connect)
    assert result.exit_code == 1 and "could not be reached and are not frozen: n04" in result.message
    assert result.hosts["n04"].state == "unreachable"
    fleet.nodes["n04"].unreachable = False
    assert freeze(prepare_freeze(options(project), reason="holiday"), connect=fleet.connect).exit_code == 0
    assert all(node.lock and node.lock["reason"] == "holiday" for node in fleet.nodes.values())


@pytest.mark.parametrize(("reason", "ttl", "key"), [
    (None, None, "--reason"), ("  ", None, "--reason"), ("x" * 201, None, "--reason"),
    ("evil\x1b]0;title\x07", None, "--reason"), ("bidi \u202e", None, "--reason"),
    ("ok", "soon", "--ttl"), ("ok", "0s", "--ttl"), ("ok", "721h", "--ttl"), ("ok", "-1h", "--ttl"),
])
def test_bad_freeze_input_exits_2_before_any_node_is_contacted(project: tuple[Path, Path, Path], reason: str | None,
                                                               ttl: str | None, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        prepare_freeze(options(project), reason=reason, ttl=ttl)
    assert caught.value.exit_code == 2 and key in str(caught.value)
