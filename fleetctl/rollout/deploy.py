"""The deploy procedure: what `fleetctl deploy` does on one host, top to bottom.

    stage:     read the node's state → plan the host (rollout/host_plan.py) → transfer → install → extras
    activate:  service definition → stop → switch → start → health → record; on failure, back to what ran before
    follow_up: retention (old releases removed), without holding up the batch
    undo:      a canary that passed goes back to its previous release when another canary failed

Nothing the service runs changes in `stage`, so a failure there leaves the host as it was, and the engine may
stage the next batch while the current one is in its health gates. The host plan is the same one `--dry-run`
prints (`rollout/runner.py`), so what the dry run says is what this does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from fleetctl.artifacts.pull_server import PullServer, pull_server_for
from fleetctl.artifacts.url_artifact import ArtifactUrl
from fleetctl.config.playbook import Playbook
from fleetctl.errors import ConfigError
from fleetctl.node.client import NodeClient
from fleetctl.node.results import NodeState, ServiceInfo
from fleetctl.node.transfer import ArtifactSource, TransferMode, ensure_artifact
from fleetctl.rollout.events import HostOutcome, HostStepStarted, RunInfo
from fleetctl.rollout.host_plan import HostPlan, plan_host
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
    release_failed,
    release_like,
    seconds,
    stored_definition,
    unknown_outcome,
)
from fleetctl.rollout.preparation import Connect, PreparedDeploy
from fleetctl.rollout.release import Release
from fleetctl.rollout.rollback import RollbackJob, rollback_host
from fleetctl.rollout.traffic_steps import HostTraffic, with_traffic


@dataclass(frozen=True)
class DeployJob:
    """Everything needed to deploy one host."""

    release: Release
    health_for: HealthFor
    artifact_path: Path | ArtifactUrl  # an ArtifactUrl with transfer: url (the nodes download it)
    transfer: TransferMode = "auto"
    pull_server: ArtifactSource | None = None  # when transfer may pull
    keep_releases: int = 5
    start_timeout: float = 30.0
    stop_timeout: float = 30.0
    ensure_extras: Callable[[NodeClient], None] | None = None  # firewall rules, scheduled tasks (idempotent)
    wrapper_path: Path | None = None  # nssm.exe (release.service.wrapper_sha256), moved like an artifact
    traffic: HostTraffic | None = None  # the load balancer: drain before the stop, ready once healthy


@dataclass(frozen=True)
class StagedDeploy:
    """A host ready to activate: the release is installed next to the running one, the service untouched."""

    state: NodeState
    plan: HostPlan


class DeployProcedure:
    """`HostProcedure` for a deploy (rollout/procedure.py). Open it with `DeployProcedure.open(prepared)`, which
    runs the artifact pull server for as long as the procedure is in use."""

    def __init__(self, prepared: PreparedDeploy, pull_server: ArtifactSource | None = None,
                 notes: tuple[str, ...] = ()) -> None:
        self.prepared = prepared
        self.pull_server = pull_server
        self.notes = notes
        self.info = deploy_run_info(prepared)

    @classmethod
    @contextmanager
    def open(cls, prepared: PreparedDeploy) -> Iterator[DeployProcedure]:
        server, notes = start_pull_server(prepared)
        try:
            yield cls(prepared, server, notes)
        finally:
            if server is not None:
                server.stop()

    def reading_ahead(self, connect: Connect) -> Connect:
        """`connect`, its clients set to read the host's state and whether the artifact is cached along with
        taking the lock: a stage that follows soon after (the first batch; every host of a no-op redeploy) then
        costs no round trip of its own to plan (node/read_ahead.py)."""
        def make(host: str) -> NodeClient:
            client = connect(host)
            release = self.prepared.releases[host]
            client.read_ahead_state(app=release.app, root=release.root, service_name=release.service.name)
            client.read_ahead_artifact(sha256=release.artifact_sha256)
            return client

        return make

    def job(self, host: str) -> DeployJob:
        prepared = self.prepared
        playbook = prepared.fleet.playbooks[host]
        wrapper = prepared.wrappers.get(host)
        return DeployJob(release=prepared.releases[host], health_for=prepared.fleet.health_for(host),
                         artifact_path=prepared.artifact_source, transfer=cast(TransferMode, prepared.transfer),
                         pull_server=self.pull_server, keep_releases=playbook.install.keep_releases,
                         start_timeout=float(playbook.service.start_timeout),
                         stop_timeout=float(playbook.service.stop_timeout), ensure_extras=host_extras(playbook),
                         wrapper_path=wrapper.path if wrapper else None, traffic=prepared.traffic)

    # -- the four parts ----------------------------------------------------------------------------------------

    def stage(self, ctx: HostContext) -> StagedDeploy | HostOutcome:
        """Read the state and plan the host; transfer and install the release, ensure the extras. The host's final
        outcome instead when it is already current (skipped) or a step failed (left running what it ran)."""
        job = self.job(ctx.host)
        release = job.release
        # Whether the artifact is cached rides on the state read (unless both were read with the lock).
        ctx.client.read_ahead_artifact(sha256=release.artifact_sha256)
        try:
            state = ctx.step("connect", lambda: read_state(ctx, release), "reading node state")
        except Exception as err:  # noqa: BLE001 - any failure here is this host's, reported not raised
            return HostOutcome(ctx.host, "failed", None, f"reading node state: {describe_error(err)}", ctx.timings)
        plan = plan_host(release, state)
        if plan.skip:
            return HostOutcome(ctx.host, "skipped", release.id, None, ctx.timings)
        if state.live is not None:
            # Its public port belongs to the node's port proxy: a single service could not listen there.
            return HostOutcome(ctx.host, "failed", state.current, f"this host runs blue-green (live colour "
                                                                  f"{state.live}): deploy it with --strategy "
                                                                  "blue-green", ctx.timings)
        try:
            method = transfer_release(ctx, job) if plan.install else "skipped"
            transfer_wrapper(ctx, job)
            if plan.install:
                ctx.step("install", lambda: ctx.client.install_fleet_release(
                    app=release.app, root=release.root, release=release.id, version=release.version,
                    sha256=release.artifact_sha256, exe_name=release.exe_name, files=release.files_map))
            extras = job.ensure_extras
            if extras is not None:
                ctx.step("service", lambda: extras(ctx.client), "firewall rules and scheduled tasks")
            if ctx.interruption.abort.is_set():
                raise StepFailed("install", "interrupted before any change to the service")
        except Exception as err:  # noqa: BLE001
            return HostOutcome(ctx.host, "failed", state.current, describe_error(err), ctx.timings)
        ctx.transfer_method = method
        return StagedDeploy(state, plan)

    def activate(self, ctx: HostContext, staged: object) -> HostOutcome:
        """Make the staged release the running one, gated; on failure return the host at once to its previous
        release (none: stop the service)."""
        if isinstance(staged, HostOutcome):
            return staged
        assert isinstance(staged, StagedDeploy)
        job = self.job(ctx.host)
        plan = staged.plan
        outcome = with_traffic(ctx, job.traffic, plan.current, lambda: self._switch(ctx, job, plan))
        return replace(outcome, transfer=ctx.transfer_method)

    def _switch(self, ctx: HostContext, job: DeployJob, plan: HostPlan) -> HostOutcome:
        release = job.release
        ctx.returns_to = (plan.rollback_to, plan.rollback_version)
        ctx.running_before = plan.current
        try:
            activate(ctx, release, release.service, job.health_for(release.version), job, record=True)
        except StopHung as hung:
            outcome = left_running(ctx, release, plan.current, hung)
        except Exception as err:  # noqa: BLE001
            outcome = roll_back_after_failure(ctx, job, release, plan.rollback_to, plan.rollback_version, err)
        else:
            outcome = HostOutcome(ctx.host, "deployed", release.id, None, ctx.timings)
        return outcome

    def recheck(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        """At the end of its batch (and of the canary bake): still running what its gate saw?"""
        return recheck_deployed(ctx, self.job(ctx.host), outcome)

    def follow_up(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        """Retention; an error is reported on the host, it does not undo a healthy deploy. A host whose gate saw
        its service is rechecked at the end of its batch: retention then goes with that recheck's state read, in
        one round trip (`recheck_deployed`)."""
        job = self.job(ctx.host)
        release = job.release
        if ctx.gate_service is not None:
            ctx.retention_due = job.keep_releases
            return outcome
        try:
            ctx.step("retention", lambda: ctx.client.remove_fleet_release(app=release.app, root=release.root,
                                                                          keep=job.keep_releases))
        except Exception as err:  # noqa: BLE001
            return HostOutcome(outcome.host, outcome.outcome, outcome.release, f"retention: {describe_error(err)}",
                               ctx.timings, outcome.transfer)
        return outcome

    def undo(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        """Back to the host's previous release, as `fleetctl rollback` would (the canary batch failed)."""
        job = self.job(ctx.host)
        after = rollback_host(ctx, RollbackJob(reference=job.release, health_for=job.health_for,
                                               start_timeout=job.start_timeout, stop_timeout=job.stop_timeout,
                                               traffic=job.traffic))
        if after.outcome == "rolled_back":
            return HostOutcome(ctx.host, "rolled_back", after.release, "rolled back because the canary batch "
                               "failed", ctx.timings)
        return after


