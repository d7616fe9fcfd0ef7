"""The lab supervisor, the one process `fleetctl lab up` starts: it creates the lab's files, runs the worker
processes that serve the nodes, answers the control socket and takes everything down.

Run as `python -m fleetctl.lab.fleet --dir DIR --nodes N --base ADDR [--faults SPEC] [--workers W]
[--idle-timeout SECONDS] [--no-wine]`. It writes the credentials file, the lab CA and the inventory, prepares the
one Wine prefix in the background, and starts W workers (`worker.py`), each serving a contiguous shard of the
nodes on its own event loop, so the lab's protocol work runs on every core. The control socket `DIR/control.sock`
takes newline-terminated JSON: `{"cmd": "status"}`, `{"cmd": "fault", "target": T, "faults": "F+F"}`,
`{"cmd": "down"}`; status and faults are answered by asking the workers. `DIR/state.json` records this process's
PID, every worker's PID and every service PID, so `lab down` can clean up even after a crash. A worker that dies
takes the lab down with it (a lab with a silently missing shard would be worse than none).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from fleetctl.config.redaction import register_secret
from fleetctl.errors import FleetError
from fleetctl.lab.certs import create_ca
from fleetctl.lab.channel import ChannelClosed, WorkerChannel
from fleetctl.lab.faults import assign_faults, parse_fault, parse_fault_spec, resolve_target, split_faults
from fleetctl.lab.layout import (
    DEFAULT_IDLE_TIMEOUT_S,
    HTTP_PORT,
    HTTPS_PORT,
    LabLayout,
    node_addresses,
    node_name,
    write_inventory,
)
from fleetctl.lab.nodeerror import NodeError
from fleetctl.lab.wine import WinePrefix

log = logging.getLogger("fleetctl.lab")
STOP_TIMEOUT_S = 60.0


class _Worker:
    """The supervisor's view of one worker process."""

    def __init__(self, index: int, names: list[str], addresses: list[str]) -> None:
        self.index = index
        self.names = names
        self.addresses = addresses
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: WorkerChannel | None = None
        self.ready = threading.Event()
        self.error: str | None = None
        self.service_pids: list[int] = []

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "pid": self.pid, "nodes": len(self.names),
                "first": self.names[0], "last": self.names[-1]}


