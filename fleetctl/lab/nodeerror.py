"""The one exception a simulated node raises for a protocol error: a code from `protocol.ERROR_CODES` plus details."""

from __future__ import annotations

from typing import Any

from fleetctl.protocol.operations import ERROR_CODES


class NodeError(Exception):
    """A node-protocol error; `LabNode.invoke` turns it into `{"ok": false, "error": {...}}`."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        if code not in ERROR_CODES:
            # A typo here would put an undocumented code on the wire; fail loudly in development instead.
            raise ValueError(f"unknown node error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def to_document(self) -> dict[str, Any]:
        return {"ok": False, "error": {"code": self.code, "message": self.message, "details": self.details}}
