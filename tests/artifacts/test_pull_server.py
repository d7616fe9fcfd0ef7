"""The pull server serves only the artifacts it was given, only to the per-deploy token, and its token is a secret."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fleetctl.artifacts.pull_server import PullServer
from fleetctl.config.redaction import redact

NET = os.environ.get("FLEETCTL_TEST_TRANSFER_NET", "127.0.31")


def get(url: str, token: str | None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_serves_given_artifacts_to_the_token_only(tmp_path: Path) -> None:
    (tmp_path / "a.exe").write_bytes(b"MZ" + b"x" * 100_000)
    with PullServer(f"{NET}.201") as server:
        server.add(tmp_path / "a.exe", "AB" * 32)
        url = server.url_for("ab" * 32)
        assert url.startswith(f"http://{NET}.201:")
        assert get(url, server.token) == (200, (tmp_path / "a.exe").read_bytes())
        assert get(url, server.token, "HEAD")[0] == 200
        assert get(url, None)[0] == 401
        assert get(url, server.token + "x")[0] == 401
        assert get(server.url_for("cd" * 32), server.token)[0] == 404
        assert get(url.replace("/artifacts/", "/../etc/"), server.token)[0] == 404
        assert server.requests_served == 1  # HEAD sends no body and does not count
    assert redact(f"token {server.token}") == "token ********"


def test_two_servers_have_different_tokens_and_stop_cleanly() -> None:
    first, second = PullServer(f"{NET}.201").start(), PullServer(f"{NET}.201").start()
    try:
        assert first.token != second.token and len(first.token) >= 32
    finally:
        first.stop()
        second.stop()
    with pytest.raises(OSError):
        get(first.url_for("ab" * 32), first.token)
