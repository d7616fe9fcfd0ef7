"""What every host procedure is made of: the host's context (where to report, whether to give up), the one
activation sequence (service definition → stop → switch → start → health [→ record]) that deploy, rollback and a
host's own return to its previous release all use, the health gate, and errors as one redacted line.

Failure rule (docs/rollouts.md): a failure before the service definition is touched changes nothing the service
runs. From the service step on, a failing host is returned at once to the release it ran before
(`deploy.roll_back_after_failure`); one lost after its service was touched is `unknown` (`unknown_outcome`). A
stop that times out is the exception: Windows kills nothing, so the old process still runs; the junction is not
switched under it, the definition of the release it runs is put back and the host is `failed` without another
stop (`StopHung`, `left_running`). Every step is timed into `HostOutcome.timings`.

The procedures built from these: `rollout/deploy.py`, `rollout/rollback.py`, `rollout/remove.py`.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from fleetctl.config.redaction import redact
from fleetctl.errors import FleetError
from fleetctl.node.client import NodeClient
from fleetctl.node.probe import ProbeResult, probe_from_controller, probe_from_node
from fleetctl.node.results import NodeState, ServiceInfo
from fleetctl.protocol.errors import NodeOperationError, TransportError
from fleetctl.rollout.deadlines import PhaseTimeout, PhaseTimeouts, call_within
from fleetctl.rollout.events import (
    EventBus,
    HostOutcome,
    HostProgress,
    HostStepFinished,
    HostStepStarted,
    Step,
)
from fleetctl.rollout.health import GateReporter, HealthCheck, HealthResult, run_health_gate
from fleetctl.rollout.interruption import Interruption
from fleetctl.rollout.release import SERVICE_DEFINITION_FILE, Release, ServiceDefinition

T = TypeVar("T")
HealthFor = Callable[[str], "HealthCheck | None"]  # version -> the health check that version must pass


class ServiceTimeouts(Protocol):
    """How long a host's service may take to start and to stop (a deploy's or rollback's job)."""

    @property
    def start_timeout(self) -> float: ...

    @property
    def stop_timeout(self) -> float: ...


@dataclass
class HostContext:
    """What a host's steps need besides the node: where to report, and whether to give up early."""

    host: str
    client: NodeClient
    bus: EventBus
    interruption: Interruption
    timings: dict[str, float] = field(default_factory=dict)
    staged: object | None = None  # what the procedure's stage returned for this host (see rollout/procedure.py)
    gating: threading.Event = field(default_factory=threading.Event)  # set when the host reaches its health gate
    last_state: NodeState | None = None  # the newest node state read since the switch (spares the record read)
    transfer_method: str | None = None  # "pull", "push", "url" or "skipped" once the transfer step ran
    timeouts: PhaseTimeouts | None = None  # None: steps are not bounded (unit tests of single steps)
    lost: str | None = None  # why the host stopped answering (a phase outlived its budget); no more calls then
    touched: str | None = None  # the last step that changed the running service (service, stop, switch, start)
    started_pid: int | None = None  # the pid Start-FleetService reported: the gate's baseline
    gate_service: ServiceInfo | None = None  # the service as the passed gate last saw it (batch-end recheck)
    returns_to: tuple[str | None, str | None] = (None, None)  # (release, version) a failed deploy goes back to
    running_before: str | None = None  # the release the host's junction pointed at before this run touched it
    in_gate: bool = False  # in a health gate now (its deploy's or its rollback's): what Ctrl-C's notice counts
    retention_due: int | None = None  # releases to keep, when retention waits to ride on the batch-end recheck

    def step(self, name: Step, action: Callable[[], T], detail: str = "", extra: float = 0.0) -> T:
        """Run one step: announce it, time it (accumulating, since rollback repeats steps), bound it by its
        phase's timeout (+ `extra` seconds the operation may wait on the node by itself)."""
        if self.lost is not None:
            raise PhaseTimeout(f"not asked: lost earlier ({self.lost})")
        self.bus.emit(HostStepStarted(self.host, name, detail))
        began, started = time.time(), time.monotonic()
        failed = True
        try:
            if self.timeouts is None:
                result = action()
            else:
                try:
                    result = call_within(self.timeouts.for_step(name) + extra, action, f"{name} {detail}".strip())
                except PhaseTimeout as err:
                    self.lost = f"{name}: {err.reason}"
                    raise
            failed = False
            return result
        finally:
            seconds = time.monotonic() - started
            self.timings[name] = self.timings.get(name, 0.0) + seconds
            self.bus.emit(HostStepFinished(self.host, name, began, seconds, failed, detail))

    def bounded(self, what: str, action: Callable[[], T]) -> T:
        """One node call inside a step (the gate's probes and state reads), bounded by the `step` timeout: a
        host that goes silent in its gate costs one timeout, not the gate's whole allowance."""
        if self.lost is not None:
            raise PhaseTimeout(f"not asked: lost earlier ({self.lost})")
        if self.timeouts is None:
            return action()
        try:
            return call_within(self.timeouts.step, action, what)
        except PhaseTimeout as err:
            self.lost = f"{what}: {err.reason}"
            raise

    def progress(self, step: Step) -> Callable[[int, int], None]:
        return lambda done, total: self.bus.emit(HostProgress(self.host, step, done, total))


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


