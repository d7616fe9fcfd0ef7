"""What the rollout engine tells the world. The engine never prints: it emits these events, and the live view,
the `--json` report and the history journal subscribe, so all three always agree."""

from __future__ import annotations

import atexit
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fleetctl.config.redaction import redact

# `unknown`: the host was lost (unreachable, silent, refusing our credentials) after its service was touched, so
# nobody can say which release it runs; it counts as failed and the run never reports a clean halt.
Outcome = Literal["deployed", "skipped", "rolled_back", "failed", "not_started", "removed", "unknown", "restarted"]
Step = Literal[
    "connect", "lock", "transfer", "install", "service", "stop", "switch", "start", "health", "record",
    "retention", "unlock", "rollback", "remove", "drain", "ready", "proxy", "bake",
]


@dataclass(frozen=True)
class HostOutcome:
    host: str
    outcome: Outcome
    release: str | None = None  # the release the host runs at the end (None if unknown)
    error: str | None = None  # redacted one-line reason for failed / rolled_back
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    transfer: str | None = None  # how the artifact got there: "pull", "push", "skipped" (None: no transfer step)
    failed_release: str | None = None  # the release that failed its gate (or start) on this host in this run

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"outcome": self.outcome, "release": self.release, "error": self.error}
        if self.failed_release:
            doc["failed_release"] = self.failed_release
        return doc


@dataclass(frozen=True)
class Event:
    pass


RunKind = Literal["deploy", "rollback", "remove", "restart"]


@dataclass(frozen=True)
class RunInfo:
    """What a run is: the procedure says it, `RunStarted` announces it, the journal keeps it."""

    run_id: str
    kind: RunKind
    playbook: str
    service: str
    version: str | None
    release: str | None
    strategy: str
    user: str
    # Keyword-only, so RunStarted's own fields still follow `user` positionally.
    trigger: Literal["manual", "scheduled"] = field(default="manual", kw_only=True)  # scheduled: `schedule run`
    schedule: str | None = field(default=None, kw_only=True)  # the schedule entry's name when scheduled
    inputs: dict[str, Any] = field(default_factory=dict, kw_only=True)  # what it was asked (options, artifact)


@dataclass(frozen=True)
class RunStarted(RunInfo, Event):
    """A run began: what it is, and its batches in order."""

    batches: tuple[tuple[str, ...], ...]
    canary: bool

    @classmethod
    def of(cls, info: RunInfo, batches: tuple[tuple[str, ...], ...], canary: bool) -> RunStarted:
        return cls(info.run_id, info.kind, info.playbook, info.service, info.version, info.release, info.strategy,
                   info.user, batches, canary, trigger=info.trigger, schedule=info.schedule,
                   inputs=dict(info.inputs))


@dataclass(frozen=True)
class BatchStarted(Event):
    index: int  # the plan's index, from 0 (as the journal stores it); people read `number`
    canary: bool
    hosts: tuple[str, ...]

    @property
    def number(self) -> int:
        """The batch as people count it, from 1 (the live view, plan, history all say "batch 1")."""
        return self.index + 1


@dataclass(frozen=True)
class HostStepStarted(Event):
    host: str
    step: Step
    detail: str = ""


@dataclass(frozen=True)
class HostStepFinished(Event):
    """A step of a host ended: when it began (wall clock, for timelines), how long it took, whether it raised.
    A step repeated (rollback repeats stop/switch/start) finishes once per time it ran."""

    host: str
    step: Step
    started_at: float  # time.time() when the step began
    seconds: float
    failed: bool = False
    detail: str = ""


@dataclass(frozen=True)
class HostProgress(Event):
    host: str
    step: Step
    done: int
    total: int


GatePhase = Literal["probe", "stability"]


@dataclass(frozen=True)
class GateProgress(Event):
    """Where a host's health gate stands: the try and its answer in a few words ("500", "connection refused",
    "timeout"; never a body), then how long the service has stayed stable. Rate-limited by the gate
    (`health.GateReporter`), so a fleet of gates does not flood the bus."""

    host: str
    phase: GatePhase
    attempt: int = 0  # probe: this try's number, from 1
    retries: int = 0  # probe: how many tries the gate allows
    answer: str = ""  # probe: the try's answer in a few words
    held: float = 0.0  # stability: seconds the service has stayed stable so far
    window: float = 0.0  # stability: seconds it must stay stable


@dataclass(frozen=True)
class HostFinished(Event):
    """A host reached its final state for this run (any outcome)."""

    result: HostOutcome


