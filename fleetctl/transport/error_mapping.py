"""Turns what pypsrp, requests and the socket layer raise into fleetctl's typed transport errors, one clear line each.

Pure (no I/O): the unit tests feed it the exception chains the real libraries produce.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
from collections.abc import Iterator

import requests
from pypsrp.exceptions import (
    AuthenticationError,
    InvalidPipelineStateError,
    InvalidRunspacePoolStateError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)

from fleetctl.config.connection import ConnectionSettings
from fleetctl.protocol.errors import (
    AuthenticationFailed,
    CertificateError,
    HostTimeout,
    HostUnreachable,
    PoolBroken,
    ProtocolError,
    ShellNotFound,
    TransportError,
)
from fleetctl.transport.lean_http import ConnectTimedOut

# ERROR_WSMAN_INVALID_SELECTORS: Windows' answer for a ShellId it does not have (expired by IdleTimeout, deleted,
# or the WinRM service restarted).
SHELL_NOT_FOUND_FAULT = "2150858843"
# Other WS-Management fault codes that mean the remote shell (our RunspacePool) was closed.
_SHELL_GONE_FAULTS = {"2150858754", "2150858802"}


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps: __cause__, __context__, urllib3's `.reason`, exception args."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        nested += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        stack.extend(n for n in reversed(nested) if isinstance(n, BaseException))


def _find(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    return next((c for c in causes(exc) if isinstance(c, kind)), None)


def _spnego_error_types() -> tuple[type[BaseException], ...]:
    try:
        from spnego.exceptions import SpnegoError
    except ImportError:  # pragma: no cover - pyspnego is a pypsrp dependency
        return ()
    return (SpnegoError,)


def map_exception(exc: BaseException, settings: ConnectionSettings) -> TransportError:
    """The typed error for a failure talking to `settings`' host; unknown failures become a plain TransportError."""
    host = settings.host_name
    where = f"{settings.address}:{settings.port}"

    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, AuthenticationError) or (isinstance(exc, WinRMTransportError) and exc.code == 401):
        who = f"user '{settings.user}'" if settings.user else "the current credentials"
        return AuthenticationFailed(
            f"authentication failed for {who} with {settings.auth} at {where} (HTTP 401); "
            f"check {settings.user_var}/{settings.password_var} and {settings.auth_var}", host=host)
    spnego_errors = _spnego_error_types()
    if spnego_errors and _find(exc, spnego_errors) is not None:
        return AuthenticationFailed(
            f"authentication with {settings.auth} could not be set up for {where}: {_find(exc, spnego_errors)}",
            host=host)
    if isinstance(exc, WinRMTransportError):
        code = int(exc.code)
        if code >= 500:
            return TransportError(f"WinRM at {where} answered HTTP {code}", host=host, transient=True)
        return TransportError(f"WinRM at {where} answered HTTP {code}; is this a WinRM endpoint?", host=host)
    if isinstance(exc, WSManFaultError):
        fault = str(exc.code or "")
        reason = (exc.reason or "no reason given").strip()
        if fault == SHELL_NOT_FOUND_FAULT:
            return ShellNotFound(f"the host no longer has this PowerShell session (WS-Man fault {fault}, shell not "
                                 "found: WinRM deletes a shell left idle for its IdleTimeout, and all of them when "
                                 "the WinRM service restarts)", host=host)
        if fault in _SHELL_GONE_FAULTS:
            return PoolBroken(f"the remote PowerShell session was closed by the host (WS-Man fault {fault}: "
                              f"{reason}); run the command again", host=host)
        return PoolBroken(f"WS-Management fault {fault or '?'} from {where}: {reason}", host=host)
    if isinstance(exc, (InvalidRunspacePoolStateError, InvalidPipelineStateError)):
        return PoolBroken(f"the remote PowerShell session is broken ({exc}); run the command again", host=host)

    if isinstance(exc, requests.exceptions.SSLError) or _find(exc, ssl.SSLError) is not None:
        verify = _find(exc, ssl.SSLCertVerificationError)
        if verify is not None:
            detail = getattr(verify, "verify_message", None) or str(verify)
            hint = ("set fleet_ca_bundle to the CA that signed it" if settings.ca_bundle is None
                    else f"it is not signed by the CA in {settings.ca_bundle}")
            return CertificateError(f"TLS certificate of {where} failed verification ({detail}); {hint}",
                                    host=host)
        return CertificateError(f"TLS handshake with {where} failed ({_leaf(exc)}); is fleet_scheme right?",
                                host=host)
    if isinstance(exc, requests.exceptions.ConnectTimeout) or _find(exc, ConnectTimedOut) is not None:
        return HostTimeout(f"connecting to {where} timed out after {settings.connect_timeout:g}s", host=host)
    if isinstance(exc, (requests.exceptions.ReadTimeout, socket.timeout)):
        return HostTimeout(f"{where} did not answer within {settings.read_timeout}s", host=host)
    if isinstance(exc, (requests.exceptions.ConnectionError, OSError)):
        if _find(exc, socket.gaierror) is not None:
            return HostUnreachable(f"cannot resolve host name '{settings.address}' (DNS); check fleet_host",
                                   host=host, transient=False)
        if _find(exc, ConnectionRefusedError) is not None or _errno(exc) == errno.ECONNREFUSED:
            return HostUnreachable(f"connection refused at {where}; is WinRM listening on that port?",
                                   host=host, transient=True)
        if _find(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) is not None:
            return HostUnreachable(f"connection to {where} was reset", host=host, transient=True)
        if _find(exc, TimeoutError) is not None:
            return HostTimeout(f"connecting to {where} timed out", host=host)
        return HostUnreachable(f"cannot reach {where}: {_leaf(exc)}", host=host, transient=True)
    if isinstance(exc, http.client.HTTPException):
        # A status line or headers that are not HTTP, or a body shorter than its Content-Length.
        return ProtocolError(f"garbled HTTP answer from {where} ({type(exc).__name__}); is this a WinRM "
                             "endpoint?", host=host)
    if isinstance(exc, WinRMError):
        return ProtocolError(f"unexpected WinRM answer from {where}: {exc}", host=host)
    return TransportError(f"{type(exc).__name__} talking to {where}: {exc}", host=host)


def _errno(exc: BaseException) -> int | None:
    return next((c.errno for c in causes(exc) if isinstance(c, OSError) and c.errno), None)


def _leaf(exc: BaseException) -> str:
    """The innermost cause's message: the useful part of urllib3's long wrapped messages."""
    last = exc
    for cause in causes(exc):
        last = cause
    return str(last) or type(last).__name__