def left_running(ctx: HostContext, reference: Release, running: str | None, hung: StopHung) -> HostOutcome:
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


def release_failed(err: BaseException) -> bool:
    """Whether a failure is the release's own (its gate, its start), as opposed to the host or network's."""
    if isinstance(err, StepFailed):
        return err.step in ("health", "record", "watch")
    return isinstance(err, NodeOperationError) and err.code in ("SERVICE_START_FAILED", "SERVICE_START_TIMEOUT")


def is_lost(err: BaseException) -> bool:
    return isinstance(err, TransportError)


_TOUCH_ORDER = ("service", "stop", "switch", "start")


def furthest(first: str | None, then: str | None) -> str | None:
    """The furthest a host's service got, of the failed activation and the rollback attempt after it."""
    steps = [t for t in (first, then) if t in _TOUCH_ORDER]
    return max(steps, key=_TOUCH_ORDER.index) if steps else first or then


def unknown_outcome(ctx: HostContext, touched: str, reason: str, again: BaseException, failed: str | None,
             running: str | None) -> HostOutcome:
    """A host lost after its service was touched: say what is known and what is not. Lost before its service was
    stopped, it still runs `running` (only its definition may be the new one's): that is known, so `failed`."""
    if touched == "service" and running is not None:
        return HostOutcome(ctx.host, "failed", running, f"{reason}; lost before its service was stopped: it still "
                                                        f"runs {running} (its service definition may already be "
                                                        f"the new one's; deploy again once it answers)",
                           ctx.timings, failed_release=failed)
    after = {"service": "its service definition was updated", "stop": "its service was being stopped",
             "switch": "its release was being switched", "start": "the new release was being started"}.get(
        touched, f"step {touched}")
    return HostOutcome(ctx.host, "unknown", None, f"state unknown: lost after {touched} ({after}): {reason}; "
                                                  f"rolling back could not reach it: {describe_error(again)}",
                       ctx.timings, failed_release=failed)


