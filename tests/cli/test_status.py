"""`fleetctl status`: the core against fake nodes (drift, unreachable, health, exact --json shape), and the
command end to end against the lab after a real deploy (marked lab), with `fleetctl logs` and `history`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from project_support import linux_playbook  # tests/cli is on sys.path (no __init__.py)

from fleetctl.node.client import NodeClient
from fleetctl.protocol.errors import AuthenticationFailed, HostUnreachable, NodeOperationError
from fleetctl.rollout.health import HealthCheck, ProbeResult, ProbeVerdict
from fleetctl.status.collect import StatusTarget, collect_status
from fleetctl.transport.fake import FakeCall, FakeTransport

REPO = Path(__file__).resolve().parents[2]
LAB_BASE = os.environ.get("FLEETCTL_TEST_STATUS_BASE", "127.0.61.1")


def node_state(current: str | None, previous: str | None = None, *, service: str | None = "Running",
               lock: dict[str, Any] | None = None) -> dict[str, Any]:
    releases = [{"release": r, "version": r.split("-")[0], "sha256": "0" * 64, "installed_at": None}
                for r in (previous, current) if r]
    svc = {"exists": service is not None, "state": service, "pid": 42, "start_time": None, "restarts": 0,
           "binary_path": "C:\\apps\\hello\\current\\hello.exe"}
    return {"releases": releases, "current": current, "previous": previous, "service": svc, "lock": lock,
            "history": []}


def fleet(answers: dict[str, Any]) -> tuple[list[StatusTarget], Callable[[str], NodeClient], list[FakeCall]]:
    calls: list[FakeCall] = []

    def connect(host: str) -> NodeClient:
        def handler(call: FakeCall) -> Any:
            calls.append(call)
            return answers[host]
        return NodeClient(FakeTransport(handler, host=host))

    check = HealthCheck(url="http://x/healthz")
    targets = [StatusTarget(h, "hello", "C:\\apps\\hello", "hello-svc", lambda v: check) for h in answers]
    return targets, connect, calls


def healthy_probe(check: HealthCheck, client: NodeClient) -> ProbeVerdict:
    return ProbeVerdict(ProbeResult(200, "{}", 1), None)


def test_exact_json_shape_drift_and_unreachable_hosts() -> None:
    lock = {"owner": "ops@ctl", "deploy_id": "d1", "acquired_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-01T00:30:00Z"}
    targets, connect, calls = fleet({
        "a": node_state("2.0-aaa", "1.0-aaa"),
        "b": node_state("2.0-bbb", "1.0-bbb", lock=lock),  # same version, other host's files: no drift
        "c": node_state("1.0-ccc"),
        "d": node_state(None, service=None),
        "e": HostUnreachable("connection refused at 10.0.0.5:5986", host="e"),
        "f": AuthenticationFailed("authentication failed for user 'fleet'", host="f"),
    })
    result = collect_status(targets, connect, forks=3, probe=healthy_probe)
    doc = result.to_json()
    assert list(doc) == ["hosts"] and list(doc["hosts"]) == ["a", "b", "c", "d", "e", "f"]
    for entry in doc["hosts"].values():
        assert list(entry) == ["current", "previous", "service", "healthy", "lock", "crash_loop", "tasks"]
    assert doc["hosts"]["a"] == {"current": {"version": "2.0", "release": "2.0-aaa"},
                                 "previous": {"version": "1.0", "release": "1.0-aaa"},
                                 "service": "Running", "healthy": True, "lock": None, "crash_loop": None,
                                 "tasks": []}
    assert doc["hosts"]["b"]["lock"] == {"owner": "ops@ctl", "deploy_id": "d1",
                                         "acquired_at": "2026-01-01T00:00:00+00:00",
                                         "expires_at": "2026-01-01T00:30:00+00:00", "expired": False,
                                         "renewed_at": None, "reason": None}
    assert doc["hosts"]["d"] == {"current": None, "previous": None, "service": "absent", "healthy": False,
                                 "lock": None, "crash_loop": None, "tasks": []}
    assert doc["hosts"]["e"] == {"current": None, "previous": None, "service": "unreachable", "healthy": False,
                                 "lock": None, "crash_loop": None, "tasks": []}
    assert doc["hosts"]["f"]["service"] == "unreachable"
    assert result.majority == "2.0"
    assert {h: s.drift for h, s in result.hosts.items()} == {"a": False, "b": False, "c": True, "d": True,
                                                             "e": None, "f": None}
    assert result.not_answered == ["e", "f"]
    assert "connection refused" in (result.hosts["e"].error or "")
    # The protocol call: named parameters only, service name from the playbook.
    assert {c.operation for c in calls} == {"Get-FleetState"}
    assert calls[0].params == {"App": "hello", "Root": "C:\\apps\\hello", "ServiceName": "hello-svc"}


def test_health_is_one_probe_and_a_stopped_service_is_never_probed() -> None:
    targets, connect, _ = fleet({"run": node_state("1.0-a"), "stopped": node_state("1.0-b", service="Stopped")})
    probed: list[str] = []

    def failing_probe(check: HealthCheck, client: NodeClient) -> ProbeVerdict:
        probed.append(client.host)
        return ProbeVerdict(ProbeResult(500, "", 1), "status 500 (expected 200)")

    result = collect_status(targets, connect, probe=failing_probe)
    assert probed == ["run"]
    assert result.hosts["run"].healthy is False and result.hosts["run"].error == "status 500 (expected 200)"
    assert result.hosts["stopped"].healthy is False and result.hosts["stopped"].service == "Stopped"
    assert result.hosts["stopped"].answered


def test_health_check_is_built_for_the_version_the_host_runs() -> None:
    versions: list[str | None] = []
    targets, connect, _ = fleet({"a": node_state("3.1-zz"), "b": node_state(None)})
    targets = [StatusTarget(t.host, t.app, t.root, t.service_name,
                            lambda v: versions.append(v) or None) for t in targets]  # type: ignore[func-returns-value]
    result = collect_status(targets, connect, probe=healthy_probe)
    assert set(versions) == {"3.1", None}  # None: nothing installed, so no version to expect
    assert result.hosts["a"].healthy is True  # no health section: Running is healthy


def test_a_node_error_is_reported_not_fatal() -> None:
    targets, connect, _ = fleet({"a": NodeOperationError("INTERNAL", "state file corrupt", host="a"),
                                 "b": node_state("1.0-b")})
    result = collect_status(targets, connect, probe=healthy_probe)
    assert result.hosts["a"].service == "error" and "state file corrupt" in (result.hosts["a"].error or "")
    assert result.hosts["b"].healthy and result.not_answered == ["a"]


# --- end to end against the lab ---------------------------------------------------------------------------------


def fleetctl(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    env.pop("FLEETCTL_INVENTORY", None)
    env.pop("FLEETCTL_HISTORY_DB", None)
    return subprocess.run([sys.executable, "-m", "fleetctl", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """Three ELF lab nodes in this test's address range; yields (cwd, inventory, playbook)."""
    cwd = tmp_path_factory.mktemp("statuslab")
    up = fleetctl(cwd, "lab", "up", "--nodes", "3", "--base", LAB_BASE, "--dir", str(cwd / "lab"), "--no-wine")
    assert up.returncode == 0, up.stderr
    try:
        yield cwd, cwd / "lab" / "inventory.yml", linux_playbook(cwd)
    finally:
        fleetctl(cwd, "lab", "down", "--dir", str(cwd / "lab"), timeout=120)


