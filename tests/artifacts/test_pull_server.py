"""The pull server serves only the artifacts it was given, only to the per-deploy token, over HTTPS with a
certificate from its own per-server CA (which clients must pin), and its token is a secret."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import stat
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from fleetctl import pki
from fleetctl.artifacts.pull_server import PullServer
from fleetctl.config.redaction import redact

NET = os.environ.get("FLEETCTL_TEST_TRANSFER_NET", "127.0.31")


def get(url: str, token: str | None, method: str = "GET", ca_pem: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def served_once(server: PullServer) -> None:
    deadline = time.monotonic() + 5
    while server.requests_served < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.requests_served == 1


def test_https_serves_given_artifacts_to_the_token_only(tmp_path: Path) -> None:
    (tmp_path / "a.exe").write_bytes(b"MZ" + b"x" * 100_000)
    with PullServer(f"{NET}.201") as server:
        server.add(tmp_path / "a.exe", "AB" * 32)
        url = server.url_for("ab" * 32)
        assert url.startswith(f"https://{NET}.201:") and server.ca_pem
        ca = server.ca_pem
        assert get(url, server.token, ca_pem=ca) == (200, (tmp_path / "a.exe").read_bytes())
        assert get(url, server.token, "HEAD", ca_pem=ca)[0] == 200
        assert get(url, None, ca_pem=ca)[0] == 401
        assert get(url, server.token + "x", ca_pem=ca)[0] == 401
        assert get(server.url_for("cd" * 32), server.token, ca_pem=ca)[0] == 404
        assert get(url.replace("/artifacts/", "/../etc/"), server.token, ca_pem=ca)[0] == 404
        # HEAD sends no body and does not count; the count moves once the server has written the last byte.
        served_once(server)
    assert redact(f"token {server.token}") == "token ********"


def test_a_client_that_does_not_pin_the_ca_refuses_the_server(tmp_path: Path) -> None:
    (tmp_path / "a.exe").write_bytes(b"MZ" + b"y" * 1000)
    other_ca = pki.new_ca("someone else", "elsewhere").cert_pem.decode()
    with PullServer(f"{NET}.201") as server:
        server.add(tmp_path / "a.exe", "ab" * 32)
        url = server.url_for("ab" * 32)
        for ca_pem in (None, other_ca):  # the system store, then another CA: neither signed this certificate
            with pytest.raises(urllib.error.URLError) as info:
                get(url, server.token, ca_pem=ca_pem)
            assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
        # Still serving after the refused handshakes: a failed client harms no one else.
        assert get(url, server.token, ca_pem=server.ca_pem)[0] == 200
        served_once(server)


def test_each_server_has_its_own_ca_and_a_certificate_for_its_advertised_name() -> None:
    with PullServer(f"{NET}.202", advertise="pull.example.test") as first, PullServer(f"{NET}.202") as second:
        assert first.ca_pem != second.ca_pem and first.token != second.token
        assert first.url_for("ab" * 32).startswith("https://pull.example.test:")
        pem = ssl.get_server_certificate((f"{NET}.202", first.port))
        sans = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName)
        assert "pull.example.test" in sans.value.get_values_for_type(x509.DNSName)
        assert [str(a) for a in sans.value.get_values_for_type(x509.IPAddress)] == [f"{NET}.202"]
        ca = x509.load_pem_x509_certificate(first.ca_pem.encode())
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_key_is_written_privately_and_removed_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    seen: list[tuple[int, int]] = []
    real = pki.server_ssl_context

    def spy(cert_path: Path, key_path: Path) -> ssl.SSLContext:
        seen.append((stat.S_IMODE(key_path.parent.stat().st_mode), stat.S_IMODE(key_path.stat().st_mode)))
        return real(cert_path, key_path)

    monkeypatch.setattr(pki, "server_ssl_context", spy)
    with PullServer(f"{NET}.203") as server:
        assert seen == [(0o700, 0o600)]
        assert list(private_tmp.iterdir()) == []  # loaded into the TLS context; no copy left on disk
        assert server.scheme == "https"


def test_a_silent_client_does_not_stall_the_others(tmp_path: Path) -> None:
    (tmp_path / "a.exe").write_bytes(b"MZ" * 500)
    with PullServer(f"{NET}.204") as server, socket.create_connection((f"{NET}.204", server.port)):
        # That connection never starts its handshake; handshakes run per connection, so this one is served.
        server.add(tmp_path / "a.exe", "ab" * 32)
        assert get(server.url_for("ab" * 32), server.token, ca_pem=server.ca_pem)[0] == 200


def test_the_token_never_reaches_logs_or_errors(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "a.exe").write_bytes(b"MZ" * 10)
    errors: list[str] = []
    with PullServer(f"{NET}.205") as server:
        server.add(tmp_path / "a.exe", "ab" * 32)
        url = server.url_for("ab" * 32)
        get(url, server.token, ca_pem=server.ca_pem)
        get(url, "wrong", ca_pem=server.ca_pem)
        for ca_pem in (None, server.ca_pem):
            try:
                get(url.replace("https:", "http:"), server.token, ca_pem=ca_pem)  # plain text to a TLS port
            except (urllib.error.URLError, OSError) as err:
                errors.append(repr(err))
            try:
                get(url, server.token)  # untrusted
            except urllib.error.URLError as err:
                errors.append(repr(err))
        token = server.token
    out, err = capfd.readouterr()
    assert errors and all(token not in text for text in [out, err, caplog.text, *errors])


def test_plain_http_only_when_asked_for(tmp_path: Path) -> None:
    (tmp_path / "a.exe").write_bytes(b"MZ" * 10)
    with PullServer(f"{NET}.206", plain_http=True) as server:
        server.add(tmp_path / "a.exe", "ab" * 32)
        assert server.url_for("ab" * 32).startswith("http://") and server.ca_pem is None
        assert get(server.url_for("ab" * 32), server.token)[0] == 200


def test_two_servers_stop_cleanly() -> None:
    first, second = PullServer(f"{NET}.201").start(), PullServer(f"{NET}.201").start()
    try:
        assert first.token != second.token and len(first.token) >= 32
    finally:
        first.stop()
        second.stop()
    with pytest.raises(OSError):
        get(first.url_for("ab" * 32), first.token, ca_pem=first.ca_pem)


def _pull_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fleetctl-pull")]


@pytest.mark.parametrize("plain_http", [False, True], ids=["https", "http"])
def test_300_idle_connections_cost_no_threads_and_time_out_while_a_download_works(tmp_path: Path,
                                                                                  plain_http: bool) -> None:
    """Issue 15, item 13: one thread per connection made 300 idle connections cost 197 threads."""
    (tmp_path / "a.exe").write_bytes(b"MZ" + os.urandom(2_000_000))
    before = len(threading.enumerate())
    with PullServer(f"{NET}.205", idle_timeout=3.0, plain_http=plain_http) as server:
        server.add(tmp_path / "a.exe", "ab" * 32)
        idle = [socket.create_connection((f"{NET}.205", server.port), timeout=10) for _ in range(300)]
        try:
            deadline = time.monotonic() + 5
            while server.open_connections < 300 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.open_connections == 300
            # A real transfer while they idle: served at once, by one of the bounded workers.
            started = time.monotonic()
            status, body = get(server.url_for("ab" * 32), server.token, ca_pem=None if plain_http else server.ca_pem)
            assert (status, body) == (200, (tmp_path / "a.exe").read_bytes())
            assert time.monotonic() - started < 2.5, "the download waited for the idle connections"
            threads = _pull_threads()
            assert len(threads) <= server.workers + 1, threads
            assert len(threading.enumerate()) - before <= server.workers + 1
            # The idle ones are closed by the server after idle_timeout: each reads end-of-stream.
            for conn in idle:
                assert conn.recv(1) == b""
            assert server.connections_timed_out >= 300
        finally:
            for conn in idle:
                conn.close()


def test_connections_beyond_the_cap_are_closed_at_accept(tmp_path: Path) -> None:
    (tmp_path / "a.exe").write_bytes(b"MZ" * 500)
    with PullServer(f"{NET}.206", max_connections=20, idle_timeout=30, plain_http=True) as server:
        server.add(tmp_path / "a.exe", "ab" * 32)
        held = [socket.create_connection((f"{NET}.206", server.port), timeout=10) for _ in range(20)]
        try:
            extra = socket.create_connection((f"{NET}.206", server.port), timeout=10)
            assert extra.recv(1) == b""  # closed by the server, not left hanging
            extra.close()
            assert server.connections_refused >= 1
        finally:
            for conn in held:
                conn.close()
        # Once they are gone, downloads work again.
        deadline = time.monotonic() + 5
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert get(server.url_for("ab" * 32), server.token)[0] == 200


def test_a_client_that_sends_a_byte_and_stalls_is_cut_off_and_frees_its_worker(tmp_path: Path) -> None:
    (tmp_path / "a.exe").write_bytes(b"MZ" * 500)
    with PullServer(f"{NET}.207", workers=2, plain_http=True, request_timeout=1.0) as server:
        server.add(tmp_path / "a.exe", "ab" * 32)
        stalled = [socket.create_connection((f"{NET}.207", server.port), timeout=30) for _ in range(2)]
        for conn in stalled:
            conn.sendall(b"G")  # wakes a worker, then never finishes its request line
        try:
            # Both workers wait on those; the request-read timeout frees them and the download goes through.
            assert get(server.url_for("ab" * 32), server.token)[0] == 200
        finally:
            for conn in stalled:
                conn.close()
