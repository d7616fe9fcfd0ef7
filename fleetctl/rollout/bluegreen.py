"""Node-local blue-green: each host runs `<name>-blue` and `<name>-green`, each on its own port with its own
release; the public port is the node's port proxy, pointed at the live colour.

A deploy installs the new release into the idle colour, starts it, gates it on health on its own port, then
switches the proxy (`Switch-FleetColour`, one node operation); the old colour stays warm for `rollout.bake`
and is then stopped, unless `traffic.blue_green.keep_warm`. A failed gate leaves the proxy alone and stops the
idle colour. A rollback is a switch back to the other colour: instant while it is warm (no stop, no start, no
bytes), otherwise it is started and gated first. The proxy only ever points at a colour that passed its gate,
so an interrupted run leaves every host serving on a healthy colour; a re-run finds the idle colour already on
the target and finishes the switch.

Behind a load balancer (`traffic.kind: nginx|haproxy`) the balancer's backend for the host moves from the live
colour's port to the new colour's (`ready` step), then the node's proxy switches too, so the public port and the
node's record agree; the old colour is given `traffic.drain` for its open requests before it is stopped. The
balancer moves first: a run stopped between the two leaves the node recording the old colour (still running),
and the next run points the balancer back at it before it moves it again.

Steps per host are the same `HostContext` steps as rolling (service, stop, switch, start, health, proxy,
record), so the live view, `--json` and the journal show them unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleetctl.artifacts.url_artifact import ArtifactUrl
from fleetctl.config.playbook import BlueGreen
from fleetctl.node.client import NodeClient
from fleetctl.node.results import NodeState
from fleetctl.node.transfer import TransferMode, ensure_artifact
from fleetctl.rollout.events import HostOutcome
from fleetctl.rollout.health import HealthCheck
from fleetctl.rollout.host_steps import HostContext, StepFailed, describe_error, gate, release_failed, seconds
from fleetctl.rollout.host_steps import _passed as passed
from fleetctl.rollout.release import Release, ServiceDefinition
from fleetctl.rollout.traffic_steps import HostTraffic, TrafficFailed

COLOURS = ("blue", "green")


def other(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


@dataclass(frozen=True)
class ColourPorts:
    listen: int
    blue: int
    green: int
    keep_warm: bool = False

    @classmethod
    def from_playbook(cls, blue_green: BlueGreen) -> ColourPorts:
        return cls(blue_green.listen_port, blue_green.blue_port, blue_green.green_port, blue_green.keep_warm)

    def port(self, colour: str) -> int:
        return self.blue if colour == "blue" else self.green

    def colour_of(self, port: int | None) -> str | None:
        return {self.blue: "blue", self.green: "green"}.get(port or -1)


def live_colour(state: NodeState, ports: ColourPorts) -> str | None:
    """The colour the proxy sends traffic to (the proxy is the truth; the recorded colour if it cannot tell)."""
    if state.proxy is not None:
        return ports.colour_of(state.proxy.connect_port)
    return state.live


@dataclass(frozen=True)
class BlueGreenJob:
    """Everything one host's blue-green deploy needs: the release and gate of each colour."""

    releases: dict[str, Release]  # colour -> the release built for it (service <name>-<colour>)
    health: dict[str, HealthCheck | None]  # colour -> its gate, on its own port
    ports: ColourPorts
    artifact_path: Path | ArtifactUrl  # an ArtifactUrl with transfer: url (the nodes download it)
    plain_service: str  # the single-instance service a rolling deploy runs (stopped when a host moves over)
    transfer: TransferMode = "auto"
    pull_server: object | None = None
    keep_releases: int = 5
    start_timeout: float = 30.0
    stop_timeout: float = 30.0
    bake: float = 0.0
    ensure_extras: Callable[[NodeClient], None] | None = None
    traffic: HostTraffic | None = None  # a load balancer in front: its backend moves between the colours' ports
    # How `colour` runs a kept release of a version it never held (the first rollback after a host moved over from
    # rolling): the colour's service definition and gate, rendered for that version. None: not possible here.
    adopted: Callable[[str, str], tuple[ServiceDefinition, HealthCheck | None]] | None = None


@dataclass(frozen=True)
class StagedColour:
    """A host whose idle colour has the target release installed; nothing running was touched."""

    state: NodeState
    live: str | None
    idle: str