def deploy_run_info(prepared: PreparedDeploy) -> RunInfo:
    """What a deploy run is, for the history: the same for every strategy (a scheduled run stays marked as one,
    with its inputs, whether it is rolling or blue-green)."""
    any_release = next(iter(prepared.releases.values()), None)
    options = prepared.options
    inputs: dict[str, object] = options.inputs() if options else {}
    inputs.update({"artifact_sha256": prepared.manifest.sha256, "commit": prepared.manifest.git_commit,
                   "artifact_source": prepared.manifest.source})
    return prepared.fleet.run_info(prepared.run_id, "deploy", version=prepared.version,
                                   release=any_release.id if any_release else None,
                                   schedule=options.schedule if options else None, inputs=inputs)


# --- the steps -----------------------------------------------------------------------------------------------


def transfer_release(ctx: HostContext, job: DeployJob) -> str:
    """The artifact into the node's cache (pull, push, or nothing when cached); how it got there."""
    release = job.release
    result = ctx.step("transfer", lambda: ensure_artifact(
        ctx.client, job.artifact_path, release.artifact_sha256, job.transfer, job.pull_server,
        ctx.progress("transfer"), on_fallback=announce_fallback(ctx)))
    return result.method


def transfer_wrapper(ctx: HostContext, job: DeployJob) -> None:
    """nssm.exe goes through the node's artifact cache too, so it crosses the network once per node."""
    wrapper, wrapper_sha = job.wrapper_path, job.release.service.wrapper_sha256
    if wrapper is not None and wrapper_sha:
        ctx.step("transfer", lambda: ensure_artifact(ctx.client, wrapper, wrapper_sha, job.transfer, job.pull_server,
                                                     None, on_fallback=announce_fallback(ctx)), "nssm.exe")


