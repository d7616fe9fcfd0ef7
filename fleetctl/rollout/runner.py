"""The core of `fleetctl deploy` and `fleetctl rollback`: prepare (rollout/preparation.py: everything checked, a
ConfigError before any change), then hand one procedure to the engine.

    prepared = prepare_deploy(options)            # targets, artifact, each host's release
    dry_run(prepared)                              # each host's plan, read-only (the deploy carries out the same)
    run_deploy(prepared, bus)                      # DeployProcedure (rollout/deploy.py) through the engine
    run_rollback(prepare_rollback(options), bus)   # RollbackProcedure (rollout/rollback.py)

With --strategy blue-green both run BlueGreenProcedure (rollout/bluegreen_run.py) instead. With a load balancer
(`traffic:` nginx or HAProxy) it is reached and its configuration checked before any host is touched (blue-green:
with each pool host's live colour port, read from the nodes first), and a failing balancer halts the run before
the next host (`HostTraffic.halt`).

Subscribers (the live view, the `--json` report, the journal) come in through the `EventBus`. A new strategy is a
new procedure passed to `run_procedure`; the engine does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fleetctl.errors import RolloutFailed
from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import NodeState
from fleetctl.rollout.bluegreen import BackendSeat, colour_changes
from fleetctl.rollout.bluegreen_plan import SwitchBackPlan, plan_switch_back
from fleetctl.rollout.bluegreen_run import (
    BlueGreenProcedure,
    adopter,
    job_for,
    live_backend_ports,
    read_colour_state,
)
from fleetctl.rollout.deploy import DeployProcedure, deploy_run_info, host_extras, start_pull_server
from fleetctl.rollout.engine import LockSpec, RolloutEngine, RunResult
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.host_plan import plan_host
from fleetctl.rollout.host_steps import Interruption, describe_error
from fleetctl.rollout.interruption import sigint_handler
from fleetctl.rollout.lock_keeper import HolderJudge, describe_holder
from fleetctl.rollout.preparation import (
    Connect,
    DeployOptions,
    PreparedDeploy,
    PreparedRollback,
    RolloutTargets,
    load_fleet,
    prepare_deploy,
    prepare_rollback,
)
from fleetctl.rollout.procedure import HostProcedure
from fleetctl.rollout.rollback import RollbackProcedure, plan_rolling_rollback
from fleetctl.rollout.rollback_target import RollbackPlan
from fleetctl.rollout.traffic_steps import HostTraffic
from fleetctl.traffic import BalancerError


@dataclass(frozen=True)
class HostPreview:
    """--dry-run: what a deploy would do on one host (`error` when the host could not be asked)."""

    host: str
    current: str | None
    target: str
    changes: tuple[str, ...]
    error: str | None = None


def dry_run(prepared: PreparedDeploy, *, connect: Connect | None = None) -> dict[str, HostPreview]:
    """Ask each host for its state (read-only) and say what a deploy would change: the host plan the deploy would
    carry out (`plan_host`), in words. Nothing is changed. With a load balancer, its configuration is rendered and
    checked (not applied) first; a failure there is a RolloutFailed, as in a real run."""
    factory = connect or prepared.fleet.client_factory()
    traffic = prepared.traffic
    if traffic is not None:
        try:
            if prepared.colours is not None:
                traffic.balancer.repoint(_live_ports(prepared.fleet, connect)())
            traffic.balancer.prepare(check_only=True)
        except BalancerError as err:
            raise RolloutFailed(f"{err.message}; nothing was changed") from None
        finally:
            traffic.balancer.close()

    def preview(host: str) -> HostPreview:
        release = prepared.releases[host]
        client = factory(host)
        try:
            state = client.get_fleet_state(app=release.app, root=release.root, service_name=release.service.name)
            cached = state.release(release.id) is not None or \
                client.test_fleet_artifact(sha256=release.artifact_sha256).present
            colours = prepared.colours
            if colours is not None:
                mine = colours[host]
                colour_state = client.get_fleet_state(app=release.app, root=release.root,
                                                      service_name=mine.playbook.service.name,
                                                      proxy_port=mine.ports.listen)
                seat = None if traffic is None else BackendSeat(
                    traffic.where, traffic.balancer.pool.backend(host).server, traffic.port_of(host), traffic.grace_s)
                seen = colour_changes(colour_state, mine.releases, mine.ports, artifact_present=cached,
                                      bake=float(mine.playbook.rollout.bake), seat=seat)
                return HostPreview(host, colour_state.current, seen.target, tuple(seen.changes))
            plan = plan_host(release, state, artifact_cached=cached)
            changes = tuple(plan.changes(release.artifact_sha256, release.service.name))
            if traffic is not None and changes:
                changes = (f"drain from {traffic.where}", *changes,
                           f"return to the pool on {traffic.where} once healthy")
            if state.lock is not None and not state.lock.expired:
                # A deploy now would stop at this host's lock (exit 4): say so first.
                changes = (f"would stop here (exit 4): {describe_holder(host, state.lock)}",) + changes
            return HostPreview(host, state.current, release.id, changes)
        except Exception as err:  # noqa: BLE001 - reported per host
            return HostPreview(host, None, release.id, (), describe_error(err))
        finally:
            client.close()

    outcomes = run_parallel(list(prepared.plan.hosts), preview, forks=prepared.fleet.forks)
    return {host: outcome.value if outcome.value is not None
            else HostPreview(host, None, prepared.releases[host].id, (), outcome.error)
            for host, outcome in outcomes.items()}


def run_deploy(prepared: PreparedDeploy, bus: EventBus, *, connect: Connect | None = None,
               interruption: Interruption | None = None, force: bool = False,
               judge: HolderJudge | None = None) -> RunResult:
    """Run the deploy: lock all, batches with health gates, failure budget, rollback, unlock. Never raises for
    host failures: the result's exit code says how it went (`RunResult.raise_for_exit()`)."""
    unattended = bool(prepared.options and prepared.options.unattended)
    if prepared.colours is not None:
        with _balancer(prepared.traffic, _live_ports(prepared.fleet, connect)), \
                _blue_green_deploy(prepared) as blue_green:
            return run_procedure(prepared.fleet, blue_green, bus, connect=connect, interruption=interruption,
                                 force=force, judge=judge, unattended=unattended, traffic=prepared.traffic)
    with _balancer(prepared.traffic), DeployProcedure.open(prepared) as procedure:
        procedure.notes += _unused_traffic_notes(prepared.fleet)
        connect = procedure.reading_ahead(connect or prepared.fleet.client_factory())
        return run_procedure(prepared.fleet, procedure, bus, connect=connect, interruption=interruption,
                             force=force, judge=judge, traffic=prepared.traffic, unattended=unattended)