@pytest.mark.lab
def test_status_logs_and_history_after_real_deploys(lab: tuple[Path, Path, Path]) -> None:
    cwd, inventory, playbook = lab
    inv = ["-i", str(inventory)]
    before = fleetctl(cwd, "status", str(playbook), *inv, "--json")
    assert before.returncode == 0, before.stderr
    assert all(h["current"] is None and h["service"] == "absent" for h in json.loads(before.stdout)["hosts"].values())

    for version, limit in (("1.0.0", []), ("2.0.0", ["--limit", "lab-node01"])):
        deploy = fleetctl(cwd, "deploy", str(playbook), *inv, "--yes", "--json", "--version", version, *limit)
        assert deploy.returncode == 0, deploy.stderr

    status = fleetctl(cwd, "status", str(playbook), *inv, "--json")
    assert status.returncode == 0, status.stderr
    hosts = json.loads(status.stdout)["hosts"]
    assert hosts["lab-node01"]["current"]["version"] == "2.0.0"
    assert hosts["lab-node01"]["previous"]["version"] == "1.0.0"
    assert hosts["lab-node02"]["current"]["version"] == "1.0.0" and hosts["lab-node02"]["previous"] is None
    assert all(h["service"] == "Running" and h["healthy"] is True and h["lock"] is None for h in hosts.values())
    table = fleetctl(cwd, "status", str(playbook), *inv)
    assert table.returncode == 0
    assert re.search(r"lab-node01 .*2\.0\.0.*DRIFT", table.stdout), table.stdout  # 1.0.0 is the majority

    logs = fleetctl(cwd, "logs", str(playbook), *inv, "--host", "lab-node02", "--tail", "3")
    assert logs.returncode == 0, logs.stderr
    assert len(logs.stdout.splitlines()) == 3 and "GET /healthz" in logs.stdout
    bad_host = fleetctl(cwd, "logs", str(playbook), *inv, "--host", "nope")
    assert bad_host.returncode == 2 and "--host" in bad_host.stderr

    history = fleetctl(cwd, "history", "--json")
    runs = json.loads(history.stdout)["runs"]
    assert [(r["version"], r["status"], r["exit_code"]) for r in runs] == [("2.0.0", "succeeded", 0),
                                                                          ("1.0.0", "succeeded", 0)]
    assert runs[0]["outcomes"] == {"deployed": 1} and runs[1]["outcomes"] == {"deployed": 3}
    show = fleetctl(cwd, "history", "show", runs[1]["id"][:-2], "--json")
    detail = json.loads(show.stdout)
    assert set(detail["hosts"]) == {"lab-node01", "lab-node02", "lab-node03"}
    assert all(h["outcome"] == "deployed" and h["timings"] for h in detail["hosts"].values())

    down = fleetctl(cwd, "lab", "fault", "--dir", str(cwd / "lab"), "lab-node03", "unreachable")
    assert down.returncode == 0, down.stderr
    try:
        partial = fleetctl(cwd, "status", str(playbook), *inv, "--json")
        assert partial.returncode == 1
        doc = json.loads(partial.stdout)["hosts"]
        assert doc["lab-node03"] == {"current": None, "previous": None, "service": "unreachable",
                                     "healthy": False, "lock": None, "crash_loop": None, "tasks": []}
        assert doc["lab-node02"]["healthy"] is True
        assert "lab-node03" in partial.stderr
    finally:
        fleetctl(cwd, "lab", "fault", "--dir", str(cwd / "lab"), "lab-node03", "none")
