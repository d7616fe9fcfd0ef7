"""Fault injection: the `--faults` grammar, and each fault's effect on a lab node (services, disk, clock, network)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_kit import SERVICE_SCRIPT, call, define_service, error, install, next_address, ok
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import PowerShell, RunspacePool

from fleetctl.errors import ConfigError
from fleetctl.lab.faults import Fault, NodeFaults, assign_faults, parse_fault, parse_fault_spec
from fleetctl.lab.node import LabNode
from tests.support import free_port, wait_for

NAMES = [f"lab-node{i:02d}" for i in range(1, 21)]


# ---- grammar -------------------------------------------------------------------------------------------------
def test_spec_with_names_short_names_percentages_and_combined_faults() -> None:
    rules = parse_fault_spec("node03=crash-on-start, lab-node05=latency:200ms+disk-full,10%=unreachable,"
                             "node07=crash-after:5s,*=clock-skew:-2m")
    assigned = assign_faults(rules, NAMES)
    assert assigned["lab-node03"][0] == Fault("crash-on-start")
    assert Fault("latency", 0.2) in assigned["lab-node05"] and Fault("disk-full") in assigned["lab-node05"]
    assert Fault("crash-after", 5.0) in assigned["lab-node07"]
    unreachable = [n for n, fs in assigned.items() if Fault("unreachable") in fs]
    assert len(unreachable) == 2  # ceil(10% of 20)
    assert all(Fault("clock-skew", -120.0) in assigned[n] for n in NAMES)
    # Deterministic: the same spec picks the same nodes.
    again = assign_faults(parse_fault_spec("10%=unreachable"), NAMES)
    assert sorted(again) == sorted(unreachable)


def test_a_percentage_never_rounds_to_zero_nodes() -> None:
    assert len(assign_faults(parse_fault_spec("1%=blackhole"), NAMES[:3])) == 1


@pytest.mark.parametrize("spec, expected", [
    ("node03", "expected TARGET=FAULT"),
    ("node03=explode", "unknown fault 'explode'"),
    ("node03=latency", "needs a duration"),
    ("node03=latency:fast", "bad duration 'fast'"),
    ("node03=latency:-5s", "bad duration"),
    ("node03=unreachable:5s", "takes no value"),
    ("150%=unreachable", "bad percentage"),
    ("nodeX=unreachable", "no lab node named 'nodeX'"),
    ("node99=unreachable", "no lab node named 'node99'"),
    (" , ", "empty fault spec"),
])
def test_bad_specs_raise_one_clear_config_error(spec: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as err:
        assign_faults(parse_fault_spec(spec), NAMES)
    assert "--faults" in str(err.value)
    assert err.value.exit_code == 2


def test_faults_apply_and_clear_one_by_one_or_all() -> None:
    faults = NodeFaults()
    for text in ("latency:250ms", "health-failing", "clock-skew:+1h"):
        faults.apply(parse_fault(text))
    assert faults.active() == ["health-failing", "latency:250ms", "clock-skew:3600s"]
    assert faults.network().latency_ms == 250
    faults.apply(parse_fault("no-latency"))
    assert faults.active() == ["health-failing", "clock-skew:3600s"]
    faults.apply(parse_fault("none"))
    assert faults.active() == []


# ---- service faults ------------------------------------------------------------------------------------------
@pytest.fixture
def node(tmp_path: Path) -> Iterator[LabNode]:
    n = LabNode("lab-node01", next_address(), tmp_path / "lab-node01")
    install(n, SERVICE_SCRIPT, "1.0-a")
    yield n
    n.close()


def test_crash_on_start_fails_every_start_until_cleared(node: LabNode) -> None:
    define_service(node, free_port(node.address), RecoveryRestartSeconds=1)
    node.apply_faults([parse_fault("crash-on-start")])
    err = error(node, "Start-FleetService", "SERVICE_START_FAILED", Name="hello", TimeoutSeconds=10)
    assert err["details"]["exit_code"] == 1067
    # Recovery keeps restarting it and it keeps crashing: the restart counter shows the loop.
    wait_for(lambda: node.counters["service_restarts"] >= 1, 10, "a recovery restart")
    node.apply_faults([parse_fault("no-crash-on-start")])
    wait_for(lambda: node.scm.status("hello")["state"] == "Running", 10, "recovery to succeed once cleared")


def test_crash_after_kills_the_running_service_and_recovery_restarts_it(node: LabNode) -> None:
    define_service(node, free_port(node.address), RecoveryRestartSeconds=1)
    node.apply_faults([parse_fault("crash-after:500ms")])
    began = time.monotonic()
    first = ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)
    assert first["state"] == "Running"
    wait_for(lambda: node.scm.status("hello")["state"] != "Running", 5, "the crash")
    assert time.monotonic() - began >= 0.45
    wait_for(lambda: node.scm.status("hello")["restarts"] >= 1, 10, "the recovery restart")


def test_slow_stop_times_out_the_stop_then_the_service_stops(node: LabNode) -> None:
    define_service(node, free_port(node.address))
    ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)
    node.apply_faults([parse_fault("slow-stop:1500ms")])
    err = error(node, "Stop-FleetService", "SERVICE_STOP_TIMEOUT", Name="hello", TimeoutSeconds=0)
    assert err["details"]["state"] == "StopPending" and err["details"]["pid"]
    stopped = ok(node, "Stop-FleetService", Name="hello", TimeoutSeconds=10)
    assert stopped["state"] == "Stopped" and stopped["was"] == "StopPending" and stopped["waited_ms"] >= 1000


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_health_failing_makes_the_running_service_answer_500_until_cleared(node: LabNode) -> None:
    port = free_port(node.address)
    define_service(node, port)
    node.apply_faults([parse_fault("health-failing")])
    ok(node, "Start-FleetService", Name="hello", TimeoutSeconds=10)
    url = f"http://{node.address}:{port}/healthz"
    assert _status(url) == 500
    assert ok(node, "Test-FleetHealth", Url=url, TimeoutSeconds=5)["status"] == 500
    assert node.scm.status("hello")["state"] == "Running"  # the process itself is fine
    node.apply_faults([parse_fault("no-health-failing")])
    assert _status(url) == 200
    ok(node, "Stop-FleetService", Name="hello", TimeoutSeconds=10)
    with pytest.raises(urllib.error.URLError):
        _status(url)  # the front went away with the service


def test_disk_full_fails_artifact_and_release_writes(node: LabNode) -> None:
    node.apply_faults([parse_fault("disk-full")])
    assert ok(node, "Get-FleetFacts")["drives"]["C"] == 0
    hello_sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256(b"hello")
    doc = call(node, "Receive-FleetArtifact", ["aGVsbG8="], Sha256=hello_sha, Size=5, Compression="none")
    assert doc["error"]["code"] == "DISK_FULL"
    # The artifact installed by the fixture is still in the cache; copying it into a new release needs space.
    state = ok(node, "Get-FleetState", App="hello", Root="C:\\apps\\hello")
    err = error(node, "Install-FleetRelease", "DISK_FULL", App="hello", Root="C:\\apps\\hello", Release="1.1-a",
                Version="1.1", Sha256=state["releases"][0]["sha256"], ExeName="hello.exe")
    assert "not enough free space" in err["message"]
    node.apply_faults([parse_fault("no-disk-full")])
    assert ok(node, "Get-FleetFacts")["drives"]["C"] > 0


# ---- network faults through the real WinRM server ------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path, serve_backend: Callable[..., Any]) -> Iterator[Any]:
    backend = LabNode("lab-node09", next_address(), tmp_path / "lab-node09")
    yield serve_backend(backend, address=backend.address)
    backend.close()


def _facts(served: Any, **kw: Any) -> dict[str, Any]:
    import json

    with RunspacePool(served.wsman(**kw)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-FleetFacts")
        return dict(json.loads(ps.invoke()[0])["result"])


def test_requests_are_counted_and_latency_delays_every_answer(served: Any) -> None:
    assert _facts(served)["lab"] is True
    counters = served.backend.counters
    assert counters["requests"] > 0 and counters["bytes_received"] > 0
    began = time.monotonic()
    _facts(served)
    plain = time.monotonic() - began
    served.backend.apply_faults([parse_fault("latency:200ms")])
    began = time.monotonic()
    _facts(served)
    assert time.monotonic() - began >= plain + 0.6  # several requests, each 200 ms later


def test_auth_failure_refuses_the_right_password(served: Any) -> None:
    served.backend.apply_faults([parse_fault("auth-failure")])
    with pytest.raises(AuthenticationError):
        _facts(served)


def test_blackhole_accepts_but_never_answers(served: Any) -> None:
    served.backend.apply_faults([parse_fault("blackhole")])
    with socket.create_connection((served.address, served.https_port), timeout=2):
        pass  # accepted
    with pytest.raises(Exception) as err:
        _facts(served, read_timeout=1, connection_timeout=1)
    assert "timed out" in str(err.value).lower() or "timeout" in type(err.value).__name__.lower()


def test_unreachable_refuses_connections_until_cleared(served: Any) -> None:
    served.backend.apply_faults([parse_fault("unreachable")])
    served.set_listening(not served.backend.faults.unreachable)  # what the lab process does on a fault change
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((served.address, served.https_port), timeout=2)
    served.backend.apply_faults([parse_fault("no-unreachable")])
    served.set_listening(not served.backend.faults.unreachable)
    assert _facts(served)["lab"] is True
