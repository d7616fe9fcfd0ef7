"""The retry policy: transient failures (refused, reset, timeout, 5xx) are retried, authentication,
certificate, DNS and node errors never; the last real error reaches the user, not tenacity's RetryError."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from fleetctl.config.connection import ConnectionSettings
from fleetctl.protocol.errors import (
    AuthenticationFailed,
    CertificateError,
    HostTimeout,
    HostUnreachable,
    NodeOperationError,
    PoolBroken,
    ShellNotFound,
    TransportError,
)
from fleetctl.transport.error_mapping import map_exception
from fleetctl.transport.retry import is_transient, retry_transient_io
from fleetctl.transport.winrm import WinRMTransport

SETTINGS = ConnectionSettings.from_hostvars("web01", {"fleet_host": "10.1.2.3", "fleet_auth": "ntlm",
                                                      "fleet_user": "u", "fleet_password": "pw-12345"})


@pytest.mark.parametrize("error, transient", [
    (HostUnreachable("refused", transient=True), True),
    (HostUnreachable("dns", transient=False), False),
    (HostTimeout("slow"), True),
    (TransportError("HTTP 503", transient=True), True),
    (AuthenticationFailed("401"), False),
    (CertificateError("bad cert"), False),
    (PoolBroken("gone"), False),
    (NodeOperationError("INTERNAL", "boom"), False),
    (ValueError("bug"), False),
])
def test_only_transient_errors_are_retried(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient
    calls = []

    def flaky() -> str:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        for attempt in retry_transient_io(attempts=3, wait_initial=0):
            with attempt:
                flaky()
    assert len(calls) == (3 if transient else 1)


def test_recovers_when_a_transient_error_goes_away() -> None:
    results: list[Any] = [HostUnreachable("reset", transient=True), HostTimeout("slow"), "ok"]

    def step() -> Any:
        item = results.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    for attempt in retry_transient_io(attempts=3, wait_initial=0):
        with attempt:
            value = step()
    assert value == "ok" and not results


@pytest.mark.parametrize("exc, kind, words", [
    (AuthenticationError("Failed to authenticate the user u with ntlm"), AuthenticationFailed, "user 'u'"),
    (WinRMTransportError("http", 401, ""), AuthenticationFailed, "HTTP 401"),
    (WinRMTransportError("http", 500, "<html/>"), TransportError, "HTTP 500"),
    (WinRMTransportError("http", 404, ""), TransportError, "is this a WinRM endpoint"),
    (WSManFaultError("2150858843", None, "The shell was not found", None, None, None), ShellNotFound,
     "no longer has this PowerShell session"),
    (WSManFaultError("2150858754", None, "The action is not supported", None, None, None), PoolBroken, "closed"),
    (requests.exceptions.ConnectTimeout("x"), HostTimeout, "connecting to 10.1.2.3:5986 timed out"),
    (requests.exceptions.ReadTimeout("x"), HostTimeout, "did not answer within"),
    (requests.exceptions.ConnectionError(ConnectionResetError(104, "reset")), HostUnreachable, "reset"),
])
def test_error_mapping(exc: Exception, kind: type[TransportError], words: str) -> None:
    mapped = map_exception(exc, SETTINGS)
    assert type(mapped) is kind and words in str(mapped)
    assert str(mapped).startswith("web01: ") and "pw-12345" not in str(mapped)
    assert mapped.transient == (kind is HostTimeout or "HTTP 500" in str(mapped) or "reset" in str(mapped))


def test_invoke_retries_transient_failures_and_reopens(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = WinRMTransport(SETTINGS, retry_attempts=3, retry_wait=0)
    opened: list[int] = []
    outcomes: list[Any] = [HostUnreachable("reset", transient=True), ['{"ok": true, "result": {"present": false}}']]

    def fake_open(self: WinRMTransport) -> None:
        opened.append(1)
        self._pool = object()  # type: ignore[assignment]

    def fake_run(self: WinRMTransport, *args: Any) -> Any:
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            self._pool = None  # what _run does on failure: forget the broken pool
            raise item
        return item

    monkeypatch.setattr(WinRMTransport, "_open_once", fake_open)
    monkeypatch.setattr(WinRMTransport, "_run", fake_run)
    assert transport.invoke("Test-FleetArtifact", {"Sha256": "ab"}) == {"present": False}
    assert len(opened) == 2  # the retry opened a fresh pool


def test_invoke_never_retries_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = WinRMTransport(SETTINGS, retry_attempts=5, retry_wait=0)
    attempts: list[int] = []

    def fake_open(self: WinRMTransport) -> None:
        attempts.append(1)
        raise AuthenticationFailed("401", host="web01")

    monkeypatch.setattr(WinRMTransport, "_open_once", fake_open)
    with pytest.raises(AuthenticationFailed):
        transport.invoke("Get-FleetFacts", {})
    assert len(attempts) == 1


def scripted(monkeypatch: pytest.MonkeyPatch, opens: list[Any], runs: list[Any]) -> dict[str, int]:
    """_open_once and _run replaced by scripts: each item an exception to raise or a value to return."""
    count = {"open": 0, "run": 0}

    def fake_open(self: WinRMTransport, calls: Any = ()) -> Any:
        count["open"] += 1
        item = opens.pop(0) if opens else None
        if isinstance(item, Exception):
            raise item
        self._pool = object()  # type: ignore[assignment]
        return item

    def fake_run(self: WinRMTransport, *args: Any) -> Any:
        count["run"] += 1
        item = runs.pop(0)
        if isinstance(item, Exception):
            self._pool = None  # what _failed does: forget the pool
            raise item
        return item

    monkeypatch.setattr(WinRMTransport, "_open_once", fake_open)
    monkeypatch.setattr(WinRMTransport, "_run", fake_run)
    return count


OK_DOC = ['{"ok": true, "result": {"present": false}}']


def test_a_call_that_found_its_shell_gone_is_sent_once_more_on_a_new_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = WinRMTransport(SETTINGS, retry_attempts=1, retry_wait=0)
    count = scripted(monkeypatch, [None, None], [ShellNotFound("gone", before_call=True), OK_DOC])
    assert transport.invoke("Test-FleetArtifact", {"Sha256": "ab"}) == {"present": False}
    assert count == {"open": 2, "run": 2}


def test_the_shell_retry_happens_once_only(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = WinRMTransport(SETTINGS, retry_attempts=3, retry_wait=0)
    count = scripted(monkeypatch, [], [ShellNotFound("gone", before_call=True)] * 2 + [OK_DOC])
    with pytest.raises(ShellNotFound):
        transport.invoke("Test-FleetArtifact", {"Sha256": "ab"})
    assert count["run"] == 2


def test_a_shell_lost_after_the_call_reached_the_host_is_not_resent(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = WinRMTransport(SETTINGS, retry_attempts=3, retry_wait=0)
    count = scripted(monkeypatch, [], [ShellNotFound("gone", before_call=False), OK_DOC])
    with pytest.raises(ShellNotFound):
        transport.invoke("Test-FleetArtifact", {"Sha256": "ab"})
    assert count["run"] == 1


def test_an_authentication_failure_while_reopening_is_raised_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = WinRMTransport(SETTINGS, retry_attempts=3, retry_wait=0)
    count = scripted(monkeypatch, [None, AuthenticationFailed("401", host="web01")],
                     [ShellNotFound("gone", before_call=True), OK_DOC])
    with pytest.raises(AuthenticationFailed):
        transport.invoke("Test-FleetArtifact", {"Sha256": "ab"})
    assert count == {"open": 2, "run": 1}


@pytest.mark.parametrize("text, seconds", [("PT7200.000S", 7200.0), ("PT0.500S", 0.5), ("P1DT2H", 93600.0),
                                           ("PT5M", 300.0), (None, None), ("", None), ("PT0S", None),
                                           ("soon", None)])
def test_idle_timeout_from_the_create_answer(text: str | None, seconds: float | None) -> None:
    from fleetctl.transport.winrm import idle_timeout_seconds

    assert idle_timeout_seconds(text) == seconds
