"""The lab's service control manager with real processes: lifecycle, timeouts, crash detection and recovery,
dependencies, path/address translation, and a Windows exe under Wine."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_kit import SERVICE_SCRIPT, call, define_service, error, install, next_address, ok, push

from fleetctl.artifacts.errors import ArtifactError
from fleetctl.artifacts.go_toolchain import find_go
from fleetctl.lab.node import LabNode
from fleetctl.lab.wine import WINE64, WinePrefix
from tests.support import free_port, wait_for

ROOT = "C:\\apps\\hello"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LabNode]:
    n = LabNode("lab-node01", next_address(), tmp_path / "lab-node01")
    yield n
    n.close()


@pytest.fixture
def installed(node: LabNode) -> LabNode:
    install(node, SERVICE_SCRIPT, "1.0-a")
    return node


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_runs_a_real_process_with_translated_paths_env_and_address(installed: LabNode) -> None:
    node = installed
    port = free_port(node.address)
    define_service(node, port, Environment={"GREETING": "hi"})
    started = ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)
    assert started["state"] == "Running" and started["was"] == "Stopped" and _alive(started["pid"])
    # `0.0.0.0:PORT` became the node's own address; the health endpoint answers there.
    health = ok(node, "Test-FleetHealth", Url=f"http://localhost:{port}/healthz", TimeoutSeconds=5)
    assert health["status"] == 200 and "ok" in health["body"]
    # `C:\apps\hello\shared\logs` became the sandbox directory: the service wrote its log into the node.
    log = ok(node, "Get-FleetLog", App="hello", Root=ROOT)
    assert log["lines"][0] == "started greeting=hi"
    state = ok(node, "Get-FleetState", App="hello", Root=ROOT)["service"]
    assert state["state"] == "Running" and state["pid"] == started["pid"] and state["start_time"]
    # A running exe is in use: it cannot be overwritten (sharing violation).
    sha = install(node, b"v2", "2.0-a", switch=False)
    assert sha
    again = ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)
    assert again["was"] == "Running" and again["pid"] == started["pid"]
    stopped = ok(node, "Stop-FleetService", Name="hello", TimeoutSeconds=10)
    assert stopped["state"] == "Stopped" and stopped["was"] == "Running"
    wait_for(lambda: not _alive(started["pid"]), 5, "the service process to exit")
    assert ok(node, "Stop-FleetService", Name="hello", TimeoutSeconds=1)["was"] == "Stopped"


def test_the_running_exe_is_locked_until_the_service_stops(installed: LabNode) -> None:
    node = installed
    define_service(node, free_port(node.address))
    ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)
    install(node, b"v2", "2.0-a", switch=False)
    ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="2.0-a")
    ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="1.0-a")
    ok(node, "Switch-FleetRelease", App="hello", Root=ROOT, Release="2.0-a")
    # 1.0-a is previous now; removing it by hand is refused twice over: in use and protected.
    exe = node.sandbox.resolve(f"{ROOT}\\releases\\1.0-a\\hello.exe")
    from fleetctl.lab.nodeerror import NodeError

    with pytest.raises(NodeError) as err:
        node.sandbox.write_path(exe, b"overwrite")
    assert err.value.code == "FILE_IN_USE"
    ok(node, "Stop-FleetService", Name="hello", TimeoutSeconds=10)
    node.sandbox.write_path(exe, b"overwrite")  # stopped: no longer in use


def test_set_service_reports_changed_fields_and_applies_them_at_next_start(installed: LabNode) -> None:
    node = installed
    port = free_port(node.address)
    created = ok(node, "Set-FleetService", Name="hello", BinaryPath=f"{ROOT}\\current\\hello.exe",
                 Arguments=["--listen", f"0.0.0.0:{port}"])
    assert created == {"created": True, "changed": [],
                       "image_path": f"{ROOT}\\current\\hello.exe --listen 0.0.0.0:{port}"}
    same = ok(node, "Set-FleetService", Name="hello", BinaryPath=f"{ROOT}\\current\\hello.exe",
              Arguments=["--listen", f"0.0.0.0:{port}"])
    assert same["created"] is False and same["changed"] == []
    changed = ok(node, "Set-FleetService", Name="HELLO", BinaryPath=f"{ROOT}\\current\\hello.exe",
                 Arguments=["--listen", f"0.0.0.0:{port}"], StartType="manual", Environment={"A": "1"},
                 Dependencies=[], RecoveryRestartSeconds=5)
    assert sorted(changed["changed"]) == ["Environment", "RecoveryRestartSeconds", "StartType"]


def test_a_process_that_exits_at_once_fails_to_start_with_its_exit_code(installed: LabNode) -> None:
    node = installed
    define_service(node, free_port(node.address), mode="exit")
    err = error(node, "Start-FleetService", "SERVICE_START_FAILED", Name="hello", TimeoutSeconds=10)
    assert err["details"]["exit_code"] == 7
    assert ok(node, "Get-FleetState", App="hello", Root=ROOT)["service"]["state"] == "Stopped"


def test_start_timeout_then_the_service_still_comes_up(installed: LabNode) -> None:
    node = installed
    define_service(node, free_port(node.address))
    err = error(node, "Start-FleetService", "SERVICE_START_TIMEOUT", Name="hello", TimeoutSeconds=0)
    assert err["details"]["state"] == "StartPending"
    wait_for(lambda: node.scm.status("hello")["state"] == "Running", 10, "Running")


def test_missing_exe_or_service_and_disabled_start_type(node: LabNode) -> None:
    error(node, "Start-FleetService", "NOT_FOUND", Name="nope", TimeoutSeconds=1)
    assert ok(node, "Stop-FleetService", Name="nope", TimeoutSeconds=1)["was"] == "Absent"
    ok(node, "Set-FleetService", Name="ghost", BinaryPath="C:\\apps\\ghost\\ghost.exe")
    assert "file not found" in error(node, "Start-FleetService", "SERVICE_START_FAILED", Name="ghost",
                                     TimeoutSeconds=1)["message"]
    node.sandbox.write_bytes("C:\\apps\\text\\text.exe", b"just some text")
    ok(node, "Set-FleetService", Name="text", BinaryPath="C:\\apps\\text\\text.exe")
    assert "not a valid Win32 application" in error(node, "Start-FleetService", "SERVICE_START_FAILED",
                                                    Name="text", TimeoutSeconds=1)["message"]
    ok(node, "Set-FleetService", Name="off", BinaryPath="C:\\apps\\text\\text.exe", StartType="disabled")
    assert "disabled" in error(node, "Start-FleetService", "SERVICE_START_FAILED", Name="off",
                               TimeoutSeconds=1)["message"]


def test_a_crash_is_detected_and_recovery_restarts_after_the_delay_and_counts(installed: LabNode) -> None:
    node = installed
    port = free_port(node.address)
    define_service(node, port, RecoveryRestartSeconds=1)
    first = ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: node.scm.status("hello")["state"] == "Stopped", 5, "the crash to be seen")
    status = wait_for(lambda: (s := node.scm.status("hello"))["state"] == "Running" and s, 10, "the recovery restart")
    assert status["pid"] != first and status["restarts"] == 1
    assert node.counters["service_restarts"] == 1
    assert ok(node, "Test-FleetHealth", Url=f"http://127.0.0.1:{port}/healthz", TimeoutSeconds=5)["status"] == 200


def test_without_recovery_actions_a_crashed_service_stays_stopped(installed: LabNode) -> None:
    node = installed
    define_service(node, free_port(node.address))
    pid = ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: node.scm.status("hello")["state"] == "Stopped", 5, "the crash to be seen")
    assert node.scm.status("hello")["exit_code"] == 1067  # ERROR_PROCESS_ABORTED, as Windows reports it
    assert node.scm.status("hello")["restarts"] == 0


def test_a_hanging_stop_times_out_and_leaves_the_process_running_as_windows_does(installed: LabNode) -> None:
    # Guards: the lab killed a process that ignored Stop after the stop timeout; the SCM never kills a service
    # process: ControlService returns, the service stays StopPending and the process keeps running.
    node = installed
    define_service(node, free_port(node.address), mode="ignore-term", StopTimeoutSeconds=1)
    pid = ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)["pid"]
    hung = error(node, "Stop-FleetService", "SERVICE_STOP_TIMEOUT", Name="hello", TimeoutSeconds=2)
    assert hung["details"]["state"] == "StopPending" and hung["details"]["pid"] == pid
    time.sleep(0.5)  # the recorded stop timeout (1 s) has passed too: still nothing kills it
    assert _alive(pid) and node.scm.status("hello")["state"] == "StopPending"
    # Its release cannot be deleted while it runs, and a second stop waits again without killing.
    assert error(node, "Stop-FleetService", "SERVICE_STOP_TIMEOUT", Name="hello", TimeoutSeconds=1)
    os.kill(pid, signal.SIGKILL)  # what an operator (or the process itself, at last) does
    wait_for(lambda: node.scm.status("hello")["state"] == "Stopped", 5, "Stopped once the process is gone")


def test_recovery_actions_apply_per_failure_and_the_last_one_repeats(installed: LabNode) -> None:
    node = installed
    define_service(node, free_port(node.address), RecoveryActions=["restart/200", "none/0"],
                   RecoveryResetSeconds=3600)
    pid = ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)["pid"]
    os.kill(pid, signal.SIGKILL)  # first failure: restart after 200 ms
    wait_for(lambda: node.scm.status("hello")["state"] == "Running" and node.scm.status("hello")["pid"] != pid, 5,
             "the first recovery restart")
    os.kill(node.scm.status("hello")["pid"], signal.SIGKILL)  # second failure: run nothing
    wait_for(lambda: node.scm.status("hello")["state"] == "Stopped", 5, "Stopped")
    time.sleep(0.5)
    status = node.scm.status("hello")
    assert status["state"] == "Stopped" and status["restarts"] == 1 and status["recent_restarts"] == 2
    assert "restart/<milliseconds>" in error(node, "Set-FleetService", "INVALID_ARGUMENT", Name="hello",
                                             BinaryPath="C:\\x\\y.exe", RecoveryActions=["reboot/0"])["message"]


def test_dependencies_start_first_and_a_missing_one_fails_the_start(installed: LabNode) -> None:
    node = installed
    define_service(node, free_port(node.address), name="db")
    define_service(node, free_port(node.address), Dependencies=["db"])
    ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)
    assert node.scm.status("db")["state"] == "Running"
    define_service(node, free_port(node.address), name="web", Dependencies=["cache"])
    assert "dependency 'cache'" in error(node, "Start-FleetService", "SERVICE_START_FAILED", Name="web",
                                        TimeoutSeconds=5)["message"]


def test_close_stops_every_service_process(installed: LabNode) -> None:
    node = installed
    define_service(node, free_port(node.address), mode="ignore-term")
    pid = ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)["pid"]
    node.scm.shutdown(grace_s=0.5)
    assert not _alive(pid)
    assert call(node, "Get-FleetFacts")["ok"]


# ---- a real Windows exe under Wine ---------------------------------------------------------------------------
def _build_labsvc(directory: Path, goos: str) -> bytes:
    src = Path(__file__).parent / "svc"
    try:
        go = find_go(src).path  # the Go fleetctl would build it with: a current Go, so a Windows exe needs ProcessPrng
    except ArtifactError as err:
        pytest.skip(str(err))
    out = directory / f"labsvc-{goos}"
    env = dict(os.environ, CGO_ENABLED="0", GOOS=goos, GOARCH="amd64", GOPROXY="off", GOFLAGS="-mod=mod")
    subprocess.run([go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."], cwd=src, env=env,
                   check=True, timeout=300)
    return out.read_bytes()


@pytest.fixture(scope="session")
def labsvc_exe(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _build_labsvc(tmp_path_factory.mktemp("labsvc"), "windows")


def test_a_linux_elf_service_runs_directly(node: LabNode, tmp_path: Path) -> None:
    elf = _build_labsvc(tmp_path, "linux")
    assert elf[:4] == b"\x7fELF"
    install(node, elf, "1.0-elf")
    port = free_port(node.address)
    ok(node, "Set-FleetService", Name="labsvc", BinaryPath=f"{ROOT}\\current\\hello.exe",
       Arguments=["-listen", f"localhost:{port}", "-log-dir", f"{ROOT}\\shared\\logs"])
    pid = ok(node, "Start-FleetService", Name="labsvc", TimeoutSeconds=10)["pid"]
    assert Path(f"/proc/{pid}/exe").resolve() == node.sandbox.resolve(f"{ROOT}\\releases\\1.0-elf\\hello.exe")
    assert ok(node, "Test-FleetHealth", Url=f"http://{node.address}:{port}/healthz", TimeoutSeconds=5)["status"] == 200
    assert "listen=" + node.address in node.sandbox.read_bytes(f"{ROOT}\\shared\\logs\\labsvc.log").decode()
    ok(node, "Stop-FleetService", Name="labsvc", TimeoutSeconds=10)


@pytest.fixture(scope="session")
def wine_prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WinePrefix]:
    if not os.access(WINE64, os.X_OK):
        pytest.skip("wine64 is not installed")
    given = os.environ.get("FLEETCTL_TEST_WINEPREFIX")  # a prepared prefix saves ~20 s
    prefix = WinePrefix(Path(given) if given else tmp_path_factory.mktemp("wineprefix"))
    prefix.prepare_in_background()
    prefix.wait_ready()
    yield prefix
    prefix.shutdown()


@pytest.mark.wine
def test_a_console_windows_exe_fails_natively_with_1053_and_runs_under_nssm(
        tmp_path: Path, labsvc_exe: bytes, wine_prefix: WinePrefix, monkeypatch: pytest.MonkeyPatch) -> None:
    # labsvc is a plain console Go program (no SCM code), as most teams' services are before they meet NSSM.
    assert b"StartServiceCtrlDispatcherW" not in labsvc_exe
    monkeypatch.setenv("FLEETCTL_LAB_SERVICE_PIPE_TIMEOUT", "3")  # Windows waits 30 s
    node = LabNode("lab-node02", next_address(), tmp_path / "lab-node02", wine=wine_prefix)
    try:
        install(node, labsvc_exe, "1.0-w")
        port = free_port(node.address)
        arguments = ["-listen", f"0.0.0.0:{port}", "-log-dir", f"{ROOT}\\shared\\logs"]
        ok(node, "Set-FleetService", Name="labsvc", BinaryPath=f"{ROOT}\\current\\hello.exe", Arguments=arguments,
           Environment={"LABSVC_GREETING": "from-wine"})
        failed = error(node, "Start-FleetService", "SERVICE_START_FAILED", Name="labsvc", TimeoutSeconds=60)
        assert failed["details"]["win32_error"] == 1053
        assert node.scm.status("labsvc")["state"] == "Stopped" and node.scm.pids() == []

        nssm = push(node, b"MZ stand-in for nssm.exe (the lab models it)")
        ok(node, "Set-FleetService", Name="labsvc", BinaryPath=f"{ROOT}\\current\\hello.exe", Arguments=arguments,
           Environment={"LABSVC_GREETING": "from-wine"}, Hosting="nssm", WrapperSha256=nssm,
           StdoutPath=f"{ROOT}\\shared\\logs\\labsvc.out.log", StderrPath=f"{ROOT}\\shared\\logs\\labsvc.out.log",
           StopTimeoutSeconds=5)
        started = ok(node, "Start-FleetService", Name="labsvc", TimeoutSeconds=60)
        health = wait_for(lambda: (h := ok(node, "Test-FleetHealth", Url=f"http://localhost:{port}/healthz",
                                           TimeoutSeconds=2))["status"] == 200 and h, 20, "the exe's /healthz")
        assert '"status":"ok"' in health["body"]
        log = node.sandbox.read_bytes(f"{ROOT}\\shared\\logs\\labsvc.log").decode()
        assert f"listen={node.address}:{port}" in log and "env=from-wine" in log
        stopped = ok(node, "Stop-FleetService", Name="labsvc", TimeoutSeconds=20)
        assert stopped["state"] == "Stopped"
        assert not _alive(started["pid"])
    finally:
        node.close()


def test_a_stop_while_a_windows_exe_waits_for_the_wine_prefix_cancels_the_start(tmp_path: Path) -> None:
    # A stand-in wine64 that only "prepares" (slowly): the exe must never be launched after the stop.
    fake_wine = tmp_path / "wine64"
    fake_wine.write_text("#!/bin/sh\nsleep 1\n")
    fake_wine.chmod(0o755)
    prefix = WinePrefix(tmp_path / "prefix", wine64=str(fake_wine), wineserver=str(tmp_path / "none"))
    node = LabNode("lab-node03", next_address(), tmp_path / "lab-node03", wine=prefix)
    try:
        install(node, b"MZ" + b"\0" * 58 + (64).to_bytes(4, "little") + b"PE\0\0" + b"\0" * 64, "1.0-pe")
        ok(node, "Set-FleetService", Name="pe", BinaryPath=f"{ROOT}\\current\\hello.exe")
        outcome: list[dict[str, object]] = []
        starter = threading.Thread(target=lambda: outcome.append(
            call(node, "Start-FleetService", Name="pe", TimeoutSeconds=10)))
        starter.start()
        wait_for(lambda: node.scm.status("pe")["state"] == "StartPending", 5, "StartPending")
        assert ok(node, "Stop-FleetService", Name="pe", TimeoutSeconds=5)["was"] == "StartPending"
        starter.join(10)
        assert outcome[0]["error"]["code"] == "SERVICE_START_FAILED"  # type: ignore[index]
        assert node.scm.status("pe")["state"] == "Stopped" and node.scm.pids() == []
    finally:
        node.close()


def test_a_wineboot_that_fails_once_is_tried_again_on_a_fresh_prefix(tmp_path: Path) -> None:
    """wineboot --init exited 1 once on a loaded CI machine: the lab starts over from an empty prefix once, and
    reports the exit code only when the second try fails too."""
    tries = tmp_path / "tries"
    fake_wine = tmp_path / "wine64"
    fake_wine.write_text(f'#!/bin/sh\necho x >> "{tries}"\n[ -e "$WINEPREFIX/leftover" ] && exit 3\n'
                         f'[ "$(wc -l < "{tries}")" -ge 2 ] && exit 0\ntouch "$WINEPREFIX/leftover"; exit 1\n')
    fake_wine.chmod(0o755)
    prefix = WinePrefix(tmp_path / "prefix", wine64=str(fake_wine), wineserver=str(tmp_path / "none"))
    prefix.wait_ready(timeout=30)  # raises if the prefix is reported broken
    assert tries.read_text().count("x") == 2 and not (tmp_path / "prefix" / "leftover").exists()

    always = tmp_path / "wine64-broken"
    always.write_text("#!/bin/sh\nexit 1\n")
    always.chmod(0o755)
    broken = WinePrefix(tmp_path / "broken", wine64=str(always), wineserver=str(tmp_path / "none"))
    with pytest.raises(Exception, match="wineboot exit code 1"):
        broken.wait_ready(timeout=30)
