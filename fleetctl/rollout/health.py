"""Health gates: probe a service's HTTP health URL (from the controller, or from the node with `Test-FleetHealth`:
`fleetctl.node.probe`), judge the answer against the playbook's expectations, retry with a tenacity policy until it passes, then hold a
stability window during which the service must stay Running with the same PID and no restarts.

`probe_once(check, client)` is the single, unretried probe (used by `fleetctl status`); `run_health_gate` is the
gate a deploy waits on. Both return values whose `reason` is a one-line, user-facing explanation. While a gate
runs, a `GateReporter` tells the world the try and its answer in a few words, then the stability window's progress.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, stop_any, wait_fixed
from tenacity.stop import stop_base

from fleetctl.config.playbook import Health
from fleetctl.config.redaction import redact
from fleetctl.node.client import NodeClient
from fleetctl.node.probe import ProbeResult, probe_from_controller, probe_from_node
from fleetctl.node.results import ServiceInfo
from fleetctl.rollout.events import GateProgress

EXCERPT = 120  # characters of a body shown in a failure reason


@dataclass(frozen=True)
class HealthCheck:
    """A health check of one host, rendered from the playbook's `health:` section."""

    url: str
    from_node: bool = False
    expect_status: int = 200
    expect_body: str | None = None
    expect_json: tuple[tuple[str, Any], ...] = ()
    interval: float = 1.0
    timeout: float = 5.0
    retries: int = 30
    stability_window: float = 10.0

    @classmethod
    def from_playbook(cls, health: Health) -> HealthCheck:
        return cls(
            url=health.url, from_node=health.from_ == "node", expect_status=health.expect_status,
            expect_body=health.expect_body, expect_json=tuple(sorted(health.expect_json.items())),
            interval=float(health.interval), timeout=float(health.timeout), retries=health.retries,
            stability_window=float(health.stability_window),
        )


@dataclass(frozen=True)
class ProbeVerdict:
    probe: ProbeResult
    reason: str | None  # None: the answer is what the check expects
    short: str = ""  # the answer in a few words for the live view ("500", "timeout", "200, version differs")

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    reason: str | None
    attempts: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # "probe" and "stability" seconds


# --- judging ------------------------------------------------------------------------------------------------------


def judge(check: HealthCheck, probe: ProbeResult) -> ProbeVerdict:
    """Compare one answer with the check's expectations; the reason names what differed, `short` says it in a
    few words without quoting the body (a body may hold anything)."""
    if probe.status is None:
        return ProbeVerdict(probe, redact(f"no answer: {probe.error or 'unknown error'}"), _no_answer(probe.error))
    status = str(probe.status)
    if probe.status != check.expect_status:
        return ProbeVerdict(probe, redact(f"status {probe.status} (expected {check.expect_status})"
                                          f"{_excerpt(probe.body)}"), status)
    if check.expect_body is not None and check.expect_body not in probe.body:
        return ProbeVerdict(probe, redact(f"body does not contain {check.expect_body!r}{_excerpt(probe.body)}"),
                            f"{status}, body differs")
    if check.expect_json:
        try:
            document = json.loads(probe.body)
        except ValueError:
            return ProbeVerdict(probe, redact(f"body is not JSON{_excerpt(probe.body)}"), f"{status}, not JSON")
        for key, expected in check.expect_json:
            found, actual = _lookup(document, key)
            if not found:
                return ProbeVerdict(probe, redact(f"JSON field {key!r} missing{_excerpt(probe.body)}"),
                                    redact(f"{status}, no {key}"))
            if not _same(actual, expected):
                return ProbeVerdict(probe, redact(f"JSON field {key!r} is {actual!r} (expected {expected!r})"),
                                    redact(f"{status}, {key} differs"))
    return ProbeVerdict(probe, None, status)


def _no_answer(error: str | None) -> str:
    """Why there was no answer, in a few words: `timeout`, `connection refused`..."""
    text = " ".join((error or "no answer").lower().split())
    if "timed out" in text or "timeout" in text:
        return "timeout"
    return redact(text if len(text) <= 40 else text[:39] + "…")