def announce_fallback(ctx: HostContext) -> Callable[[str], None]:
    # Shown in the live view and kept in the journal as the transfer step's detail.
    return lambda reason: ctx.bus.emit(HostStepStarted(ctx.host, "transfer", f"pull failed ({reason}): pushing"))


def host_extras(playbook: Playbook) -> Callable[[NodeClient], None] | None:
    """Firewall rules and scheduled tasks of a host: idempotent ensures run after the install step."""
    if not playbook.firewall and not playbook.scheduled_tasks:
        return None

    def ensure(client: NodeClient) -> None:
        for rule in playbook.firewall:
            client.set_fleet_firewall_rule(name=rule.name, port=rule.port, protocol=rule.protocol,
                                           direction=rule.direction, action=rule.action,
                                           remote_address=rule.remote_address or None)
        for task in playbook.scheduled_tasks:
            client.set_fleet_scheduled_task(name=task.name, execute=task.execute, arguments=task.arguments,
                                            at=task.at, at_startup=task.at_startup, every_minutes=task.every_minutes,
                                            user=task.user, restart_count=task.restart_count,
                                            restart_interval_minutes=int(float(task.restart_interval)) // 60,
                                            execution_time_limit_minutes=task.execution_time_limit_minutes)
    return ensure


def start_pull_server(prepared: PreparedDeploy) -> tuple[PullServer | None, tuple[str, ...]]:
    """The controller's pull server for `pull` and `auto` (None for `push`), bound to the local address that faces
    the nodes, and any note for the live view. `auto` without one (it cannot start) pushes; `pull` without one is
    an error, since the playbook asked for it. It serves HTTPS with a certificate from its own per-deploy CA, whose
    PEM the nodes pin (CaCertificate), so the bearer token never crosses the network in clear."""
    connections = prepared.fleet.connections
    if prepared.transfer in ("push", "url") or not connections:  # url: the nodes fetch from the artifact's home
        return None, ()
    try:
        server = pull_server_for([c.address for c in connections.values()]).start()
    except (OSError, ValueError) as err:
        if prepared.transfer == "pull":
            raise ConfigError(f"transfer: pull needs the controller's pull server, which could not start: {err}",
                              file=prepared.fleet.targets.source.path, key="transfer") from None
        return None, (f"the artifact pull server could not start ({err}); transfer: auto pushes over WinRM",)
    return server, ()


# --- after a failure ---------------------------------------------------------------------------------------


