"""Blue-green runs: each host's two colour releases rendered from its playbook (`colour` and `colour_port` are
template variables, so the arguments and the health URL name the colour's own port), and the blue-green
`HostProcedure` over the host functions of `rollout.bluegreen`, for deploy, canary undo and rollback; and, with a
load balancer in front, where its pool stands before the run (`live_backend_ports`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetctl.artifacts.url_artifact import ArtifactUrl
from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.playbook import Playbook
from fleetctl.config.redaction import redact
from fleetctl.errors import RolloutFailed
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import connect_client, run_parallel
from fleetctl.node.results import NodeState
from fleetctl.rollout.bluegreen import (
    COLOURS,
    BlueGreenJob,
    ColourPorts,
    StagedColour,
    activate_colour,
    bake_and_stop,
    live_colour,
    stage_colour,
)
from fleetctl.rollout.bluegreen_back import StagedSwitchBack, activate_switch_back, stage_switch_back
from fleetctl.rollout.bluegreen_plan import SwitchBackPlan
from fleetctl.rollout.events import HostOutcome, RunInfo
from fleetctl.rollout.health import HealthCheck
from fleetctl.rollout.host_steps import HostContext
from fleetctl.rollout.release import Release, ServiceDefinition, make_release
from fleetctl.rollout.traffic_steps import HostTraffic, pool_hosts
from fleetctl.rollout.verdict import FAILED_OUTCOMES
from fleetctl.targets import Targets


@dataclass(frozen=True)
class ColourSet:
    """One host's blue-green releases and gates (for the target version, or references for a rollback)."""

    releases: dict[str, Release]
    health: dict[str, HealthCheck | None]
    ports: ColourPorts
    playbook: Playbook  # rendered without a colour (timeouts, install, service name)


def colour_set(targets: Targets, playbook: Playbook, host_name: str, *, version: str, artifact_sha256: str,
               render_files: Callable[[Playbook, dict[str, object]], dict[str, str]],
               wrapper_sha256: str | None = None, gate_version: bool = True) -> ColourSet:
    assert playbook.traffic is not None and playbook.traffic.blue_green is not None
    ports = ColourPorts.from_playbook(playbook.traffic.blue_green)
    host = next(h for h in targets.hosts if h.name == host_name)
    releases: dict[str, Release] = {}
    health: dict[str, HealthCheck | None] = {}
    for colour in COLOURS:
        builtins: dict[str, Any] = {"version": version, "colour": colour, "colour_port": ports.port(colour)}
        rendered = targets.render_for(host, builtins)
        files = render_files(rendered, targets.host_variables(host, builtins))
        releases[colour] = make_release(rendered, version=version, artifact_sha256=artifact_sha256, files=files,
                                        wrapper_sha256=wrapper_sha256, colour=colour)
        check = HealthCheck.from_playbook(rendered.health) if rendered.health else None
        if check is not None and not gate_version:
            from dataclasses import replace
            check = replace(check, expect_json=())
        health[colour] = check
    return ColourSet(releases, health, ports, playbook)


def read_colour_state(colours: ColourSet, client: NodeClient) -> NodeState:
    """A host's blue-green state (both colours, the proxy on the public port), read-only."""
    ref = colours.releases["blue"]
    return client.get_fleet_state(app=ref.app, root=ref.root, service_name=colours.playbook.service.name,
                                  proxy_port=colours.ports.listen)


def adopter(targets: Targets, playbook: Playbook, host_name: str) -> Callable[[str, str],
                                                                              tuple[ServiceDefinition,
                                                                                    HealthCheck | None]]:
    """How a colour runs a kept release of `version` it never held: its definition and gate rendered for that
    version (the arguments name the colour's port; the gate expects that version)."""
    def render(colour: str, version: str) -> tuple[ServiceDefinition, HealthCheck | None]:
        rendered = colour_set(targets, playbook, host_name, version=version, artifact_sha256="",
                              render_files=lambda pb, v: {})
        return rendered.releases[colour].service, rendered.health[colour]
    return render


def job_for(colours: ColourSet, *, artifact_path: Path | ArtifactUrl, transfer: str, pull_server: object | None,
            ensure_extras: Callable[..., None] | None, traffic: HostTraffic | None = None,
            adopted: Callable[[str, str], tuple[ServiceDefinition, HealthCheck | None]] | None = None
            ) -> BlueGreenJob:
    playbook = colours.playbook
    return BlueGreenJob(releases=colours.releases, health=colours.health, ports=colours.ports,
                        artifact_path=artifact_path, plain_service=playbook.service.name,
                        transfer=transfer,  # type: ignore[arg-type]
                        pull_server=pull_server, keep_releases=playbook.install.keep_releases,
                        start_timeout=float(playbook.service.start_timeout),
                        stop_timeout=float(playbook.service.stop_timeout), bake=float(playbook.rollout.bake),
                        ensure_extras=ensure_extras, traffic=traffic, adopted=adopted)


