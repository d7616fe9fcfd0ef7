"""Typed errors a transport raises: why a host could not be reached or an operation failed, in one line."""

from __future__ import annotations

from typing import Any

from fleetctl.config.redaction import redact, redact_value
from fleetctl.errors import FleetError


class TransportError(FleetError):
    """A host could not be talked to. `transient` says whether trying again may help (refused, reset,
    timeout, 5xx); authentication and certificate problems never are."""

    transient = False

    def __init__(self, message: str, *, host: str | None = None, transient: bool | None = None) -> None:
        self.host = host
        self.reason = redact(message)
        if transient is not None:
            self.transient = transient
        super().__init__(f"{host}: {self.reason}" if host else self.reason)


class HostUnreachable(TransportError):
    """DNS failure, connection refused or reset. Refused and reset are transient; DNS failure is not."""


class HostTimeout(TransportError):
    """Connecting or reading timed out."""

    transient = True


class AuthenticationFailed(TransportError):
    """The host refused the credentials (HTTP 401). Never retried: retrying can lock the account."""


class CertificateError(TransportError):
    """The host's TLS certificate did not verify against the CA bundle (or the TLS handshake failed)."""


class PoolBroken(TransportError):
    """The remote PowerShell session (RunspacePool) broke or was closed by the host."""


class ShellNotFound(PoolBroken):
    """The host no longer has the pool's shell (WS-Man fault 2150858843): WinRM deleted it after its idle timeout,
    or the WinRM service restarted. `before_call` is True when the request that found out was the call's own
    Command, so nothing of the call ran on the host and it may be sent again on a new pool."""

    def __init__(self, message: str, *, host: str | None = None, before_call: bool = False) -> None:
        super().__init__(message, host=host)
        self.before_call = before_call


class ProtocolError(TransportError):
    """The host answered something that is not a node-protocol result document."""


class NodeOperationError(FleetError):
    """A node operation ran and reported a structured error (`code` is one of protocol.ERROR_CODES)."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        operation: str | None = None,
        host: str | None = None,
    ) -> None:
        self.code = code
        self.message = redact(message)
        self.details: dict[str, Any] = redact_value(dict(details or {}))
        self.operation = operation
        self.host = host
        where = ": ".join(p for p in (host, operation) if p)
        text = f"{code}: {self.message}"
        super().__init__(f"{where}: {text}" if where else text)
