"""Driving a lab from the controller side: start the lab process, talk to its control socket, take it down.

`fleetctl lab up|down|status|fault` call exactly these functions:
    lab_up(layout, nodes=, base=, faults=, wine=, workers=, idle_timeout=) -> dict   # when every node answers
    lab_status(layout) -> dict                                # {"nodes": [...], "ca": PATH, "inventory": PATH}
    lab_fault(layout, target, faults) -> dict
    lab_down(layout) -> dict                                  # {"stopped", "pid", "leftover_listeners", ...}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleetctl.config.redaction import redact
from fleetctl.errors import ConfigError, FleetError
from fleetctl.lab.faults import assign_faults, parse_duration, parse_fault_spec
from fleetctl.lab.layout import (
    DEFAULT_IDLE_TIMEOUT_S,
    HTTP_PORT,
    HTTPS_PORT,
    LabLayout,
    node_addresses,
    node_name,
)
from fleetctl.lab.wine import WinePrefix

MAX_NODES = 2000
MAX_WORKERS = 64
NODES_PER_WORKER = 100  # `--workers auto`: one worker per this many nodes, at most one per core
_LAB_MODULES = (b"fleetctl.lab.fleet", b"fleetctl.lab.worker")
_children: dict[int, subprocess.Popen[bytes]] = {}  # lab processes this process started (reaped in lab_down)


class LabError(FleetError):
    """The lab could not be started, reached or stopped; the message says why and where its log is."""


def _request(layout: LabLayout, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(layout.control))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return dict(json.loads(data))


def _read_state(layout: LabLayout) -> dict[str, Any] | None:
    try:
        return dict(json.loads(layout.state.read_text()))
    except (FileNotFoundError, ValueError):
        return None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False


def _is_lab_process(pid: int) -> bool:
    """The supervisor or one of its workers (never a recycled PID of an unrelated process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(module in cmdline for module in _LAB_MODULES)


def resolve_workers(workers: str | int | None, nodes: int) -> int:
    """`--workers`: a count, or `auto` (one per NODES_PER_WORKER nodes, at most the machine's cores)."""
    if workers is None or str(workers).strip().lower() == "auto":
        return max(1, min(os.cpu_count() or 1, math.ceil(nodes / NODES_PER_WORKER)))
    try:
        count = int(str(workers))
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(f"--workers must be 'auto' or 1..{MAX_WORKERS} (got {workers!r})", key="--workers")
    return min(count, nodes)


def resolve_idle_timeout(text: str | float | None) -> float:
    """`--idle-timeout`: a duration (`5s`, `2h`); default Windows' 7200000 ms."""
    if text is None:
        return DEFAULT_IDLE_TIMEOUT_S
    seconds = text if isinstance(text, float) else parse_duration(str(text), where="--idle-timeout")
    if seconds <= 0:
        raise ConfigError(f"--idle-timeout must be positive (got {text!r})", key="--idle-timeout")
    return float(seconds)


def running_pid(layout: LabLayout) -> int | None:
    state = _read_state(layout)
    if state and not state.get("stopped") and _alive(int(state["pid"])) and _is_lab_process(int(state["pid"])):
        return int(state["pid"])
    return None


def _log_tail(layout: LabLayout, lines: int = 8) -> str:
    """Why the lab failed: its own one-line reason if it logged one, else the last lines of its log."""
    try:
        text = layout.log.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    reasons = [line.split("lab failed to start: ", 1)[1] for line in text if "lab failed to start: " in line]
    return redact(reasons[-1] if reasons else " | ".join(text[-lines:]))


def lab_up(layout: LabLayout, *, nodes: int, base: str, faults: str | None = None, wine: bool = True,
           workers: str | int | None = None, idle_timeout: str | float | None = None,
           timeout_s: float | None = None) -> dict[str, Any]:
    """Start a lab of `nodes` nodes in the background; returns its status once every node answers."""
    if not 1 <= nodes <= MAX_NODES:
        raise ConfigError(f"--nodes must be 1..{MAX_NODES} (got {nodes})", key="--nodes")
    worker_count = resolve_workers(workers, nodes)
    idle_timeout_s = resolve_idle_timeout(idle_timeout)
    addresses = node_addresses(base, nodes)
    names = [node_name(i, nodes) for i in range(1, nodes + 1)]
    assigned = assign_faults(parse_fault_spec(faults), names) if faults else {}
    pid = running_pid(layout)
    if pid is not None:
        raise ConfigError(f"a lab is already running in {layout.dir} (pid {pid}); run `fleetctl lab down` first",
                          key="lab up")
    _cleanup_leftovers(layout)
    layout.dir.mkdir(parents=True, exist_ok=True)
    layout.state.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "fleetctl.lab.fleet", "--dir", str(layout.dir), "--nodes", str(nodes),
            "--base", base, "--workers", str(worker_count), "--idle-timeout", repr(idle_timeout_s)]
    argv += (["--faults", faults] if faults else []) + ([] if wine else ["--no-wine"])
    with open(layout.log, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # the lab outlives this command
    _children[proc.pid] = proc
    limit = timeout_s or 60 + 0.5 * nodes
    deadline = time.monotonic() + limit
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"the lab process exited (code {proc.returncode}) while starting: {_log_tail(layout)} "
                           f"(log: {layout.log})")
        state = _read_state(layout)
        if state and state.get("ready") and layout.control.exists():
            with contextlib.suppress(OSError, ValueError):
                status = _request(layout, {"cmd": "status"})
                break
        time.sleep(0.1)
    if status is None:
        _stop_process(proc.pid)
        raise LabError(f"the lab did not come up within {limit:.0f} s: {_log_tail(layout)} (log: {layout.log})")
    # "Up" means every node answers: a TCP connect to each listener that is not faulted off on purpose.
    expect_down = {n for n, fs in assigned.items() if any(f.name == "unreachable" and not f.clear for f in fs)}
    waiting = [a for n, a in zip(names, addresses) if n not in expect_down]
    while waiting and time.monotonic() < deadline:
        waiting = [a for a in waiting if not _answers(a, HTTPS_PORT)]
        if waiting:
            time.sleep(0.1)
    if waiting:
        raise LabError(f"{len(waiting)} lab node(s) do not answer on port {HTTPS_PORT}, e.g. {waiting[0]}; "
                       f"see {layout.log}")
    return status


