"""Named tenacity retry policies for talking to hosts: transient network failures only, never auth or TLS."""

from __future__ import annotations

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from fleetctl.protocol.errors import ShellNotFound, TransportError

DEFAULT_ATTEMPTS = 3


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may help: refused, reset, timeout, HTTP 5xx. Auth, TLS, DNS and node errors: no."""
    return isinstance(exc, TransportError) and exc.transient


def retry_transient_io(
    attempts: int = DEFAULT_ATTEMPTS,
    wait_initial: float = 0.5,
    wait_max: float = 5.0,
) -> Retrying:
    """A policy retrying transient transport errors (tenacity keeps a run's state per thread: one policy serves
    one caller's calls one after the other, never two nested runs of itself).

    Exponential backoff from `wait_initial` capped at `wait_max`; the last error is re-raised unchanged so the
    user sees the real reason rather than a `RetryError`.
    """
    return Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=wait_initial, max=wait_max),
        reraise=True,
    )


def is_expired_before_call(exc: BaseException) -> bool:
    """The host had dropped the pool's shell before the call reached it: nothing of the call ran."""
    return isinstance(exc, ShellNotFound) and exc.before_call


def reopen_expired_shell() -> Retrying:
    """A policy sending a call once more, on a new pool, when its Command found the pool's shell gone
    (WinRM's idle timeout). Safe for every operation, idempotent or not: the first attempt never ran. The
    caller opens the new pool; an authentication failure while doing so is raised, never retried."""
    return Retrying(retry=retry_if_exception(is_expired_before_call), stop=stop_after_attempt(2), reraise=True)
