"""LabNode's protocol operations (other than services): binding, facts, locks, artifacts, releases, firewall,
scheduled tasks, the port proxy and logs. Called through `invoke`, exactly as the WinRM server calls them."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from node_kit import call, chunks, error, install, next_address, ok, push

from fleetctl.config.redaction import MASK, forget_secrets
from fleetctl.lab.backend import LabUnsupported
from fleetctl.lab.node import LabNode
from tests.support import free_port, wait_for

ROOT = "C:\\apps\\hello"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LabNode]:
    n = LabNode("lab-node01", next_address(), tmp_path / "lab-node01", capacity_bytes=10 * 1024**2)
    yield n
    n.close()


# ---- binding -------------------------------------------------------------------------------------------------
def test_anything_but_a_protocol_operation_is_refused_saying_the_lab_cannot_run_it(node: LabNode) -> None:
    with pytest.raises(LabUnsupported, match="cannot run 'Get-Process'.*real Windows"):
        node.invoke("Get-Process", {}, [])


def test_parameters_bind_case_insensitively_with_types_checked(node: LabNode) -> None:
    assert ok(node, "get-fleetfacts")["lab"] is True
    err = error(node, "Lock-FleetApp", "INVALID_ARGUMENT", App="a", Owner="o", DeployId="d", TtlSeconds="soon")
    assert "TtlSeconds expects int" in err["message"]
    assert "missing required" in error(node, "Lock-FleetApp", "INVALID_ARGUMENT", App="a")["message"]
    assert "cannot be found" in error(node, "Get-FleetFacts", "INVALID_ARGUMENT", Bogus=1)["message"]
    assert ok(node, "lock-fleetapp", app="a", owner="o", deployid="d", ttlseconds="60")["lock"]["deploy_id"] == "d"


def test_a_path_escaping_app_name_is_refused(node: LabNode) -> None:
    error(node, "Get-FleetState", "INVALID_ARGUMENT", App="..\\..\\x", Root=ROOT)


# ---- facts and clock -----------------------------------------------------------------------------------------
def test_facts_say_lab_and_report_free_space_and_the_skewed_clock(node: LabNode) -> None:
    facts = ok(node, "Get-FleetFacts")
    assert facts["lab"] is True and "lab" in facts["os_name"] and facts["hostname"] == "LAB-NODE01"
    assert 0 < facts["drives"]["C"] <= 10 * 1024**2
    from datetime import datetime

    def skew() -> float:
        at = datetime.fromisoformat(ok(node, "Get-FleetFacts")["utc_now"])
        return (at - datetime.now(UTC)).total_seconds()

    assert abs(skew()) < 5
    node.faults.clock_skew_s = -600
    assert -605 < skew() < -595


# ---- locks ---------------------------------------------------------------------------------------------------
def test_lock_is_exclusive_reentrant_taken_over_only_by_name_and_expires_by_the_node_clock(node: LabNode) -> None:
    first = ok(node, "Lock-FleetApp", App="hello", Owner="ann@ci", DeployId="d1", TtlSeconds=60, Process="m/b/1/2/3")
    assert first["taken_over"] is None and first["lock"]["process"] == "m/b/1/2/3"
    again = ok(node, "Lock-FleetApp", App="hello", Owner="ann@ci", DeployId="d1", TtlSeconds=60)
    assert again["lock"]["acquired_at"] == first["lock"]["acquired_at"]
    held = error(node, "Lock-FleetApp", "LOCK_HELD", App="hello", Owner="bob@laptop", DeployId="d2", TtlSeconds=60)
    assert held["details"]["holder"]["owner"] == "ann@ci" and held["details"]["holder"]["expired"] is False
    error(node, "Unlock-FleetApp", "LOCK_NOT_OWNED", App="hello", DeployId="d2")
    # TakeOver must name the holder exactly: a stale judgement (another deploy id) takes nothing.
    error(node, "Lock-FleetApp", "LOCK_HELD", App="hello", Owner="bob@laptop", DeployId="d2", TtlSeconds=60,
          TakeOver="d0")
    taken = ok(node, "Lock-FleetApp", App="hello", Owner="bob@laptop", DeployId="d2", TtlSeconds=60, TakeOver="d1")
    assert taken["taken_over"]["deploy_id"] == "d1"
    error(node, "Update-FleetAppLock", "LOCK_NOT_OWNED", App="hello", DeployId="d1", TtlSeconds=60)  # d1 lost it
    renewed = ok(node, "Update-FleetAppLock", App="hello", DeployId="d2", TtlSeconds=90)["lock"]
    assert renewed["ttl_seconds"] == 90 and renewed["renewed_at"] >= taken["lock"]["renewed_at"]
    node.faults.clock_skew_s = 120  # the node's clock moves past the TTL: the lock has expired
    assert ok(node, "Get-FleetState", App="hello", Root=ROOT)["lock"]["expired"] is True
    ok(node, "Lock-FleetApp", App="hello", Owner="cy@ci", DeployId="d3", TtlSeconds=60)
    assert ok(node, "Unlock-FleetApp", App="hello", DeployId="d3") == {"released": True}
    assert ok(node, "Unlock-FleetApp", App="hello", DeployId="d3") == {"released": False}
    error(node, "Update-FleetAppLock", "LOCK_NOT_OWNED", App="hello", DeployId="d3", TtlSeconds=60)  # never re-takes
    assert ok(node, "Get-FleetState", App="hello", Root=ROOT)["lock"] is None


def test_a_change_freeze_is_never_taken_over(node: LabNode) -> None:
    ok(node, "Lock-FleetApp", App="hello", Owner="ann@ci", DeployId="freeze-1", TtlSeconds=60, Reason="audit")
    held = error(node, "Lock-FleetApp", "LOCK_HELD", App="hello", Owner="bob@ci", DeployId="d2", TtlSeconds=60,
                 TakeOver="freeze-1")
    assert held["details"]["holder"]["reason"] == "audit" and "frozen" in held["message"]
    assert ok(node, "Unlock-FleetApp", App="hello", DeployId="freeze-1") == {"released": True}


# ---- artifacts -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [True, False])
def test_receive_artifact_verifies_and_caches_it(node: LabNode, compress: bool) -> None:
    data = b"artifact bytes " * 500
    sha = hashlib.sha256(data).hexdigest()
    assert ok(node, "Test-FleetArtifact", Sha256=sha)["present"] is False
    result = ok(node, "Receive-FleetArtifact", chunks(data, compress), Sha256=sha, Size=len(data),
                Compression="gzip" if compress else "none")
    assert result["size"] == len(data) and result["path"].endswith(sha)
    present = ok(node, "Test-FleetArtifact", Sha256=sha)
    assert present == {"present": True, "path": result["path"], "size": len(data)}
    assert node.sandbox.read_bytes(result["path"]) == data
    assert node.counters["artifact_bytes_stored"] == len(data)


def test_a_corrupt_artifact_is_refused_and_nothing_is_kept(node: LabNode) -> None:
    data = b"good bytes" * 100
    sha = hashlib.sha256(data).hexdigest()
    doc = call(node, "Receive-FleetArtifact", chunks(data[:-1] + b"X"), Sha256=sha, Size=len(data))
    assert doc["error"]["code"] == "CHECKSUM_MISMATCH"
    cache = node.sandbox.resolve("C:\\ProgramData\\fleetctl\\artifacts")
    assert list(cache.iterdir()) == []
    assert node.counters["artifact_bytes_stored"] == 0


def test_an_artifact_larger_than_the_free_space_fails_with_disk_full(node: LabNode) -> None:
    data = b"x" * (11 * 1024**2)
    sha = hashlib.sha256(data).hexdigest()
    assert call(node, "Receive-FleetArtifact", chunks(data, size=1 << 20), Sha256=sha,
                Size=len(data))["error"]["code"] == "DISK_FULL"


@pytest.fixture
def artifact_server() -> Iterator[tuple[str, bytes, list[str]]]:
    data = b"downloaded artifact" * 300
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != "Bearer tok-SECRET-123":
                self.send_error(401)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    address = next_address()
    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{address}:{server.server_address[1]}/a.exe", data, seen
    server.shutdown()
    server.server_close()


def test_pull_mode_downloads_with_the_token_and_never_shows_it(node: LabNode, artifact_server: Any) -> None:
    forget_secrets()
    url, data, seen = artifact_server
    sha = hashlib.sha256(data).hexdigest()
    result = ok(node, "Save-FleetArtifactFromUrl", Url=url, Sha256=sha, Size=len(data), Token="tok-SECRET-123")
    assert result["received"] == len(data) and seen == ["Bearer tok-SECRET-123"]
    assert node.sandbox.read_bytes(result["path"]) == data
    other = hashlib.sha256(b"other").hexdigest()
    failed = call(node, "Save-FleetArtifactFromUrl", Url=url, Sha256=other, Size=5, Token="tok-WRONG-456")
    assert failed["error"]["code"] == "DOWNLOAD_FAILED" and failed["error"]["details"]["status"] == 401
    assert "tok-WRONG-456" not in json.dumps(failed)


def test_url_mode_follows_a_redirect_without_the_token_and_masks_a_presigned_signature(
        node: LabNode, artifact_server: Any) -> None:
    # An artifact repository answering with a redirect to its object store (transfer: url): the token is for the
    # repository only (HttpWebRequest drops Authorization on a redirect; so does the lab), and the presigned
    # URL's query string is its credential.
    forget_secrets()
    target, data, seen = artifact_server

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append("repository:" + self.headers.get("Authorization", ""))
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    repository = http.server.ThreadingHTTPServer((next_address(), 0), Redirect)
    thread = threading.Thread(target=repository.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://{repository.server_address[0]}:{repository.server_address[1]}/hello.exe?X-Amz-Signature=s3cr3tsig"
        failed = call(node, "Save-FleetArtifactFromUrl", Url=url, Sha256=hashlib.sha256(data).hexdigest(),
                      Size=len(data), Token="tok-SECRET-123")
        # the object store saw no token, so it refused (401 here): the token never left the repository
        assert seen == ["repository:Bearer tok-SECRET-123", ""]
        assert failed["error"]["code"] == "DOWNLOAD_FAILED" and failed["error"]["details"]["status"] == 401
        bad = call(node, "Save-FleetArtifactFromUrl", Url="ftp://x/a.exe?X-Amz-Signature=s3cr3tsig", Sha256="ab" * 32,
                   Size=3)
        assert bad["error"]["code"] == "INVALID_ARGUMENT" and "s3cr3tsig" not in json.dumps(bad)
    finally:
        repository.shutdown()
        repository.server_close()


# ---- releases ------------------------------------------------------------------------------------------------
def test_install_switch_state_and_retention(node: LabNode) -> None:
    for n in (1, 2, 3, 4):
        install(node, f"exe {n}".encode(), f"{n}.0-abc", switch=n in (2, 3))
    again = ok(node, "Install-FleetRelease", App="hello", Root=ROOT, Release="1.0-abc", Version="1.0",
               Sha256=hashlib.sha256(b"exe 1").hexdigest(), ExeName="hello.exe")
    assert again["created"] is False
    state = ok(node, "Get-FleetState", App="hello", Root=ROOT)
    assert [r["release"] for r in state["releases"]] == ["1.0-abc", "2.0-abc", "3.0-abc", "4.0-abc"]
    assert (state["current"], state["previous"]) == ("3.0-abc", "2.0-abc")
    assert node.sandbox.read_bytes(f"{ROOT}\\current\\hello.exe") == b"exe 3"
    assert ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="3.0-abc")["changed"] is False
    error(node, "Switch-FleetRelease", "NOT_FOUND", App="hello", Root=ROOT, Release="9.9-zzz")
    error(node, "Remove-FleetRelease", "RELEASE_IN_USE", App="hello", Root=ROOT, Release="2.0-abc")
    removed = ok(node, "Remove-FleetRelease", App="hello", Root=ROOT, Keep=1)
    assert removed == {"removed": ["1.0-abc", "4.0-abc"], "kept": ["2.0-abc", "3.0-abc"]}
    assert not node.sandbox.resolve(f"{ROOT}\\releases\\1.0-abc").exists()
    actions = [h["action"] for h in ok(node, "Get-FleetState", App="hello", Root=ROOT)["history"]]
    assert actions.count("install") == 4 and actions.count("switch") == 2 and actions.count("remove") == 2


def test_install_renders_files_and_refuses_paths_outside_the_release(node: LabNode) -> None:
    sha = push(node, b"exe")
    ok(node, "Install-FleetRelease", App="hello", Root=ROOT, Release="1.0-a", Version="1.0", Sha256=sha,
       ExeName="hello.exe", Files={"conf\\app.yml": "port: 1\n"})
    assert node.sandbox.read_bytes(f"{ROOT}\\releases\\1.0-a\\conf\\app.yml") == b"port: 1\n"
    error(node, "Install-FleetRelease", "INVALID_ARGUMENT", App="hello", Root=ROOT, Release="1.1-a", Version="1.1",
          Sha256=sha, ExeName="hello.exe", Files={"..\\..\\evil.txt": "x"})
    assert not node.sandbox.resolve(f"{ROOT}\\releases\\1.1-a").exists()
    error(node, "Install-FleetRelease", "NOT_FOUND", App="hello", Root=ROOT, Release="2.0-a", Version="2.0",
          Sha256="0" * 64, ExeName="hello.exe")


def test_retention_of_a_release_whose_exe_is_running_fails_with_file_in_use(node: LabNode) -> None:
    install(node, b"one", "1.0-a")
    install(node, b"two", "2.0-a")
    install(node, b"three", "3.0-a")
    node.sandbox.mark_in_use(node.sandbox.resolve(f"{ROOT}\\releases\\1.0-a\\hello.exe"))  # e.g. a blue instance
    error(node, "Remove-FleetRelease", "FILE_IN_USE", App="hello", Root=ROOT, Release="1.0-a")
    assert node.sandbox.resolve(f"{ROOT}\\releases\\1.0-a\\hello.exe").exists()


# ---- firewall, tasks, port proxy, logs -----------------------------------------------------------------------
def test_firewall_rules_are_ensured_idempotently_and_removed(node: LabNode) -> None:
    assert ok(node, "Set-FleetFirewallRule", Name="hello-http", Port=8080)["changed"] is True
    assert ok(node, "Set-FleetFirewallRule", Name="hello-http", Port=8080, Protocol="tcp")["changed"] is False
    assert ok(node, "Set-FleetFirewallRule", Name="hello-http", Port=8081)["changed"] is True
    assert node.firewall_rules["hello-http"]["port"] == 8081
    error(node, "Set-FleetFirewallRule", "INVALID_ARGUMENT", Name="x", Port=80, Direction="Sideways")
    assert ok(node, "Set-FleetFirewallRule", Name="hello-http", Port=8081, Remove=None)["changed"] is True
    assert node.firewall_rules == {}


def test_scheduled_task_is_registered_and_run_on_demand_as_a_real_process(node: LabNode, tmp_path: Path) -> None:
    script = b"#!/bin/sh\necho ran \"$1\" > \"$2\"\n"
    node.sandbox.write_bytes("C:\\tools\\job.exe", script)
    assert ok(node, "Set-FleetScheduledTask", Name="nightly", Execute="C:\\tools\\job.exe",
              Arguments=["now", "C:\\tools\\out.txt"], At="02:00")["changed"] is True
    assert ok(node, "Set-FleetScheduledTask", Name="nightly", Execute="C:\\tools\\job.exe",
              Arguments=["now", "C:\\tools\\out.txt"], At="02:00")["changed"] is False
    result = ok(node, "Set-FleetScheduledTask", Name="nightly", RunNow=None)
    assert result["last_run"] is not None
    out = node.sandbox.resolve("C:\\tools\\out.txt")
    wait_for(lambda: out.exists() and out.read_text() == "ran now\n", 10, "the task's output")
    error(node, "Set-FleetScheduledTask", "NOT_FOUND", Name="missing", RunNow=None)
    ok(node, "Set-FleetScheduledTask", Name="ps", Execute="powershell.exe", Arguments=["-File", "x.ps1"], At="01:00")
    assert "only run executables" in error(node, "Set-FleetScheduledTask", "UNSUPPORTED", Name="ps",
                                           RunNow=None)["message"]


def _serve_text(address: str, text: bytes) -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.listen(8)

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(text)

    threading.Thread(target=loop, daemon=True).start()
    return sock, int(sock.getsockname()[1])


def _read_from(address: str, port: int) -> bytes:
    with socket.create_connection((address, port), timeout=5) as conn:
        data = b""
        while chunk := conn.recv(100):
            data += chunk
        return data


def test_port_proxy_forwards_real_tcp_and_switches_target(node: LabNode) -> None:
    blue, blue_port = _serve_text(node.address, b"blue")
    green, green_port = _serve_text(node.address, b"green")
    listen = free_port(node.address)
    try:
        result = ok(node, "Set-FleetPortProxy", ListenPort=listen, ConnectPort=blue_port)
        assert result == {"changed": True, "connect": f"{node.address}:{blue_port}"}
        assert _read_from(node.address, listen) == b"blue"
        assert ok(node, "Set-FleetPortProxy", ListenPort=listen, ConnectPort=blue_port)["changed"] is False
        ok(node, "Set-FleetPortProxy", ListenPort=listen, ConnectPort=green_port, ConnectAddress="127.0.0.1")
        assert _read_from(node.address, listen) == b"green"
        error(node, "Set-FleetPortProxy", "INVALID_ARGUMENT", ListenPort=listen, ListenAddress="10.1.2.3",
              ConnectPort=1)
        assert ok(node, "Set-FleetPortProxy", ListenPort=listen, Remove=None)["changed"] is True
        with pytest.raises(OSError):
            _read_from(node.address, listen)
    finally:
        blue.close()
        green.close()


def test_colours_have_their_own_junctions_and_the_proxy_switch_records_the_live_colour(node: LabNode) -> None:
    install(node, b"MZ one", "1.0-a", switch=False)
    install(node, b"MZ two", "2.0-b", switch=False)
    install(node, b"MZ three", "3.0-c", switch=False)
    blue, blue_port = _serve_text(node.address, b"blue")
    green, green_port = _serve_text(node.address, b"green")
    listen = free_port(node.address)
    try:
        error(node, "Switch-FleetColour", "NOT_FOUND", App="hello", Root=ROOT, Colour="blue", ListenPort=listen,
              ConnectPort=blue_port)
        error(node, "Switch-FleetRelease", "INVALID_ARGUMENT", App="hello", Root=ROOT, Release="1.0-a",
              Colour="purple")
        assert ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="1.0-a", Colour="blue") == {
            "current": "1.0-a", "previous": None, "changed": True}
        assert node.sandbox.read_junction(node.sandbox.resolve(f"{ROOT}\\blue")) is not None
        assert node.sandbox.read_junction(node.sandbox.resolve(f"{ROOT}\\current")) is None
        state = ok(node, "Get-FleetState", App="hello", Root=ROOT, ProxyPort=listen)
        assert state["current"] is None and state["live"] is None and state["proxy"] is None
        assert state["colours"]["blue"]["release"] == "1.0-a" and "green" not in state["colours"]
        assert state["colours"]["blue"]["service"]["exists"] is False  # hello-blue is not defined yet

        result = ok(node, "Switch-FleetColour", App="hello", Root=ROOT, Colour="blue", ListenPort=listen,
                    ConnectPort=blue_port)
        assert result == {"live": "blue", "current": "1.0-a", "previous": None,
                          "connect": f"{node.address}:{blue_port}", "changed": True}
        assert _read_from(node.address, listen) == b"blue"
        ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="2.0-b", Colour="green")
        again = ok(node, "Switch-FleetColour", App="hello", Root=ROOT, Colour="blue", ListenPort=listen,
                   ConnectPort=blue_port)
        assert again["changed"] is False
        ok(node, "Switch-FleetColour", App="hello", Root=ROOT, Colour="green", ListenPort=listen,
           ConnectPort=green_port)
        assert _read_from(node.address, listen) == b"green"
        state = ok(node, "Get-FleetState", App="hello", Root=ROOT, ProxyPort=listen)
        assert (state["current"], state["previous"], state["live"]) == ("2.0-b", "1.0-a", "green")
        assert state["proxy"] == {"listen": f"{node.address}:{listen}", "connect": f"{node.address}:{green_port}"}
        assert [h["action"] for h in state["history"]] == ["install", "install", "install", "switch-blue", "switch",
                                                         "live-blue", "switch-green", "switch", "live-green"]

        # Retention never removes a colour's release, even when it is neither current nor previous.
        ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="3.0-c", Colour="blue")
        assert ok(node, "Remove-FleetRelease", App="hello", Root=ROOT, Keep=0)["removed"] == []
        error(node, "Remove-FleetRelease", "RELEASE_IN_USE", App="hello", Root=ROOT, Release="3.0-c")
    finally:
        blue.close()
        green.close()


def test_a_colour_switch_interrupted_after_the_proxy_is_finished_by_calling_it_again(node: LabNode) -> None:
    install(node, b"MZ one", "1.0-a", switch=False)
    blue, blue_port = _serve_text(node.address, b"blue")
    listen = free_port(node.address)
    try:
        ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="1.0-a", Colour="blue")
        # As if the controller died after netsh changed the proxy but before the state was written.
        ok(node, "Set-FleetPortProxy", ListenPort=listen, ConnectPort=blue_port)
        state = ok(node, "Get-FleetState", App="hello", Root=ROOT, ProxyPort=listen)
        assert state["live"] is None and state["proxy"]["connect"].endswith(f":{blue_port}")
        result = ok(node, "Switch-FleetColour", App="hello", Root=ROOT, Colour="blue", ListenPort=listen,
                    ConnectPort=blue_port)
        assert result["changed"] is True and result["current"] == "1.0-a"
        assert ok(node, "Get-FleetState", App="hello", Root=ROOT)["live"] == "blue"
    finally:
        blue.close()


def test_get_log_returns_the_last_lines_of_the_newest_log(node: LabNode) -> None:
    error(node, "Get-FleetLog", "NOT_FOUND", App="hello", Root=ROOT)
    node.sandbox.write_bytes(f"{ROOT}\\shared\\logs\\hello.log", b"".join(b"line %d\n" % i for i in range(10)))
    assert ok(node, "Get-FleetLog", App="hello", Root=ROOT, Tail=3)["lines"] == ["line 7", "line 8", "line 9"]
    assert ok(node, "Get-FleetLog", App="hello", Root=ROOT, Path="shared\\logs\\hello.log")["path"].endswith(
        "hello.log")
    error(node, "Get-FleetLog", "INVALID_ARGUMENT", App="hello", Root=ROOT, Path="..\\..\\Windows\\win.ini")


def test_node_local_health_probe(node: LabNode) -> None:
    port = free_port(node.address)
    result = ok(node, "Test-FleetHealth", Url=f"http://localhost:{port}/healthz", TimeoutSeconds=2)
    assert result["status"] is None and result["error"]


def test_secret_parameters_never_come_back(node: LabNode) -> None:
    forget_secrets()
    doc = call(node, "Set-FleetService", Name="svc", BinaryPath="C:\\x\\svc.exe", Password="hunter2-Secret",
               StartType="sometimes")
    assert doc["error"]["code"] == "INVALID_ARGUMENT"
    assert "hunter2-Secret" not in json.dumps(doc)
    doc = call(node, "Set-FleetService", Name="svc", BinaryPath="C:\\x\\svc.exe", Password=["not", "a string"])
    assert MASK in doc["error"]["message"]


# ---- where the lab once differed from FleetNode.psm1 (the module is what Windows does) -----------------------
def test_install_keeps_an_unrecorded_release_directory_and_records_it(node: LabNode) -> None:
    # Guards: the lab deleted and rebuilt such a directory, which on Windows fails while its exe runs.
    sha = push(node, b"new bytes")
    exe = f"{ROOT}\\releases\\1.0-a\\hello.exe"
    node.sandbox.write_bytes(exe, b"running bytes")
    node.sandbox.mark_in_use(node.sandbox.resolve(exe))  # e.g. a node that lost its state.json mid-deploy
    result = ok(node, "Install-FleetRelease", App="hello", Root=ROOT, Release="1.0-a", Version="1.0", Sha256=sha,
                ExeName="hello.exe")
    assert result["created"] is False
    assert node.sandbox.read_bytes(exe) == b"running bytes"
    state = ok(node, "Get-FleetState", App="hello", Root=ROOT)
    assert [(r["release"], r["sha256"]) for r in state["releases"]] == [("1.0-a", sha)]
    assert [h["action"] for h in state["history"]] == ["install"]


def test_install_of_a_known_release_id_from_another_artifact_is_refused(node: LabNode) -> None:
    # Guards: the lab silently replaced the state entry (when the directory had gone) or ignored the new sha256.
    first = install(node, b"one", "1.0-a", switch=False)
    other = push(node, b"two")
    for gone in (False, True):
        if gone:
            node.sandbox.remove(node.sandbox.resolve(f"{ROOT}\\releases\\1.0-a"))
        err = error(node, "Install-FleetRelease", "INVALID_ARGUMENT", App="hello", Root=ROOT, Release="1.0-a",
                    Version="1.0", Sha256=other, ExeName="hello.exe")
        assert "already installed from another artifact" in err["message"]
        assert err["details"] == {"release": "1.0-a", "sha256": first}
    state = ok(node, "Get-FleetState", App="hello", Root=ROOT)
    assert [r["sha256"] for r in state["releases"]] == [first] and len(state["history"]) == 1
    # The same artifact again rebuilds a vanished directory without a second state entry.
    again = ok(node, "Install-FleetRelease", App="hello", Root=ROOT, Release="1.0-a", Version="1.0", Sha256=first,
               ExeName="hello.exe")
    assert again["created"] is True and node.sandbox.read_bytes(f"{ROOT}\\releases\\1.0-a\\hello.exe") == b"one"
    assert len(ok(node, "Get-FleetState", App="hello", Root=ROOT)["releases"]) == 1


def test_switch_needs_only_the_release_directory_and_records_it(node: LabNode) -> None:
    # Guards: the lab refused a release missing from the node state (NOT_FOUND), so a node that lost it was stuck.
    install(node, b"one", "1.0-a")
    node.sandbox.write_bytes(f"{ROOT}\\releases\\2.0-b\\hello.exe", b"two")  # on disk, never recorded
    result = ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="2.0-b")
    assert result == {"current": "2.0-b", "previous": "1.0-a", "changed": True}
    assert node.sandbox.read_bytes(f"{ROOT}\\current\\hello.exe") == b"two"
    state = ok(node, "Get-FleetState", App="hello", Root=ROOT)
    assert (state["current"], state["previous"]) == ("2.0-b", "1.0-a")
    assert state["history"][-1]["action"] == "switch" and state["history"][-1]["release"] == "2.0-b"
    error(node, "Switch-FleetRelease", "NOT_FOUND", App="hello", Root=ROOT, Release="3.0-c")


def test_set_service_never_reports_password_and_records_stop_timeout_only_when_given(node: LabNode) -> None:
    # Guards: the lab listed Password in `changed` (Windows cannot compare it) and recorded StopTimeoutSeconds 20
    # when absent, so a later call without it reported a change; the module records it only when given.
    forget_secrets()
    svc = {"Name": "svc", "BinaryPath": "C:\\x\\svc.exe", "Account": "CORP\\svc-hello"}
    assert ok(node, "Set-FleetService", **svc, Password="first-Secret") == {"created": True, "changed": [],
                                                                          "image_path": "C:\\x\\svc.exe"}
    assert ok(node, "Set-FleetService", **svc, Password="second-Secret")["changed"] == []
    assert node.scm.definition("svc").stop_timeout_seconds is None  # type: ignore[union-attr]
    assert ok(node, "Set-FleetService", **svc, StopTimeoutSeconds=45)["changed"] == ["StopTimeoutSeconds"]
    assert ok(node, "Set-FleetService", **svc)["changed"] == []  # absent: the recorded 45 stays
    assert node.scm.definition("svc").stop_timeout_seconds == 45  # type: ignore[union-attr]
    assert ok(node, "Set-FleetService", **svc, StopTimeoutSeconds=30)["changed"] == ["StopTimeoutSeconds"]
