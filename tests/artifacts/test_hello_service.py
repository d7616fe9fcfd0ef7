"""The example service itself: /healthz under wine64 (the exact Windows artifact, built with the Go fleetctl picks
and golang.org/x/sys), its broken modes, graceful stop, its log file (the Linux build, for speed where Windows
behaviour is not the point), its Go tests under Wine, and svc.Run under Wine's own service control manager."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from artifacts_support import HELLO_SRC, NET, TEST_VERSION, WINE64

from fleetctl.artifacts.go_toolchain import GoToolchain
from fleetctl.artifacts.manifest import Manifest
from tests.support import free_port, wait_for

ADDRESS = f"{NET}.1"


def _get(url: str) -> tuple[int, dict | str] | None:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if url.endswith("/healthz") else body
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode())
    except OSError:
        return None


class Running:
    def __init__(self, argv: list[str], env: dict[str, str], port: int) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.base = f"http://{ADDRESS}:{port}"

    def healthz(self, timeout: float = 30) -> tuple[int, dict]:  # type: ignore[type-arg]
        def answer():  # type: ignore[no-untyped-def]
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}: {self.output()}")
            return _get(self.base + "/healthz")
        return wait_for(answer, timeout, "/healthz to answer")  # type: ignore[no-any-return]

    def output(self) -> str:
        return self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def started() -> Iterator[list[Running]]:
    running: list[Running] = []
    yield running
    for r in running:
        r.stop()


def _start_wine(exe: Path, env: dict[str, str], log_dir: Path, started: list[Running], *extra: str) -> Running:
    port = free_port(ADDRESS)
    argv = [WINE64, str(exe), "-listen", f"{ADDRESS}:{port}", "-log-dir", "Z:" + str(log_dir).replace("/", "\\"),
            *extra]
    r = Running(argv, env, port)
    started.append(r)
    return r


@pytest.mark.wine
def test_windows_build_answers_healthz_under_wine_and_stops_gracefully(
        hello_windows: Manifest, wine_prefix: dict[str, str], tmp_path: Path, started: list[Running]) -> None:
    svc = _start_wine(hello_windows.path, wine_prefix, tmp_path / "logs", started)
    status, body = svc.healthz(timeout=90)
    assert status == 200
    assert body["status"] == "ok" and body["version"] == TEST_VERSION and body["mode"] == "ok"
    assert isinstance(body["uptime_seconds"], (int, float))
    assert _get(svc.base + "/") == (200, f"hello {TEST_VERSION}\n")
    # Wine turns SIGINT into a console Ctrl-C event, which the service handles by shutting down cleanly
    svc.proc.send_signal(signal.SIGINT)
    assert svc.proc.wait(15) == 0
    log = (tmp_path / "logs" / "hello.log").read_text()
    assert f"hello {TEST_VERSION} listening on {ADDRESS}" in log and "GET /healthz" in log and "stopped" in log
    # Started by wine64, not by an SCM: x/sys's IsWindowsService says console mode at once (the dispatcher,
    # which under Wine takes ~10 s to fail for such a process, is never called), and debug.Run turned the
    # Ctrl-C into the handler's Stop.
    assert "console mode: not started by the service control manager" in log
    assert "service control 1: stopping" in log and f"info: hello {TEST_VERSION} stopped" in log


@pytest.mark.wine
def test_the_prefixs_process_prng_is_what_lets_a_current_go_exe_start(
        hello_windows: Manifest, wine_prefix: dict[str, str]) -> None:
    """An exe of Go >= 1.22 runs in the prefix as the lab prepares it, and dies as docs/windows.md (Go programs)
    describes when bcryptprimitives.dll is taken away from that one process (whether Wine's own or the lab's shim)."""
    works = subprocess.run([WINE64, str(hello_windows.path), "-version"], env=wine_prefix, capture_output=True,
                           text=True, errors="replace", timeout=60, check=False)
    assert (works.returncode, works.stdout.strip()) == (0, TEST_VERSION), works.stderr
    without = {**wine_prefix, "WINEDLLOVERRIDES": "mscoree,mshtml,bcryptprimitives="}  # "=" disables a DLL
    broken = subprocess.run([WINE64, str(hello_windows.path), "-version"], env=without, capture_output=True,
                            text=True, errors="replace", timeout=60, check=False)
    assert broken.returncode != 0 and "bcryptprimitives.dll not found" in broken.stdout + broken.stderr


def test_windows_build_is_made_by_the_chosen_go_with_x_sys(hello_windows: Manifest,
                                                           go_toolchain: GoToolchain) -> None:
    """The issue's check: `go version -m` on the exe lists golang.org/x/sys (the module's x/sys/windows/svc)."""
    done = subprocess.run([go_toolchain.path, "version", "-m", str(hello_windows.path)], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.splitlines()[0].endswith(f": {go_toolchain.version}")
    assert hello_windows.go_version == go_toolchain.version
    deps = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("dep")]
    assert [d[1] for d in deps] == ["golang.org/x/sys"], done.stdout
    required = (HELLO_SRC / "go.mod").read_text().split("golang.org/x/sys ")[1].split()[0]
    assert deps[0][2] == required


@pytest.mark.wine
def test_windows_build_unhealthy_mode_from_environment(
        hello_windows: Manifest, wine_prefix: dict[str, str], tmp_path: Path, started: list[Running]) -> None:
    svc = _start_wine(hello_windows.path, {**wine_prefix, "HELLO_MODE": "unhealthy"}, tmp_path, started)
    status, body = svc.healthz(timeout=90)
    assert status == 500 and body["status"] == "unhealthy" and body["version"] == TEST_VERSION


def _start_linux(m: Manifest, tmp_path: Path, started: list[Running], *extra: str,
                 env: dict[str, str] | None = None) -> Running:
    port = free_port(ADDRESS)
    r = Running([str(m.path), "-listen", f"{ADDRESS}:{port}", "-log-dir", str(tmp_path / "logs"), *extra],
                {**os.environ, **(env or {})}, port)
    started.append(r)
    return r


def test_crash_mode_exits_after_the_given_time(hello_linux: Manifest, tmp_path: Path,
                                                started: list[Running]) -> None:
    svc = _start_linux(hello_linux, tmp_path, started, "-mode", "crash-after-1s")
    status, body = svc.healthz()
    assert status == 200 and body["mode"] == "crash-after-1s"
    assert svc.proc.wait(15) != 0
    assert "crashing as configured" in (tmp_path / "logs" / "hello.log").read_text()


def test_command_line_mode_wins_over_environment_and_sigterm_is_graceful(
        hello_linux: Manifest, tmp_path: Path, started: list[Running]) -> None:
    svc = _start_linux(hello_linux, tmp_path, started, "-mode", "ok", env={"HELLO_MODE": "unhealthy"})
    assert svc.healthz()[0] == 200
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(15) == 0
    assert "stopped" in (tmp_path / "logs" / "hello.log").read_text()


@pytest.mark.parametrize("mode", ["bogus", "crash-after-", "crash-after-0s", "crash-after-x"])
def test_bad_mode_is_refused(hello_linux: Manifest, tmp_path: Path, mode: str) -> None:
    done = subprocess.run(check=False, args=[str(hello_linux.path), "-mode", mode, "-log-dir", str(tmp_path)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "expected" in done.stderr


def test_version_flag(hello_linux: Manifest) -> None:
    done = subprocess.run(check=False, args=[str(hello_linux.path), "-version"], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == TEST_VERSION


def _sc(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([WINE64, "sc", *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout


@pytest.fixture(scope="session")
def hello_windows_tests(go_toolchain: GoToolchain, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's Go tests compiled for windows/amd64 (`go test -c`), with the Go fleetctl builds with."""
    out = tmp_path_factory.mktemp("hello-tests") / "hello.test.exe"
    env = {**os.environ, "CGO_ENABLED": "0", "GOOS": "windows", "GOARCH": "amd64"}
    subprocess.run([go_toolchain.path, "test", "-c", "-o", str(out), "."], cwd=HELLO_SRC, env=env, check=True,
                   capture_output=True, timeout=600)
    return out


