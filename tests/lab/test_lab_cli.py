"""`fleetctl lab up|status|fault|down` end to end: a real lab process, its inventory, faults at run time, and a
clean shutdown that leaves no process or listener behind."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from node_kit import SERVICE_SCRIPT, chunks
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from tests.support import wait_for

LAB_BASE = os.environ.get("FLEETCTL_TEST_LAB_BASE", "127.0.21.1")
SCALE_BASE = os.environ.get("FLEETCTL_TEST_LAB_SCALE_BASE", "127.0.22.1")
CRASH_BASE = os.environ.get("FLEETCTL_TEST_LAB_CRASH_BASE", "127.0.21.201")
SERVICE_BASE = os.environ.get("FLEETCTL_TEST_LAB_SERVICE_BASE", "127.0.21.101")


def fleetctl(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "fleetctl", *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"fleetctl {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def lab_processes(lab_dir: Path) -> list[int]:
    """PIDs of processes that belong to this lab: the lab process, anything running inside its directory, and
    Wine processes of its prefix (wineserver runs elsewhere but has the prefix in its environment)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            continue  # exited, waiting for its parent to collect it
        mine = str(lab_dir).encode()
        if mine in cmdline or b"WINEPREFIX=" + mine in environ or cwd.startswith(str(lab_dir)):
            found.append(int(entry.name))
    return found


def listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def lab_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "lab"
    yield directory
    fleetctl("lab", "down", "--dir", str(directory), check=False)  # whatever the test did, stop it


def facts(address: str, inventory_vars: dict[str, Any], password: str) -> dict[str, Any]:
    wsman = WSMan(address, username=inventory_vars["fleet_user"], password=password, ssl=True,
                  port=inventory_vars["fleet_port"], auth="ntlm", cert_validation=inventory_vars["fleet_ca_bundle"],
                  connection_timeout=5)
    with RunspacePool(wsman) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-FleetFacts")
        return dict(json.loads(ps.invoke()[0])["result"])


@pytest.mark.lab
def test_lab_up_status_fault_down(lab_dir: Path) -> None:
    up = fleetctl("lab", "up", "--nodes", "3", "--dir", str(lab_dir), "--base", LAB_BASE, "--no-wine",
                  "--workers", "2", "--faults", "node03=unreachable+clock-skew:+10m")
    assert "lab up: 3 node(s)" in up.stdout
    # The inventory points at the CA and reads the password through file(), never inline.
    inventory_text = (lab_dir / "inventory.yml").read_text()
    password = (lab_dir / "credentials").read_text()
    assert password not in inventory_text and "file('" in inventory_text
    assert oct((lab_dir / "credentials").stat().st_mode & 0o777) == "0o600"
    from fleetctl.config.inventory import load_inventory
    from fleetctl.config.templating import render_vars

    inv = load_inventory([lab_dir / "inventory.yml"])
    hosts = inv.select("lab")
    assert [h.name for h in hosts] == ["lab-node01", "lab-node02", "lab-node03"]
    rendered = render_vars(dict(hosts[0].vars), source="lab inventory")
    assert rendered["fleet_password"] == password and rendered["fleet_ca_bundle"] == str(lab_dir / "ca.pem")
    address = rendered["ansible_host"]
    assert facts(address, rendered, password)["hostname"] == "LAB-NODE01"

    status = json.loads(fleetctl("lab", "status", "--json", "--dir", str(lab_dir)).stdout)
    assert set(status) == {"nodes", "ca", "inventory", "cpu"}
    assert status["ca"] == str(lab_dir / "ca.pem") and status["inventory"] == str(lab_dir / "inventory.yml")
    # Two worker processes serve the three nodes; the lab's own CPU is reported per process and in total.
    state = json.loads((lab_dir / "state.json").read_text())
    assert [(w["first"], w["last"]) for w in state["workers"]] == [("lab-node01", "lab-node02"),
                                                                    ("lab-node03", "lab-node03")]
    cpu = status["cpu"]
    assert [p["role"] for p in cpu["processes"]] == ["supervisor", "worker", "worker"]
    assert [p["pid"] for p in cpu["processes"][1:]] == [w["pid"] for w in state["workers"]]
    assert cpu["seconds"] == pytest.approx(sum(p["user"] + p["system"] for p in cpu["processes"]), abs=0.01)
    assert cpu["processes"][1]["user"] > 0  # worker 0 served node01's pool above
    first, _, third = status["nodes"]
    assert {"name", "address", "https_port", "services", "counters"} <= set(first)
    assert first["counters"]["requests"] > 0 and first["https_port"] == 5986
    assert third["faults"] == ["unreachable", "clock-skew:600s"]
    assert not listening(third["address"], 5986)
    assert password not in json.dumps(status)

    # Faults at run time, on nodes of both workers: node01 becomes unreachable, node03 comes back.
    fleetctl("lab", "fault", "lab-node01", "unreachable", "--dir", str(lab_dir))
    fleetctl("lab", "fault", "node03", "none", "--dir", str(lab_dir))
    assert not listening(first["address"], 5986)
    everywhere = json.loads(fleetctl("lab", "fault", "*", "latency:10ms", "--dir", str(lab_dir), "--json").stdout)
    assert everywhere["nodes"] == {"lab-node01": ["unreachable", "latency:10ms"], "lab-node02": ["latency:10ms"],
                                   "lab-node03": ["latency:10ms"]}
    rendered3 = render_vars(dict(hosts[2].vars), source="lab inventory")
    assert facts(rendered3["ansible_host"], rendered3, password)["hostname"] == "LAB-NODE03"
    bad = fleetctl("lab", "fault", "lab-node01", "explode", "--dir", str(lab_dir), check=False)
    assert bad.returncode == 2 and "unknown fault 'explode'" in bad.stderr

    again = fleetctl("lab", "up", "--nodes", "1", "--dir", str(lab_dir), "--base", LAB_BASE, check=False)
    assert again.returncode == 2 and "already running" in again.stderr

    assert lab_processes(lab_dir)
    down = fleetctl("lab", "down", "--dir", str(lab_dir))
    assert "3 node(s) stopped" in down.stdout
    assert lab_processes(lab_dir) == []
    assert not any(listening(n["address"], p) for n in status["nodes"] for p in (5985, 5986))
    assert "no lab was running" in fleetctl("lab", "down", "--dir", str(lab_dir)).stdout
    gone = fleetctl("lab", "status", "--dir", str(lab_dir), check=False)
    assert gone.returncode == 1 and "no lab is running" in gone.stderr


