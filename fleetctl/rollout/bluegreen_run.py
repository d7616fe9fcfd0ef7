"""Blue-green runs: each host's two colour releases rendered from its playbook (`colour` and `colour_port` are
template variables, so the arguments and the health URL name the colour's own port), and the blue-green
`HostProcedure` over the host functions of `rollout.bluegreen`, for deploy, canary undo and rollback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetctl.artifacts.url_artifact import ArtifactUrl
from fleetctl.config.playbook import Playbook
from fleetctl.rollout.bluegreen import (
    COLOURS,
    BlueGreenJob,
    ColourPorts,
    StagedColour,
    StagedSwitchBack,
    activate_colour,
    activate_switch_back,
    bake_and_stop,
    stage_colour,
    stage_switch_back,
)
from fleetctl.rollout.events import HostOutcome, RunInfo
from fleetctl.rollout.health import HealthCheck
from fleetctl.rollout.host_steps import HostContext
from fleetctl.rollout.release import Release, make_release
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


def job_for(colours: ColourSet, *, artifact_path: Path | ArtifactUrl, transfer: str, pull_server: object | None,
            ensure_extras: Callable[..., None] | None) -> BlueGreenJob:
    playbook = colours.playbook
    return BlueGreenJob(releases=colours.releases, health=colours.health, ports=colours.ports,
                        artifact_path=artifact_path, plain_service=playbook.service.name,
                        transfer=transfer,  # type: ignore[arg-type]
                        pull_server=pull_server, keep_releases=playbook.install.keep_releases,
                        start_timeout=float(playbook.service.start_timeout),
                        stop_timeout=float(playbook.service.stop_timeout), bake=float(playbook.rollout.bake),
                        ensure_extras=ensure_extras)


class BlueGreenProcedure:
    """`HostProcedure` (rollout/procedure.py) for `--strategy blue-green`: a deploy (`to_version` unused) or a
    rollback (`rollback=True`: switch back to the other colour, or the one holding `to_version`).

    deploy:   stage = the idle colour gets the release (nothing the proxy serves changes); activate = start it, gate
              it on its own port, switch the proxy; follow_up = the old colour stays warm for rollout.bake, then
              stops (unless keep_warm), then retention; undo = switch back (instant while warm).
    rollback: stage = choose the colour to return to; activate = switch back, gated unless warm; undo = switch
              back again.
    """

    def __init__(self, info: RunInfo, jobs: Callable[[str], BlueGreenJob], *, rollback: bool = False,
                 to_version: str | None = None, notes: tuple[str, ...] = ()) -> None:
        self.info = info
        self.notes = notes
        self.jobs = jobs
        self.rollback = rollback
        self.to_version = to_version
        # A rollback's success is `rolled_back` (rollout/verdict.py); a deploy's `rolled_back` is a failure.
        self.failed_outcomes: tuple[str, ...] = ("failed", "unknown") if rollback else FAILED_OUTCOMES

    def stage(self, ctx: HostContext) -> StagedColour | StagedSwitchBack | HostOutcome:
        job = self.jobs(ctx.host)
        if self.rollback:
            return stage_switch_back(ctx, job, self.to_version)
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
        after = activate_switch_back(ctx, job, stage_switch_back(ctx, job, None))
        if after.outcome == "rolled_back":
            return HostOutcome(ctx.host, "rolled_back", after.release, "switched back because the canary batch "
                               "failed", ctx.timings)
        return after