def plan_rollback(prepared: PreparedRollback, *, connect: Connect | None = None,
                  journal_failures: dict[str, dict[str, str]] | None = None) -> RollbackPlan:
    """Where each host goes, read before anything changes (shown, printed by --dry-run, carried out): the rolling
    rollback's plan, or with --strategy blue-green the switch-back plan (`SwitchBackPlan`: the same targets, and
    per host the colour it goes to and how)."""
    colours = prepared.colours
    if colours is not None:
        factory = connect or prepared.fleet.client_factory()

        def read(host: str) -> NodeState:
            client = factory(host)
            try:
                return read_colour_state(colours[host], client)
            finally:
                client.close()

        return plan_switch_back(list(prepared.plan.hosts), read, {h: c.ports for h, c in colours.items()},
                                forks=prepared.fleet.forks, to_version=prepared.to_version, force=prepared.force,
                                traffic=prepared.traffic, journal_failures=journal_failures)
    return plan_rolling_rollback(prepared, connect=connect, journal_failures=journal_failures)


def run_rollback(prepared: PreparedRollback, bus: EventBus, *, plan: RollbackPlan | None = None,
                 connect: Connect | None = None, interruption: Interruption | None = None, force: bool = False,
                 judge: HolderJudge | None = None) -> RunResult:
    """Carry out a rollback plan (`plan_rollback`, computed here when not given) batch by batch, gated: each
    host switches to its planned target, stays, or fails with the plan's reason. Success is `rolled_back`.
    Blue-green hosts switch back to their idle colour, which gets the planned release when it holds another."""
    chosen = plan if plan is not None else plan_rollback(prepared, connect=connect)
    colours = prepared.colours
    if colours is not None:
        assert isinstance(chosen, SwitchBackPlan), "a blue-green rollback carries out a switch-back plan"
        info = prepared.fleet.run_info(prepared.run_id, "rollback", version=chosen.version)
        traffic = prepared.traffic
        fleet = prepared.fleet
        back = BlueGreenProcedure(info, lambda host: job_for(
            colours[host], artifact_path=Path(), transfer="push", pull_server=None, ensure_extras=None,
            traffic=traffic, adopted=adopter(fleet.targets, fleet.playbooks[host], host)), plan=chosen)
        with _balancer(traffic, _live_ports(prepared.fleet, connect)):
            return run_procedure(prepared.fleet, back, bus, connect=connect, interruption=interruption, force=force,
                                 judge=judge, traffic=traffic)
    with _balancer(prepared.traffic):
        return run_procedure(prepared.fleet, RollbackProcedure(prepared, chosen), bus, connect=connect,
                             interruption=interruption, force=force, judge=judge, traffic=prepared.traffic)


