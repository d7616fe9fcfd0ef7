"""Blue-green rollback on one host: carry out its planned switch back (`bluegreen_plan`: the shared rollback
rule says which release, never forward; the plan says which colour and how).

    stage:     read the node's colours (read-only) and check they still match the plan (the live colour and its
               release); a refused host fails with the plan's reason, a host with nothing to do is skipped
    activate:  the idle colour holds the target and runs: the switch alone (the balancer's backend, then the node's
               proxy: no stop, no start, no bytes); stopped: start it with its stored definition and gate it first;
               it holds another release (or none): the target becomes its release with the colour's own
               definition (rendered for the target's version when the release was installed for another service),
               started and gated, then switched to

The switch itself and what a failed gate leaves are `rollout/bluegreen.py`'s (`bring_up`, `switch_to`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fleetctl.node.results import NodeState
from fleetctl.rollout.bluegreen import (
    BlueGreenJob,
    bring_up,
    colour_outcome,
    live_colour,
    read_colours,
    stop_quietly,
    switch_to,
)
from fleetctl.rollout.bluegreen_plan import SwitchBack, choose_switch_back
from fleetctl.rollout.events import HostOutcome
from fleetctl.rollout.health import HealthCheck, probe_once
from fleetctl.rollout.host_steps import HostContext, StepFailed, describe_error, stored_definition
from fleetctl.rollout.release import Release, ServiceDefinition
from fleetctl.rollout.rollback_target import RollbackChoice


@dataclass(frozen=True)
class StagedSwitchBack:
    state: NodeState
    live: str
    back: str
    release: str


def stage_switch_back(ctx: HostContext, job: BlueGreenJob, choice: RollbackChoice | None = None,
                      planned: SwitchBack | None = None) -> StagedSwitchBack | HostOutcome:
    """Read the colours and check them against the plan; without one (a deploy undoing its canaries), the host
    is planned alone, with the same rule."""
    try:
        state = ctx.step("connect", lambda: read_colours(ctx, job), "reading node state")
    except Exception as err:  # noqa: BLE001
        return HostOutcome(ctx.host, "failed", None, f"reading node state: {describe_error(err)}", ctx.timings)
    live = live_colour(state, job.ports)
    if live is None:
        return HostOutcome(ctx.host, "failed", state.current, "no live colour: this host does not run blue-green "
                                                              "(roll it back with --strategy rolling)", ctx.timings)
    info = state.colour(live)
    serving = info.release if info is not None and info.release else state.current
    if choice is None or planned is None:
        alone = choose_switch_back({ctx.host: state}, {ctx.host: job.ports})
        choice, planned = alone.choices[ctx.host], alone.moves[ctx.host]
    elif planned.live != live or choice.current != serving:
        return HostOutcome(ctx.host, "failed", serving, f"the node changed since the rollback was planned (was "
                           f"{planned.live or '(none)'} {choice.current or '(none)'}, now {live} "
                           f"{serving or '(none)'}): run rollback again", ctx.timings)
    if choice.action == "refuse":
        return HostOutcome(ctx.host, "failed", serving, choice.reason, ctx.timings)
    if choice.action == "stay" or planned.colour is None or planned.release is None:
        return HostOutcome(ctx.host, "skipped", serving, choice.reason or None, ctx.timings)
    if state.release(planned.release) is None:
        return HostOutcome(ctx.host, "failed", serving, f"the node no longer keeps {planned.release}", ctx.timings)
    return StagedSwitchBack(state, live, planned.colour, planned.release)


def activate_switch_back(ctx: HostContext, job: BlueGreenJob, staged: StagedSwitchBack | HostOutcome) -> HostOutcome:
    """Instant while the idle colour holds the target, runs and answers; otherwise start it (with the target put
    into it first when it holds another release) and gate it before the switch."""
    if isinstance(staged, HostOutcome):
        return staged
    back, state = staged.back, staged.state
    info = state.colour(back)
    warm = info is not None and info.release == staged.release and info.service is not None and \
        info.service.state == "Running"
    check = job.health[back]
    reference = job.releases[back]
    target = _as_release(reference, staged.release, state, reference.service)
    try:
        if warm and check is not None:
            # One probe, no stability window: the colour has been running since it was live.
            verdict = ctx.step("health", lambda: probe_once(_without_version(check), ctx.client), f"{back} (warm)")
            warm = verdict.ok
        if not warm:
            target, gated = _colour_release(ctx, job, back, staged.release, state)
            bring_up(ctx, replace(job, health={**job.health, back: gated}), state, back, target)
        switch_to(ctx, job, state, back, target)
    except Exception as err:  # noqa: BLE001
        note = "" if warm else stop_quietly(ctx, target.service.name, job.stop_timeout)
        untouched = f" and {job.traffic.where}" if job.traffic is not None else ""
        return colour_outcome(ctx, "failed", state.current, f"{describe_error(err)} (the proxy{untouched} stays "
                                                            f"on {staged.live}{note})")
    # A switch back is a rollback: `rolled_back`, as the rolling rollback reports it (history, --json, exit code).
    return colour_outcome(ctx, "rolled_back", staged.release, None)


def _colour_release(ctx: HostContext, job: BlueGreenJob, colour: str, release_id: str,
                    state: NodeState) -> tuple[Release, HealthCheck | None]:
    """`release_id` run as `colour`, and its gate: the definition the release was installed with when it was
    installed for this colour (its arguments, environment); else (installed for the other colour, or for the
    rolling service, which holds the public port the proxy needs) the colour's definition rendered for the
    release's version, gated on that version."""
    reference = job.releases[colour]
    check = job.health[colour]
    stored = stored_definition(ctx.client, reference, release_id)
    if stored is not None and stored.name == reference.service.name:
        return _as_release(reference, release_id, state, stored), _without_version(check) if check else None
    if job.adopted is None:
        raise StepFailed("rollback", f"{release_id} was installed for another service and cannot be run as {colour} "
                                     "here")
    info = state.release(release_id)
    definition, versioned = job.adopted(colour, info.version if info else "")
    return _as_release(reference, release_id, state, definition), versioned


def _as_release(reference: Release, release_id: str, state: NodeState, service: ServiceDefinition) -> Release:
    info = state.release(release_id)
    return Release(id=release_id, version=info.version if info else "", app=reference.app, root=reference.root,
                   artifact_sha256="", exe_name=reference.exe_name, files=(), service=service)


def _without_version(check: HealthCheck) -> HealthCheck:
    return replace(check, expect_json=())  # the colour's version is whatever it runs
