"""One host's step sequence: deploy (state → transfer → install → service → stop → switch → start → health →
record → retention), the same activation used to roll a host back, and `fleetctl rollback`'s per-host switch.

Failure rule: a failure before the service definition is touched changes nothing the service runs, so the host is
`failed` and left as it was. From the service step on, any failure rolls the host back at once to the release it
ran before (restore that release's service definition → stop → switch → start → health). A host that had no
previous release is stopped and reported `failed`. A stop that times out is the exception: Windows kills nothing,
so the old process still runs; the junction is not switched under it, the definition of the release it runs is put
back and the host is `failed` without another stop (`StopHung`). Every step is timed into `HostOutcome.timings`.

Each host's work is split so the engine can overlap hosts: `stage_deploy` (state, transfer, install, extras:
nothing the service runs changes, so it may run while the previous batch is in its health gates),
`activate_deploy` (service → ... → record) and `retain` (retention, which may finish while the next batch runs).
`deploy_host` runs all three in order. Rollback has `stage_rollback` (read-only) and `activate_rollback`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from fleetctl.artifacts.url_artifact import ArtifactUrl
from fleetctl.config.redaction import redact
from fleetctl.errors import FleetError
from fleetctl.node.client import NodeClient
from fleetctl.node.results import NodeState, ServiceInfo
from fleetctl.node.transfer import TransferMode, ensure_artifact
from fleetctl.protocol.errors import NodeOperationError, TransportError
from fleetctl.rollout.events import (
    EventBus,
    HostOutcome,
    HostProgress,
    HostStepFinished,
    HostStepStarted,
    Step,
)
from fleetctl.rollout.health import (
    HealthCheck,
    HealthResult,
    ProbeResult,
    probe_from_controller,
    probe_from_node,
    run_health_gate,
)
from fleetctl.rollout.release import SERVICE_DEFINITION_FILE, Release, ServiceDefinition, is_current

T = TypeVar("T")
HealthFor = Callable[[str], "HealthCheck | None"]  # version -> the health check that version must pass


class Interruption:
    """Ctrl-C state shared by the engine and in-flight hosts: first press stops new hosts, second aborts gates."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.abort = threading.Event()

    def press(self) -> None:
        if self.requested.is_set():
            self.abort.set()
        self.requested.set()


@dataclass
class HostContext:
    """What a host's steps need besides the node: where to report, and whether to give up early."""

    host: str
    client: NodeClient
    bus: EventBus
    interruption: Interruption
    timings: dict[str, float] = field(default_factory=dict)
    staged: object | None = None  # what the engine's stage function returned for this host (see RolloutEngine)
    gating: threading.Event = field(default_factory=threading.Event)  # set when the host reaches its health gate
    last_state: NodeState | None = None  # the newest node state read since the switch (spares the record read)
    transfer_method: str | None = None  # "pull", "push", "url" or "skipped" once the transfer step ran

    def step(self, name: Step, action: Callable[[], T], detail: str = "") -> T:
        """Run one step: announce it, time it (accumulating, since rollback repeats steps)."""
        self.bus.emit(HostStepStarted(self.host, name, detail))
        began, started = time.time(), time.monotonic()
        failed = True
        try:
            result = action()
            failed = False
            return result
        finally:
            seconds = time.monotonic() - started
            self.timings[name] = self.timings.get(name, 0.0) + seconds
            self.bus.emit(HostStepFinished(self.host, name, began, seconds, failed, detail))

    def progress(self, step: Step) -> Callable[[int, int], None]:
        return lambda done, total: self.bus.emit(HostProgress(self.host, step, done, total))


@dataclass(frozen=True)
class DeployJob:
    """Everything needed to deploy one host."""

    release: Release
    health_for: HealthFor
    artifact_path: Path | ArtifactUrl  # an ArtifactUrl with transfer: url (the nodes download it)
    transfer: TransferMode = "auto"
    pull_server: object | None = None  # fleetctl.artifacts.pull_server.PullServer when transfer may pull
    keep_releases: int = 5
    start_timeout: float = 30.0
    stop_timeout: float = 30.0
    ensure_extras: Callable[[NodeClient], None] | None = None  # firewall rules, scheduled tasks (idempotent)
    wrapper_path: Path | None = None  # nssm.exe (release.service.wrapper_sha256), moved like an artifact


