"""Read-ahead for one node: read-only calls that ride, as extra statements, on the pipeline of the next call the
controller sends anyway, so that the call that wants their answer a moment later costs no round trip of its own.

A round trip (a WS-Man Command and its Receive) is a host's fixed cost, and the rollout asks for some answers
right after another call: a deploy reads the app's state right after taking the lock, and asks whether the
artifact is cached right after reading the state. `NodeClient.read_ahead_state()` / `read_ahead_artifact()`
register such a read; the next call sends it along (`Transport.invoke_all`); the answer is then used by the first
call that asks exactly that (same operation, same parameters), once, and only while it is fresh:

- at most `MAX_AGE_S` old: a later ask goes to the node (a deploy's later batches read the state anew);
- no other call to the node in between: any other call may have changed what was read, so it drops every answer
  read ahead (the lock keeper's renewal on its own thread included);
- an answer that was an error is not kept: the real call is sent and gets its own answer.

Only read-only operations can be read ahead (`READ_ONLY`): sending them early changes nothing on the node."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from fleetctl.transport.base import Call

# How long an answer read ahead may be used: the calls it saves come milliseconds to seconds after the one it rode
# on (a no-op redeploy's batches pass in seconds); older, the node is asked again.
MAX_AGE_S = 30.0
READ_ONLY = frozenset({"Get-FleetState", "Test-FleetArtifact"})


def _key(operation: str, params: dict[str, Any]) -> str:
    return operation + json.dumps(params, sort_keys=True, default=str)


class ReadAhead:
    """The reads waiting for the next call, and the answers they got (thread-safe; one per `NodeClient`)."""

    def __init__(self, max_age_s: float = MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._pending: dict[str, Call] = {}
        self._answers: dict[str, tuple[float, dict[str, Any]]] = {}
        self.used = 0  # answers served from a read ahead (round trips saved)

    def want(self, operation: str, params: dict[str, Any]) -> None:
        """Send `operation(params)` along with the next call (unless a fresh answer to it is already here)."""
        if operation not in READ_ONLY:
            raise ValueError(f"{operation} changes the node; only {', '.join(sorted(READ_ONLY))} can be read ahead")
        key = _key(operation, params)
        with self._lock:
            answer = self._answers.get(key)
            if answer is None or time.monotonic() - answer[0] > self.max_age_s:
                self._pending[key] = (operation, dict(params))

    def take(self, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The answer read ahead for exactly this call, if fresh (then forgotten); else None, and every other
        answer is dropped too (the caller is about to send a call that may change them)."""
        key = _key(operation, params)
        with self._lock:
            answer = self._answers.pop(key, None)
            if answer is not None and time.monotonic() - answer[0] <= self.max_age_s:
                self.used += 1
                self._pending.pop(key, None)
                return answer[1]
            self._answers.clear()
            return None

    def drop(self) -> None:
        """Forget every answer read ahead (a caller that wants the node's state now, not as it was)."""
        with self._lock:
            self._answers.clear()

    def ride_along(self, calls: list[Call]) -> list[Call]:
        """`calls` followed by the reads waiting (which are no longer waiting)."""
        with self._lock:
            extra = [c for k, c in self._pending.items() if k not in {_key(*call) for call in calls}]
            self._pending.clear()
        return [*calls, *extra]

    def keep(self, calls: list[Call], results: list[Any]) -> None:
        """Remember the answers of the reads that rode along (the calls after the first `len(calls)`); errors are
        not kept."""
        now = time.monotonic()
        with self._lock:
            for (operation, params), result in zip(calls, results, strict=False):
                if operation in READ_ONLY and isinstance(result, dict):
                    self._answers[_key(operation, params)] = (now, result)

    @property
    def waiting(self) -> bool:
        with self._lock:
            return bool(self._pending)
