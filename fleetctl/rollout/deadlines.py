"""Bounded phases: each node call of a host's work runs under a wall-clock budget (`rollout.timeouts`), so a host
that stops answering (blackholed, half-open connection) costs its batch one budget, not every retry of every
remaining step. A host past a budget is *lost*: nothing more is sent to it in this run, and what it runs is
unknown until someone looks again (the report says so)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fleetctl.protocol.errors import HostTimeout

T = TypeVar("T")


@dataclass(frozen=True)
class PhaseTimeouts:
    """Seconds per phase (playbook `rollout.timeouts`); `step` is the default of every call not named here."""

    connect: float = 60.0
    transfer: float = 1800.0
    step: float = 120.0
    unlock: float = 20.0

    def for_step(self, step: str) -> float:
        if step == "lock":
            return self.connect
        if step in ("transfer", "unlock"):
            return float(getattr(self, step))
        return self.step


class PhaseTimeout(HostTimeout):
    """A phase of one host's work outlived its budget: the host is lost for the rest of the run."""

    transient = False  # the budget already covered the transport's own retries


def call_within(seconds: float, action: Callable[[], T], what: str) -> T:
    """Run `action` but give up waiting after `seconds`: raise PhaseTimeout and leave the call to finish (or time
    out) on its own daemon thread, whose result is dropped. The caller must not use the host again."""
    box: dict[str, object] = {}
    # A lock held until the call ends: releasing one wakes the waiter at a fraction of an Event's cost (no
    # Condition, no notify_all), which shows at ~20 node calls per host.
    done = threading.Lock()
    done.acquire()

    def run() -> None:
        try:
            box["value"] = action()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread as is
            box["error"] = err
        finally:
            done.release()

    _WORKERS.submit(run)
    if not done.acquire(timeout=seconds):
        raise PhaseTimeout(f"no answer within {seconds:g}s ({what}; rollout.timeouts)")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


class _Workers:
    """Daemon threads for bounded calls, reused: a deploy makes ~20 node calls per host, and starting a thread
    for each was a few per cent of the controller's CPU. A new thread starts only when none is idle, so a call
    stuck past its budget only keeps its own thread; a thread idle for `IDLE_EXIT_S` ends."""

    IDLE_EXIT_S = 10.0

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a job that no submitted job has claimed yet

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            claimed = self._idle > 0
            if claimed:
                self._idle -= 1
        self._jobs.put(job)
        if not claimed:
            threading.Thread(target=self._work, name="fleetctl-call", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self.IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # an unclaimed idle thread may end: no job counts on it
                        self._idle -= 1
                        return
                continue
            job()
            with self._lock:
                self._idle += 1


_WORKERS = _Workers()