def test_bad_options_fail_before_anything_starts(lab_dir: Path) -> None:
    bad = fleetctl("lab", "up", "--nodes", "2", "--dir", str(lab_dir), "--faults", "node09=unreachable", check=False)
    assert bad.returncode == 2 and "no lab node named 'node09'" in bad.stderr and "--faults" in bad.stderr
    bad = fleetctl("lab", "up", "--nodes", "2", "--dir", str(lab_dir), "--base", "10.0.0.1", check=False)
    assert bad.returncode == 2 and "loopback" in bad.stderr
    bad = fleetctl("lab", "up", "--nodes", "2", "--dir", str(lab_dir), "--workers", "many", check=False)
    assert bad.returncode == 2 and "--workers must be 'auto' or 1..64" in bad.stderr
    bad = fleetctl("lab", "up", "--nodes", "2", "--dir", str(lab_dir), "--idle-timeout", "soon", check=False)
    assert bad.returncode == 2 and "--idle-timeout" in bad.stderr and "bad duration 'soon'" in bad.stderr
    bad = fleetctl("lab", "up", "--nodes", "2", "--dir", str(lab_dir), "--idle-timeout", "0s", check=False)
    assert bad.returncode == 2 and "must be positive" in bad.stderr
    assert not (lab_dir / "state.json").exists()


def deploy(lab_dir: Path, address: str, password: str) -> int:
    """Install the test service on a lab node over WinRM and start it (it ignores SIGTERM); returns its PID."""
    data = SERVICE_SCRIPT
    sha = hashlib.sha256(data).hexdigest()
    wsman = WSMan(address, username="fleet", password=password, ssl=True, port=5986, auth="ntlm",
                  cert_validation=str(lab_dir / "ca.pem"), connection_timeout=5)
    with RunspacePool(wsman) as pool:
        def run(command: str, input_objects: list[str] | None = None, **params: Any) -> dict[str, Any]:
            ps = PowerShell(pool)
            ps.add_cmdlet(command)
            for key, value in params.items():
                ps.add_parameter(key, value)
            doc = json.loads(ps.invoke(input=input_objects)[0])
            assert doc["ok"], doc
            return dict(doc["result"])

        run("Receive-FleetArtifact", chunks(data), Sha256=sha, Size=len(data))
        run("Install-FleetRelease", App="hello", Root="C:\\apps\\hello", Release="1.0-a", Version="1.0",
            Sha256=sha, ExeName="hello.exe")
        run("Switch-FleetRelease", App="hello", Root="C:\\apps\\hello", Release="1.0-a")
        run("Set-FleetService", Name="hello", BinaryPath="C:\\apps\\hello\\current\\hello.exe",
            Arguments=["--listen", "0.0.0.0:18080", "--mode", "ignore-term"])
        return int(run("Start-FleetService", Name="hello", TimeoutSeconds=30)["pid"])