def live_backend_ports(targets: Targets, playbooks: dict[str, Playbook], connect: Callable[[str], NodeClient], *,
                       forks: int) -> dict[str, int]:
    """Where the load balancer must send each host of the pool before a blue-green run touches anything: its live
    colour's port, read from the node's port proxy (read-only), or, for a host not on blue-green yet, the port it
    serves on (`traffic.port`, else `listen_port`). The balancer's config names every host, those outside --limit
    too, so a host that cannot be asked stops the run (RolloutFailed) before the balancer or any host is touched:
    rendering it blind could send its traffic to a stopped colour."""
    hosts = {h.name: h for h in pool_hosts(targets)}
    targeted = {h.name for h in targets.hosts}

    def client_for(name: str) -> NodeClient:
        if name in targeted:
            return connect(name)
        host = hosts[name]
        return connect_client(ConnectionSettings.from_hostvars(name, targets.connection_vars(host),
                                                               source=f"inventory host {name}"))

    def read(name: str) -> int:
        playbook = playbooks.get(name) or targets.render_for(hosts[name], {"version": "0"})
        traffic = playbook.traffic
        assert traffic is not None and traffic.blue_green is not None
        ports = ColourPorts.from_playbook(traffic.blue_green)
        client = client_for(name)
        try:
            state = client.get_fleet_state(app=playbook.name, root=playbook.install.root,
                                           service_name=playbook.service.name, proxy_port=ports.listen)
        finally:
            client.close()
        live = live_colour(state, ports)
        return ports.port(live) if live is not None else int(traffic.port or ports.listen)

    results = run_parallel(list(hosts), read, forks=forks)
    unread = {name: r.error for name, r in results.items() if r.value is None}
    if unread:
        shown = redact("; ".join(f"{name}: {why}" for name, why in list(unread.items())[:3]))
        raise RolloutFailed(f"cannot tell which colour {len(unread)} host(s) of the load balancer's pool serve "
                            f"({shown}): the balancer's config names every host's port, and none was changed; no "
                            "host was touched")
    return {name: int(r.value) for name, r in results.items() if r.value is not None}


class BlueGreenProcedure:
    """`HostProcedure` (rollout/procedure.py) for `--strategy blue-green`: a deploy, or a rollback carrying out a
    `SwitchBackPlan` (`plan`: each host's target release and colour, decided before the run).

    deploy:   stage = the idle colour gets the release (nothing the proxy serves changes); activate = start it, gate
              it on its own port, switch the proxy; follow_up = the old colour stays warm for rollout.bake, then
              stops (unless keep_warm), then retention; undo = switch back (instant while warm).
    rollback: stage = check the host still matches its planned switch back (`bluegreen_plan`); activate = switch
              back, gated unless the idle colour is warm on the target; undo = nothing (never forward).
    """

    def __init__(self, info: RunInfo, jobs: Callable[[str], BlueGreenJob], *, plan: SwitchBackPlan | None = None,
                 notes: tuple[str, ...] = ()) -> None:
        self.info = info
        self.notes = notes
        self.jobs = jobs
        self.plan = plan
        self.rollback = plan is not None
        # A rollback's success is `rolled_back` (rollout/verdict.py); a deploy's `rolled_back` is a failure.
        self.failed_outcomes: tuple[str, ...] = ("failed", "unknown") if self.rollback else FAILED_OUTCOMES

    def stage(self, ctx: HostContext) -> StagedColour | StagedSwitchBack | HostOutcome:
        job = self.jobs(ctx.host)
        if self.plan is not None:
            return stage_switch_back(ctx, job, self.plan.choices.get(ctx.host), self.plan.moves.get(ctx.host))
        return stage_colour(ctx, job)

    def activate(self, ctx: HostContext, staged: object) -> HostOutcome:
        job = self.jobs(ctx.host)
        if self.rollback:
            assert isinstance(staged, (StagedSwitchBack, HostOutcome))
            return activate_switch_back(ctx, job, staged)
        assert isinstance(staged, (StagedColour, HostOutcome))
        ctx.staged = staged  # follow_up retires the colour that was live (the engine may have staged it inline)
        return activate_colour(ctx, job, staged)

    def follow_up(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        if self.rollback:
            return outcome
        retired = ctx.staged.live if isinstance(ctx.staged, StagedColour) else None
        return bake_and_stop(ctx, self.jobs(ctx.host), outcome, retired)

    def undo(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        """A canary failure: the canaries of a deploy that passed switch back to their old colour (warm: instantly).
        The canaries of a rollback stay where they are: switching them again would take them forward, the one thing
        a rollback must never do (as `RollbackProcedure.undo`)."""
        if self.rollback:
            return outcome
        job = self.jobs(ctx.host)
        after = activate_switch_back(ctx, job, stage_switch_back(ctx, job))
        if after.outcome == "rolled_back":
            return HostOutcome(ctx.host, "rolled_back", after.release, "switched back because the canary batch "
                               "failed", ctx.timings)
        return after