def shards(count: int, workers: int) -> list[range]:
    """Node indexes 0..count-1 in `workers` contiguous shards, sizes differing by at most one."""
    workers = max(1, min(workers, count))
    bounds = [round(i * count / workers) for i in range(workers + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(workers)]


class LabSupervisor:
    """Every node of one lab, served by worker processes; the lab's shared files and its Wine prefix."""

    def __init__(self, layout: LabLayout, count: int, base: str, faults_spec: str | None, wine: bool,
                 workers: int = 1, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.layout = layout
        self.names = [node_name(i, count) for i in range(1, count + 1)]
        self.addresses = node_addresses(base, count)
        rules = parse_fault_spec(faults_spec) if faults_spec else []
        self.initial_faults = assign_faults(rules, self.names)
        self.wine_enabled = wine
        self.wine = WinePrefix(layout.wineprefix) if wine else None
        self.idle_timeout_s = idle_timeout_s
        self.workers = [_Worker(i, [self.names[j] for j in shard], [self.addresses[j] for j in shard])
                        for i, shard in enumerate(shards(count, workers))]
        self.worker_of = {name: w for w in self.workers for name in w.names}
        self.ready = False
        self.stopping = False
        self.done = threading.Event()
        self.failure: str | None = None
        self._state_lock = threading.Lock()
        self._state_dirty = threading.Event()

    # ---- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        layout = self.layout
        layout.dir.mkdir(parents=True, exist_ok=True)
        # A new lab is a fresh fleet: node drives from an earlier run would describe services that no longer run.
        shutil.rmtree(layout.nodes, ignore_errors=True)
        shutil.rmtree(layout.tls, ignore_errors=True)
        layout.nodes.mkdir(parents=True)
        password = secrets.token_urlsafe(18)
        register_secret(password)
        fd = os.open(layout.credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password)  # no newline: `file()` hands the content over as the password
        create_ca(layout.dir)
        if self.wine is not None:
            self.wine.prepare_in_background()
            threading.Thread(target=self._announce_wine, name="lab-wine", daemon=True).start()
        for worker in self.workers:
            self._spawn(worker)
        threading.Thread(target=self._state_writer, name="lab-state", daemon=True).start()
        write_inventory(self.names, self.addresses, layout)
        deadline = time.monotonic() + 60 + 0.1 * len(self.names)
        for worker in self.workers:
            while not worker.ready.wait(0.2):
                if worker.error or self.done.is_set() or time.monotonic() > deadline:
                    break
            if not worker.ready.is_set():
                reason = worker.error or self.failure or "did not start in time"
                raise FleetError(f"lab worker {worker.index} ({worker.names[0]} .. {worker.names[-1]}): {reason}")
        self.ready = True
        self.write_state()
        log.info("lab up: %d nodes from %s in %d worker process(es)", len(self.names),
                 self.addresses[0] if self.addresses else "-", len(self.workers))

    def _spawn(self, worker: _Worker) -> None:
        argv = [sys.executable, "-m", "fleetctl.lab.worker", "--dir", str(self.layout.dir),
                "--index", str(worker.index)] + ([] if self.wine_enabled else ["--no-wine"])
        # stderr is inherited: the lab log. stdin/stdout are the channel.
        worker.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert worker.process.stdin is not None and worker.process.stdout is not None
        worker.channel = WorkerChannel(worker.process.stdin, worker.process.stdout,
                                       lambda event: self._on_event(worker, event), name=f"lab worker {worker.index}")
        nodes = [{"name": n, "address": a, "faults": [str(f) for f in self.initial_faults.get(n, [])]}
                 for n, a in zip(worker.names, worker.addresses)]
        worker.channel.send({"cmd": "start", "nodes": nodes, "idle_timeout_s": self.idle_timeout_s})

    def _on_event(self, worker: _Worker, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "ready":
            worker.ready.set()
        elif kind == "failed":
            worker.error = str(event.get("error"))
        elif kind == "pids":
            worker.service_pids = [int(p) for p in event.get("pids", [])]
            self._state_dirty.set()
        elif kind == "exited" and not self.stopping:
            code = worker.process.poll() if worker.process is not None else None
            self.failure = worker.error or f"exited unexpectedly (exit code {code}); see the lab log"
            log.error("lab worker %d (%s .. %s): %s; taking the lab down", worker.index, worker.names[0],
                      worker.names[-1], self.failure)
            self.done.set()

    def _announce_wine(self) -> None:
        assert self.wine is not None
        error: str | None = None
        try:
            self.wine.wait_ready()
        except NodeError as err:
            error = err.message
        for worker in self.workers:
            if worker.channel is not None:
                with contextlib.suppress(ChannelClosed):
                    worker.channel.send({"cmd": "wine", "error": error})

    def stop(self) -> None:
        """Stop every worker (listeners, services, task processes, port proxies), then Wine: nothing is left."""
        log.info("lab down: stopping")
        self.ready = False
        self.stopping = True

        def stop_worker(worker: _Worker) -> None:
            if worker.channel is None or worker.process is None:
                return
            with contextlib.suppress(ChannelClosed, TimeoutError, OSError):
                worker.channel.request("down", timeout=STOP_TIMEOUT_S)
            worker.channel.close()
            try:
                worker.process.wait(15)
            except subprocess.TimeoutExpired:
                log.error("lab worker %d did not exit; killing it", worker.index)
                worker.process.kill()
                worker.process.wait(15)

        with ThreadPoolExecutor(max_workers=max(1, len(self.workers))) as pool:
            list(pool.map(stop_worker, self.workers))
        if self.wine is not None:
            self.wine.shutdown()
        self.write_state(stopped=True)
        log.info("lab down: done")

    def _state_writer(self) -> None:
        while not self.done.is_set():
            if self._state_dirty.wait(0.5):
                self._state_dirty.clear()
                self.write_state()

    def write_state(self, stopped: bool = False) -> None:
        state = {
            "pid": os.getpid(), "ready": self.ready and not stopped, "stopped": stopped,
            "nodes": len(self.names), "addresses": self.addresses, "https_port": HTTPS_PORT, "http_port": HTTP_PORT,
            "workers": [w.describe() for w in self.workers],
            "service_pids": [] if stopped else [pid for w in self.workers for pid in w.service_pids],
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self._state_lock:
            tmp = self.layout.state.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, self.layout.state)

    # ---- control requests --------------------------------------------------------------------------------
    def _ask_all(self, cmd: str, **fields: Any) -> list[dict[str, Any]]:
        def ask(worker: _Worker) -> dict[str, Any]:
            if worker.channel is None:
                raise FleetError(f"lab worker {worker.index} is not running")
            try:
                answer = worker.channel.request(cmd, **fields)
            except (ChannelClosed, TimeoutError) as err:
                raise FleetError(f"lab worker {worker.index} does not answer: {err or 'timeout'}") from None
            if not answer.get("ok"):
                raise FleetError(str(answer.get("error")))
            return answer

        with ThreadPoolExecutor(max_workers=max(1, len(self.workers))) as pool:
            return list(pool.map(ask, self.workers))

    def status(self) -> dict[str, Any]:
        answers = self._ask_all("status")
        own = resource.getrusage(resource.RUSAGE_SELF)
        processes: list[dict[str, Any]] = [
            {"role": "supervisor", "pid": os.getpid(), "user": own.ru_utime, "system": own.ru_stime}]
        services = 0.0
        for worker, answer in zip(self.workers, answers):
            cpu = answer["cpu"]
            processes.append({"role": "worker", "index": worker.index, "pid": answer.get("pid"),
                              "nodes": len(worker.names), "user": cpu["user"], "system": cpu["system"]})
            services += cpu["children_user"] + cpu["children_system"] + float(answer.get("service_cpu", 0.0))
        user = sum(p["user"] for p in processes)
        system = sum(p["system"] for p in processes)
        return {"ready": self.ready, "pid": os.getpid(), "nodes": [n for a in answers for n in a["nodes"]],
                "ca": str(self.layout.ca), "inventory": str(self.layout.inventory),
                "cpu": {"seconds": round(user + system, 3), "user": round(user, 3), "system": round(system, 3),
                        "processes": processes, "services_seconds": round(services, 3)}}

    def fault(self, target: str, faults_text: str) -> dict[str, Any]:
        for text in split_faults(faults_text):
            parse_fault(text, where="fault")  # refused here, before any worker changes anything
        names = resolve_target(target, self.names, seed=f"{target}={faults_text}", where="fault")
        result: dict[str, Any] = {}
        for worker in self.workers:
            mine = [n for n in names if self.worker_of[n] is worker]
            if not mine or worker.channel is None:
                continue
            answer = worker.channel.request("fault", nodes=mine, faults=faults_text)
            if not answer.get("ok"):
                raise FleetError(str(answer.get("error")))
            result.update(answer["nodes"])
        return {"nodes": {n: result[n] for n in names if n in result}}

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        try:
            if cmd == "status":
                return {"ok": True, **self.status()}
            if cmd == "fault":
                return {"ok": True, **self.fault(str(request.get("target", "")), str(request.get("faults", "")))}
            if cmd == "down":
                self.done.set()
                return {"ok": True}
            return {"ok": False, "error": f"unknown control command {cmd!r}", "exit_code": 2}
        except FleetError as err:
            return {"ok": False, "error": str(err), "exit_code": err.exit_code}
        except (ChannelClosed, TimeoutError) as err:
            return {"ok": False, "error": f"a lab worker does not answer: {err}", "exit_code": 1}


def serve_control(supervisor: LabSupervisor) -> socket.socket:
    """Accept control requests on the unix socket in a daemon thread; returns the listening socket."""
    path = supervisor.layout.control
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)  # only the lab's owner may inject faults or stop it
    sock.listen(16)

    def answer(conn: socket.socket) -> None:
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            try:
                request = json.loads(data or b"{}")
            except ValueError:
                request = {}
            conn.sendall(json.dumps(supervisor.handle(request)).encode() + b"\n")

    def loop() -> None:
        while not supervisor.done.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, name="lab-control", daemon=True).start()
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetctl.lab.fleet", description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--faults")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S)
    parser.add_argument("--no-wine", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    layout = LabLayout.at(args.dir)
    supervisor = LabSupervisor(layout, args.nodes, args.base, args.faults, wine=not args.no_wine,
                               workers=args.workers, idle_timeout_s=args.idle_timeout)
    # SIGTERM/SIGINT end the lab like `lab down`: services are never orphaned by a killed lab process.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.done.set())
    control: socket.socket | None = None
    try:
        supervisor.start()
        control = serve_control(supervisor)
        while not supervisor.done.wait(0.5):  # a timed wait keeps the main thread responsive to signals
            pass
    except FleetError as err:
        log.error("lab failed to start: %s", err)
        return err.exit_code
    except Exception:
        log.exception("lab failed")
        return 1
    finally:
        if control is not None:
            control.close()
        layout.control.unlink(missing_ok=True)
        supervisor.stop()
    return 1 if supervisor.failure else 0


if __name__ == "__main__":
    sys.exit(main())