@pytest.mark.lab
def test_services_started_on_many_nodes_at_once_are_stopped_by_lab_down(lab_dir: Path) -> None:
    fleetctl("lab", "up", "--nodes", "4", "--dir", str(lab_dir), "--base", SERVICE_BASE, "--no-wine")
    password = (lab_dir / "credentials").read_text()
    status = json.loads(fleetctl("lab", "status", "--json", "--dir", str(lab_dir)).stdout)
    with ThreadPoolExecutor(max_workers=4) as pool:
        pids = list(pool.map(lambda a: deploy(lab_dir, a, password), [n["address"] for n in status["nodes"]]))
    # Running is reported once the process started; it binds its port a moment later (more so on a busy machine).
    wait_for(lambda: all(listening(n["address"], 18080) for n in status["nodes"]), 20, "every service listening")
    recorded = wait_for(lambda: (s := json.loads((lab_dir / "state.json").read_text()))["service_pids"] and s,
                        5, "service PIDs in state.json")
    assert sorted(recorded["service_pids"]) == sorted(pids)
    running = json.loads(fleetctl("lab", "status", "--json", "--dir", str(lab_dir)).stdout)
    assert [n["services"][0]["state"] for n in running["nodes"]] == ["Running"] * 4
    fleetctl("lab", "down", "--dir", str(lab_dir))
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)  # even though they ignore SIGTERM
    assert not any(listening(n["address"], 18080) for n in status["nodes"])
    assert lab_processes(lab_dir) == []


def lab_pids(lab_dir: Path) -> list[int]:
    """The supervisor's and every worker's PID, from state.json."""
    state = json.loads((lab_dir / "state.json").read_text())
    return [int(state["pid"]), *(int(w["pid"]) for w in state["workers"])]


@pytest.mark.lab
def test_lab_down_cleans_up_after_a_crashed_lab(lab_dir: Path) -> None:
    fleetctl("lab", "up", "--nodes", "1", "--dir", str(lab_dir), "--base", CRASH_BASE, "--no-wine")
    pid = deploy(lab_dir, CRASH_BASE, (lab_dir / "credentials").read_text())
    wait_for(lambda: json.loads((lab_dir / "state.json").read_text())["service_pids"] == [pid], 5,
             "the service PID in state.json")
    for lab_pid in lab_pids(lab_dir):
        os.kill(lab_pid, signal.SIGKILL)  # the whole lab dies without cleaning up; its service is orphaned
    wait_for(lambda: not listening(CRASH_BASE, 5986), 10, "the lab's listeners to go with it")
    assert Path(f"/proc/{pid}").exists()
    down = fleetctl("lab", "down", "--dir", str(lab_dir), "--json")
    assert json.loads(down.stdout)["killed_leftovers"] == [pid]
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the orphaned service to be gone")
    assert lab_processes(lab_dir) == []


@pytest.mark.lab
def test_workers_stop_their_nodes_when_the_supervisor_dies(lab_dir: Path) -> None:
    fleetctl("lab", "up", "--nodes", "2", "--workers", "2", "--dir", str(lab_dir), "--base", CRASH_BASE,
             "--no-wine")
    pids = [deploy(lab_dir, a, (lab_dir / "credentials").read_text()) for a in (CRASH_BASE, next_to(CRASH_BASE))]
    supervisor, *workers = lab_pids(lab_dir)
    os.kill(supervisor, signal.SIGKILL)
    # Each worker reads end of file on its channel and takes its nodes down: services (which ignore SIGTERM)
    # killed after their stop grace, listeners closed, the worker gone.
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in pids + workers), 30,
             "the workers and their services to stop")
    assert not listening(CRASH_BASE, 5986) and not listening(next_to(CRASH_BASE), 5986)
    assert json.loads(fleetctl("lab", "down", "--dir", str(lab_dir), "--json").stdout)["killed_leftovers"] == []
    assert lab_processes(lab_dir) == []


