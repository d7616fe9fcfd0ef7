"""What every host procedure is made of: the host's context (where to report, whether to give up), the one
activation sequence (service definition → stop → switch → start → health [→ record]) that deploy, rollback and a
host's own return to its previous release all use, the health gate, and errors as one redacted line.

Failure rule (docs/rollouts.md): a failure before the service definition is touched changes nothing the service
runs. From the service step on, a failing host is returned at once to the release it ran before (`return_to`). A
stop that times out is the exception: Windows kills nothing, so the old process still runs; the junction is not
switched under it, the definition of the release it runs is put back and the host is `failed` without another
stop (`StopHung`, `left_running`). Every step is timed into `HostOutcome.timings`.

The procedures built from these: `rollout/deploy.py`, `rollout/rollback.py`, `rollout/remove.py`.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from fleetctl.config.redaction import redact
from fleetctl.errors import FleetError
from fleetctl.node.client import NodeClient
from fleetctl.node.probe import ProbeResult, probe_from_controller, probe_from_node
from fleetctl.node.results import NodeState, ServiceInfo
from fleetctl.protocol.errors import NodeOperationError, TransportError
from fleetctl.rollout.events import (
    EventBus,
    HostOutcome,
    HostProgress,
    HostStepFinished,
    HostStepStarted,
    Step,
)
from fleetctl.rollout.health import HealthCheck, HealthResult, run_health_gate
from fleetctl.rollout.release import SERVICE_DEFINITION_FILE, Release, ServiceDefinition

T = TypeVar("T")
HealthFor = Callable[[str], "HealthCheck | None"]  # version -> the health check that version must pass


class ServiceTimeouts(Protocol):
    """How long a host's service may take to start and to stop (a deploy's or rollback's job)."""

    @property
    def start_timeout(self) -> float: ...

    @property
    def stop_timeout(self) -> float: ...


class Interruption:
    """Ctrl-C state shared by the engine and in-flight hosts: first press stops new hosts, second aborts gates."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.abort = threading.Event()

    def press(self) -> None:
        if self.requested.is_set():
            self.abort.set()
        self.requested.set()


@contextmanager
def sigint_handler(interruption: Interruption) -> Iterator[None]:
    """While active, Ctrl-C presses the interruption instead of raising KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: object) -> None:
        interruption.press()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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


def return_to(ctx: HostContext, reference: Release, release_id: str, version: str, health_for: HealthFor,
              job: ServiceTimeouts, reason: str, *, what: str = "rollback") -> HostOutcome:
    """After `reason` failed a host from its service step on: make `release_id` the running release again with
    its own stored service definition, gated (timed as the "rollback" step). `rolled_back`, or `failed` when that
    fails too (`what` names the attempt in the message)."""
    try:
        definition = ctx.step("rollback", lambda: stored_definition(ctx.client, reference, release_id),
                              f"back to {release_id}")
        activate(ctx, release_like(reference, release_id, version), definition, health_for(version), job,
                 record=False, step_prefix=True)
    except Exception as err:  # noqa: BLE001
        return HostOutcome(ctx.host, "failed", None, f"{reason}; {what} to {release_id} failed: "
                                                     f"{describe_error(err)}", ctx.timings)
    return HostOutcome(ctx.host, "rolled_back", release_id, reason, ctx.timings)


def activate(ctx: HostContext, target: Release, definition: ServiceDefinition | None, health: HealthCheck | None,
             job: ServiceTimeouts, *, record: bool, step_prefix: bool = False) -> None:
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
                                                       timeout_seconds=seconds(job.stop_timeout)))
    except NodeOperationError as err:
        if err.code == "SERVICE_STOP_TIMEOUT":
            raise StopHung(describe_error(err)) from None
        raise
    step("switch", lambda: client.switch_fleet_release(app=target.app, root=target.root, release=target.id),
         target.id)
    ctx.last_state = None  # only a state read after this switch can vouch for it
    step("start", lambda: client.start_fleet_service(name=target.service.name,
                                                     timeout_seconds=seconds(job.start_timeout)))
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


def release_like(release: Release, release_id: str, version: str) -> Release:
    """A reference to another release of the same app (only id, version, app, root and service name matter)."""
    return Release(id=release_id, version=version, app=release.app, root=release.root,
                   artifact_sha256="", exe_name=release.exe_name, files=(), service=release.service)


def seconds(value: float) -> int:
    return max(1, math.ceil(value))