class StopHung(Exception):
    """The service did not stop within the stop timeout. Windows then gives up waiting and kills nothing, so its
    process still runs the current release: the junction must not be switched under it, and stopping again would
    only wait the whole timeout once more. `reason` is the redacted node error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StepFailed(Exception):
    """A step failed; `reason` is the one-line, redacted explanation."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"{step}: {reason}")


def describe_error(err: BaseException) -> str:
    """A node or transport error as one redacted line, without the host name (the outcome already has it)."""
    if isinstance(err, NodeOperationError):
        return redact(f"{err.operation}: {err.code}: {err.message}" if err.operation else f"{err.code}: {err.message}")
    if isinstance(err, TransportError):
        return redact(err.reason)
    if isinstance(err, StepFailed):
        return err.reason
    return redact(f"{type(err).__name__}: {err}" if not isinstance(err, FleetError) else str(err))


def read_state(ctx: HostContext, release: Release) -> NodeState:
    return ctx.client.get_fleet_state(app=release.app, root=release.root, service_name=release.service.name)


# --- deploy -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedDeploy:
    """A host ready to activate: the release is installed next to the running one, the service untouched."""

    state: NodeState
    previous: str | None
    previous_version: str | None


def deploy_host(ctx: HostContext, job: DeployJob) -> HostOutcome:
    """Deploy `job.release` on one (already locked) host and return its outcome; never raises for host errors."""
    return retain(ctx, job, activate_deploy(ctx, job, stage_deploy(ctx, job)))


def stage_deploy(ctx: HostContext, job: DeployJob) -> StagedDeploy | HostOutcome:
    """Read the state, transfer and install the release, ensure the extras: everything before the service is
    touched. Returns the final outcome instead when the host is already current (skipped) or a step failed (the
    host is left running what it ran). Never raises for host errors."""
    release = job.release
    try:
        state = ctx.step("connect", lambda: read_state(ctx, release), "reading node state")
    except Exception as err:  # noqa: BLE001 - any failure here is this host's, reported not raised
        return HostOutcome(ctx.host, "failed", None, f"reading node state: {describe_error(err)}", ctx.timings)
    if is_current(release.id, state):
        return HostOutcome(ctx.host, "skipped", release.id, None, ctx.timings)
    # Roll back to what ran before; a host already on this release (but not running it) goes back further.
    previous = state.previous if state.current == release.id else state.current
    previous_info = state.release(previous)
    previous_version = previous_info.version if previous_info else None

    # Nothing the service runs changes before the service step: a failure here leaves the host as it was.
    method = "skipped"
    try:
        if state.release(release.id) is None:
            result = ctx.step("transfer", lambda: ensure_artifact(
                ctx.client, job.artifact_path, release.artifact_sha256, job.transfer,
                job.pull_server, ctx.progress("transfer"), on_fallback=_announce_fallback(ctx)))  # type: ignore[arg-type]
            method = result.method
        wrapper, wrapper_sha = job.wrapper_path, release.service.wrapper_sha256
        if wrapper is not None and wrapper_sha:
            # nssm.exe goes through the node's artifact cache too, so it crosses the network once per node.
            ctx.step("transfer", lambda: ensure_artifact(ctx.client, wrapper, wrapper_sha, job.transfer,
                                                         job.pull_server, None,  # type: ignore[arg-type]
                                                         on_fallback=_announce_fallback(ctx)), "nssm.exe")
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
    return StagedDeploy(state, previous, previous_version)


def activate_deploy(ctx: HostContext, job: DeployJob, staged: StagedDeploy | HostOutcome) -> HostOutcome:
    """Make the staged release the running one, gated; on failure roll the host back at once."""
    if isinstance(staged, HostOutcome):
        return staged
    release = job.release
    try:
        activate(ctx, release, release.service, job.health_for(release.version), job, record=True)
    except StopHung as hung:
        return _with_transfer(ctx, _left_running(ctx, release, staged.state.current, hung))
    except Exception as err:  # noqa: BLE001
        reason = describe_error(err)
        return _with_transfer(ctx, _roll_back_after_failure(ctx, job, release, staged.previous,
                                                            staged.previous_version, reason))
    return HostOutcome(ctx.host, "deployed", release.id, None, ctx.timings, ctx.transfer_method)