@dataclass(frozen=True)
class BatchFinished(Event):
    index: int  # from 0, as BatchStarted's
    passed: bool
    failed: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> hosts of this batch (the engine's record)

    @property
    def number(self) -> int:
        return self.index + 1


@dataclass(frozen=True)
class Baking(Event):
    seconds: float


@dataclass(frozen=True)
class Halting(Event):
    reason: str


@dataclass(frozen=True)
class Notice(Event):
    """A one-line remark about the run as a whole (e.g. the pull server could not start, so auto pushes)."""

    message: str


@dataclass(frozen=True)
class Interrupting(Event):
    """Ctrl-C was pressed (`presses` times so far): what the run does now, in words, said at once."""

    presses: int
    message: str


@dataclass(frozen=True)
class RunFinished(Event):
    run_id: str
    exit_code: int
    outcomes: dict[str, HostOutcome]
    message: str = ""


Subscriber = Callable[[Event], None]
BatchSubscriber = Callable[[Sequence[Event]], None]


class EventBus:
    """Delivers each event to every subscriber, in the order emitted, from one delivery thread of its own.

    `emit` only appends to a queue: the host threads that emit never wait for the journal's SQLite writes or the
    screen. The delivery thread hands a subscriber every event that queued up while it was busy, in order:
    `subscribe` gets them one by one, `subscribe_batches` as one sequence (the journal writes a batch in one
    transaction). The thread starts with the first event and ends after a second with nothing to deliver.

    Nothing is lost: `flush()` returns once everything emitted so far is delivered (the engine flushes before it
    returns or raises, and readers such as the journal flush before they read); `close()` flushes and stops; and
    at interpreter exit (an uncaught exception, `sys.exit`, a KeyboardInterrupt) every bus still holding events
    delivers them. A subscriber that raises is reported once on stderr and keeps receiving events, so one broken
    display cannot stop the journal or the run.
    """

    IDLE_SECONDS = 1.0  # the delivery thread ends after this long with nothing to deliver

    def __init__(self) -> None:
        self._subscribers: list[tuple[Subscriber | None, BatchSubscriber | None]] = []
        self._queue: deque[Event] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._delivering = 0  # events taken off the queue and not yet delivered to every subscriber
        self._idle = False  # the delivery thread is waiting for events
        self._closed = False
        self._failed: set[int] = set()  # subscribers already reported as raising
        _OPEN_BUSES.add(self)

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber(event)` for every event emitted from now on."""
        with self._cond:
            self._subscribers.append((subscriber, None))

    def subscribe_batches(self, subscriber: BatchSubscriber) -> None:
        """Call `subscriber(events)` with the events emitted from now on, in order, several at a time."""
        with self._cond:
            self._subscribers.append((None, subscriber))

    def emit(self, event: Event) -> None:
        with self._cond:
            self._queue.append(event)
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="fleetctl-events", daemon=True)
                self._thread.start()
            elif self._idle:  # only a waiting delivery thread needs waking; a busy one takes this batch next
                self._idle = False
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event emitted so far has reached every subscriber; False on timeout. From inside a
        subscriber (the delivery thread) it returns at once: waiting there would wait for itself."""
        if threading.current_thread() is self._thread:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._delivering:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        """Deliver what is queued, then stop (events emitted later are still delivered, by a new thread)."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        _OPEN_BUSES.discard(self)

    def _deliver(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._idle = True
                    self._cond.wait_for(lambda: bool(self._queue) or self._closed, timeout=self.IDLE_SECONDS)
                    self._idle = False
                if not self._queue:
                    self._thread = None  # the next emit starts a new one
                    self._closed = False
                    self._cond.notify_all()
                    return
                batch = list(self._queue)
                self._queue.clear()
                self._delivering = len(batch)
                subscribers = list(self._subscribers)
            try:
                for one, many in subscribers:
                    if many is not None:
                        self._call(many, batch)
                    elif one is not None:
                        for event in batch:
                            self._call(one, event)
            finally:
                with self._cond:
                    self._delivering = 0
                    self._cond.notify_all()

    def _call(self, subscriber: Callable[[Any], None], value: object) -> None:
        try:
            subscriber(value)
        except Exception as err:  # noqa: BLE001 - one subscriber's bug must not starve the others
            if id(subscriber) not in self._failed:
                self._failed.add(id(subscriber))
                print(redact(f"warning: an event subscriber failed: {type(err).__name__}: {err}"), file=sys.stderr)


_OPEN_BUSES: weakref.WeakSet[EventBus] = weakref.WeakSet()


@atexit.register
def _deliver_everything_at_exit() -> None:
    # Runs while daemon threads still run: an interpreter leaving by an exception or sys.exit loses no event.
    for bus in list(_OPEN_BUSES):
        bus.flush(timeout=30)