def roll_back_after_failure(ctx: HostContext, job: DeployJob, release: Release, previous: str | None,
                            previous_version: str | None, err: BaseException) -> HostOutcome:
    """Return a host whose new release failed to the release it ran before; mark the release failed on the node
    when it was the release's fault. A host that stopped answering after its service was touched is `unknown`."""
    reason = describe_error(err)
    failed = release.id if release_failed(err) else None
    touched = ctx.touched
    if failed is not None:
        try:
            ctx.step("rollback", lambda: ctx.client.set_fleet_release_verdict(
                app=release.app, release=release.id, verdict="failed", reason=reason[:500]),
                f"mark {release.id} failed")
        except Exception:  # noqa: BLE001, S110 - the journal keeps the mark too (HostOutcome.failed_release)
            pass
    if previous is None:
        # No release to go back to: do not leave a broken service running.
        try:
            ctx.step("rollback", lambda: ctx.client.stop_fleet_service(
                name=release.service.name, timeout_seconds=seconds(job.stop_timeout)), "no previous release: stop",
                extra=job.stop_timeout)
            note = "no previous release to roll back to; service stopped"
        except Exception as again:  # noqa: BLE001
            if is_lost(again) and touched is not None:
                return unknown_outcome(ctx, touched, reason, again, failed, None)
            note = f"no previous release to roll back to; stopping the service failed: {describe_error(again)}"
        return HostOutcome(ctx.host, "failed", None, f"{reason} ({note})", ctx.timings, failed_release=failed)
    try:
        definition = ctx.step("rollback", lambda: stored_definition(ctx.client, release, previous),
                              f"back to {previous}")
        target = release_like(release, previous, previous_version or "")
        back_note = activate(ctx, target, definition, job.health_for(previous_version or ""), job, record=False,
                             step_prefix=True)
    except Exception as again:  # noqa: BLE001
        if (is_lost(again) or is_lost(err)) and touched is not None and not isinstance(again, StopHung):
            return unknown_outcome(ctx, furthest(touched, ctx.touched) or touched, reason, again, failed,
                            ctx.running_before if ctx.running_before != release.id else None)
        return HostOutcome(ctx.host, "failed", None, f"{reason}; rollback to {previous} failed: "
                                                     f"{describe_error(again)}", ctx.timings, failed_release=failed)
    return HostOutcome(ctx.host, "rolled_back", previous, f"{reason} ({back_note})" if back_note else reason,
                       ctx.timings, failed_release=failed)


def recheck_deployed(ctx: HostContext, job: DeployJob, outcome: HostOutcome) -> HostOutcome:
    """At the end of its batch (and of the canary bake): a host that passed its gate must still run the release
    with the process the gate saw. One that exited or restarted since fails like a gate failure (rolled back)."""
    seen = ctx.gate_service
    if outcome.outcome != "deployed" or seen is None:
        return outcome
    retention_error = None
    keep, ctx.retention_due = ctx.retention_due, None
    if keep is not None:
        # Retention first, the state read riding on its pipeline (read-ahead): one round trip for both.
        release = job.release
        ctx.client.read_ahead_state(app=release.app, root=release.root, service_name=release.service.name)
        try:
            ctx.step("retention", lambda: ctx.client.remove_fleet_release(app=release.app, root=release.root,
                                                                          keep=keep))
        except Exception as err:  # noqa: BLE001 - reported on the host; it does not undo a healthy deploy
            retention_error = f"retention: {describe_error(err)}"
    state = ctx.step("health", lambda: read_state(ctx, job.release), "still running since its gate?")
    problem = watch_problem(job.release.id, seen, state)
    if problem is None:
        if retention_error is not None:
            return replace(outcome, error=retention_error)
        return outcome
    previous, version = ctx.returns_to
    ctx.touched = "start"
    return roll_back_after_failure(ctx, job, job.release, previous, version, StepFailed("watch", problem))


def watch_problem(release_id: str, seen: ServiceInfo, state: NodeState) -> str | None:
    """Why a host that passed its gate does not count as healthy now, or None. Pure."""
    now = state.service
    if state.current != release_id:
        return f"the node switched to {state.current} after the health gate"
    if now is None or now.state != "Running":
        return (f"crash after its health gate, before the batch ended: service {now.state if now else 'absent'} "
                f"(was pid {seen.pid})")
    if now.pid != seen.pid or now.restarts > seen.restarts:
        return (f"unstable after its health gate, before the batch ended: service restarted (pid {seen.pid} -> "
                f"{now.pid}, restarts {seen.restarts} -> {now.restarts})")
    return None
