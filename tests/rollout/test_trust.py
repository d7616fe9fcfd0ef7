"""Issue 15 over fake nodes (fast, no lab): rollback that never goes forward and says `rolled_back`, a host that dies
after its gate but before its batch ends, a node lost after its switch (reported unknown, its lock named), bounded
phases for a silent host, and a double Ctrl-C that does not call rolled-back hosts failed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import Event, EventBus, HostStepStarted, Notice
from fleetctl.rollout.host_steps import Interruption
from fleetctl.rollout.lock_keeper import HolderJudge
from fleetctl.rollout.runner import (
    DeployOptions,
    plan_rollback,
    prepare_deploy,
    prepare_rollback,
    run_deploy,
    run_rollback,
)

from .fakes import PLAYBOOK, FakeFleet, options, write_project

HOSTS = [f"n{i:02d}" for i in range(1, 6)]


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_project(tmp_path, len(HOSTS))



def deploy(fleet: FakeFleet, opts: DeployOptions, bus: EventBus | None = None,
           interruption: Interruption | None = None, finished: tuple[str, ...] = ()) -> RunResult:
    """`finished`: run ids the history would record as ended (what lets --force take their leaked locks)."""
    judge = HolderJudge(finished=lambda run_id: "finished at 12:00 (halted)" if run_id in finished else None)
    return run_deploy(prepare_deploy(opts), bus or EventBus(), connect=fleet.connect, interruption=interruption,
                      force=opts.force, judge=judge)


def versions(fleet: FakeFleet) -> dict[str, str | None]:
    return {n: node.version() for n, node in fleet.nodes.items()}


def halted_mixed(fleet: FakeFleet, project: tuple[Path, Path, Path]) -> RunResult:
    """The issue's scenario: 1.0.0 then 2.0.0 everywhere; 3.0.0 passes on n01, n02, fails its gate on n03 (rolled
    back to 2.0.0), and halts before n04, n05 (still on 2.0.0)."""
    assert deploy(fleet, options(project)).exit_code == 0
    assert deploy(fleet, options(project, version="2.0.0")).exit_code == 0
    # n03's own 3.0.0 is unhealthy: the second batch (n03, n04) fails, the budget of 0 halts the rollout.
    prepared = prepare_deploy(options(project, version="3.0.0", batch="2"))
    bad = prepare_deploy(options(project, version="3.0.0", batch="2", extra_vars=("hello_mode=unhealthy",)))
    prepared.releases["n03"] = bad.releases["n03"]
    result = run_deploy(prepared, EventBus(), connect=fleet.connect)
    assert result.exit_code == 3, result.message
    return result


def test_plain_rollback_after_a_halted_mixed_deploy_goes_to_the_last_good_release(
        project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    result = halted_mixed(fleet, project)
    outcomes = {h: o.outcome for h, o in result.outcomes.items()}
    assert outcomes == {"n01": "deployed", "n02": "deployed", "n03": "rolled_back", "n04": "deployed",
                        "n05": "not_started"}, outcomes
    assert result.outcomes["n03"].failed_release is not None
    gate_failed = [r for r in fleet.nodes["n03"].releases if r.get("gate_failed")]
    assert [r["version"] for r in gate_failed] == ["3.0.0"]  # the node keeps the verdict
    before = versions(fleet)
    assert before["n03"] == "2.0.0" and before["n05"] == "2.0.0" and before["n01"] == "3.0.0"

    prepared = prepare_rollback(options(project))
    plan = plan_rollback(prepared, connect=fleet.connect)
    assert plan.version == "2.0.0"
    assert {h: c.action for h, c in plan.choices.items() if before[h] == "2.0.0"} == \
        {h: "stay" for h in HOSTS if before[h] == "2.0.0"}
    rolled = run_rollback(prepared, EventBus(), plan=plan, connect=fleet.connect)
    assert rolled.exit_code == 0, rolled.message
    assert set(versions(fleet).values()) == {"2.0.0"}  # one release, nobody forward, nobody to 1.0.0
    for host, outcome in rolled.outcomes.items():
        assert outcome.outcome == ("rolled_back" if before[host] == "3.0.0" else "skipped"), (host, outcome)
    assert all(node.state == "Running" and node.lock is None for node in fleet.nodes.values())

    # --to the release that failed its gate on n03 is refused there; --force allows it.
    to_bad = plan_rollback(prepare_rollback(options(project), "3.0.0"), connect=fleet.connect)
    assert to_bad.choices["n03"].action == "refuse" and "--force" in to_bad.choices["n03"].reason
    forced = plan_rollback(prepare_rollback(options(project, force=True), "3.0.0"), connect=fleet.connect)
    # ...but even forced, 3.0.0 is newer than what the hosts run now: never forward.
    # n05 never got 3.0.0 (the deploy halted before it): still "stay", by the order the other hosts installed it.
    assert {c.action for c in forced.choices.values()} == {"stay"}, forced.choices
    assert "newer" in forced.choices["n05"].reason and "not kept here" in forced.choices["n05"].reason


def test_a_host_that_dies_after_its_gate_before_its_batch_ends_fails(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    deploy(fleet, options(project, limit="n01:n02"))
    # n01 passed its gate; its service dies once retention has run (the batch has not ended: it is rechecked).
    fleet.nodes["n01"].crash_after = "Remove-FleetRelease"
    result = deploy(fleet, options(project, version="2.0.0", limit="n01:n02", batch="2"))
    n01 = result.outcomes["n01"]
    assert n01.outcome == "rolled_back", n01
    assert "after its health gate" in (n01.error or "") and n01.failed_release and n01.failed_release.startswith("2.0.0")
    assert fleet.nodes["n01"].version() == "1.0.0" and fleet.nodes["n01"].state == "Running"
    assert result.exit_code in (1, 3)


@pytest.mark.parametrize("lost_as", ["unreachable", "auth-failure"])
def test_a_node_lost_after_its_switch_is_unknown_and_its_lock_is_named(
        project: tuple[Path, Path, Path], lost_as: str) -> None:
    fleet = FakeFleet(HOSTS)
    deploy(fleet, options(project))
    node = fleet.nodes["n01"]
    node.lose_after, node.lost_as = "Switch-FleetRelease", lost_as
    notices: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: notices.append(e.message) if isinstance(e, Notice) else None)
    result = deploy(fleet, options(project, version="2.0.0", canary="1"), bus)
    outcome = result.outcomes["n01"]
    assert outcome.outcome == "unknown" and outcome.release is None
    assert "state unknown: lost after" in (outcome.error or "")
    assert result.exit_code == 3  # not a clean halt (1): nobody knows what n01 runs
    assert "no host was left on the new release" not in result.message
    assert "lock left on n01" in result.message and "fleetctl unlock" in result.message and "--limit n01" in result.message
    assert any("lock left on n01" in n for n in notices)
    assert node.lock is not None  # really left behind: the message is the truth
    # A re-run reconciles from node state: the node did switch to 2.0.0 before it was cut off.
    node.unreachable, node.lose_after = False, None
    node.state = "Running"  # (its service came up after all)
    rerun = deploy(fleet, options(project, version="2.0.0", canary="1", force=True), finished=(result.run_id,))
    assert rerun.exit_code == 0, rerun.message
    assert rerun.outcomes["n01"].outcome == "skipped" and node.lock is None


def test_a_blackholed_node_costs_its_batch_one_phase_timeout(project: tuple[Path, Path, Path]) -> None:
    playbook = project[0]
    playbook.write_text(PLAYBOOK.replace("rollout:\n  batch: 2", "rollout:\n  batch: 2\n  timeouts:\n"
                                         "    step: 0.5s\n    unlock: 0.5s"))
    fleet = FakeFleet(HOSTS)
    deploy(fleet, options(project))
    node = fleet.nodes["n02"]
    node.lose_after, node.lost_as = "Stop-FleetService", "blackhole"
    try:
        started = time.monotonic()
        result = deploy(fleet, options(project, version="2.0.0"))
        elapsed = time.monotonic() - started
    finally:
        node.released.set()
    assert elapsed < 10, elapsed
    outcome = result.outcomes["n02"]
    assert outcome.outcome == "unknown" and "no answer within" in (outcome.error or ""), outcome
    assert result.exit_code == 3 and "lock left on n02" in result.message


def test_double_ctrl_c_reports_rolled_back_hosts_as_rolled_back(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    deploy(fleet, options(project, limit="n01"))
    interruption = Interruption()

    def press_twice_in_the_gate(event: Event) -> None:
        if isinstance(event, HostStepStarted) and event.host == "n01" and event.step == "health":
            interruption.press()
            interruption.press()

    bus = EventBus()
    bus.subscribe(press_twice_in_the_gate)
    result = deploy(fleet, options(project, version="2.0.0", limit="n01", extra_vars=("hello_mode=unhealthy",)),
                    bus, interruption)
    assert result.exit_code == 130
    outcome = result.outcomes["n01"]
    assert outcome.outcome == "rolled_back", outcome
    assert "rollback failed" not in (outcome.error or "") and "not waited for" in (outcome.error or "")
    assert fleet.nodes["n01"].version() == "1.0.0" and fleet.nodes["n01"].state == "Running"
    assert fleet.nodes["n01"].lock is None


def test_the_example_and_the_default_stability_window_outlast_the_crash_rehearsal() -> None:
    # Issue 15 item 2: `hello_mode=crash-after-5s` is the example's documented rehearsal; a window that ends
    # before the crash lets it through. The lab row of the fault matrix runs it with the shipped value.
    import re

    from fleetctl.config.playbook import Health
    from fleetctl.config.sizes import Duration

    shipped = (Path(__file__).resolve().parents[2] / "playbooks" / "hello" / "playbook.yml").read_text()
    window = re.search(r"stability_window: (\S+)", shipped)
    assert window is not None and float(Duration.parse(window.group(1))) >= 8
    assert float(Health(url="http://x/").stability_window) >= 8


def test_a_restart_between_start_and_window_fails_the_gate() -> None:
    from fleetctl.node.results import ServiceInfo
    from fleetctl.rollout.health import HealthCheck, ProbeResult, run_health_gate

    check = HealthCheck(url="http://x/", interval=0.01, retries=2, stability_window=0.05)
    restarted = ServiceInfo(True, "Running", 4321, None, 0, "C:\\x.exe")
    result = run_health_gate(check, lambda: ProbeResult(200, "", 1), lambda: restarted, started_pid=1234,
                             sleep=lambda s: None)
    assert not result.ok and "restarted before its stability window" in (result.reason or "")
    same = run_health_gate(check, lambda: ProbeResult(200, "", 1), lambda: restarted, started_pid=4321)
    assert same.ok


@pytest.mark.parametrize("health", ["from the node", "none"])
def test_a_deploy_reads_the_state_along_with_the_start_and_with_retention(tmp_path: Path, health: str) -> None:
    """Round trips saved per host (issue 16): the batch-end recheck's state read rides on retention's pipeline, and
    the state right after the start on the start's (the window's or the record's first read) unless the probes are
    node calls, which would make it stale before it is used."""
    playbook = PLAYBOOK.replace("stability_window: 0s", "stability_window: 0.05s")
    if health == "none":
        playbook = playbook[:playbook.index("health:")] + playbook[playbook.index("rollout:"):]
    project = write_project(tmp_path, 2, playbook)
    fleet = FakeFleet(["n01", "n02"])
    assert deploy(fleet, options(project)).exit_code == 0
    for node in fleet.nodes.values():
        node.operations.clear()
    clients = []

    def connect(host: str):  # type: ignore[no-untyped-def]
        clients.append(client := fleet.connect(host))
        return client

    result = run_deploy(prepare_deploy(options(project, version="2.0.0")), EventBus(), connect=connect)
    assert result.exit_code == 0 and {o.outcome for o in result.outcomes.values()} == {"deployed"}
    for node in fleet.nodes.values():
        ops = node.operations
        after_start = ops[ops.index("Start-FleetService") + 1]
        after_retention = ops[ops.index("Remove-FleetRelease") + 1]
        expected = "Test-FleetHealth" if health == "from the node" else "Get-FleetState"
        assert (after_start, after_retention) == (expected, "Get-FleetState"), ops
    # Per host: the lock's two reads, retention's and (without node probes) the start's, each without a round trip.
    saved = 3 if health == "from the node" else 4
    assert [c.round_trips_saved for c in clients] == [saved, saved]
