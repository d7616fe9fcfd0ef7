"""The `Transport` interface every way of reaching a node implements, and the node-protocol wire rules they share.

A transport runs one protocol operation with named parameters (and optional pipeline input) and returns the
operation's result document, or raises a typed error from `fleetctl.protocol.errors`. `NodeClient` is the only
caller; the WinRM transport and the in-memory fake implement the same interface, so code above them is tested
without a host.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from fleetctl.protocol.errors import NodeOperationError, ProtocolError
from fleetctl.protocol.operations import OPERATIONS

# Raw bytes per pipeline input object when the transport does not know better (fits pypsrp's default 150 KiB
# envelope after two rounds of base64).
DEFAULT_INPUT_OBJECT_BYTES = 96 * 1024

# One operation of a batch for `Transport.invoke_all`: its protocol name and protocol-named parameters.
Call = tuple[str, dict[str, Any]]


class Transport(ABC):
    """One connection to one node, opened lazily, reused for every operation until `close()`."""

    host: str

    @abstractmethod
    def invoke(
        self,
        operation: str,
        params: dict[str, Any],
        input_objects: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Run `operation` with protocol-named `params`; return its `result` object.

        `input_objects` is iterated once per attempt (pass a re-iterable object if it must survive a retry).
        Raises `NodeOperationError` for a structured node error and a `TransportError` subclass otherwise.
        """

    def invoke_all(self, calls: Sequence[Call]) -> list[dict[str, Any] | NodeOperationError]:
        """Run operations (without pipeline input) in order; one result per call, or in its place the
        `NodeOperationError` it ended with (the later calls still run). A transport that can sends them in one
        round trip, connecting first if needed; a `TransportError` is raised for the whole batch."""
        results: list[dict[str, Any] | NodeOperationError] = []
        for operation, params in calls:
            try:
                results.append(self.invoke(operation, params))
            except NodeOperationError as err:
                results.append(err)
        return results

    def open(self) -> None:
        """Connect and authenticate now rather than on the first `invoke` (for timing and early errors)."""

    @property
    def max_input_object_bytes(self) -> int:
        """Raw bytes one pipeline input object may carry (before base64) so that it fits one request."""
        return DEFAULT_INPUT_OBJECT_BYTES

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def check_call(operation: str, params: dict[str, Any]) -> None:
    """Refuse a call that does not match the protocol; a mismatch is a programming error, not a node error."""
    op = OPERATIONS.get(operation)
    if op is None:
        raise ValueError(f"unknown node operation {operation!r}")
    known = set(op.param_names)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{operation} has no parameter(s) {', '.join(unknown)}")
    missing = [p.name for p in op.params if p.required and params.get(p.name) is None]
    if missing:
        raise ValueError(f"{operation} needs parameter(s) {', '.join(missing)}")


def parse_result_document(outputs: list[Any], operation: str, host: str | None = None) -> dict[str, Any]:
    """The result of an operation from its output objects: exactly one JSON document (protocol wire rule)."""
    texts = [o for o in outputs if isinstance(o, str) and o.strip()]
    if len(texts) != 1:
        raise ProtocolError(
            f"{operation} returned {len(texts)} output document(s), expected exactly one JSON document",
            host=host,
        )
    try:
        doc = json.loads(texts[0])
    except json.JSONDecodeError as err:
        raise ProtocolError(f"{operation} returned invalid JSON ({err.msg} at char {err.pos})", host=host) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("ok"), bool):
        raise ProtocolError(f"{operation} returned a document without a boolean 'ok'", host=host)
    if doc["ok"]:
        result = doc.get("result", {})
        if not isinstance(result, dict):
            raise ProtocolError(f"{operation} returned a 'result' that is not an object", host=host)
        return result
    error = doc.get("error")
    if not isinstance(error, dict):
        raise ProtocolError(f"{operation} failed without an 'error' object", host=host)
    details = error.get("details")
    raise NodeOperationError(
        str(error.get("code") or "INTERNAL"),
        str(error.get("message") or ""),
        details if isinstance(details, dict) else {},
        operation=operation,
        host=host,
    )
