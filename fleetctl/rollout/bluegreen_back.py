"""Blue-green rollback: each host goes back to its other colour, or, right after it moved over from rolling (the
other colour never held a release), to the rolling release it ran before, run as that colour.

    choose:    `choose_switch_back` (pure): the other colour's release, unless it failed its health gate or is not
               the `--to` version; else the node's previous release when it is older than the current one and
               passed its gate, adopted by the other colour. Never forward past the current release's predecessor,
               never to a release that failed its gate.
    stage:     read the node's colours (read-only) and choose
    activate:  warm and answering: the switch alone (the balancer's backend, then the node's proxy: no stop, no
               start, no bytes); stopped: start it with its stored definition and gate it first; adopted: the
               colour's definition rendered for the release's version, started and gated with that version's gate

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
    other,
    read_colours,
    stop_quietly,
    switch_to,
)
from fleetctl.rollout.events import HostOutcome
from fleetctl.rollout.health import HealthCheck, probe_once
from fleetctl.rollout.host_steps import HostContext, describe_error, stored_definition
from fleetctl.rollout.release import Release, ServiceDefinition


@dataclass(frozen=True)
class SwitchBack:
    """Where one host's rollback goes: `release` run as `colour`; `adopt`: the colour never held it (the rolling
    release a host ran before its first blue-green deploy), so it gets the colour's definition for its version."""

    colour: str
    release: str
    adopt: bool = False


@dataclass(frozen=True)
class StagedSwitchBack:
    state: NodeState
    live: str
    back: str
    release: str
    adopt: bool = False


def choose_switch_back(state: NodeState, live: str, to_version: str | None) -> SwitchBack | str:
    """The rollback target of a host whose live colour is `live`, or why there is none. Pure."""
    back = other(live)
    info = state.colour(back)
    held = info.release if info is not None else None
    held_info = state.release(held) if held else None
    if held is not None and held != state.current:
        if held_info is not None and held_info.gate_failed:
            why = f"the {back} colour holds {held}, which failed its health gate ({held_info.gate_failed})"
        elif to_version is None or to_version in (held, held_info.version if held_info else None):
            return SwitchBack(back, held)
        else:
            why = f"the {back} colour holds {held}, not {to_version}"
    else:
        why = f"the {back} colour has no release to switch back to"
    previous = state.previous
    kept = [r.release for r in state.releases]  # oldest first
    prior = state.release(previous) if previous else None
    if previous is not None and prior is not None and not prior.gate_failed and previous != held and \
            state.current in kept and kept.index(previous) < kept.index(state.current) and \
            (to_version is None or to_version in (previous, prior.version)):
        return SwitchBack(back, previous, adopt=True)
    wanted = f" of version {to_version}" if to_version else ""
    return f"{why}, and the node keeps no older release{wanted} that passed its gate to go back to"


def stage_switch_back(ctx: HostContext, job: BlueGreenJob, to_version: str | None) -> StagedSwitchBack | HostOutcome:
    try:
        state = ctx.step("connect", lambda: read_colours(ctx, job), "reading node state")
    except Exception as err:  # noqa: BLE001
        return HostOutcome(ctx.host, "failed", None, f"reading node state: {describe_error(err)}", ctx.timings)
    live = live_colour(state, job.ports)
    if live is None:
        return HostOutcome(ctx.host, "failed", state.current, "no live colour: this host does not run blue-green "
                                                              "(roll it back with the rolling strategy)", ctx.timings)
    choice = choose_switch_back(state, live, to_version)
    if isinstance(choice, str):
        return HostOutcome(ctx.host, "failed", state.current, choice, ctx.timings)
    if choice.adopt and job.adopted is None:
        return HostOutcome(ctx.host, "failed", state.current, f"the {choice.colour} colour has no release to "
                                                              "switch back to", ctx.timings)
    return StagedSwitchBack(state, live, choice.colour, choice.release, choice.adopt)


def activate_switch_back(ctx: HostContext, job: BlueGreenJob, staged: StagedSwitchBack | HostOutcome) -> HostOutcome:
    """Instant while the other colour is warm and answers; otherwise start it and gate it first."""
    if isinstance(staged, HostOutcome):
        return staged
    back, state = staged.back, staged.state
    info = state.colour(back)
    warm = not staged.adopt and info is not None and info.service is not None and info.service.state == "Running"
    check = job.health[back]
    reference = job.releases[back]
    target = _as_release(reference, staged.release, state, reference.service)
    try:
        adopt = staged.adopt
        if not warm and not adopt:
            # Its own definition (arguments, environment), as the release was installed with it; a release the
            # colour adopted from rolling stores the rolling service's (another name, the public port): it is
            # started as the colour again, with the definition rendered for it.
            stored = stored_definition(ctx.client, reference, staged.release)
            own = stored if stored is not None and stored.name == reference.service.name else None
            adopt = own is None and stored is not None and job.adopted is not None
            target = _as_release(reference, staged.release, state, own or reference.service)
        if adopt:
            assert job.adopted is not None
            definition, versioned = job.adopted(back, target.version)
            target = _as_release(reference, staged.release, state, definition)
            bring_up(ctx, replace(job, health={**job.health, back: versioned}), state, back, target)
        else:
            if warm and check is not None:
                # One probe, no stability window: the colour has been running since it was live.
                verdict = ctx.step("health", lambda: probe_once(_without_version(check), ctx.client),
                                   f"{back} (warm)")
                warm = verdict.ok
            if not warm:
                bring_up(ctx, _for_version(job, back, check), state, back, target)
        switch_to(ctx, job, state, back, target)
    except Exception as err:  # noqa: BLE001
        note = "" if warm else stop_quietly(ctx, target.service.name, job.stop_timeout)
        untouched = f" and {job.traffic.where}" if job.traffic is not None else ""
        return colour_outcome(ctx, "failed", state.current, f"{describe_error(err)} (the proxy{untouched} stays "
                                                            f"on {staged.live}{note})")
    # A switch back is a rollback: `rolled_back`, as the rolling rollback reports it (history, --json, exit code).
    return colour_outcome(ctx, "rolled_back", staged.release, None)


def _as_release(reference: Release, release_id: str, state: NodeState, service: ServiceDefinition) -> Release:
    info = state.release(release_id)
    return Release(id=release_id, version=info.version if info else "", app=reference.app, root=reference.root,
                   artifact_sha256="", exe_name=reference.exe_name, files=(), service=service)


def _without_version(check: HealthCheck) -> HealthCheck:
    return replace(check, expect_json=())  # the colour's version is whatever it runs


def _for_version(job: BlueGreenJob, colour: str, check: HealthCheck | None) -> BlueGreenJob:
    return replace(job, health={**job.health, colour: _without_version(check) if check else None})
