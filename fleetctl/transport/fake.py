"""An in-memory transport with the real interface, for unit tests above the transport (httpx's MockTransport idea).

`FakeTransport(handler)` checks each call against the protocol exactly as the WinRM transport does, records it,
and answers with whatever `handler(call)` returns: a result dict (sent as `{"ok": true, "result": ...}`), a raw
JSON document string (to test parsing), or an exception to raise (e.g. `HostUnreachable`). `FakeNode` is a
ready-made handler with an artifact cache and a lock, enough for transfer and client tests.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleetctl.protocol.errors import NodeOperationError
from fleetctl.protocol.locking import lock_decision
from fleetctl.transport.base import Transport, check_call, parse_result_document


@dataclass
class FakeCall:
    operation: str
    params: dict[str, Any]
    input_objects: list[str] | None


Handler = Callable[[FakeCall], Any]


class FakeTransport(Transport):
    """A transport whose host is a Python function."""

    def __init__(self, handler: Handler, host: str = "fake", *, max_input_object_bytes: int = 3 * 1024) -> None:
        self.host = host
        self.handler = handler
        self.calls: list[FakeCall] = []
        self.opened = 0
        self.closed = False
        self._max_input = max_input_object_bytes
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            if self.opened == 0:
                self.opened = 1

    @property
    def max_input_object_bytes(self) -> int:
        return self._max_input

    def invoke(
        self,
        operation: str,
        params: dict[str, Any],
        input_objects: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        check_call(operation, params)
        self.open()
        call = FakeCall(operation, dict(params), list(input_objects) if input_objects is not None else None)
        self.calls.append(call)
        answer = self.handler(call)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, str):
            return parse_result_document([answer], operation, self.host)
        return parse_result_document([json.dumps({"ok": True, "result": answer or {}})], operation, self.host)

    def close(self) -> None:
        self.closed = True

    def operations(self) -> list[str]:
        """The operations called so far, in order."""
        return [c.operation for c in self.calls]


def error_document(code: str, message: str, details: dict[str, Any] | None = None) -> str:
    """A node-protocol error document, as a handler's answer."""
    return json.dumps({"ok": False, "error": {"code": code, "message": message, "details": details or {}}})


@dataclass
class FakeNode:
    """A tiny in-memory node: facts, artifact cache (push and pull), lock. Other operations answer {}."""

    hostname: str = "FAKE01"
    artifacts: dict[str, bytes] = field(default_factory=dict)
    urls: dict[str, bytes] = field(default_factory=dict)  # what Save-FleetArtifactFromUrl can download
    lock: dict[str, Any] | None = None
    received_objects: int = 0

    def __call__(self, call: FakeCall) -> Any:
        method = getattr(self, "op_" + call.operation.replace("-", "_"), None)
        return method(call) if method else {}

    def op_Get_FleetFacts(self, call: FakeCall) -> Any:
        return {"hostname": self.hostname, "os_name": "Fake Windows", "os_version": "10.0.0", "os_build": "0",
                "ps_version": "5.1", "drives": {"C:": 10 * 2**30},
                "utc_now": datetime.now(UTC).isoformat(), "module_version": "1", "lab": True}

    def op_Test_FleetArtifact(self, call: FakeCall) -> Any:
        data = self.artifacts.get(call.params["Sha256"])
        return {"present": data is not None, "path": f"C:\\cache\\{call.params['Sha256']}" if data else None,
                "size": len(data) if data is not None else None}

    def op_Receive_FleetArtifact(self, call: FakeCall) -> Any:
        raw = b"".join(base64.b64decode(s) for s in call.input_objects or [])
        self.received_objects += len(call.input_objects or [])
        try:
            data = gzip.decompress(raw) if call.params.get("Compression", "gzip") == "gzip" else raw
        except (OSError, EOFError, zlib.error):
            return error_document("CHECKSUM_MISMATCH", "the received bytes are not valid gzip")
        return self._store(call.params["Sha256"], data, len(raw))

    def op_Save_FleetArtifactFromUrl(self, call: FakeCall) -> Any:
        data = self.urls.get(call.params["Url"])
        if data is None:
            return error_document("DOWNLOAD_FAILED", "connection refused", {"url": call.params["Url"]})
        return self._store(call.params["Sha256"], data, len(data))

    def _store(self, sha256: str, data: bytes, received: int) -> Any:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            return error_document("CHECKSUM_MISMATCH", f"expected {sha256}, got {actual}", {"actual": actual})
        self.artifacts[sha256] = data
        return {"path": f"C:\\cache\\{sha256}", "sha256": actual, "size": len(data), "received": received}

    def op_Lock_FleetApp(self, call: FakeCall) -> Any:
        p = call.params
        held = self.lock
        decision = lock_decision(str(held["deploy_id"]) if held else "", bool(held and held.get("expired")),
                                 bool(held and held.get("reason")), p["DeployId"], p.get("TakeOver") or "")
        if decision == "held":
            raise NodeOperationError("LOCK_HELD", "held", {"holder": held}, operation=call.operation)
        self.lock = {"owner": p["Owner"], "deploy_id": p["DeployId"], "acquired_at": "2024-01-01T00:00:00Z",
                     "expires_at": "2024-01-01T01:00:00Z", "process": p.get("Process"), "reason": p.get("Reason")}
        return {"lock": self.lock, "taken_over": held if decision in ("replace-expired", "take-over") else None}