@pytest.mark.lab
def test_a_dead_worker_takes_the_lab_down(lab_dir: Path) -> None:
    fleetctl("lab", "up", "--nodes", "2", "--workers", "2", "--dir", str(lab_dir), "--base", CRASH_BASE,
             "--no-wine")
    survivor_service = deploy(lab_dir, next_to(CRASH_BASE), (lab_dir / "credentials").read_text())
    supervisor, first_worker, _ = lab_pids(lab_dir)
    os.kill(first_worker, signal.SIGKILL)
    # A lab with a silently missing shard would mislead: the supervisor stops the other worker and exits.
    wait_for(lambda: not Path(f"/proc/{supervisor}").exists() or _zombie(supervisor), 30,
             "the supervisor to take the lab down")
    assert not Path(f"/proc/{survivor_service}").exists()
    assert "exited unexpectedly" in (lab_dir / "lab.log").read_text()
    gone = fleetctl("lab", "status", "--dir", str(lab_dir), check=False)
    assert gone.returncode == 1 and "no lab is running" in gone.stderr
    fleetctl("lab", "down", "--dir", str(lab_dir))
    assert lab_processes(lab_dir) == []


def next_to(address: str) -> str:
    head, last = address.rsplit(".", 1)
    return f"{head}.{int(last) + 1}"


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.lab
def test_two_hundred_nodes_come_up_and_down_leaves_nothing(lab_dir: Path) -> None:
    began = time.monotonic()
    fleetctl("lab", "up", "--nodes", "200", "--dir", str(lab_dir), "--base", SCALE_BASE, "--json", timeout=300)
    up_s = time.monotonic() - began
    status = json.loads(fleetctl("lab", "status", "--json", "--dir", str(lab_dir)).stdout)
    addresses = [n["address"] for n in status["nodes"]]
    assert len(addresses) == 200 and len(set(addresses)) == 200
    assert all(listening(a, 5986) for a in addresses)
    # The table fits a screen: a big lab lists only notable nodes (here node007, faulted), then a summary.
    fleetctl("lab", "fault", "--dir", str(lab_dir), "node007", "latency:1ms")
    text = fleetctl("lab", "status", "--dir", str(lab_dir)).stdout
    assert "lab-node007" in text and "lab-node008" not in text and len(text.splitlines()) < 20
    words = " ".join(text.split())  # rich wraps long lines at the terminal's width
    assert "200 node(s)" in words and "199 node(s) not listed" in words and "lab CPU:" in words
    began = time.monotonic()
    fleetctl("lab", "down", "--dir", str(lab_dir), timeout=300)
    down_s = time.monotonic() - began
    assert lab_processes(lab_dir) == []
    assert not any(listening(a, p) for a in addresses for p in (5985, 5986))
    print(f"200 nodes: up {up_s:.1f} s, down {down_s:.1f} s")


@pytest.mark.lab
@pytest.mark.slow
def test_a_thousand_nodes_across_workers(lab_dir: Path) -> None:
    began = time.monotonic()
    fleetctl("lab", "up", "--nodes", "1000", "--dir", str(lab_dir), "--base", SCALE_BASE, "--json", "--no-wine",
             timeout=600)
    up_s = time.monotonic() - began
    status = json.loads(fleetctl("lab", "status", "--json", "--dir", str(lab_dir)).stdout)
    addresses = [n["address"] for n in status["nodes"]]
    # Beyond 250 nodes the addresses continue in the next /24s; names are zero-padded to four digits.
    assert len(set(addresses)) == 1000 and addresses[250] == next_octet(SCALE_BASE)
    assert status["nodes"][-1]["name"] == "lab-node1000"
    assert len([p for p in status["cpu"]["processes"] if p["role"] == "worker"]) == min(os.cpu_count() or 1, 10)
    assert all(listening(a, 5986) for a in addresses)
    # Faults and status reach nodes of every worker.
    fleetctl("lab", "fault", "--dir", str(lab_dir), "lab-node1000", "unreachable")
    assert not listening(addresses[-1], 5986)
    began = time.monotonic()
    fleetctl("lab", "down", "--dir", str(lab_dir), timeout=600)
    down_s = time.monotonic() - began
    assert lab_processes(lab_dir) == []
    assert not any(listening(a, p) for a in addresses for p in (5985, 5986))
    print(f"1000 nodes: up {up_s:.1f} s, down {down_s:.1f} s")


def next_octet(base: str) -> str:
    a, b, c, d = (int(x) for x in base.split("."))
    offset = d - 1 + 250
    return f"{a}.{b}.{c + offset // 250}.{offset % 250 + 1}"