def _left_running(ctx: HostContext, reference: Release, running: str | None, hung: StopHung) -> HostOutcome:
    """A stop that hung: put back the definition of the release the process still runs (the new one was set before
    the stop, and would apply at its next start), switch nothing, start nothing; the host is `failed` and says
    where it stands."""
    note = f"the service is still stopping and runs release {running or '(none)'}; the junction was not switched"
    if running is not None:
        try:
            definition = ctx.step("rollback", lambda: stored_definition(ctx.client, reference, running),
                                  f"definition of {running}")
            if definition is not None:
                ctx.step("rollback", lambda: ctx.client.set_fleet_service(**definition.client_kwargs()),
                         f"service definition of {running}")
        except Exception as err:  # noqa: BLE001
            note += f"; restoring its service definition failed: {describe_error(err)}"
    return HostOutcome(ctx.host, "failed", running, f"{hung.reason} ({note}; let it finish or end its process on "
                                                    "the host, then deploy again)", ctx.timings)


def retain(ctx: HostContext, job: DeployJob, outcome: HostOutcome) -> HostOutcome:
    """Retention after a successful deploy; an error is reported on the host, it does not undo the deploy."""
    if outcome.outcome != "deployed":
        return outcome
    warning = _retention(ctx, job.release, job.keep_releases)
    if warning is None:
        return outcome
    return HostOutcome(outcome.host, outcome.outcome, outcome.release, warning, ctx.timings, outcome.transfer)


def _announce_fallback(ctx: HostContext) -> Callable[[str], None]:
    # Shown in the live view and kept in the journal as the transfer step's detail.
    return lambda reason: ctx.bus.emit(HostStepStarted(ctx.host, "transfer", f"pull failed ({reason}): pushing"))


