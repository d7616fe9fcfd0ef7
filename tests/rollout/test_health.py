"""Health gates: judging answers, the retry policy, crash detection and the stability window (fake clock)."""

from __future__ import annotations

import http.server
import itertools
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from fleetctl.node.results import ServiceInfo
from fleetctl.rollout.health import HealthCheck, ProbeResult, judge, probe_from_controller, run_health_gate

CHECK = HealthCheck(url="http://x/healthz", expect_status=200, expect_json=(("version", "1.2"),), interval=1.0,
                    retries=5, stability_window=10.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def running(pid: int = 7, restarts: int = 0, state: str = "Running") -> ServiceInfo:
    return ServiceInfo(True, state, pid, None, restarts, "C:\\apps\\current\\x.exe")


OK = ProbeResult(200, '{"version": "1.2"}', 3)


def test_judge_names_what_differs() -> None:
    assert judge(CHECK, OK).ok
    assert judge(CHECK, ProbeResult(500, "boom", 1)).reason == "status 500 (expected 200): boom"
    assert "'version' is '1.1'" in (judge(CHECK, ProbeResult(200, '{"version": "1.1"}', 1)).reason or "")
    assert "not JSON" in (judge(CHECK, ProbeResult(200, "<html>", 1)).reason or "")
    assert judge(CHECK, ProbeResult(None, "", 1, "timeout after 3s")).reason == "no answer: timeout after 3s"
    body_check = replace(CHECK, expect_json=(), expect_body="ready")
    assert not judge(body_check, ProbeResult(200, "starting", 1)).ok
    nested = replace(CHECK, expect_json=(("build.ok", "true"),))
    assert judge(nested, ProbeResult(200, '{"build": {"ok": true}}', 1)).ok


def test_gate_retries_until_healthy_then_holds_the_window() -> None:
    clock = FakeClock()
    answers = iter([ProbeResult(None, "", 1, "connection refused")] * 2 + [OK] * 100)
    result = run_health_gate(CHECK, lambda: next(answers), lambda: running(), sleep=clock.sleep, clock=clock)
    assert result.ok and result.attempts == 3
    assert clock.now >= 2 + CHECK.stability_window


def test_gate_gives_up_after_retries_with_the_last_reason() -> None:
    clock = FakeClock()
    result = run_health_gate(CHECK, lambda: ProbeResult(500, "no", 1), lambda: running(), sleep=clock.sleep,
                             clock=clock)
    assert not result.ok and result.attempts == 5
    assert result.reason == "unhealthy after 5 tries: status 500 (expected 200): no"


def test_gate_fails_fast_when_the_service_is_not_running() -> None:
    clock = FakeClock()
    result = run_health_gate(CHECK, lambda: ProbeResult(None, "", 1, "connection refused"),
                             lambda: running(state="Stopped"), sleep=clock.sleep, clock=clock)
    assert not result.ok and result.attempts == 1 and (result.reason or "").startswith("crash: service Stopped")


def test_stability_window_catches_a_crash_after_start() -> None:
    """The guard for 'crash 5 s after start': healthy at first, then a restart (new pid) within the window."""
    clock = FakeClock()

    def service() -> ServiceInfo:
        return running(pid=7) if clock.now < 5 else running(pid=8, restarts=1)

    result = run_health_gate(CHECK, lambda: OK, service, sleep=clock.sleep, clock=clock)
    assert not result.ok and "restarted during the stability window" in (result.reason or "")
    assert 5 <= clock.now < CHECK.stability_window


def test_the_service_is_read_at_most_every_second_however_short_the_interval() -> None:
    # Each read is a node call; a 0.25 s probe interval must not make it four per second per host.
    clock = FakeClock()
    fast = replace(CHECK, interval=0.25, retries=40, stability_window=3.0)
    reads: list[float] = []
    answers = iter([ProbeResult(None, "", 1, "connection refused")] * 8 + [OK] * 100)

    def service() -> ServiceInfo:
        reads.append(clock.now)
        return running()

    result = run_health_gate(fast, lambda: next(answers), service, sleep=clock.sleep, clock=clock)
    assert result.ok and result.attempts == 9
    starting = [t for t in reads if t < 2.0]  # 8 failed probes over 1.75 s: read after the first, then 1 s later
    assert starting == [0.0, 1.0]
    window = [t for t in reads if t >= 2.0]  # baseline, then once a second, the last at the window's end
    assert len(window) == 4 and window[-1] >= 2.0 + 3.0 and all(b - a >= 1.0 for a, b in itertools.pairwise(window))


def test_zero_window_and_abort() -> None:
    clock = FakeClock()
    no_window = replace(CHECK, stability_window=0)
    assert run_health_gate(no_window, lambda: OK, lambda: None, sleep=clock.sleep, clock=clock).ok
    aborted = run_health_gate(CHECK, lambda: ProbeResult(500, "", 1), lambda: running(), aborted=lambda: True,
                              sleep=clock.sleep, clock=clock)
    assert not aborted.ok and aborted.attempts == 1 and "aborted" in (aborted.reason or "")


@pytest.fixture()
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if self.path == "/ok" else 503
            body = b'{"version": "1.2"}' if code == 200 else b"down for maintenance"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.50.250", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.50.250:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_controller_probe_reads_status_and_body(http_server: str) -> None:
    assert judge(CHECK, probe_from_controller(http_server + "/ok", 2)).ok
    down = probe_from_controller(http_server + "/x", 2)
    assert down.status == 503 and down.body == "down for maintenance"
    refused = probe_from_controller("http://127.0.50.251:9/", 2)
    assert refused.status is None and refused.error == "connection refused"


def test_the_window_may_start_from_the_state_read_with_the_start() -> None:
    """`first_read` (the state read along with the start) is the window's baseline; the service is read for the
    rest, and a restart since the start is told as such."""
    clock = FakeClock()
    reads: list[str] = []

    def at_start() -> ServiceInfo:
        reads.append("start")
        return running(pid=7)

    def service() -> ServiceInfo:
        reads.append("now")
        return running(pid=8, restarts=1)  # restarted between the start and the probe passing

    result = run_health_gate(CHECK, lambda: OK, service, sleep=clock.sleep, clock=clock, started_pid=7,
                             first_read=at_start)
    assert not result.ok and "restarted since its start (pid 7 -> 8" in (result.reason or ""), result.reason
    assert reads[:2] == ["start", "now"]
    healthy = run_health_gate(CHECK, lambda: OK, lambda: running(pid=7), sleep=clock.sleep, clock=clock,
                              started_pid=7, first_read=lambda: running(pid=7))
    assert healthy.ok
