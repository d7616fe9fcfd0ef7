"""`-v`: every node operation a client invokes, logged on the `fleetctl.node` logger with its host, name, duration
and outcome (`web03  Switch-FleetRelease  0.41 s  ok`); with `-vv` (DEBUG) also the names of the parameters it
was given. Parameter values are never logged, at any level: they hold passwords, tokens and secret variables.

`log_operations(transport)` is the whole cost when `-v` is off: one `isEnabledFor` check per client, which then
talks to its transport directly. When on, the client talks to a `LoggedTransport` that times each call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from fleetctl.protocol.errors import NodeOperationError, TransportError
from fleetctl.transport.base import Call, Transport

log = logging.getLogger("fleetctl.node")


def log_operations(transport: Transport) -> Transport:
    """`transport` itself when the operation log is off, else `transport` wrapped to log every operation."""
    if not log.isEnabledFor(logging.INFO):
        return transport
    return LoggedTransport(transport)


def outcome(err: BaseException | None) -> str:
    """An operation's outcome in a few words: ok, the node's error code, or why the host could not be asked."""
    if err is None:
        return "ok"
    if isinstance(err, NodeOperationError):
        return f"error {err.code}"
    if isinstance(err, TransportError):
        # `reason` is redacted where the error is made; the handler masks once more before printing.
        return f"failed ({type(err).__name__}): {err.reason}"
    return f"failed ({type(err).__name__})"


class LoggedTransport(Transport):
    """A transport that logs each operation of the one it wraps; everything else is the wrapped transport's."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.host = inner.host

    def __getattr__(self, name: str) -> Any:
        # Counters and test doubles' records (`pools_reopened`, `calls`) stay reachable through the client.
        return getattr(self.inner, name)

    @property
    def max_input_object_bytes(self) -> int:
        return self.inner.max_input_object_bytes

    def open(self) -> None:
        started = time.monotonic()
        try:
            self.inner.open()
        except BaseException as err:
            _log(self.host, "connect", (), started, outcome(err))
            raise
        _log(self.host, "connect", (), started, "ok")

    def invoke(self, operation: str, params: dict[str, Any],
               input_objects: Iterable[str] | None = None) -> dict[str, Any]:
        started = time.monotonic()
        try:
            result = self.inner.invoke(operation, params, input_objects)
        except BaseException as err:
            _log(self.host, operation, params, started, outcome(err))
            raise
        _log(self.host, operation, params, started, "ok")
        return result

    def invoke_all(self, calls: Sequence[Call]) -> list[dict[str, Any] | NodeOperationError]:
        started = time.monotonic()
        # One pipeline for all the calls: each line shows the pipeline's duration, and says it was shared.
        shared = f" (one pipeline of {len(calls)})" if len(calls) > 1 else ""
        try:
            results = self.inner.invoke_all(calls)
        except BaseException as err:
            for operation, params in calls:
                _log(self.host, operation, params, started, outcome(err) + shared)
            raise
        for (operation, params), result in zip(calls, results, strict=False):
            failed = result if isinstance(result, NodeOperationError) else None
            _log(self.host, operation, params, started, outcome(failed) + shared)
        return results

    def close(self) -> None:
        self.inner.close()


def _log(host: str, operation: str, params: Iterable[str], started: float, result: str) -> None:
    seconds = time.monotonic() - started
    if log.isEnabledFor(logging.DEBUG):
        names = ", ".join(sorted(params))
        log.debug("%s  %s  %.3f s  %s  [%s]", host, operation, seconds, result, names or "no parameters")
    else:
        log.info("%s  %s  %.3f s  %s", host, operation, seconds, result)
