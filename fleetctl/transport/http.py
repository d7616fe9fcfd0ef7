"""Controller-side HTTP: the one place fleetctl itself sends HTTP requests — a health probe from the controller
(`fleetctl.node.probe`) and an artifact download by URL (`fleetctl.artifacts.collect`). TLS certificates are
checked (the standard library's default context); an HTTP error status is an answer, not an exception.

Proxies: a health URL names a node's own address, so probes never use the environment's proxies; a download may
(an artifact server outside the network is what proxies are for).
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from fleetctl.config.redaction import redact

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_WITH_PROXIES = urllib.request.build_opener()


@dataclass(frozen=True)
class HttpAnswer:
    """What a GET got: a status and up to `limit` bytes of body, or `error` (no answer) and how long it took."""

    status: int | None
    body: bytes
    elapsed_ms: int
    error: str | None = None


class DownloadFailed(Exception):
    """A download got no answer, or an error status; `reason` is one redacted line."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def get(url: str, timeout: float, *, limit: int) -> HttpAnswer:
    """GET `url` directly (no proxies) with a timeout; never raises for what the network or the server does."""
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        with _DIRECT.open(urllib.request.Request(url, method="GET"), timeout=timeout) as response:
            return HttpAnswer(response.status, response.read(limit), elapsed())
    except urllib.error.HTTPError as err:
        return HttpAnswer(err.code, err.read(limit) if err.fp else b"", elapsed())
    except urllib.error.URLError as err:
        if isinstance(err.reason, (socket.timeout, TimeoutError)):
            return HttpAnswer(None, b"", elapsed(), f"timeout after {timeout:g}s")
        return HttpAnswer(None, b"", elapsed(), os_error_text(err.reason))
    except TimeoutError:
        return HttpAnswer(None, b"", elapsed(), f"timeout after {timeout:g}s")
    except (OSError, ValueError) as err:  # reset mid-answer, malformed URL
        return HttpAnswer(None, b"", elapsed(), os_error_text(err))


def download(url: str, write: Callable[[bytes], object], timeout: float, *, chunk: int = 1 << 20,
             token: str | None = None, ca_pem: str | None = None, max_bytes: int | None = None) -> int:
    """Stream `url` (http, https or file) to `write`, chunk by chunk, and return how many bytes came; DownloadFailed
    says why it could not. `token` goes as a bearer token and never on to a redirect's target; `ca_pem` replaces the
    system's trust store for https; past `max_bytes` the download stops (the caller sees more than it allowed)."""
    request = urllib.request.Request(url)
    if token:
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    opener = _WITH_PROXIES
    if ca_pem:
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=ca_pem)))
    received = 0
    try:
        with opener.open(request, timeout=timeout) as response:
            while data := response.read(chunk):
                write(data)
                received += len(data)
                if max_bytes is not None and received > max_bytes:
                    break
    except urllib.error.HTTPError as err:
        raise DownloadFailed(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadFailed(redact(str(reason))) from None
    return received


def os_error_text(err: object) -> str:
    """A network error in a few lowercase words."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, ConnectionResetError):
        return "connection reset"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err)