@dataclass(frozen=True)
class ColourPreview:
    target: str
    changes: tuple[str, ...]


@dataclass(frozen=True)
class BackendSeat:
    """Where a load balancer sends one host's traffic now (for --dry-run): `where` is e.g. `nginx on lb1`."""

    where: str
    server: str
    port: int
    grace_s: float = 0.0


def colour_changes(state: NodeState, releases: dict[str, Release], ports: ColourPorts, *, artifact_present: bool,
                   bake: float, seat: BackendSeat | None = None) -> ColourPreview:
    """What a blue-green deploy would do on a host in `state` (for --dry-run), in order; `seat`: its backend on
    the load balancer in front, which moves to the new colour's port before the node's proxy switches. Pure."""
    live = live_colour(state, ports)
    if live is not None:
        info = state.colour(live)
        if info is not None and info.release == releases[live].id and info.service is not None and \
                info.service.state == "Running" and state.live == live:
            return ColourPreview(releases[live].id, ())
    idle = other(live) if live else "blue"
    target = releases[idle]
    changes: list[str] = []
    if state.release(target.id) is None:
        if not artifact_present:
            changes.append(f"transfer artifact {target.artifact_sha256[:12]}")
        changes.append(f"install release {target.id}")
    changes += [f"{idle}: run {target.id} as {target.service.name} on port {ports.port(idle)}",
                f"{idle}: start and gate on port {ports.port(idle)}"]
    if seat is not None and seat.port != ports.port(idle):
        changes.append(f"move backend {seat.server} on {seat.where} from port {seat.port} to {idle} port "
                       f"{ports.port(idle)}")
    if state.service is not None and state.service.exists and state.service.state == "Running" and live is None:
        grace = f" after {seat.grace_s:g} s for its open requests" if seat is not None and seat.grace_s else ""
        changes.append(f"stop {target.service.name.rsplit('-', 1)[0]}{grace} (moving the host to blue-green)")
    changes.append(f"switch port {ports.listen} from {live or '(none)'} to {idle}")
    if live is not None and not ports.keep_warm:
        grace = f"{seat.grace_s:g} s for its open requests, then " if seat is not None and seat.grace_s else ""
        changes.append(f"{live}: {grace}keep warm {bake:g} s, then stop")
    return ColourPreview(target.id, tuple(changes))


def read_colours(ctx: HostContext, job: BlueGreenJob) -> NodeState:
    ref = job.releases["blue"]
    return ctx.client.get_fleet_state(app=ref.app, root=ref.root, service_name=job.plain_service,
                                      proxy_port=job.ports.listen)


def stage_colour(ctx: HostContext, job: BlueGreenJob) -> StagedColour | HostOutcome:
    """Read the colours, transfer and install the idle colour's release (or say the host is already current)."""
    try:
        state = ctx.step("connect", lambda: read_colours(ctx, job), "reading node state")
    except Exception as err:  # noqa: BLE001
        return HostOutcome(ctx.host, "failed", None, f"reading node state: {describe_error(err)}", ctx.timings)
    live = live_colour(state, job.ports)
    if live is not None:
        info = state.colour(live)
        running = info is not None and info.service is not None and info.service.state == "Running"
        if info is not None and info.release == job.releases[live].id and running and state.live == live:
            return HostOutcome(ctx.host, "skipped", info.release, None, ctx.timings)
    idle = other(live) if live else "blue"
    target = job.releases[idle]
    method = "skipped"
    try:
        if state.release(target.id) is None:
            result = ctx.step("transfer", lambda: ensure_artifact(
                ctx.client, job.artifact_path, target.artifact_sha256, job.transfer, job.pull_server,  # type: ignore[arg-type]
                ctx.progress("transfer")))
            method = result.method
        ctx.step("install", lambda: ctx.client.install_fleet_release(
            app=target.app, root=target.root, release=target.id, version=target.version,
            sha256=target.artifact_sha256, exe_name=target.exe_name, files=target.files_map), idle)
        extras = job.ensure_extras
        if extras is not None:
            ctx.step("service", lambda: extras(ctx.client), "firewall rules and scheduled tasks")
    except Exception as err:  # noqa: BLE001
        return HostOutcome(ctx.host, "failed", state.current, describe_error(err), ctx.timings)
    ctx.transfer_method = method
    return StagedColour(state, live, idle)