def _answers(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def lab_status(layout: LabLayout) -> dict[str, Any]:
    if running_pid(layout) is None:
        raise LabError(f"no lab is running in {layout.dir}; start one with `fleetctl lab up`")
    try:
        return _request(layout, {"cmd": "status"})
    except (OSError, ValueError) as err:
        raise LabError(f"the lab in {layout.dir} does not answer on {layout.control}: {err}") from None


def lab_fault(layout: LabLayout, target: str, faults: str) -> dict[str, Any]:
    if running_pid(layout) is None:
        raise LabError(f"no lab is running in {layout.dir}; start one with `fleetctl lab up`")
    answer = _request(layout, {"cmd": "fault", "target": target, "faults": faults})
    if not answer.get("ok"):
        raise ConfigError(str(answer.get("error")), key="lab fault")
    return answer


def lab_down(layout: LabLayout, timeout_s: float = 60.0) -> dict[str, Any]:
    """Stop the lab and everything it started; reports what was stopped and any listener still open."""
    state = _read_state(layout)
    pid = running_pid(layout)
    forced = False
    if pid is not None:
        with contextlib.suppress(OSError, ValueError):
            _request(layout, {"cmd": "down"}, timeout=10)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            forced = True
            _stop_process(pid)
    killed = _cleanup_leftovers(layout)
    addresses = (state or {}).get("addresses", [])
    leftover = [f"{a}:{p}" for a in addresses for p in (HTTP_PORT, HTTPS_PORT) if _answers(a, p, 0.2)]
    child = _children.pop(pid, None) if pid is not None else None
    if child is not None:
        child.wait(5)
    layout.control.unlink(missing_ok=True)
    layout.state.unlink(missing_ok=True)
    return {"stopped": pid is not None, "pid": pid, "forced": forced, "killed_leftovers": killed,
            "leftover_listeners": leftover, "nodes": len(addresses)}


def _stop_process(pid: int) -> None:
    if not _is_lab_process(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cleanup_leftovers(layout: LabLayout) -> list[int]:
    """Kill what a crashed lab left behind: worker processes (recognised by their command line), service
    processes (recognised by a working directory inside the lab's node drives, so a recycled PID of someone else's
    process is never touched) and the lab's wineserver. Returns the service PIDs killed."""
    state = _read_state(layout)
    for worker in (state or {}).get("workers", []):
        pid = worker.get("pid")
        if pid and _alive(int(pid)) and _is_lab_process(int(pid)):
            _stop_process(int(pid))
    killed = []
    nodes_dir = str(layout.nodes.resolve())
    for pid in (state or {}).get("service_pids", []):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(nodes_dir + os.sep):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
    if layout.wineprefix.exists() and state is not None:
        WinePrefix(layout.wineprefix).shutdown()
    return killed


def wait_until(predicate: Any, timeout_s: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout_s` passes (no fixed sleeps in callers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
