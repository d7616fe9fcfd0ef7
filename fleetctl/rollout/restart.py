"""The restart procedure: what `fleetctl restart` does on one host, top to bottom. No release changes.

    stage:     read the node's state → the release it runs and the service to restart (on a blue-green host, the
               live colour's own service, `<name>-<colour>`), read before the host's batch
    activate:  [drain] → stop → start → health gate (the deploy's gate, for the version the host runs) [→ ready]
    follow_up: nothing (no release was installed, none is removed)
    undo:      nothing: a restarted canary runs what it ran before, so there is nothing to take back

The engine gives a restart everything a deploy has: batches and canaries, the failure budget, the locks, Ctrl-C and
the journal (its own run kind, `restart`). A host whose service fails to start or fails its gate is `failed`; its
release is unchanged, so there is nothing to roll back, and its outcome says so. Like a failed deploy batch, it
halts the run once the failure budget is spent. A release that fails a restart is not marked failed on the node:
it ran and passed its gate before, so the restart says more about the host than about the release.

Blue-green hosts restart the live colour in place (the other colour, stopped or warm, is left alone); its gate
probes the colour's own port. Restarting the live colour drops the requests it is serving, as a rolling restart
does; a switch to the other colour is what `deploy --strategy blue-green` is for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from fleetctl.node.results import NodeState
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.rollout.bluegreen import ColourPorts, live_colour
from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import EventBus, HostOutcome
from fleetctl.rollout.health import HealthCheck
from fleetctl.rollout.host_steps import (
    HostContext,
    StepFailed,
    describe_error,
    gate,
    is_lost,
    release_like,
    seconds,
)
from fleetctl.rollout.interruption import Interruption
from fleetctl.rollout.lock_keeper import HolderJudge
from fleetctl.rollout.preparation import Connect, DeployOptions, RolloutTargets, load_fleet, new_run_id
from fleetctl.rollout.release import Release, make_release
from fleetctl.rollout.runner import run_procedure
from fleetctl.rollout.traffic_steps import HostTraffic, balancer_for, with_traffic

UNCHANGED = "its release {release} is unchanged: nothing to roll back"


@dataclass
class PreparedRestart:
    fleet: RolloutTargets
    references: dict[str, Release]  # host -> its app/root/service as configured now (the id is not used)
    ports: dict[str, ColourPorts]  # blue-green hosts: the public port and each colour's own port
    traffic: HostTraffic | None  # a load balancer: the host is drained around its restart, as in a deploy
    run_id: str


@dataclass(frozen=True)
class StagedRestart:
    """What a host will restart, read before its batch: the release it runs, under which service."""

    state: NodeState
    target: Release  # the running release, with the service to restart (a colour's on blue-green)
    colour: str | None
    health: HealthCheck | None


def prepare_restart(options: DeployOptions) -> PreparedRestart:
    """Targets and plan, checked before any host is contacted (ConfigError, exit 2)."""
    fleet = load_fleet(options, {"version": "restart"})
    references = {h: make_release(pb, version="ref", artifact_sha256="", files={}) for h, pb in fleet.playbooks.items()}
    ports = {h: ColourPorts.from_playbook(pb.traffic.blue_green) for h, pb in fleet.playbooks.items()
             if pb.traffic is not None and pb.traffic.blue_green is not None}
    return PreparedRestart(fleet, references, ports, balancer_for(fleet.targets, fleet.playbooks), new_run_id())


class RestartProcedure:
    """`HostProcedure` (rollout/procedure.py) for `fleetctl restart`."""

    notes: tuple[str, ...] = ()
    failed_outcomes = ("failed", "unknown")  # nothing is rolled back in a restart
    halt_words = ("some hosts were restarted, the others not; every host keeps its release",
                  "no host was restarted; every host keeps its release")

    def __init__(self, prepared: PreparedRestart) -> None:
        self.prepared = prepared
        self.info = prepared.fleet.run_info(prepared.run_id, "restart")

    def stage(self, ctx: HostContext) -> StagedRestart | HostOutcome:
        return stage_restart(ctx, self.prepared, ctx.host)

    def activate(self, ctx: HostContext, staged: object) -> HostOutcome:
        if isinstance(staged, HostOutcome):
            return staged
        assert isinstance(staged, StagedRestart)
        playbook = self.prepared.fleet.playbooks[ctx.host]
        return with_traffic(ctx, self.prepared.traffic, staged.state.current, lambda: restart_host(
            ctx, staged, stop_timeout=float(playbook.service.stop_timeout),
            start_timeout=float(playbook.service.start_timeout)))

    def follow_up(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        return outcome

    def undo(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        return outcome  # see the module docstring: a restarted canary runs what it ran before


def stage_restart(ctx: HostContext, prepared: PreparedRestart, host: str) -> StagedRestart | HostOutcome:
    """Read-only: what the host runs and which service that is; a host with nothing to restart is skipped."""
    ref = prepared.references[host]
    ports = prepared.ports.get(host)
    try:
        state = ctx.step("connect", lambda: ctx.client.get_fleet_state(
            app=ref.app, root=ref.root, service_name=ref.service.name, proxy_port=ports.listen if ports else None),
            "reading node state")
    except Exception as err:  # noqa: BLE001 - reported per host
        return HostOutcome(host, "failed", None, f"reading node state: {describe_error(err)}", ctx.timings)
    colour = live_colour(state, ports) if ports is not None and state.live is not None else None
    release_id = state.current
    service = ref.service
    if colour is not None:
        held = state.colour(colour)
        release_id = held.release if held is not None and held.release else release_id
        service = replace(service, name=f"{ref.service.name}-{colour}")
    if release_id is None:
        return HostOutcome(host, "skipped", None, "no release installed by fleetctl: nothing to restart", ctx.timings)
    info = state.release(release_id)
    version = info.version if info is not None else ""
    target = replace(release_like(ref, release_id, version), service=service)
    try:
        health = _colour_health(prepared, host, version, ports.port(colour)) if colour and ports \
            else prepared.fleet.health_for(host)(version)
    except Exception as err:  # noqa: BLE001 - a health check that cannot be rendered fails this host only
        return HostOutcome(host, "failed", release_id, f"health check: {describe_error(err)}", ctx.timings)
    return StagedRestart(state, target, colour, health)


def _colour_health(prepared: PreparedRestart, host: str, version: str, port: int) -> HealthCheck | None:
    """The live colour's gate: the playbook's health check rendered for that colour's own port."""
    targets = prepared.fleet.targets
    inventory_host = next(h for h in targets.hosts if h.name == host)
    rendered = targets.render_for(inventory_host, {"version": version, "colour_port": port})
    if rendered.health is None:
        return None
    check = HealthCheck.from_playbook(rendered.health)
    return check if version else replace(check, expect_json=())