def activate(ctx: HostContext, target: Release, definition: ServiceDefinition | None, health: HealthCheck | None,
             job: ServiceTimeouts, *, record: bool, step_prefix: bool = False) -> str | None:
    """Make `target` the running release: service definition → stop → switch → start → health [→ record].

    Raises StepFailed (or a node/transport error) at the first step that fails. During a rollback
    (`step_prefix`) every step is timed under "rollback" so the deploy's own step timings stay clean. Returns a
    note when something was not checked: a rollback after a second Ctrl-C confirms the service from the node's
    state instead of waiting for the whole gate.
    """
    client = ctx.client

    def step(name: Step, action: Callable[[], T], detail: str = "", extra: float = 0.0) -> T:
        return ctx.step("rollback" if step_prefix else name, action, f"{name} {detail}".strip()
                        if step_prefix else detail, extra)

    def mark(name: str) -> None:
        ctx.touched = name  # before the call: a host lost during it may have carried it out

    if definition is not None:
        mark("service")
        step("service", lambda: client.set_fleet_service(**definition.client_kwargs()))
    try:
        mark("stop")
        step("stop", lambda: client.stop_fleet_service(name=target.service.name,
                                                       timeout_seconds=seconds(job.stop_timeout)),
             extra=job.stop_timeout)
    except NodeOperationError as err:
        if err.code == "SERVICE_STOP_TIMEOUT":
            raise StopHung(describe_error(err)) from None
        raise
    mark("switch")
    step("switch", lambda: client.switch_fleet_release(app=target.app, root=target.root, release=target.id),
         target.id)
    ctx.last_state = None  # only a state read after this switch can vouch for it
    ctx.gate_service = None
    # The state right after the start rides on its pipeline, for the one read that wants exactly that: the
    # stability window's first, else the record's. Not with probes from the node (the first probe is a node call,
    # after which an answer read ahead is stale), and not when nothing would use it (it must not linger).
    if (health is None and record) or (health is not None and not health.from_node
                                       and (health.stability_window > 0 or record)):
        client.read_ahead_state(app=target.app, root=target.root, service_name=target.service.name)
    mark("start")
    started = step("start", lambda: client.start_fleet_service(name=target.service.name,
                                                               timeout_seconds=seconds(job.start_timeout)),
                   extra=job.start_timeout)
    ctx.started_pid = started.pid
    note = None
    if health is not None and step_prefix and ctx.interruption.abort.is_set():
        # Interrupted twice: the user wants out now, but the host must not be reported as it is not. Its
        # service is running the release we returned to, or this says it is not.
        state = step("health", lambda: read_state(ctx, target), "interrupted: the service's state instead of the gate")
        service = state.service
        if state.current != target.id or service is None or service.state != "Running":
            raise StepFailed("health", f"after the interrupted rollback the node reports release {state.current}, "
                                       f"service {service.state if service else 'absent'}")
        note = f"service Running on {target.id}; its health gate was not waited for (interrupted)"
    elif health is not None:
        ctx.gating.set()
        # Raised inside the step, so the timeline marks the health step itself as the one that failed.
        step("health", lambda: _passed(gate(ctx, target, health)), extra=_gate_bound(health))
        ctx.gate_service = ctx.last_state.service if ctx.last_state is not None else None
    if record:
        # The gate's last state read happened after the switch, under our lock: it is as good as a new read.
        seen = ctx.last_state
        state = seen if seen is not None and seen.current == target.id else step(
            "record", lambda: read_state(ctx, target))
        if state.current != target.id:
            raise StepFailed("record", f"the node reports current release {state.current}, expected {target.id}")
        if ctx.gate_service is None:
            ctx.gate_service = state.service
    return note


def _gate_bound(check: HealthCheck) -> float:
    """How long a gate may take by its own rules (retries, per-try timeout, stability window)."""
    return check.retries * (check.interval + check.timeout) + check.stability_window


def _passed(result: HealthResult) -> HealthResult:
    if not result.ok:
        raise StepFailed("health", result.reason or "health check failed")
    return result


def gate(ctx: HostContext, target: Release, check: HealthCheck) -> HealthResult:
    """The health gate of one host: probes from the controller or the node; service state from the node."""
    client = ctx.client

    def probe() -> ProbeResult:
        if check.from_node:
            return ctx.bounded("health probe", lambda: probe_from_node(client, check.url, check.timeout))
        return probe_from_controller(check.url, check.timeout)

    def read() -> ServiceInfo | None:
        # As the window's first read this may be the state read along with the start (rollout/health.py).
        state = ctx.bounded("health: node state", lambda: read_state(ctx, target))
        ctx.last_state = state
        return state.service

    def service() -> ServiceInfo | None:
        client.forget_read_ahead()  # the state now: a crash is judged on it
        return read()

    ctx.in_gate = True
    try:
        return run_health_gate(check, probe, service, aborted=ctx.interruption.abort.is_set,
                               started_pid=ctx.started_pid, report=GateReporter(ctx.host, ctx.bus.emit),
                               first_read=read)
    finally:
        ctx.in_gate = False


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


def release_like(release: Release, release_id: str, version: str) -> Release:
    """A reference to another release of the same app (only id, version, app, root and service name matter)."""
    return Release(id=release_id, version=version, app=release.app, root=release.root,
                   artifact_sha256="", exe_name=release.exe_name, files=(), service=release.service)


def seconds(value: float) -> int:
    return max(1, math.ceil(value))