@pytest.mark.wine
def test_the_examples_go_tests_pass_under_wine(hello_windows_tests: Path, wine_prefix: dict[str, str]) -> None:
    """The svc.Handler (Running, Interrogate, Stop and Shutdown with StopPending, a second Stop while stopping,
    a failed start's service-specific exit code) and the graceful HTTP shutdown, run as Windows code."""
    done = subprocess.run([WINE64, str(hello_windows_tests), "-test.v", "-test.count=1"], env=wine_prefix,
                          capture_output=True, text=True, errors="replace", timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("TestHandlerReportsRunningAnswersInterrogateAndStopsGracefully",
                 "TestHandlerShutdownIsAnsweredLikeStop", "TestHandlerFailsWithAServiceSpecificCodeWhenItCannotListen",
                 "TestStopCutsOffRequestsAfterTheTimeout"):
        assert f"--- PASS: {name}" in done.stdout, done.stdout


@pytest.mark.wine
def test_svc_run_under_wines_service_control_manager(
        hello_windows: Manifest, hello_windows_tests: Path, wine_prefix: dict[str, str], tmp_path: Path,
        started: list[Running]) -> None:
    """Started by Wine's services.exe, svc.Run connects the handler to the SCM: the service reports Running,
    stops on the Stop control and reports Stopped with exit code 0. The example's test binary is the service
    (`-as-service`, see its TestMain): Wine runs services.exe in session 1, where svc.IsWindowsService (parent
    services.exe in session 0, as on Windows) says console mode, so the example itself would not call svc.Run."""
    # Wine ends its services when no ordinary process is left, so keep one running during the test.
    _start_wine(hello_windows.path, wine_prefix, tmp_path / "anchor-logs", started).healthz(timeout=90)
    name = f"fleethello{os.getpid()}"
    port = free_port(ADDRESS)
    log_dir = tmp_path / "svc-logs"
    bin_path = f"Z:{hello_windows_tests} -as-service -listen {ADDRESS}:{port} -log-dir Z:{log_dir}".replace("/", "\\")
    _sc(wine_prefix, "create", name, "binPath=", bin_path)
    try:
        _sc(wine_prefix, "start", name)
        status, body = wait_for(lambda: _get(f"http://{ADDRESS}:{port}/healthz"), 30, "the service to answer")
        assert status == 200 and body["status"] == "ok"
        assert "RUNNING" in _sc(wine_prefix, "query", name)
        _sc(wine_prefix, "stop", name)

        def stopped() -> str | None:
            answer = _sc(wine_prefix, "query", name)
            return answer if "STOPPED" in answer else None

        final = wait_for(stopped, 30, "the service to report Stopped")
        assert "WIN32_EXIT_CODE    : 0" in final
        log = (log_dir / "hello.log").read_text()
        assert "console mode" not in log
        assert "service control 1: stopping" in log and log.rstrip().endswith("stopped")
    finally:
        _sc(wine_prefix, "stop", name)
        _sc(wine_prefix, "delete", name)
