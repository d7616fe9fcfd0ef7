"""The rollback procedure: what `fleetctl rollback` does on one host, top to bottom. No artifact bytes move.

    stage:     read the node's state → choose the kept release to return to → read its stored service definition
    activate:  service definition → stop → switch → start → health → record; a host failing its gate returns to
               the release it was on
    follow_up: nothing (a rollback removes no release)
    undo:      a canary that passed returns to its previous release when another canary failed

`rollback_host` (stage then activate) is also how a deploy undoes a canary.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetctl.node.results import NodeState
from fleetctl.rollout.events import HostOutcome
from fleetctl.rollout.host_steps import (
    HealthFor,
    HostContext,
    StepFailed,
    StopHung,
    activate,
    describe_error,
    left_running,
    read_state,
    release_like,
    return_to,
    stored_definition,
)
from fleetctl.rollout.preparation import PreparedRollback
from fleetctl.rollout.release import Release, ServiceDefinition, is_current


@dataclass(frozen=True)
class RollbackJob:
    """Switch one host to an older release it keeps (`to_version` None: its previous release)."""

    reference: Release  # this host's app/root/service as currently configured (its id is not used)
    health_for: HealthFor
    to_version: str | None = None
    start_timeout: float = 30.0
    stop_timeout: float = 30.0


@dataclass(frozen=True)
class StagedRollback:
    """What a rollback host will switch to, read before its batch (nothing changed yet)."""

    state: NodeState
    target_id: str
    target_version: str
    definition: ServiceDefinition | None


class RollbackProcedure:
    """`HostProcedure` for `fleetctl rollback` (rollout/procedure.py)."""

    notes: tuple[str, ...] = ()

    def __init__(self, prepared: PreparedRollback) -> None:
        self.prepared = prepared
        self.info = prepared.fleet.run_info(prepared.run_id, "rollback", version=prepared.to_version)

    def job(self, host: str, to_version: str | None) -> RollbackJob:
        fleet = self.prepared.fleet
        playbook = fleet.playbooks[host]
        return RollbackJob(reference=self.prepared.references[host], health_for=fleet.health_for(host),
                           to_version=to_version, start_timeout=float(playbook.service.start_timeout),
                           stop_timeout=float(playbook.service.stop_timeout))

    def stage(self, ctx: HostContext) -> StagedRollback | HostOutcome:
        return stage_rollback(ctx, self.job(ctx.host, self.prepared.to_version))

    def activate(self, ctx: HostContext, staged: object) -> HostOutcome:
        assert isinstance(staged, (StagedRollback, HostOutcome))
        return activate_rollback(ctx, self.job(ctx.host, self.prepared.to_version), staged)

    def follow_up(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        return outcome

    def undo(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        after = rollback_host(ctx, self.job(ctx.host, None))
        if after.outcome == "deployed":
            return HostOutcome(ctx.host, "rolled_back", after.release, "returned because the canary batch failed",
                               ctx.timings)
        return after


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


def rollback_host(ctx: HostContext, job: RollbackJob) -> HostOutcome:
    """Switch one (already locked) host to an older kept release; moves no artifact bytes."""
    return activate_rollback(ctx, job, stage_rollback(ctx, job))


def stage_rollback(ctx: HostContext, job: RollbackJob) -> StagedRollback | HostOutcome:
    """Read-only: the node's state, the release to return to and its stored service definition."""
    ref = job.reference
    try:
        state = ctx.step("connect", lambda: read_state(ctx, ref), "reading node state")
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
    """Switch to the staged target, gated; a host failing its gate returns to the release it was on."""
    if isinstance(staged, HostOutcome):
        return staged
    ref = job.reference
    original = staged.state.current
    original_info = staged.state.release(original)
    target = release_like(ref, staged.target_id, staged.target_version)
    try:
        activate(ctx, target, staged.definition, job.health_for(staged.target_version), job, record=True)
    except StopHung as hung:
        return left_running(ctx, ref, original, hung)
    except Exception as err:  # noqa: BLE001
        reason = describe_error(err)
        if original is None:
            return HostOutcome(ctx.host, "failed", None, reason, ctx.timings)
        return return_to(ctx, ref, original, original_info.version if original_info else "", job.health_for, job,
                         reason, what="returning")
    return HostOutcome(ctx.host, "deployed", staged.target_id, None, ctx.timings)
