"""What the rollout engine tells the world. The engine never prints: it emits these events, and the live view,
the `--json` report and the history journal subscribe, so all three always agree."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["deployed", "skipped", "rolled_back", "failed", "not_started", "removed"]
Step = Literal[
    "connect", "lock", "transfer", "install", "service", "stop", "switch", "start", "health", "record",
    "retention", "unlock", "rollback", "remove",
]


@dataclass(frozen=True)
class HostOutcome:
    host: str
    outcome: Outcome
    release: str | None = None  # the release the host runs at the end (None if unknown)
    error: str | None = None  # redacted one-line reason for failed / rolled_back
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds
    transfer: str | None = None  # how the artifact got there: "pull", "push", "skipped" (None: no transfer step)

    def to_json(self) -> dict[str, object]:
        return {"outcome": self.outcome, "release": self.release, "error": self.error}


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class RunStarted(Event):
    run_id: str
    kind: Literal["deploy", "rollback", "remove"]
    playbook: str
    service: str
    version: str | None
    release: str | None
    strategy: str
    user: str
    batches: tuple[tuple[str, ...], ...]
    canary: bool


@dataclass(frozen=True)
class BatchStarted(Event):
    index: int
    canary: bool
    hosts: tuple[str, ...]


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


@dataclass(frozen=True)
class HostFinished(Event):
    """A host reached its final state for this run (any outcome)."""

    result: HostOutcome


@dataclass(frozen=True)
class BatchFinished(Event):
    index: int
    passed: bool
    failed: tuple[str, ...] = ()


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
class RunFinished(Event):
    run_id: str
    exit_code: int
    outcomes: dict[str, HostOutcome]
    message: str = ""


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers each event to every subscriber, in order, from whichever thread emitted it."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        with self._lock:
            for subscriber in self._subscribers:
                subscriber(event)