def activate_colour(ctx: HostContext, job: BlueGreenJob, staged: StagedColour | HostOutcome) -> HostOutcome:
    """Start the idle colour on the target, gate it on its own port, switch the proxy to it."""
    if isinstance(staged, HostOutcome):
        return staged
    idle, live, state = staged.idle, staged.live, staged.state
    target = job.releases[idle]
    before = state.current
    try:
        bring_up(ctx, job, state, idle, target)
    except Exception as err:  # noqa: BLE001
        reason = describe_error(err)
        failed = mark_failed(ctx, target, err, reason)
        note = stop_quietly(ctx, target.service.name, job.stop_timeout)
        if live is None:
            return colour_outcome(ctx, "failed", before, f"{reason} ({idle} stopped{note}; no live colour to keep)",
                                  failed=failed)
        untouched = f" and {job.traffic.where}" if job.traffic is not None else ""
        return colour_outcome(ctx, "rolled_back", before, f"{reason} (the proxy{untouched} stays on {live}; {idle} "
                                                          f"stopped{note})", failed=failed)
    if ctx.interruption.abort.is_set():
        where = f" ({job.traffic.where} untouched)" if job.traffic is not None else ""
        return colour_outcome(ctx, "failed", before, f"interrupted after {idle} passed its gate, before the switch: "
                                               f"{live or 'no colour'} still serves{where}; {idle} runs {target.id} "
                                               "warm (re-run to switch)")
    try:
        switch_to(ctx, job, state, idle, target)
    except Exception as err:  # noqa: BLE001
        return colour_outcome(ctx, "failed", before, f"switching to {idle}: {describe_error(err)} ({idle} runs "
                                               f"{target.id} warm)")
    return colour_outcome(ctx, "deployed", target.id, None)


def bring_up(ctx: HostContext, job: BlueGreenJob, state: NodeState, colour: str, target: Release) -> None:
    """`colour` runs `target`, started and gated on its own port (no-op steps where it already does)."""
    client = ctx.client
    info = state.colour(colour)
    service = info.service if info else None
    running = service is not None and service.state == "Running"
    ctx.step("service", lambda: client.set_fleet_service(**target.service.client_kwargs()), colour)
    if running and info is not None and info.release != target.id:
        ctx.step("stop", lambda: client.stop_fleet_service(name=target.service.name,
                                                           timeout_seconds=seconds(job.stop_timeout)), colour)
    ctx.step("switch", lambda: client.switch_fleet_release(app=target.app, root=target.root, release=target.id,
                                                           colour=colour), f"{colour} -> {target.id}")
    ctx.last_state = None
    ctx.step("start", lambda: client.start_fleet_service(name=target.service.name,
                                                         timeout_seconds=seconds(job.start_timeout)), colour)
    check = job.health[colour]
    if check is not None:
        ctx.gating.set()
        # Raised inside the step, so the timeline marks the health step itself as the one that failed.
        ctx.step("health", lambda: passed(gate(ctx, target, check)), f"{colour} on port {job.ports.port(colour)}")


def switch_to(ctx: HostContext, job: BlueGreenJob, state: NodeState, colour: str, target: Release) -> None:
    """Send the traffic to `colour` (which passed its gate) and check the node recorded it: the load balancer's
    backend first, when there is one, then the node's port proxy, which records the colour live."""
    client = ctx.client
    plain = state.service
    moving_over = plain is not None and plain.exists and plain.state == "Running"
    traffic = job.traffic
    port = job.ports.port(colour)
    before = traffic.port_of(ctx.host) if traffic is not None else port
    if traffic is not None and before != port:
        # The balancer before the node: until the node records the colour live, a run reads the colour it left
        # as live (still running: it is stopped only after this), points the balancer back at it, and moves again.
        try:
            ctx.step("ready", lambda: traffic.move(ctx.host, port), f"{traffic.where}: :{before} -> {colour} :{port}")
        except TrafficFailed as err:
            raise StepFailed("ready", str(err)) from None
    proxied = False
    try:
        if moving_over:
            # A host moving over from rolling: its single service holds the public port the proxy needs. Behind a
            # balancer, it stops taking new requests with the move; its open ones get traffic.drain first.
            if traffic is not None and traffic.grace_s > 0:
                ctx.step("drain", lambda: traffic.let_finish(ctx.interruption.abort.is_set),
                         f"{job.plain_service}: open requests, {traffic.grace_s:g} s")
            ctx.step("stop", lambda: client.stop_fleet_service(name=job.plain_service,
                                                               timeout_seconds=seconds(job.stop_timeout)),
                     f"{job.plain_service} (moving to blue-green)")
        result = ctx.step("proxy", lambda: client.switch_fleet_colour(
            app=target.app, root=target.root, colour=colour, listen_port=job.ports.listen,
            connect_port=port), f":{job.ports.listen} -> {colour} :{port}")
        proxied = True
        if result.current != target.id:
            raise StepFailed("record", f"the node reports current release {result.current}, expected {target.id}")
    except Exception:
        if traffic is not None and before != port and not proxied and not moving_over:
            # The node still records the old colour live (and runs it): the balancer goes back to it too.
            move_quietly(ctx, traffic, before)
        raise


