"""Locks that mean something, over fake nodes: `--force` takes only an expired lock or one whose holder is provably
gone (issue 15.3), a live run renews its locks and a run that loses one stops before changing more hosts (15.4),
and a change freeze is never taken over (14.6)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import Baking, Event, EventBus, Notice
from fleetctl.rollout.lock_keeper import HolderJudge, process_gone, this_process
from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy

from .fakes import PLAYBOOK, FakeFleet, options, write_project

HOSTS = [f"n{i:02d}" for i in range(1, 6)]
LIVE = {"owner": "alice@ci", "deploy_id": "other-run", "acquired_at": "2024-01-01T00:00:00Z",
        "expires_at": "2099-01-01T00:00:00Z", "expired": False, "process": "ci01/boot/1/4242/77", "reason": None}


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_project(tmp_path, len(HOSTS))



def deploy(fleet: FakeFleet, opts: DeployOptions, *, force: bool = False, judge: HolderJudge | None = None,
           events: list[Event] | None = None, bus: EventBus | None = None) -> RunResult:
    bus = bus or EventBus()
    if events is not None:
        bus.subscribe(events.append)
    return run_deploy(prepare_deploy(opts), bus, connect=fleet.connect, force=force, judge=judge)


def dead_process() -> str:
    """The `Process` of a controller that ran on this machine and has ended."""
    code = "from fleetctl.rollout.lock_keeper import this_process; print(this_process())"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    return done.stdout.strip()


def test_a_live_lock_is_refused_naming_its_holder_and_not_taken_even_with_force(
        project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n03"].lock = dict(LIVE)
    result = deploy(fleet, options(project))
    assert result.exit_code == 4
    assert "n03 is locked by alice@ci (deploy other-run" in result.message
    assert "--force" not in result.message  # the lock-held message no longer suggests --force for a live lock
    forced = deploy(fleet, options(project), force=True)
    assert forced.exit_code == 4 and "--force refused" in forced.message and "alice@ci" in forced.message
    assert fleet.nodes["n03"].lock == LIVE  # untouched
    for name, node in fleet.nodes.items():
        assert "Install-FleetRelease" not in node.operations, name
        if name != "n03":
            assert node.lock is None  # what the refused runs took was released


def test_force_takes_over_a_lock_whose_controller_process_is_gone(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    gone = dead_process()
    assert process_gone(gone) and not process_gone(this_process())
    fleet.nodes["n03"].lock = dict(LIVE, process=gone)
    result = deploy(fleet, options(project))
    assert result.exit_code == 4 and "no longer running" in result.message and "pass --force" in result.message
    events: list[Event] = []
    forced = deploy(fleet, options(project), force=True, events=events)
    assert forced.exit_code == 0, forced.message
    assert any(isinstance(e, Notice) and "n03: took over the lock of alice@ci" in e.message for e in events)
    assert fleet.nodes["n03"].lock is None  # taken over, then released at the end like any other


def test_force_takes_over_a_lock_whose_run_the_history_records_as_finished(
        project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n02"].lock = dict(LIVE)
    judge = HolderJudge(finished=lambda run: "finished at 2024-01-01T00:10:00Z (halted)" if run == "other-run"
                        else None)
    refused = deploy(fleet, options(project), judge=judge)
    assert refused.exit_code == 4 and "finished at 2024-01-01T00:10:00Z (halted)" in refused.message
    assert deploy(fleet, options(project), force=True, judge=judge).exit_code == 0


def test_an_expired_lock_is_taken_without_force(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    fleet.nodes["n01"].lock = dict(LIVE, expired=True, expires_at="2024-01-01T00:30:00Z")
    events: list[Event] = []
    assert deploy(fleet, options(project), events=events).exit_code == 0
    assert [e.message for e in events if isinstance(e, Notice) and "lock" in e.message] == [
        "n01: took over the expired lock of alice@ci (deploy other-run)"]


def test_force_never_lifts_a_change_freeze(project: tuple[Path, Path, Path]) -> None:
    fleet = FakeFleet(HOSTS)
    frozen = dict(LIVE, deploy_id="freeze-1", process=dead_process(), reason="quarter close")
    fleet.nodes["n04"].lock = frozen
    for force in (False, True):
        result = deploy(fleet, options(project), force=force)
        assert result.exit_code == 4
        assert "n04 is frozen by alice@ci" in result.message and "quarter close" in result.message
        assert "fleetctl unlock" in result.message
    assert fleet.nodes["n04"].lock == frozen


def slow_playbook(project: tuple[Path, Path, Path]) -> None:
    """One canary, a 2 s bake and a 1 s lock TTL: the run lasts longer than its TTL."""
    playbook = project[0]
    playbook.write_text(PLAYBOOK.replace("rollout:\n  batch: 2\n",
                                         "rollout:\n  batch: 2\n  canary: 1\n  canary_bake: 2s\n  lock_ttl: 1s\n"))


def test_a_run_longer_than_its_ttl_renews_its_locks_and_no_second_run_gets_in(
        project: tuple[Path, Path, Path]) -> None:
    slow_playbook(project)
    fleet = FakeFleet(HOSTS)
    second: list[RunResult] = []
    bus = EventBus()

    def during_the_bake(event: Event) -> None:
        if isinstance(event, Baking):
            # 1.5 TTLs into the bake a second deploy, even with --force, finds every lock live.
            threading.Timer(1.5, lambda: second.append(deploy(fleet, options(project, owner="bob@ctl"),
                                                              force=True))).start()

    bus.subscribe(during_the_bake)
    first = deploy(fleet, options(project), bus=bus)
    assert first.exit_code == 0, first.message
    assert second and second[0].exit_code == 4 and "--force refused" in second[0].message, second
    assert all(node.renewals >= 3 for node in fleet.nodes.values()), {n: x.renewals for n, x in fleet.nodes.items()}
    assert all(node.lock is None for node in fleet.nodes.values())


def test_a_run_that_loses_a_lock_stops_before_changing_more_hosts(project: tuple[Path, Path, Path]) -> None:
    slow_playbook(project)
    fleet = FakeFleet(HOSTS)
    bus = EventBus()

    def steal(event: Event) -> None:
        if isinstance(event, Baking):  # someone replaced n05's lock (it had expired, say) while the canary baked
            fleet.nodes["n05"].lock = dict(LIVE, deploy_id="intruder", owner="mallory@elsewhere")

    bus.subscribe(steal)
    result = deploy(fleet, options(project), bus=bus)
    assert result.exit_code == 3, result.message  # the canary is on the new release, the rest is not: mixed
    assert "lost the lock on n05" in result.message and "mallory@elsewhere" in result.message
    assert result.outcomes["n01"].outcome == "deployed"
    for name in HOSTS[1:]:
        assert result.outcomes[name].outcome == "not_started", name
        # Staging during the bake may have installed the release beside the others; nothing the service runs changed.
        assert not {"Set-FleetService", "Stop-FleetService", "Switch-FleetRelease"} & set(fleet.nodes[name].operations)
    assert fleet.nodes["n05"].lock is not None and fleet.nodes["n05"].lock["deploy_id"] == "intruder"


def test_this_process_is_never_judged_gone_and_other_machines_never_are() -> None:
    me = this_process()
    assert me.split("/")[3] == str(os.getpid())
    assert process_gone(me) is None
    host, boot, namespace, pid, started = dead_process().split("/")
    assert process_gone(f"elsewhere/{boot}/{namespace}/{pid}/{started}") is None  # another controller
    assert process_gone(f"{host}/other-boot/{namespace}/{pid}/{started}") is None  # before a reboot: unknown
    assert process_gone(f"{host}/{boot}/{namespace}/{pid}/-") is None  # a field unknown: no proof
    assert process_gone(None) is None and process_gone("garbage") is None


def test_a_run_that_cannot_renew_a_lock_before_it_expires_stops(project: tuple[Path, Path, Path]) -> None:
    slow_playbook(project)
    fleet = FakeFleet(HOSTS)
    bus = EventBus()

    def cut_off(event: Event) -> None:
        if isinstance(event, Baking):
            fleet.nodes["n04"].unreachable = True  # its lock can no longer be renewed

    bus.subscribe(cut_off)
    result = deploy(fleet, options(project), bus=bus)
    assert result.exit_code == 3, result.message
    assert "could not renew the lock on n04 before it expires" in result.message
    for name in HOSTS[1:]:
        assert not {"Set-FleetService", "Stop-FleetService", "Switch-FleetRelease"} & set(fleet.nodes[name].operations)


def test_one_failed_renewal_is_retried_while_the_lock_still_has_time() -> None:
    from fleetctl.protocol.errors import HostUnreachable
    from fleetctl.rollout.lock_keeper import LockKeeper

    now = [100.0]
    lost: list[str] = []
    notices: list[Event] = []
    bus = EventBus()
    bus.subscribe(notices.append)
    keeper = LockKeeper(app="hello", deploy_id="d1", ttl_seconds=30, bus=bus, on_lost=lost.append,
                        clock=lambda: now[0])

    class Flaky:
        calls = 0

        def update_fleet_app_lock(self, **_: object) -> None:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise HostUnreachable("connection refused", host="n01", transient=True)

    client = Flaky()
    keeper.hold("n01", client, 100.0)  # type: ignore[arg-type]
    entry = keeper._held["n01"]
    keeper._renew("n01", entry)  # 10 s in: fails, 20 s of the lock left, more than one interval: retried
    bus.flush()  # the bus delivers from its own thread
    assert not lost and any(isinstance(e, Notice) and "retrying in 10s" in e.message for e in notices)
    now[0] = 110.0
    keeper._renew("n01", entry)
    assert entry.expires == 140.0 and keeper.renewals == 1
    now[0] = 135.0
    Flaky.calls = 0
    keeper._renew("n01", entry)  # fails with 5 s left, less than the next interval: lost
    assert lost == ["could not renew the lock on n01 before it expires: connection refused"]
