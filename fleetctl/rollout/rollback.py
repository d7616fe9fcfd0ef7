"""The rollback procedure: what `fleetctl rollback` does on one host, top to bottom. No artifact bytes move.

    plan:      before any lock, every host's state is read and `rollback_target.choose_rollback` decides where
               each goes: the fleet's last good release, never a release that failed its gate, never forward
               (`plan_rolling_rollback`; shown for confirmation, printed by --dry-run, and carried out as it was shown)
    stage:     read the node's state → check it still matches the plan → read the target's stored definition
    activate:  service definition → stop → switch → start → health → record; a host failing its gate returns to
               the release it was on (and is `failed`)
    follow_up: nothing (a rollback removes no release)
    undo:      nothing: canaries of a rollback that passed are on the good release, and taking them forward again
               would be the one thing a rollback must never do

`rollback_host` (stage then activate, to the previous release) is also how a deploy undoes a canary.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import NodeState
from fleetctl.rollout.events import HostOutcome
from fleetctl.rollout.host_steps import (
    HealthFor,
    HostContext,
    StepFailed,
    StopHung,
    activate,
    describe_error,
    furthest,
    is_lost,
    left_running,
    read_state,
    release_like,
    stored_definition,
    unknown_outcome,
)
from fleetctl.rollout.preparation import Connect, PreparedRollback
from fleetctl.rollout.release import Release, ServiceDefinition, is_current
from fleetctl.rollout.rollback_target import HostReleases, RollbackChoice, RollbackPlan, choose_rollback
from fleetctl.rollout.traffic_steps import HostTraffic, with_traffic

USE_BLUE_GREEN = "roll it back with --strategy blue-green"


@dataclass(frozen=True)
class RollbackJob:
    """Switch one host to an older release it keeps: the planned `choice` (fleetctl rollback), else `to_version`,
    else its previous release (undoing a canary)."""

    reference: Release  # this host's app/root/service as currently configured (its id is not used)
    health_for: HealthFor
    to_version: str | None = None
    start_timeout: float = 30.0
    stop_timeout: float = 30.0
    choice: RollbackChoice | None = None
    traffic: HostTraffic | None = None  # the load balancer: drain before the stop, ready once healthy


@dataclass(frozen=True)
class StagedRollback:
    """What a rollback host will switch to, read before its batch (nothing changed yet)."""

    state: NodeState
    target_id: str
    target_version: str
    definition: ServiceDefinition | None


class RollbackProcedure:
    """`HostProcedure` for `fleetctl rollback` (rollout/procedure.py), carrying out a `RollbackPlan`."""

    notes: tuple[str, ...] = ()
    failed_outcomes = ("failed", "unknown")  # a rollback's success is `rolled_back`

    def __init__(self, prepared: PreparedRollback, plan: RollbackPlan) -> None:
        self.prepared = prepared
        self.plan = plan
        self.info = prepared.fleet.run_info(prepared.run_id, "rollback", version=plan.version)

    def job(self, host: str) -> RollbackJob:
        fleet = self.prepared.fleet
        playbook = fleet.playbooks[host]
        return RollbackJob(reference=self.prepared.references[host], health_for=fleet.health_for(host),
                           to_version=self.prepared.to_version, start_timeout=float(playbook.service.start_timeout),
                           stop_timeout=float(playbook.service.stop_timeout), choice=self.plan.choices.get(host),
                           traffic=self.prepared.traffic)

    def stage(self, ctx: HostContext) -> StagedRollback | HostOutcome:
        return stage_rollback(ctx, self.job(ctx.host))

    def activate(self, ctx: HostContext, staged: object) -> HostOutcome:
        assert isinstance(staged, (StagedRollback, HostOutcome))
        return activate_rollback(ctx, self.job(ctx.host), staged)

    def follow_up(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        return outcome

    def undo(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        return outcome  # never forward: see the module's docstring


def plan_rolling_rollback(prepared: PreparedRollback, *, connect: Connect | None = None,
                          journal_failures: dict[str, dict[str, str]] | None = None) -> RollbackPlan:
    """Read every targeted host's state (nothing changes) and choose where each goes (`choose_rollback`): the
    same plan is shown for confirmation, printed by --dry-run and carried out. A host that cannot be asked is
    refused with the reason, and so is a host that runs blue-green (its proxy holds the public port: a rolling
    switch there would fight it; the CLI refuses the whole run, naming --strategy blue-green). `journal_failures`
    (host -> {release: why}): what the history journal remembers failing (the CLI reads it:
    `Journal.gate_failures`), besides the marks the nodes keep."""
    factory = connect or prepared.fleet.client_factory()
    failures = journal_failures or {}

    def read(host: str) -> tuple[HostReleases, str | None]:
        ref = prepared.references[host]
        client = factory(host)
        try:
            state = client.get_fleet_state(app=ref.app, root=ref.root, service_name=ref.service.name)
        finally:
            client.close()
        return HostReleases.from_state(host, state, failures.get(host)), state.live

    outcomes = run_parallel(list(prepared.plan.hosts), read, forks=prepared.fleet.forks)
    read_ok = {h: o.value for h, o in outcomes.items() if o.value is not None}
    # Blue-green hosts stay out of the fleet's choice: their releases are the colours', not a rolling history.
    plan = choose_rollback([view for view, live in read_ok.values() if live is None], to_version=prepared.to_version,
                           force=prepared.force)
    choices: dict[str, RollbackChoice] = {}
    for host in prepared.plan.hosts:
        if host not in read_ok:
            choices[host] = RollbackChoice(host, None, None, "refuse", f"could not be asked: {outcomes[host].error}")
        elif (live := read_ok[host][1]) is not None:
            choices[host] = RollbackChoice(host, read_ok[host][0].current, None, "refuse",
                                           f"runs blue-green (live colour {live}): {USE_BLUE_GREEN}")
        else:
            choices[host] = plan.choices[host]
    return RollbackPlan(plan.version, choices)


def choose_target(state: NodeState, to_version: str | None) -> tuple[str, str]:
    """The release to roll back to: the previous one, or the newest kept release of `to_version`."""
    if to_version is None:
        if not state.previous:
            raise StepFailed("rollback", "the node keeps no previous release to roll back to")
        info = state.release(state.previous)
        return state.previous, info.version if info else ""
    matches = [r for r in state.releases if r.version == to_version or r.release == to_version]
    if not matches:
        kept = ", ".join(r.release for r in state.releases) or "none"
        raise StepFailed("rollback", f"the node does not keep a release of version {to_version} (kept: {kept})")
    # releases are oldest first: the newest install of that version wins
    return matches[-1].release, matches[-1].version


def _planned_target(state: NodeState, choice: RollbackChoice) -> tuple[str, str] | str:
    """The planned choice checked against the state read now: (target, version), or why the host is not switched
    (a `skip:` prefix when there is nothing to do)."""
    if state.current != choice.current:
        return (f"the node changed since the rollback was planned (was {choice.current or '(none)'}, now "
                f"{state.current or '(none)'}): run rollback again")
    if choice.action == "refuse":
        return choice.reason
    if choice.action == "stay" or choice.target is None:
        return "skip:" + choice.reason
    info = state.release(choice.target)
    if info is None:
        return f"the node no longer keeps {choice.target}"
    return choice.target, info.version


def rollback_host(ctx: HostContext, job: RollbackJob) -> HostOutcome:
    """Switch one (already locked) host to an older kept release; moves no artifact bytes."""
    return activate_rollback(ctx, job, stage_rollback(ctx, job))


def stage_rollback(ctx: HostContext, job: RollbackJob) -> StagedRollback | HostOutcome:
    """Read-only: the node's state, the release to return to and its stored service definition."""
    ref = job.reference
    try:
        state = ctx.step("connect", lambda: read_state(ctx, ref), "reading node state")
        if state.live is not None:
            raise StepFailed("rollback", f"this host runs blue-green (live colour {state.live}): {USE_BLUE_GREEN}")
        if job.choice is not None:
            planned = _planned_target(state, job.choice)
            if isinstance(planned, str):
                if planned.startswith("skip:"):
                    return HostOutcome(ctx.host, "skipped", state.current, planned[5:], ctx.timings)
                return HostOutcome(ctx.host, "failed", state.current, planned, ctx.timings)
            target_id, target_version = planned
        else:
            target_id, target_version = choose_target(state, job.to_version)
    except Exception as err:  # noqa: BLE001
        return HostOutcome(ctx.host, "failed", None, describe_error(err), ctx.timings)
    if is_current(target_id, state):
        return HostOutcome(ctx.host, "skipped", target_id, None, ctx.timings)
    try:
        definition = stored_definition(ctx.client, ref, target_id)
    except Exception as err:  # noqa: BLE001
        return HostOutcome(ctx.host, "failed", None, describe_error(err), ctx.timings)
    return StagedRollback(state, target_id, target_version, definition)


