"""The core of `fleetctl deploy` and `fleetctl rollback`: prepare (rollout/preparation.py: everything checked, a
ConfigError before any change), then hand one procedure to the engine.

    prepared = prepare_deploy(options)            # targets, artifact, each host's release
    dry_run(prepared)                              # each host's plan, read-only (the deploy carries out the same)
    run_deploy(prepared, bus)                      # DeployProcedure (rollout/deploy.py) through the engine
    run_rollback(prepare_rollback(options), bus)   # RollbackProcedure (rollout/rollback.py)

Subscribers (the live view, the `--json` report, the journal) come in through the `EventBus`. A new strategy is a
new procedure passed to `run_procedure`; the engine does not change.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetctl.node.fleet import run_parallel
from fleetctl.rollout.deploy import DeployProcedure
from fleetctl.rollout.engine import LockSpec, RolloutEngine, RunResult
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.host_plan import plan_host
from fleetctl.rollout.host_steps import Interruption, describe_error, sigint_handler
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
from fleetctl.rollout.rollback import RollbackProcedure, plan_rollback
from fleetctl.rollout.rollback_target import RollbackPlan


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
    carry out (`plan_host`), in words. Nothing is changed."""
    factory = connect or prepared.fleet.client_factory()

    def preview(host: str) -> HostPreview:
        release = prepared.releases[host]
        client = factory(host)
        try:
            state = client.get_fleet_state(app=release.app, root=release.root, service_name=release.service.name)
            cached = state.release(release.id) is not None or \
                client.test_fleet_artifact(sha256=release.artifact_sha256).present
            plan = plan_host(release, state, artifact_cached=cached)
            changes = tuple(plan.changes(release.artifact_sha256, release.service.name))
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
    with DeployProcedure.open(prepared) as procedure:
        return run_procedure(prepared.fleet, procedure, bus, connect=connect, interruption=interruption,
                             force=force, judge=judge)


def run_rollback(prepared: PreparedRollback, bus: EventBus, *, plan: RollbackPlan | None = None,
                 connect: Connect | None = None, interruption: Interruption | None = None, force: bool = False,
                 judge: HolderJudge | None = None) -> RunResult:
    """Carry out a rollback plan (`plan_rollback`, computed here when not given) batch by batch, gated: each
    host switches to its planned target, stays, or fails with the plan's reason. Success is `rolled_back`."""
    chosen = plan if plan is not None else plan_rollback(prepared, connect=connect)
    return run_procedure(prepared.fleet, RollbackProcedure(prepared, chosen), bus, connect=connect,
                         interruption=interruption, force=force, judge=judge)


def run_procedure(fleet: RolloutTargets, procedure: HostProcedure, bus: EventBus, *, connect: Connect | None = None,
                  interruption: Interruption | None = None, force: bool = False,
                  judge: HolderJudge | None = None) -> RunResult:
    """Any procedure over the fleet's plan, under its locks, with Ctrl-C handled (first: no new hosts; second:
    abort health gates). `judge` decides whether a lock's holder is provably gone (what --force may take)."""
    interruption = interruption or Interruption()
    engine = RolloutEngine(
        plan=fleet.plan, procedure=procedure, connect=connect or fleet.client_factory(), bus=bus,
        lock=LockSpec(app=fleet.targets.settings.name, owner=fleet.owner, ttl_seconds=fleet.lock_ttl, force=force,
                      judge=judge or HolderJudge()),
        forks=fleet.forks, interruption=interruption, timeouts=fleet.timeouts,
        unlock_hint=f"fleetctl unlock {fleet.targets.source.path} --limit HOST")
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