def _excerpt(body: str) -> str:
    text = " ".join(body.split())
    if not text:
        return ""
    return f": {text[:EXCERPT]}" + ("..." if len(text) > EXCERPT else "")


def _lookup(document: Any, dotted: str) -> tuple[bool, Any]:
    """`a.b` looks up nested objects, so `expect_json: {build.version: ...}` works."""
    node = document
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _same(actual: Any, expected: Any) -> bool:
    # Templated expectations arrive as strings ("{{ version }}"), so "1.2" must equal 1.2 and "true" True.
    if actual == expected:
        return True
    if isinstance(actual, bool) or isinstance(expected, bool):
        return str(actual).lower() == str(expected).lower()
    return str(actual) == str(expected)


def probe_once(check: HealthCheck, client: NodeClient | None = None) -> ProbeVerdict:
    """A single probe without retries (node-side checks need `client`)."""
    if check.from_node:
        if client is None:
            raise ValueError("a node-side health check needs the node's client")
        return judge(check, probe_from_node(client, check.url, check.timeout))
    return judge(check, probe_from_controller(check.url, check.timeout))


# --- the gate -----------------------------------------------------------------------------------------------------


class GateReporter:
    """Tells a host's gate progress as `GateProgress` events, rate-limited: a try when its answer differs from the
    last one told or `every` seconds after it, the stability window every `every` seconds. A fleet of 500 gates
    probing every 0.25 s then costs the bus about one event per gate per second, not four."""

    def __init__(self, host: str, emit: Callable[[GateProgress], None], *, every: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = host
        self._emit = emit
        self._every = every
        self._clock = clock
        self._told: tuple[str, str] | None = None  # (phase, answer) last told
        self._told_at = 0.0

    def tried(self, attempt: int, retries: int, answer: str) -> None:
        if self._due(("probe", answer)):
            self._emit(GateProgress(self.host, "probe", attempt=attempt, retries=retries, answer=answer))

    def stable(self, held: float, window: float) -> None:
        if self._due(("stability", "")):
            self._emit(GateProgress(self.host, "stability", held=max(0.0, held), window=window))

    def _due(self, what: tuple[str, str]) -> bool:
        now = self._clock()
        if what != self._told or now - self._told_at >= self._every:
            self._told, self._told_at = what, now
            return True
        return False


ProbeOnce = Callable[[], ProbeResult]
# How often a gate reads the service state from the node (a node call: several WS-Man requests); the probe keeps
# its own interval.
SERVICE_POLL_S = 1.0
ServiceSnapshot = Callable[[], ServiceInfo | None]
Sleep = Callable[[float], None]
Clock = Callable[[], float]


def run_health_gate(
    check: HealthCheck,
    probe: ProbeOnce,
    service: ServiceSnapshot,
    *,
    aborted: Callable[[], bool] = lambda: False,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
    started_pid: int | None = None,
    report: GateReporter | None = None,
    first_read: ServiceSnapshot | None = None,
) -> HealthResult:
    """Retry `probe` (every `interval`, at most `retries` tries) until it passes, then hold the stability window.

    A failed probe while the service is not Running fails the gate (a crash does not heal by waiting); the service
    is read after the first failed probe and then at most every `SERVICE_POLL_S`. `aborted`
    ends the gate early as a failure (a second Ctrl-C). `sleep`/`clock` are injectable for tests. `started_pid` (what
    the start reported) makes a restart between the start and the window count too: watched from the switch.
    `report` hears each try and the window's progress. `first_read` (default `service`) is the window's first read.
    """
    started = clock()
    attempts = 0
    crash: list[str] = []
    last_read: list[float] = []

    def one_try() -> ProbeVerdict:
        nonlocal attempts
        attempts += 1
        verdict = judge(check, probe())
        if report is not None:
            report.tried(attempts, max(1, check.retries), verdict.short)
        # A failed probe asks whether the service still runs: at once the first time (a crash right after start
        # fails the gate without waiting), then at most every SERVICE_POLL_S while it is still coming up.
        if not verdict.ok and (not last_read or clock() - last_read[0] >= SERVICE_POLL_S):
            last_read[:] = [clock()]
            info = service()
            if info is not None and info.state != "Running":
                crash.append(f"service {info.state or 'absent'} (crashed or failed to stay up)")
        return verdict

    class _GiveUp(stop_base):
        """Stop retrying once the service crashed (waiting will not heal it) or the user aborted."""

        def __call__(self, retry_state: RetryCallState) -> bool:
            return bool(crash) or aborted()

    retrying = Retrying(
        stop=stop_any(stop_after_attempt(max(1, check.retries)), _GiveUp()),
        wait=wait_fixed(check.interval),
        retry=retry_if_result(lambda v: not v.ok),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        sleep=sleep,
    )
    verdict: ProbeVerdict = retrying(one_try)
    probe_seconds = clock() - started
    if not verdict.ok:
        reason = f"crash: {crash[0]}; last probe: {verdict.reason}" if crash else (
            f"aborted; last probe: {verdict.reason}" if aborted() else
            f"unhealthy after {attempts} tr{'y' if attempts == 1 else 'ies'}: {verdict.reason}")
        return HealthResult(False, reason, attempts, probe_seconds, {"probe": probe_seconds})

    stability = hold_stability_window(check, probe, service, aborted=aborted, sleep=sleep, clock=clock,
                                      started_pid=started_pid, report=report, first_read=first_read)
    total = clock() - started
    timings = {"probe": probe_seconds, "stability": total - probe_seconds}
    if stability is not None:
        return HealthResult(False, stability, attempts, total, timings)
    return HealthResult(True, None, attempts, total, timings)


def hold_stability_window(
    check: HealthCheck,
    probe: ProbeOnce,
    service: ServiceSnapshot,
    *,
    aborted: Callable[[], bool] = lambda: False,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
    started_pid: int | None = None,
    report: GateReporter | None = None,
    first_read: ServiceSnapshot | None = None,
) -> str | None:
    """Watch the service for `stability_window` seconds: Running, same PID, no restarts, probes passing.

    Returns None when it stayed stable, else the reason. A window of 0 checks nothing.

    The probe runs every `interval`; the service (a node call, several WS-Man requests and ~2-4 ms of controller
    CPU each) is read at most every `SERVICE_POLL_S` and always at the end of the window. A crash shows at once
    in the probe; a restart within the window changes the PID and the restart count, which the next read, at
    the latest the last, sees.

    The first read is `first_read()` when given: the rollout passes the state read with the start itself (one round
    trip less per host), so the window's PID is the started one and a restart since shows in the later reads.
    """
    window = check.stability_window
    if window <= 0:
        return None
    baseline = (first_read or service)()
    if baseline is None or baseline.state != "Running":
        return f"crash: service {baseline.state if baseline else 'absent'} right after passing its health check"
    if started_pid is not None and baseline.pid is not None and baseline.pid != started_pid:
        return (f"unstable: service restarted before its stability window (pid {started_pid} at start -> "
                f"{baseline.pid})")
    deadline = clock() + window
    if report is not None:
        report.stable(0.0, window)
    step = max(0.05, min(check.interval, window))
    next_read = clock() + SERVICE_POLL_S
    while True:
        remaining = deadline - clock()
        if remaining > 0:
            sleep(min(step, remaining))
        if aborted():
            return "aborted during the stability window"
        at_end = clock() >= deadline
        if at_end or clock() >= next_read:
            next_read = clock() + SERVICE_POLL_S
            now = service()
            if now is None or now.state != "Running":
                return (f"crash during the stability window: service {now.state if now else 'absent'} "
                        f"(was pid {baseline.pid})")
            if now.pid != baseline.pid or now.restarts > baseline.restarts:
                since = "since its start" if first_read is not None else "during the stability window"
                return (f"unstable: service restarted {since} (pid {baseline.pid} -> "
                        f"{now.pid}, restarts {baseline.restarts} -> {now.restarts})")
        verdict = judge(check, probe())
        if not verdict.ok:
            return f"unhealthy during the stability window: {verdict.reason}"
        if at_end:
            return None
        if report is not None:
            report.stable(window - (deadline - clock()), window)