def restart_host(ctx: HostContext, staged: StagedRestart, *, stop_timeout: float,
                 start_timeout: float) -> HostOutcome:
    """stop → start → gate. Success is `restarted`; a failure is `failed` with the release it still has."""
    target = staged.target
    name = target.service.name
    what = f"{name}" + (f" (live colour {staged.colour})" if staged.colour else "")
    unchanged = UNCHANGED.format(release=target.id)
    try:
        ctx.touched = "stop"
        ctx.step("stop", lambda: ctx.client.stop_fleet_service(name=name, timeout_seconds=seconds(stop_timeout)),
                 what, extra=stop_timeout)
    except NodeOperationError as err:
        if err.code == "SERVICE_STOP_TIMEOUT":
            return HostOutcome(ctx.host, "failed", target.id, f"{describe_error(err)} (the service is still "
                               f"stopping; {unchanged}; let it finish or end its process, then start it again)",
                               ctx.timings)
        return HostOutcome(ctx.host, "failed", target.id, f"{describe_error(err)} ({unchanged})", ctx.timings)
    except Exception as err:  # noqa: BLE001
        return _lost_or_failed(ctx, target.id, "stop", err)
    try:
        ctx.touched = "start"
        started = ctx.step("start", lambda: ctx.client.start_fleet_service(
            name=name, timeout_seconds=seconds(start_timeout)), what, extra=start_timeout)
        ctx.started_pid = started.pid
        if staged.health is not None:
            ctx.gating.set()
            ctx.step("health", _gated(ctx, target, staged.health), target.id,
                     extra=staged.health.retries * (staged.health.interval + staged.health.timeout)
                     + staged.health.stability_window)
    except Exception as err:  # noqa: BLE001
        return _lost_or_failed(ctx, target.id, "start", err)
    return HostOutcome(ctx.host, "restarted", target.id, None, ctx.timings)


def _gated(ctx: HostContext, target: Release, check: HealthCheck) -> Callable[[], object]:
    def run() -> object:
        result = gate(ctx, target, check)
        if not result.ok:
            raise StepFailed("health", result.reason or "health check failed")
        return result
    return run


def _lost_or_failed(ctx: HostContext, release: str, step: str, err: BaseException) -> HostOutcome:
    """A host that failed its restart still has its release. One lost after its stop is failed too (its
    release is known), and the outcome says its service may be stopped."""
    unchanged = UNCHANGED.format(release=release)
    if is_lost(err):
        return HostOutcome(ctx.host, "failed", release, f"lost after its {step}, the service may be stopped: "
                           f"{describe_error(err)} ({unchanged}; check it with `fleetctl status`)", ctx.timings)
    return HostOutcome(ctx.host, "failed", release, f"{describe_error(err)} ({unchanged}; the service was "
                       "restarted, not changed: check the host with `fleetctl status` and `fleetctl logs`)",
                       ctx.timings)


def run_restart(prepared: PreparedRestart, bus: EventBus, *, connect: Connect | None = None,
                interruption: Interruption | None = None, force: bool = False,
                judge: HolderJudge | None = None) -> RunResult:
    """Lock every host, restart batch by batch behind the health gates, unlock; the exit code says how it went."""
    return run_procedure(prepared.fleet, RestartProcedure(prepared), bus, connect=connect, interruption=interruption,
                         force=force, judge=judge, traffic=prepared.traffic)