def _unused_traffic_notes(fleet: RolloutTargets) -> tuple[str, ...]:
    first = next(iter(fleet.playbooks.values()), None)
    if first is not None and first.traffic is not None and first.traffic.kind == "portproxy":
        return (("traffic kind portproxy (node-local blue-green) is used by --strategy blue-green; this rolling "
                 "run restarts the service on its own port"),)
    return ()


@contextmanager
def _blue_green_deploy(prepared: PreparedDeploy) -> Iterator[BlueGreenProcedure]:
    """The blue-green deploy procedure, with the artifact pull server running for as long as it is in use."""
    colours = prepared.colours
    assert colours is not None
    server, notes = start_pull_server(prepared)
    fleet = prepared.fleet
    info = deploy_run_info(prepared)
    try:
        yield BlueGreenProcedure(info, lambda host: job_for(
            colours[host], artifact_path=prepared.artifact_source, transfer=prepared.transfer, pull_server=server,
            ensure_extras=host_extras(fleet.playbooks[host]), traffic=prepared.traffic,
            adopted=adopter(fleet.targets, fleet.playbooks[host], host)), notes=notes)
    finally:
        if server is not None:
            server.stop()


def _live_ports(fleet: RolloutTargets, connect: Connect | None) -> Callable[[], dict[str, int]]:
    """Blue-green: each pool host's live colour port, read from the nodes when the balancer is prepared."""
    return lambda: live_backend_ports(fleet.targets, fleet.playbooks, connect or fleet.client_factory(),
                                      forks=fleet.forks)


@contextmanager
def _balancer(traffic: HostTraffic | None, ports: Callable[[], dict[str, int]] | None = None) -> Iterator[None]:
    """Reach the balancer and check its configuration before any host is touched (RolloutFailed if not); closed
    when the run ends. `ports`: where each host is served now (blue-green), read before the config is rendered."""
    if traffic is None:
        yield
        return
    try:
        try:
            if ports is not None:
                traffic.balancer.repoint(ports())
            traffic.balancer.prepare()
        except BalancerError as err:
            raise RolloutFailed(f"{err.message}; no host was touched") from None
        yield
    finally:
        traffic.balancer.close()


def run_procedure(fleet: RolloutTargets, procedure: HostProcedure, bus: EventBus, *, connect: Connect | None = None,
                  interruption: Interruption | None = None, force: bool = False,
                  judge: HolderJudge | None = None, traffic: HostTraffic | None = None,
                  unattended: bool = False) -> RunResult:
    """Any procedure over the fleet's plan, under its locks, with Ctrl-C handled (first: no new hosts; second:
    abort health gates). `judge` decides whether a lock's holder is provably gone (what --force may take). A
    failing load balancer (`traffic`) stops the run before the next host; `unattended`: a held lock's message
    never suggests --force."""
    interruption = interruption or Interruption()
    engine = RolloutEngine(
        plan=fleet.plan, procedure=procedure, connect=connect or fleet.client_factory(), bus=bus,
        lock=LockSpec(app=fleet.targets.settings.name, owner=fleet.owner, ttl_seconds=fleet.lock_ttl, force=force,
                      judge=judge or HolderJudge(), unattended=unattended),
        forks=fleet.forks, interruption=interruption, timeouts=fleet.timeouts,
        unlock_hint=f"fleetctl unlock {fleet.targets.source.path} --limit HOST")
    if traffic is not None:
        traffic.halt = engine.request_halt
    with sigint_handler(interruption):
        return engine.run()


__all__ = [
    "DeployOptions",
    "HostPreview",
    "PreparedDeploy",
    "PreparedRollback",
    "dry_run",
    "load_fleet",
    "plan_rollback",
    "prepare_deploy",
    "prepare_rollback",
    "run_deploy",
    "run_procedure",
    "run_rollback",
]
