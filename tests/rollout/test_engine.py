"""The rollout engine, host steps and runner end to end over fake nodes (no lab): batches, idempotency, canary
halts and rollback, failure budget, locks, interrupts and the rollback command."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.errors import ConfigError
from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import BatchStarted, Event, EventBus, HostFinished, RunFinished
from fleetctl.rollout.host_steps import Interruption
from fleetctl.rollout.runner import DeployOptions, prepare_deploy, prepare_rollback, run_deploy, run_rollback

from .fakes import PLAYBOOK, FakeFleet, options, write_project

HOSTS = [f"n{i:02d}" for i in range(1, 6)]


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_project(tmp_path, len(HOSTS))



def deploy(fleet: FakeFleet, opts: DeployOptions, events: list[Event] | None = None,
           interruption: Interruption | None = None, force: bool = False) -> RunResult:
    bus = EventBus()
    if events is not None:
        bus.subscribe(events.append)
    return run_deploy(prepare_deploy(opts), bus, connect=fleet.connect, interruption=interruption, force=force)


def test_rolling_deploy_reaches_every_host_in_plan_order(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    events: list[Event] = []
    result = deploy(fleet, options(project, canary="1"), events)
    assert result.exit_code == 0, result.message
    assert {o.outcome for o in result.outcomes.values()} == {"deployed"}
    batches = [e.hosts for e in events if isinstance(e, BatchStarted)]
    assert batches == [("n01",), ("n02", "n03"), ("n04", "n05")]
    finished = [e.result.host for e in events if isinstance(e, HostFinished)]
    assert finished.index("n01") < finished.index("n02") < finished.index("n04")
    for name, node in fleet.nodes.items():
        assert node.current == result.outcomes[name].release and node.current.startswith("1.0.0-")
        assert node.state == "Running" and node.lock is None
        # one connection, and the step order of docs/rollouts.md (What happens, per host)
        ops = [op for op in node.operations if op not in ("Get-FleetState", "Test-FleetHealth")]
        assert ops == ["Lock-FleetApp", "Test-FleetArtifact", "Receive-FleetArtifact", "Install-FleetRelease",
                       "Set-FleetFirewallRule", "Set-FleetService", "Stop-FleetService", "Switch-FleetRelease",
                       "Start-FleetService", "Remove-FleetRelease", "Unlock-FleetApp"]
    timings = result.outcomes["n01"].timings
    assert {"transfer", "install", "stop", "switch", "start", "health"} <= set(timings)
    assert isinstance(events[-1], RunFinished) and events[-1].exit_code == 0


def test_rerun_skips_hosts_already_on_the_release(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    first = deploy(fleet, options(project))
    for node in fleet.nodes.values():
        node.operations.clear()
    again = deploy(fleet, options(project))
    assert again.exit_code == 0
    assert {o.outcome for o in again.outcomes.values()} == {"skipped"}
    assert {h: o.release for h, o in again.outcomes.items()} == {h: o.release for h, o in first.outcomes.items()}
    for node in fleet.nodes.values():
        assert not {"Install-FleetRelease", "Stop-FleetService", "Receive-FleetArtifact"} & set(node.operations)


def test_config_only_change_is_a_new_release(project: tuple[Path, Path, Path]) -> None:
    a = prepare_deploy(options(project))
    b = prepare_deploy(options(project, extra_vars=("hello_mode=verbose",)))
    assert a.releases["n01"].id != b.releases["n01"].id
    assert a.releases["n01"].version == b.releases["n01"].version == "1.0.0"
    assert a.releases["n01"].id == prepare_deploy(options(project)).releases["n01"].id


def test_broken_canary_halts_and_is_rolled_back(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    good = deploy(fleet, options(project))
    for node in fleet.nodes.values():
        node.operations.clear()
    bad = deploy(fleet, options(project, version="1.1.0", canary="1", extra_vars=("hello_mode=unhealthy",)))
    assert bad.exit_code == 1 and bad.halted
    canary = bad.outcomes["n01"]
    assert canary.outcome == "rolled_back" and canary.release == good.outcomes["n01"].release
    assert "status 500" in (canary.error or "")
    node = fleet.nodes["n01"]
    assert node.current == good.outcomes["n01"].release and node.state == "Running"
    assert "unhealthy" not in node.running_args()  # the old release's service definition is back
    for name in HOSTS[1:]:
        assert bad.outcomes[name].outcome == "not_started"
        assert "Stop-FleetService" not in fleet.nodes[name].operations
        assert fleet.nodes[name].lock is None


def test_failure_budget_halts_with_mixed_versions(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    deploy(fleet, options(project))

    # n04 becomes unreachable once the rollout is under way: right after its service definition is set. (A
    # subscriber cannot do this on time: events reach subscribers from the bus's own thread, a little later.)
    n04 = fleet.nodes["n04"]
    set_service = n04.op_set_fleetservice

    def cut_after_set_service(p: dict[str, object], objects: object) -> object:
        answer = set_service(p, objects)
        n04.unreachable = True
        return answer

    n04.op_set_fleetservice = cut_after_set_service  # type: ignore[method-assign]
    result = run_deploy(prepare_deploy(options(project, version="2.0.0")), EventBus(), connect=fleet.connect)
    assert result.exit_code == 3, result.message
    assert result.outcomes["n01"].outcome == "deployed"
    # Lost while its service was being stopped: nobody knows what it runs (docs/reliability.md).
    assert result.outcomes["n04"].outcome == "unknown"
    assert result.outcomes["n03"].outcome == "deployed"
    assert result.outcomes["n05"].outcome == "not_started"
    assert "budget" in result.message and "state unknown on n04" in result.message
    assert fleet.nodes["n05"].version() == "1.0.0"


def test_unreachable_host_within_budget_completes(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n03"].unreachable = True
    result = deploy(fleet, options(project, max_failed="1"))
    assert result.exit_code == 1 and not result.halted
    assert result.outcomes["n03"].outcome == "failed" and "refused" in (result.outcomes["n03"].error or "")
    assert [h for h, o in result.outcomes.items() if o.outcome == "deployed"] == ["n01", "n02", "n04", "n05"]


def test_lock_held_exits_4_and_changes_nothing_then_force_takes_over_an_expired_one(
        project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n03"].lock = {"owner": "alice@ci", "deploy_id": "other-run", "acquired_at": "2024-01-01T00:00:00Z"}
    result = deploy(fleet, options(project))
    assert result.exit_code == 4
    assert "alice@ci" in result.message and "other-run" in result.message and "n03" in result.message
    for name, node in fleet.nodes.items():
        assert "Install-FleetRelease" not in node.operations
        if name != "n03":
            assert node.lock is None  # the locks this run took were released
    assert fleet.nodes["n03"].lock["owner"] == "alice@ci"  # type: ignore[index]
    assert deploy(fleet, options(project), force=True).exit_code == 4  # live: --force is refused (test_locks.py)
    fleet.nodes["n03"].lock["expired"] = True  # type: ignore[index]
    forced = deploy(fleet, options(project), force=True)
    assert forced.exit_code == 0 and fleet.nodes["n03"].lock is None


def test_interrupt_lets_in_flight_hosts_finish_then_rerun_completes(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    interruption = Interruption()

    # Ctrl-C while n01 is in its health gate (pressed from the node call itself: on time, unlike a subscriber).
    n01 = fleet.nodes["n01"]
    health = n01.op_test_fleethealth

    def press_during_health(p: dict[str, object], objects: object) -> object:
        if not interruption.requested.is_set():  # once: a second press would abort the gate
            interruption.press()
        return health(p, objects)

    n01.op_test_fleethealth = press_during_health  # type: ignore[method-assign]
    result = run_deploy(prepare_deploy(options(project)), EventBus(), connect=fleet.connect,
                        interruption=interruption)
    assert result.exit_code == 130
    assert result.outcomes["n01"].outcome == "deployed"  # in flight: finished
    assert all(result.outcomes[h].outcome == "not_started" for h in HOSTS[2:])
    assert all(node.lock is None for node in fleet.nodes.values())
    rerun = deploy(fleet, options(project))
    assert rerun.exit_code == 0
    assert rerun.outcomes["n01"].outcome == "skipped"
    assert {rerun.outcomes[h].outcome for h in HOSTS[2:]} == {"deployed"}


def test_crash_after_start_is_rolled_back(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    good = deploy(fleet, options(project, limit="n01"))
    bad = deploy(fleet, options(project, version="1.2.0", limit="n01", extra_vars=("hello_mode=crash",)))
    assert bad.outcomes["n01"].outcome == "rolled_back"
    assert "crash" in (bad.outcomes["n01"].error or "")
    assert fleet.nodes["n01"].current == good.outcomes["n01"].release and fleet.nodes["n01"].state == "Running"


def test_a_hanging_stop_fails_the_host_without_switching_under_the_running_process(
        project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    v1 = deploy(fleet, options(project, limit="n01:n02"))
    node = fleet.nodes["n01"]
    definition = dict(node.service or {})
    node.stop_hangs = True
    stops = node.operations.count("Stop-FleetService")
    result = deploy(fleet, options(project, version="2.0.0", limit="n01:n02", max_failed="1"))
    outcome = result.outcomes["n01"]
    assert outcome.outcome == "failed" and "did not stop" in (outcome.error or "")
    assert "not switched" in (outcome.error or "") and v1.outcomes["n01"].release in (outcome.error or "")
    # The junction still points at the release the process runs, with that release's definition back in place,
    # and the stop was not retried (each try would wait the whole stop timeout again).
    assert node.current == v1.outcomes["n01"].release and node.state == "StopPending"
    assert node.service == definition
    assert node.operations.count("Stop-FleetService") == stops + 1 and "Start-FleetService" not in node.operations[-8:]
    assert result.outcomes["n02"].outcome == "deployed"


def test_first_release_failing_is_stopped_and_failed(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    result = deploy(fleet, options(project, limit="n01", extra_vars=("hello_mode=unhealthy",)))
    outcome = result.outcomes["n01"]
    assert outcome.outcome == "failed" and "no previous release" in (outcome.error or "")
    assert fleet.nodes["n01"].state == "Stopped"
    assert result.exit_code == 1


def test_rollback_switches_back_without_moving_bytes(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    v1 = deploy(fleet, options(project))
    deploy(fleet, options(project, version="2.0.0"))
    moved = {n: node.artifact_bytes for n, node in fleet.nodes.items()}
    result = run_rollback(prepare_rollback(options(project)), EventBus(), connect=fleet.connect)
    assert result.exit_code == 0, result.message
    for name, node in fleet.nodes.items():
        assert node.current == v1.outcomes[name].release and node.version() == "1.0.0"
        assert node.artifact_bytes == moved[name]
        assert "Receive-FleetArtifact" not in node.operations[-12:]
    missing = run_rollback(prepare_rollback(options(project), "9.9.9"), EventBus(), connect=fleet.connect)
    assert missing.exit_code == 1
    assert "does not keep a release of version 9.9.9" in (missing.outcomes["n01"].error or "")


def test_bad_input_is_a_config_error_before_any_host_is_contacted(project: tuple[Path, Path, Path]) -> None:
    with pytest.raises(ConfigError) as err:
        prepare_deploy(options(project, batch="0"))
    assert "--batch" in str(err.value)
    broken = project[0].parent / "broken.yml"
    broken.write_text(PLAYBOOK.replace("keep_releases: 3", "keep_releses: 3"))
    with pytest.raises(ConfigError) as err2:
        prepare_deploy(options(project, playbook=broken))
    assert "keep_releses" in str(err2.value) and "broken.yml" in str(err2.value)