def activate_rollback(ctx: HostContext, job: RollbackJob, staged: StagedRollback | HostOutcome) -> HostOutcome:
    """Switch to the staged target, gated; a host failing its gate returns to the release it was on (and is
    `failed`, since the rollback did not happen there). Success is `rolled_back`."""
    if isinstance(staged, HostOutcome):
        return staged
    return with_traffic(ctx, job.traffic, staged.state.current, lambda: _switch_back(ctx, job, staged))


def _switch_back(ctx: HostContext, job: RollbackJob, staged: StagedRollback) -> HostOutcome:
    ref = job.reference
    original = staged.state.current
    original_info = staged.state.release(original)
    original_version = original_info.version if original_info else ""
    target = release_like(ref, staged.target_id, staged.target_version)
    try:
        note = activate(ctx, target, staged.definition, job.health_for(staged.target_version), job, record=True)
    except StopHung as hung:
        return left_running(ctx, ref, original, hung)
    except Exception as err:  # noqa: BLE001
        reason = describe_error(err)
        touched = ctx.touched
        if original is None:
            return HostOutcome(ctx.host, "failed", None, reason, ctx.timings)
        try:
            back = release_like(ref, original, original_version)
            note = activate(ctx, back, stored_definition(ctx.client, ref, original), job.health_for(original_version),
                            job, record=False, step_prefix=True)
        except Exception as again:  # noqa: BLE001
            if (is_lost(again) or is_lost(err)) and touched is not None and not isinstance(again, StopHung):
                return unknown_outcome(ctx, furthest(touched, ctx.touched) or touched, reason, again, None, original)
            return HostOutcome(ctx.host, "failed", None, f"{reason}; returning to {original} failed: "
                                                         f"{describe_error(again)}", ctx.timings)
        return HostOutcome(ctx.host, "failed", original, f"{reason}; returned to {original}"
                           + (f" ({note})" if note else ""), ctx.timings)
    return HostOutcome(ctx.host, "rolled_back", staged.target_id, note, ctx.timings)