def bake_and_stop(ctx: HostContext, job: BlueGreenJob, outcome: HostOutcome, retired: str | None) -> HostOutcome:
    """After a switch: the old colour stays warm for the bake time (an instant switch back), then is stopped unless
    it is to be kept warm; then retention. Never undoes the deploy."""
    if outcome.outcome != "deployed" or retired is None:
        return outcome
    notes: list[str] = []
    if not job.ports.keep_warm:
        traffic = job.traffic
        if traffic is not None and traffic.grace_s > 0:
            # Behind a balancer the old colour takes no new requests since the move; its open ones end first.
            ctx.step("drain", lambda: traffic.let_finish(ctx.interruption.requested.is_set),
                     f"{retired}: open requests on {traffic.where}, {traffic.grace_s:g} s")
        if job.bake > 0:
            ctx.step("bake", lambda: ctx.interruption.requested.wait(job.bake), f"{retired} warm for {job.bake:g} s")
        if not ctx.interruption.requested.is_set():
            name = job.releases[retired].service.name
            try:
                ctx.step("stop", lambda: ctx.client.stop_fleet_service(name=name,
                                                                       timeout_seconds=seconds(job.stop_timeout)),
                         f"{retired} (idle)")
            except Exception as err:  # noqa: BLE001
                notes.append(f"stopping the idle {retired}: {describe_error(err)}")
    ref = job.releases["blue"]
    try:
        ctx.step("retention", lambda: ctx.client.remove_fleet_release(app=ref.app, root=ref.root,
                                                                      keep=job.keep_releases))
    except Exception as err:  # noqa: BLE001
        notes.append(f"retention: {describe_error(err)}")
    if not notes:
        return outcome
    return HostOutcome(outcome.host, outcome.outcome, outcome.release, "; ".join(notes), ctx.timings,
                       outcome.transfer)


def move_quietly(ctx: HostContext, traffic: HostTraffic, port: int) -> None:
    try:
        ctx.step("rollback", lambda: traffic.move(ctx.host, port), f"{traffic.where}: back to :{port}")
    except Exception:  # noqa: BLE001, S110 - the move already halted the run and says why; the error stays the first
        pass


def stop_quietly(ctx: HostContext, name: str, timeout: float) -> str:
    try:
        ctx.step("rollback", lambda: ctx.client.stop_fleet_service(name=name, timeout_seconds=seconds(timeout)),
                 f"stop {name}")
    except Exception as err:  # noqa: BLE001
        return f"; stopping {name} failed: {describe_error(err)}"
    return ""


def mark_failed(ctx: HostContext, release: Release, err: BaseException, reason: str) -> str | None:
    """When the failure is the release's own (its gate, its start), mark it failed on the node, as a rolling deploy
    does, so that no rollback ever goes to it; the release id, or None."""
    if not release_failed(err):
        return None
    try:
        ctx.step("rollback", lambda: ctx.client.set_fleet_release_verdict(
            app=release.app, release=release.id, verdict="failed", reason=reason[:500]), f"mark {release.id} failed")
    except Exception:  # noqa: BLE001, S110 - the journal keeps the mark too (HostOutcome.failed_release)
        pass
    return release.id


def colour_outcome(ctx: HostContext, outcome: str, release: str | None, error: str | None, *,
                   failed: str | None = None) -> HostOutcome:
    return HostOutcome(ctx.host, outcome, release, error, ctx.timings, ctx.transfer_method,  # type: ignore[arg-type]
                       failed_release=failed)
