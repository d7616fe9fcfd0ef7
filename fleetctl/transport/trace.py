"""`-vv`: the transport level on the `fleetctl.transport` logger (DEBUG) — each WS-Man round trip (its action,
HTTP status, duration, bytes), each new TCP+TLS connection, authentication legs, retries and pool reopens.

Only names, numbers and statuses are logged: never a message body, a header value or a parameter value (a
round trip's action comes from its `wsa:Action`, an authentication leg shows only the scheme the host offered).
Every function here is a no-op unless `tracing()`; the WinRM transport calls them in a few marked lines, and a
transport that does its own HTTP calls `round_trip` and `connected` where it sends and connects.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying

log = logging.getLogger("fleetctl.transport")
T = TypeVar("T")
# The action URI sits in the SOAP header, before the body: the first few KiB are enough to find it.
_ACTION = re.compile(rb"<(?:[A-Za-z0-9]+:)?Action[^>]*>\s*([^<\s]+)\s*<")
_HEAD = 4096


def tracing() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def round_trip(host: str, action: str, status: int | str, seconds: float, sent: int | None = None,
               received: int | None = None, note: str = "") -> None:
    if tracing():
        sizes = f"  sent {_size(sent)}, got {_size(received)}" if sent is not None else ""
        log.debug("%s    wsman %s  %s  %.1f ms%s%s", host, action, status, seconds * 1000, sizes,
                  f"  ({note})" if note else "")


def connected(host: str, where: str, seconds: float, tls: bool, error: BaseException | None = None) -> None:
    if tracing():
        what = "TCP+TLS connect" if tls else "TCP connect"
        result = f"failed ({type(error).__name__})" if error is not None else "ok"
        log.debug("%s    %s %s  %.1f ms  %s", host, what, where, seconds * 1000, result)


def pool_opened(host: str, started: float, calls: int, error: BaseException | None = None) -> None:
    """A RunspacePool opened and the FleetNode module loaded (plus `calls` operations in the same pipeline)."""
    if tracing():
        result = f"failed ({type(error).__name__})" if error is not None else "ok"
        extra = f" + {calls} call(s)" if calls else ""
        log.debug("%s    open pool + load module%s  %.1f ms  %s", host, extra, (time.monotonic() - started) * 1000,
                  result)


def pool_reopened(host: str, why: str) -> None:
    if tracing():
        log.debug("%s    pool reopened: %s", host, why)


def retries(policy: Retrying, host: str, what: str) -> Retrying:
    """`policy` logging each retry (attempt, the error that caused it, the wait) when tracing; else itself."""
    if not tracing():
        return policy

    def before_sleep(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        reason = getattr(failure, "reason", None) or type(failure).__name__
        log.debug("%s    retry %s: attempt %d failed (%s: %s); next in %.1f s", host, what, state.attempt_number,
                  type(failure).__name__, reason, wait)

    return policy.copy(before_sleep=before_sleep)


# -- requests (pypsrp's HTTP layer) ------------------------------------------------------------------------------

def trace_requests_session(session: Any, host: str) -> None:
    """Log every request `session`'s adapters send (WS-Man round trips and NTLM/Negotiate legs alike: an auth
    handler re-sends through the adapter) and every connection their pools open. Only when tracing."""
    if not tracing():
        return
    for adapter in {id(a): a for a in session.adapters.values()}.values():
        adapter.send = _timed_send(adapter.send, host)
        manager = adapter.poolmanager
        classes = dict(manager.pool_classes_by_scheme)
        for scheme, pool_cls in classes.items():
            classes[scheme] = _after(pool_cls, functools.partial(_time_connections, host=host, tls=scheme == "https"))
        manager.pool_classes_by_scheme = classes


def _timed_send(send: Callable[..., Any], host: str) -> Callable[..., Any]:
    @functools.wraps(send)
    def timed(request: Any, *args: Any, **kwargs: Any) -> Any:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8", "replace")
        action = action_of(body)
        started = time.monotonic()
        try:
            response = send(request, *args, **kwargs)
        except Exception as err:
            round_trip(host, action, f"failed ({type(err).__name__})", time.monotonic() - started, len(body))
            raise
        length = response.headers.get("Content-Length")
        round_trip(host, action, f"HTTP {response.status_code}", time.monotonic() - started, len(body),
                   int(length) if length and length.isdigit() else None,
                   auth_note(response.status_code, response.headers.get("WWW-Authenticate", "")))
        return response

    return timed


def action_of(body: bytes) -> str:
    """A WS-Man message's action (`Create`, `Command`, `Receive`...), from its header; never anything else of it."""
    if not body:
        return "(empty auth request)"
    match = _ACTION.search(body[:_HEAD])
    if match is None:
        return "(encrypted message)"
    return match.group(1).decode("ascii", "replace").rsplit("/", 1)[-1]


def auth_note(status: int, offered_header: str) -> str:
    """For a 401, "authentication leg" and the scheme the host offers (only the header's first word: the rest is
    the host's challenge token); else nothing."""
    if status != 401:
        return ""
    offered = offered_header.split(" ", 1)[0].rstrip(",")
    return f"authentication leg{', host offers ' + offered if offered else ''}"


def _time_connections(pool: Any, *, host: str, tls: bool) -> None:
    pool.ConnectionCls = _after(pool.ConnectionCls, functools.partial(_time_connect, host=host, tls=tls))


def _time_connect(connection: Any, *, host: str, tls: bool) -> None:
    connect = connection.connect

    @functools.wraps(connect)
    def timed() -> Any:
        started = time.monotonic()
        where = f"{getattr(connection, 'host', '?')}:{getattr(connection, 'port', '?')}"
        try:
            result = connect()
        except Exception as err:
            connected(host, where, time.monotonic() - started, tls, err)
            raise
        connected(host, where, time.monotonic() - started, tls)
        return result

    connection.connect = timed


def _after(factory: Callable[..., T], then: Callable[[T], None]) -> Callable[..., T]:
    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> T:
        made = factory(*args, **kwargs)
        then(made)
        return made

    return make


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n} B" if n < 10_000 else f"{n / 1024:.0f} KiB"