def _with_transfer(ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
    return HostOutcome(outcome.host, outcome.outcome, outcome.release, outcome.error, outcome.timings,
                       ctx.transfer_method)


def _roll_back_after_failure(ctx: HostContext, job: DeployJob, release: Release, previous: str | None,
                             previous_version: str | None, reason: str) -> HostOutcome:
    if previous is None:
        # No release to go back to: do not leave a broken service running.
        try:
            ctx.step("rollback", lambda: ctx.client.stop_fleet_service(
                name=release.service.name, timeout_seconds=_seconds(job.stop_timeout)), "no previous release: stop")
            note = "no previous release to roll back to; service stopped"
        except Exception as err:  # noqa: BLE001
            note = f"no previous release to roll back to; stopping the service failed: {describe_error(err)}"
        return HostOutcome(ctx.host, "failed", None, f"{reason} ({note})", ctx.timings)
    try:
        definition = ctx.step("rollback", lambda: stored_definition(ctx.client, release, previous),
                              f"back to {previous}")
        target = _release_like(release, previous, previous_version or "")
        activate(ctx, target, definition, job.health_for(previous_version or ""), job, record=False,
                 step_prefix=True)
    except Exception as err:  # noqa: BLE001
        return HostOutcome(ctx.host, "failed", None, f"{reason}; rollback to {previous} failed: "
                                                     f"{describe_error(err)}", ctx.timings)
    return HostOutcome(ctx.host, "rolled_back", previous, reason, ctx.timings)


def activate(ctx: HostContext, target: Release, definition: ServiceDefinition | None, health: HealthCheck | None,
             job: DeployJob | RollbackJob, *, record: bool, step_prefix: bool = False) -> None:
    """Make `target` the running release: service definition → stop → switch → start → health [→ record].

    Raises StepFailed (or a node/transport error) at the first step that fails. During a rollback
    (`step_prefix`) every step is timed under "rollback" so the deploy's own step timings stay clean.
    """
    client = ctx.client

    def step(name: Step, action: Callable[[], T], detail: str = "") -> T:
        return ctx.step("rollback" if step_prefix else name, action, f"{name} {detail}".strip()
                        if step_prefix else detail)

    if definition is not None:
        step("service", lambda: client.set_fleet_service(**definition.client_kwargs()))
    try:
        step("stop", lambda: client.stop_fleet_service(name=target.service.name,
                                                       timeout_seconds=_seconds(job.stop_timeout)))
    except NodeOperationError as err:
        if err.code == "SERVICE_STOP_TIMEOUT":
            raise StopHung(describe_error(err)) from None
        raise
    step("switch", lambda: client.switch_fleet_release(app=target.app, root=target.root, release=target.id),
         target.id)
    ctx.last_state = None  # only a state read after this switch can vouch for it
    step("start", lambda: client.start_fleet_service(name=target.service.name,
                                                     timeout_seconds=_seconds(job.start_timeout)))
    if health is not None:
        ctx.gating.set()
        # Raised inside the step, so the timeline marks the health step itself as the one that failed.
        step("health", lambda: _passed(gate(ctx, target, health)))
    if record:
        # The gate's last state read happened after the switch, under our lock: it is as good as a new read.
        seen = ctx.last_state
        state = seen if seen is not None and seen.current == target.id else step(
            "record", lambda: read_state(ctx, target))
        if state.current != target.id:
            raise StepFailed("record", f"the node reports current release {state.current}, expected {target.id}")


def _passed(result: HealthResult) -> HealthResult:
    if not result.ok:
        raise StepFailed("health", result.reason or "health check failed")
    return result


def gate(ctx: HostContext, target: Release, check: HealthCheck) -> HealthResult:
    """The health gate of one host: probes from the controller or the node; service state from the node."""
    client = ctx.client

    def probe() -> ProbeResult:
        if check.from_node:
            return probe_from_node(client, check.url, check.timeout)
        return probe_from_controller(check.url, check.timeout)

    def service() -> ServiceInfo | None:
        state = read_state(ctx, target)
        ctx.last_state = state
        return state.service

    return run_health_gate(check, probe, service, aborted=ctx.interruption.abort.is_set)


def stored_definition(client: NodeClient, release: Release, release_id: str) -> ServiceDefinition | None:
    """The service definition kept in a release's directory, or None when the release has none (installed by an
    older fleetctl): then the current definition stays, which is the best that can be done."""
    path = f"releases\\{release_id}\\{SERVICE_DEFINITION_FILE}"
    try:
        tail = client.get_fleet_log(app=release.app, root=release.root, tail=10000, path=path)
    except NodeOperationError as err:
        if err.code == "NOT_FOUND":
            return None
        raise
    try:
        data = json.loads("\n".join(tail.lines))
        return ServiceDefinition.from_public_json(data, password=release.service.password)
    except (ValueError, KeyError, TypeError):
        return None


def _retention(ctx: HostContext, release: Release, keep: int) -> str | None:
    """Remove old releases; a failure here does not undo a healthy deploy, it is only reported."""
    try:
        ctx.step("retention", lambda: ctx.client.remove_fleet_release(app=release.app, root=release.root, keep=keep))
    except Exception as err:  # noqa: BLE001
        return f"retention: {describe_error(err)}"
    return None


def _release_like(release: Release, release_id: str, version: str) -> Release:
    """A reference to another release of the same app (only id, version, app, root and service name matter)."""
    return Release(id=release_id, version=version, app=release.app, root=release.root,
                   artifact_sha256="", exe_name=release.exe_name, files=(), service=release.service)


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


# --- rollback command ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackJob:
    """Switch one host to an older release it keeps (`to_version` None: its previous release)."""

    reference: Release  # this host's app/root/service as currently configured (its id is not used)
    health_for: HealthFor
    to_version: str | None = None
    start_timeout: float = 30.0
    stop_timeout: float = 30.0


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


@dataclass(frozen=True)
class StagedRollback:
    """What a rollback host will switch to, read before its batch (nothing changed yet)."""

    state: NodeState
    target_id: str
    target_version: str
    definition: ServiceDefinition | None


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
    original_version = original_info.version if original_info else ""
    target = _release_like(ref, staged.target_id, staged.target_version)
    try:
        activate(ctx, target, staged.definition, job.health_for(staged.target_version), job, record=True)
    except StopHung as hung:
        return _left_running(ctx, ref, original, hung)
    except Exception as err:  # noqa: BLE001
        reason = describe_error(err)
        if original is None:
            return HostOutcome(ctx.host, "failed", None, reason, ctx.timings)
        try:
            back = _release_like(ref, original, original_version)
            activate(ctx, back, stored_definition(ctx.client, ref, original), job.health_for(original_version),
                     job, record=False, step_prefix=True)
        except Exception as again:  # noqa: BLE001
            return HostOutcome(ctx.host, "failed", None, f"{reason}; returning to {original} failed: "
                                                         f"{describe_error(again)}", ctx.timings)
        return HostOutcome(ctx.host, "rolled_back", original, reason, ctx.timings)
    return HostOutcome(ctx.host, "deployed", staged.target_id, None, ctx.timings)
