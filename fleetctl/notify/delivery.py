"""Sending one notification: an HTTPS (or HTTP) POST of a JSON body, retried by a named tenacity policy within
the webhook's timeout, certificates validated (the system's CAs, or the webhook's `ca_bundle`).

The timeout is the whole budget of a delivery, retries and waits included: no attempt starts after it, and each
attempt's socket timeout is what is left of it. Reasons never name the URL (it is the credential of a Slack or
Teams webhook) and go through redaction.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
)

from fleetctl.config.redaction import MASK, redact

USER_AGENT = "fleetctl-notify/1"
# An attempt needs at least this long to be worth starting.
MIN_ATTEMPT_SECONDS = 0.05


class WebhookError(Exception):
    """One failed attempt; `transient` when trying again may help (refused, reset, timeout, 5xx, 408, 429)."""

    def __init__(self, reason: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = redact(reason)
        self.transient = transient
        self.status = status


@dataclass(frozen=True)
class Delivery:
    """How one notification to one webhook went."""

    index: int  # position in notify.webhooks
    format: str
    event: str
    ok: bool
    attempts: int
    seconds: float
    status: int | None = None  # the receiver's last HTTP status, if it answered
    error: str | None = None

    @property
    def name(self) -> str:
        return f"notify.webhooks[{self.index}] ({self.format})"

    def describe(self) -> str:
        if self.ok:
            return f"{self.name}: '{self.event}' delivered (HTTP {self.status}, {self.attempts} attempt(s))"
        return (f"{self.name}: '{self.event}' notification not delivered after {self.attempts} attempt(s) in "
                f"{self.seconds:.1f}s: {self.error}")

    def to_json(self) -> dict[str, Any]:
        return {"webhook": self.index, "format": self.format, "event": self.event, "delivered": self.ok,
                "attempts": self.attempts, "seconds": round(self.seconds, 3), "status": self.status,
                "error": self.error}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without its body; a webhook that redirects is misconfigured.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Certificate and host name validation always on; `ca_bundle` replaces the system's CAs."""
    return ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()


def post_json(url: str, body: dict[str, Any], *, headers: dict[str, str], timeout: float,
              context: ssl.SSLContext) -> int:
    """POST once; the HTTP status of a 2xx answer, else WebhookError."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
    opener = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout) as answer:
            answer.read(65536)
            return int(answer.status)
    except urllib.error.HTTPError as err:
        code = err.code
        transient = code >= 500 or code in (408, 429)
        hint = " (redirects are not followed: use the final URL)" if 300 <= code < 400 else ""
        raise WebhookError(f"HTTP {code} {err.reason}{hint}", transient=transient, status=code) from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise WebhookError(f"TLS certificate not trusted: {reason.verify_message} (give the webhook a "
                               "ca_bundle)", transient=False) from None
        if isinstance(reason, socket.gaierror):
            raise WebhookError(f"host name not found: {reason.strerror}", transient=False) from None
        if isinstance(reason, TimeoutError):
            raise WebhookError(f"no answer within {timeout:.1f}s", transient=True) from None
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
        raise WebhookError(f"cannot connect: {text}", transient=True) from None
    except TimeoutError:
        raise WebhookError(f"no answer within {timeout:.1f}s", transient=True) from None
    except (ConnectionError, OSError, ValueError) as err:
        raise WebhookError(f"{type(err).__name__}: {err}", transient=isinstance(err, ConnectionError)) from None


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, WebhookError) and exc.transient


def retry_webhook_delivery(attempts: int, budget: float) -> Retrying:
    """A fresh policy for one delivery: transient failures only, at most `attempts` tries, no try started once
    `budget` seconds have passed (waits are cut to what is left)."""
    started = time.monotonic()
    backoff = wait_exponential(multiplier=0.25, max=4)

    def wait(state: RetryCallState) -> float:
        left = budget - (time.monotonic() - started) - MIN_ATTEMPT_SECONDS
        return max(0.0, min(backoff(state), left))

    return Retrying(retry=retry_if_exception(_is_transient),
                    stop=stop_after_attempt(attempts) | stop_before_delay(budget - MIN_ATTEMPT_SECONDS),
                    wait=wait, reraise=True)


def deliver(url: str, body: dict[str, Any], *, index: int, fmt: str, event: str, headers: dict[str, str],
            timeout: float, attempts: int, context: ssl.SSLContext) -> Delivery:
    """Send `body`, retrying within `timeout`; never raises for a failed delivery."""
    started = time.monotonic()
    deadline = started + timeout
    tries = 0
    status: int | None = None

    def attempt() -> int:
        nonlocal tries
        tries += 1
        left = deadline - time.monotonic()
        if left < MIN_ATTEMPT_SECONDS:
            raise WebhookError(f"no time left of the {timeout:.1f}s timeout", transient=False)
        return post_json(url, body, headers=headers, timeout=left, context=context)

    try:
        status = retry_webhook_delivery(attempts, timeout)(attempt)
    except WebhookError as err:
        return Delivery(index, fmt, event, False, tries, time.monotonic() - started, err.status,
                        _without(url, err.reason))
    except Exception as err:  # noqa: BLE001 - a notification must never break the run
        return Delivery(index, fmt, event, False, tries, time.monotonic() - started, None,
                        _without(url, f"{type(err).__name__}: {err}"))
    return Delivery(index, fmt, event, True, tries, time.monotonic() - started, status)


def _without(url: str, text: str) -> str:
    # The URL is registered as a secret when the playbook is read; this also covers a Notifier built in code.
    return redact(text.replace(url, MASK))
