"""NSSM hosting in the lab (fleetctl/lab/nssm.py): a plain console program run as a service by nssm.exe, with its
parameters recorded, output redirected and rotated, restarts after exits (throttled when quick) and the stop
sequence; and the Windows failure the lab must reproduce: a console exe registered natively fails with 1053.

The program here is a Python script (the lab runs `#!` scripts natively); tests/lab/test_node_services.py runs a
real console Windows exe the same way under Wine.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_kit import call, error, install, next_address, ok, push

from fleetctl.lab.node import LabNode
from fleetctl.lab.nssm import rotated_name, throttle_delay
from tests.support import free_port, wait_for

ROOT = "C:\\apps\\con"
NSSM = b"MZ fake nssm.exe for the lab: never executed, only stored and referenced"
NSSM_SHA = hashlib.sha256(NSSM).hexdigest()
CONSOLE = f"""#!{sys.executable}
import http.server, os, signal, sys, threading, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if args.get("--ignore-int"):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print("started cwd=%s greeting=%s argv=%r" % (os.getcwd(), os.environ.get("GREETING"), sys.argv[1:]), flush=True)
print("to stderr", file=sys.stderr, flush=True)
for i in range(int(args.get("--lines", "0"))):
    print("line %05d %s" % (i, "x" * 90), flush=True)
if "--exit-after" in args:
    time.sleep(float(args["--exit-after"]))
    sys.exit(3)
host, port = args["--listen"].rsplit(":", 1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer((host, int(port)), Handler).serve_forever()
""".encode()


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[LabNode]:
    lab_node = LabNode("lab-nssm", next_address(), tmp_path / "node", settle_s=0.2)
    try:
        install(lab_node, CONSOLE, "1.0-a", root=ROOT, exe="con.exe")
        push(lab_node, NSSM)
        yield lab_node
    finally:
        lab_node.close()


def define(node: LabNode, *arguments: str, **extra: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "Name": "con", "BinaryPath": f"{ROOT}\\current\\con.exe", "Arguments": list(arguments),
        "Hosting": "nssm", "WrapperSha256": NSSM_SHA, "StdoutPath": f"{ROOT}\\shared\\logs\\con.log",
        "StderrPath": f"{ROOT}\\shared\\logs\\con.log", "Environment": {"GREETING": "hi there"},
        "StopTimeoutSeconds": 2, "ThrottleMilliseconds": 300}
    settings.update(extra)
    return ok(node, "Set-FleetService", **settings)


def log_text(node: LabNode) -> str:
    return node.sandbox.resolve(f"{ROOT}\\shared\\logs\\con.log").read_text(errors="replace")


def test_the_recorded_nssm_parameters_are_what_the_module_sets(node: LabNode) -> None:
    result = define(node, "--listen", "0.0.0.0:1", "--greeting", 'say "hi" \\', RotateBytes=1_048_576,
                    RestartDelayMilliseconds=250, WorkingDirectory=f"{ROOT}\\shared")
    assert result["image_path"] == f"C:\\ProgramData\\fleetctl\\tools\\{NSSM_SHA}\\nssm.exe"
    assert node.sandbox.resolve(f"C:\\ProgramData\\fleetctl\\tools\\{NSSM_SHA}\\nssm.exe").read_bytes() == NSSM
    assert node.scm.nssm_parameters("con") == {
        "Application": f"{ROOT}\\current\\con.exe", "AppDirectory": f"{ROOT}\\shared",
        "AppParameters": '--listen 0.0.0.0:1 --greeting "say \\"hi\\" \\\\"',
        "AppEnvironmentExtra": ["GREETING=hi there"],
        "AppStdout": f"{ROOT}\\shared\\logs\\con.log", "AppStderr": f"{ROOT}\\shared\\logs\\con.log",
        "AppRotateFiles": 1, "AppRotateOnline": 1, "AppRotateBytes": 1_048_576, "AppExit": {"Default": "Restart"},
        "AppRestartDelay": 250, "AppThrottle": 300, "AppStopMethodSkip": 0, "AppStopMethodConsole": 2000}
    assert define(node, "--listen", "0.0.0.0:1", RotateBytes=1_048_576, RestartDelayMilliseconds=250,
                  WorkingDirectory=f"{ROOT}\\shared")["changed"] == ["Arguments"]


def test_nssm_needs_its_exe_in_the_artifact_cache(node: LabNode) -> None:
    missing = "0" * 64
    assert "not in the node's artifact cache" in error(node, "Set-FleetService", "NOT_FOUND", Name="x",
                                                       BinaryPath=f"{ROOT}\\current\\con.exe", Hosting="nssm",
                                                       WrapperSha256=missing)["message"]
    assert "WorkingDirectory needs Hosting nssm" in error(
        node, "Set-FleetService", "INVALID_ARGUMENT", Name="x", BinaryPath=f"{ROOT}\\current\\con.exe",
        WorkingDirectory="C:\\x")["message"]


def test_a_console_program_runs_under_nssm_with_its_output_in_shared_logs(node: LabNode) -> None:
    port = free_port(node.address)
    define(node, "--listen", f"0.0.0.0:{port}", "--greeting", "two words", WorkingDirectory=f"{ROOT}\\shared")
    started = ok(node, "Start-FleetService", Name="con", TimeoutSeconds=10)
    assert started["state"] == "Running"
    assert ok(node, "Test-FleetHealth", Url=f"http://localhost:{port}/", TimeoutSeconds=5)["status"] == 200
    text = wait_for(lambda: "to stderr" in log_text(node) and log_text(node), 5, "the program's output")
    shared = node.sandbox.resolve(f"{ROOT}\\shared")
    assert f"cwd={shared}" in text and "greeting=hi there" in text and "'two words'" in text
    state = ok(node, "Get-FleetState", App="hello", Root=ROOT, ServiceName="con")["service"]
    assert state["hosting"] == "nssm" and state["image_path"].endswith("nssm.exe")
    assert ok(node, "Get-FleetLog", App="hello", Root=ROOT)["path"] == f"{ROOT}\\shared\\logs\\con.log"
    ok(node, "Stop-FleetService", Name="con", TimeoutSeconds=10)


def test_output_is_rotated_past_the_size_limit_at_start_and_while_running(node: LabNode) -> None:
    port = free_port(node.address)
    define(node, "--listen", f"0.0.0.0:{port}", "--lines", "120", RotateBytes=4096)
    ok(node, "Start-FleetService", Name="con", TimeoutSeconds=10)
    logs = node.sandbox.resolve(f"{ROOT}\\shared\\logs")
    wait_for(lambda: "line 00119" in "".join(p.read_text() for p in logs.glob("con*.log")), 10, "all lines")
    rotated = sorted(p for p in logs.glob("con-*.log"))
    assert len(rotated) >= 2, rotated  # 120 lines of ~100 bytes in 4 KiB files
    assert all(p.stat().st_size <= 4096 for p in [*rotated, logs / "con.log"])
    ok(node, "Stop-FleetService", Name="con", TimeoutSeconds=10)
    # AppRotateFiles: a file left over the limit is rotated when the service starts again.
    current = logs / "con.log"
    current.write_bytes(b"left over\n" * 500)
    before = set(logs.glob("con-*.log"))
    define(node, "--listen", f"0.0.0.0:{port}", RotateBytes=4096)
    ok(node, "Start-FleetService", Name="con", TimeoutSeconds=10)
    wait_for(lambda: "started" in log_text(node), 5, "the new start's output")
    (new,) = set(logs.glob("con-*.log")) - before
    assert new.read_bytes() == b"left over\n" * 500 and "left over" not in log_text(node)
    ok(node, "Stop-FleetService", Name="con", TimeoutSeconds=10)


def test_an_exited_program_is_restarted_and_quick_exits_are_throttled(node: LabNode) -> None:
    define(node, "--exit-after", "0.6", RestartDelayMilliseconds=100)
    first = ok(node, "Start-FleetService", Name="con", TimeoutSeconds=10)
    wait_for(lambda: node.scm.status("con")["restarts"] >= 2, 10, "two restarts")
    status = node.scm.status("con")
    assert status["state"] == "Running" and status["pid"] != first["pid"] and status["exit_code"] == 3
    assert status["recent_restarts"] >= 2  # what fleetctl status judges a crash loop by
    wait_for(lambda: log_text(node).count("started") >= 3, 5, "the third start's output")
    ok(node, "Stop-FleetService", Name="con", TimeoutSeconds=10)
    # A program that runs less than AppThrottle is restarted after NSSM's growing delay; the service is Paused.
    define(node, "--exit-after", "0", ThrottleMilliseconds=5000)
    ok(node, "Start-FleetService", Name="con", TimeoutSeconds=10)
    wait_for(lambda: node.scm.status("con")["state"] == "Paused", 5, "Paused while throttled")
    assert throttle_delay(1) == 2.0 and throttle_delay(2) == 4.0 and throttle_delay(30) == 256.0
    began = time.monotonic()
    assert ok(node, "Stop-FleetService", Name="con", TimeoutSeconds=5)["state"] == "Stopped"
    assert time.monotonic() - began < 2  # a stop during the throttle delay ends it at once


def test_a_program_ignoring_ctrl_c_is_terminated_after_the_console_timeout(node: LabNode) -> None:
    port = free_port(node.address)
    define(node, "--listen", f"0.0.0.0:{port}", "--ignore-int", "1", StopTimeoutSeconds=1)
    pid = ok(node, "Start-FleetService", Name="con", TimeoutSeconds=10)["pid"]
    began = time.monotonic()
    stopped = ok(node, "Stop-FleetService", Name="con", TimeoutSeconds=10)
    assert stopped["state"] == "Stopped" and 0.8 < time.monotonic() - began < 5
    assert not Path(f"/proc/{pid}").exists()


def test_rotated_names_follow_nssm() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 12, 2, 8, 5, 9, 42000, tzinfo=UTC)
    assert rotated_name(Path("/x/con.log"), when) == Path("/x/con-20261202T080509.042.log")


def test_a_console_windows_exe_registered_natively_fails_with_1053(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  node: LabNode) -> None:
    # A PE without StartServiceCtrlDispatcherW, run by a stand-in wine64 that just sleeps like a console program.
    fake_wine = tmp_path / "wine64"
    fake_wine.write_text("#!/bin/sh\nexec sleep 30\n")
    fake_wine.chmod(0o755)
    from fleetctl.lab.wine import WinePrefix

    prefix = WinePrefix(tmp_path / "prefix", wine64=str(fake_wine), wineserver=str(tmp_path / "none"))
    (prefix.path).mkdir(parents=True, exist_ok=True)
    (prefix.path / ".fleetctl-prepared").write_text("ok\n")
    monkeypatch.setenv("FLEETCTL_LAB_SERVICE_PIPE_TIMEOUT", "1.5")
    pe = b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 64
    console = LabNode("lab-1053", next_address(), tmp_path / "n1053", wine=prefix, settle_s=0.2)
    try:
        install(console, pe, "1.0-pe", exe="con.exe", root=ROOT)
        ok(console, "Set-FleetService", Name="con", BinaryPath=f"{ROOT}\\current\\con.exe")
        began = time.monotonic()
        failed = error(console, "Start-FleetService", "SERVICE_START_FAILED", Name="con", TimeoutSeconds=10)
        assert failed["details"]["win32_error"] == 1053 and "1053" in failed["message"]
        assert 1.4 < time.monotonic() - began < 6
        assert console.scm.status("con")["state"] == "Stopped" and console.scm.pids() == []
        # The same bytes with the dispatcher import are a service program: it starts.
        install(console, pe + b"StartServiceCtrlDispatcherW\0", "1.1-svc", exe="con.exe", root=ROOT)
        assert ok(console, "Start-FleetService", Name="con", TimeoutSeconds=10)["state"] == "Running"
        assert call(console, "Stop-FleetService", Name="con", TimeoutSeconds=10)["ok"]
    finally:
        console.close()


@pytest.mark.wine
def test_what_a_windows_program_writes_to_the_event_log_is_captured(tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess

    from fleetctl.lab.wine import WINE64, WinePrefix

    compiler = shutil.which("x86_64-w64-mingw32-gcc")
    if compiler is None or not os.access(WINE64, os.X_OK):
        pytest.skip("needs x86_64-w64-mingw32-gcc and wine64")
    exe = tmp_path / "events.exe"
    subprocess.run([compiler, "-O2", "-o", str(exe), str(Path(__file__).parent / "eventlog" / "events.c"),
                    "-ladvapi32"], check=True, timeout=120)
    given = os.environ.get("FLEETCTL_TEST_WINEPREFIX")
    prefix = WinePrefix(Path(given) if given else tmp_path / "prefix")
    node = LabNode("lab-events", next_address(), tmp_path / "node", wine=prefix)
    try:
        install(node, exe.read_bytes(), "1.0-e", root=ROOT, exe="con.exe")
        push(node, NSSM)
        define(node)
        ok(node, "Start-FleetService", Name="con", TimeoutSeconds=120)
        found = wait_for(lambda: len((r := ok(node, "Get-FleetEvents", Source="con"))["events"]) == 2 and r, 30,
                         "two events")
        assert [(e["level"], e["message"]) for e in found["events"]] == [
            ("Error", "something failed"), ("Information", 'con started: grüße "quoted"')]
        assert found["events"][0]["time"] is None and "Wine" in found["note"]
        assert ok(node, "Get-FleetEvents", Source="con", Max=1)["events"][0]["message"] == "something failed"
        text = wait_for(lambda: "program output" in log_text(node) and log_text(node), 10, "stdout in shared\\logs")
        assert "eventlog" not in text  # Wine's trace lines are not the program's output
        ok(node, "Stop-FleetService", Name="con", TimeoutSeconds=20)
    finally:
        node.close()
        if not given:
            prefix.shutdown()
