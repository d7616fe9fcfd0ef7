"""One lab worker process: a shard of the lab's nodes (simulated machines and their WinRM listeners on one event
loop), driven by the lab supervisor (`fleet.py`) through `channel.py`.

A lab of N nodes is served by W such processes, so the lab's protocol work (TLS, NTLM, SOAP, PSRP) spreads over
the machine's cores instead of one interpreter and its GIL. Started by the supervisor as
`python -m fleetctl.lab.worker --dir DIR --index K [--no-wine]`; requests on the channel:

    start  {"nodes": [{"name", "address", "faults": ["latency:200ms", ...]}], "idle_timeout_s": 7200.0}
           -> event "ready" (or "failed" with the reason) once every listener of the shard is open
    status -> {"nodes": [LabNode.status() + "shells"], "cpu": {"user", "system", "children_user", ...}}
    fault  {"nodes": [names], "faults": "F+F"} -> {"nodes": {name: [active faults]}}
    wine   {"error": null | "why"}: the supervisor finished preparing the lab's one Wine prefix
    down   -> every listener closed, every service and task process stopped; then the process exits

End of file on stdin (the supervisor died) or SIGTERM is `down` too: a worker never leaves a service behind.
Service PIDs are pushed as `pids` events whenever they change, so the supervisor's state.json can list them all.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import resource
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fleetctl.config.redaction import register_secret
from fleetctl.errors import FleetError
from fleetctl.lab.certs import issue_node_certs, load_ca
from fleetctl.lab.channel import WorkerEnd
from fleetctl.lab.faults import NodeFaults, parse_fault, split_faults
from fleetctl.lab.layout import DEFAULT_IDLE_TIMEOUT_S, HTTP_PORT, HTTPS_PORT, LAB_USER, LabLayout
from fleetctl.lab.node import LabNode
from fleetctl.lab.nodeerror import NodeError
from fleetctl.lab.portproxy import ProxyHub
from fleetctl.lab.wine import PREPARE_TIMEOUT_S, WinePrefix
from fleetctl.lab.wsman import LabServer, NodeServer

log = logging.getLogger("fleetctl.lab.worker")


class SharedWinePrefix(WinePrefix):
    """The lab's one Wine prefix as a worker uses it: the supervisor prepares it once for the whole lab (two
    `wineboot`s in one prefix would race), and a worker starting a Windows exe waits for its word first."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._prepared = threading.Event()
        self._failure: str | None = None

    def prepared(self, error: str | None) -> None:
        self._failure = error
        self._prepared.set()

    def wait_ready(self, timeout: float = PREPARE_TIMEOUT_S, exe: Path | None = None) -> None:
        if not self._prepared.wait(timeout):
            raise NodeError("SERVICE_START_FAILED", "the lab's Wine prefix is still being prepared; retry")
        if self._failure:
            raise NodeError("SERVICE_START_FAILED", self._failure, {"reason": "wine"})
        # The prefix exists now: this only checks (and, idempotently, installs) the ProcessPrng shim for `exe`.
        super().wait_ready(timeout, exe)

    def shutdown(self) -> None:
        """The prefix's wineserver is the supervisor's to stop, after every worker has stopped its processes."""


def rusage() -> dict[str, float]:
    """CPU seconds of this process (all its threads) and of its children that have exited (services)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user": own.ru_utime, "system": own.ru_stime,
            "children_user": children.ru_utime, "children_system": children.ru_stime}


class LabWorker:
    """The nodes of one shard, their listeners and this process's share of the lab's machinery."""

    def __init__(self, layout: LabLayout, index: int, wine: bool) -> None:
        self.layout = layout
        self.index = index
        self.wine = SharedWinePrefix(layout.wineprefix) if wine else None
        self.proxies = ProxyHub()
        self.nodes: dict[str, LabNode] = {}
        self.servers: dict[str, NodeServer] = {}
        self.lab_server = LabServer()
        self.stopped = threading.Event()
        self._pids_dirty = threading.Event()

    def start(self, nodes: list[dict[str, Any]], idle_timeout_s: float, end: WorkerEnd) -> None:
        password = self.layout.credentials.read_text()
        register_secret(password)
        ca = load_ca(self.layout.dir)
        if ca is None:
            raise FleetError(f"the lab CA is missing from {self.layout.dir}")
        certs = issue_node_certs(ca, [(n["address"], [n["name"]]) for n in nodes], self.layout.tls)
        for spec, tls in zip(nodes, certs):
            name, address = spec["name"], spec["address"]
            faults = NodeFaults()
            for text in spec.get("faults", []):
                faults.apply(parse_fault(text))
            node = LabNode(name, address, self.layout.nodes / name, faults=faults, wine=self.wine,
                           proxies=self.proxies, http_port=HTTP_PORT, https_port=HTTPS_PORT,
                           on_processes_changed=self._pids_dirty.set)
            node.sandbox.disk_full = faults.disk_full
            server = NodeServer(node, address=address, http_port=HTTP_PORT, https_port=HTTPS_PORT,
                                credentials={LAB_USER: password}, tls=tls, idle_timeout_s=idle_timeout_s)
            self.nodes[name] = node
            self.servers[name] = server
            self.lab_server.add(server)
        try:
            self.lab_server.start_background()
        except OSError as err:
            raise FleetError(f"cannot open the nodes' listeners: {err.strerror or err} (is another lab or "
                             "service using these addresses? choose another --base)") from None
        for name, node in self.nodes.items():
            if node.faults.unreachable:
                self.servers[name].set_listening(False)
        threading.Thread(target=self._push_pids, args=(end,), name="lab-pids", daemon=True).start()

    def _push_pids(self, end: WorkerEnd) -> None:
        # Nodes report process changes while holding their own SCM lock; collecting every node's PIDs happens
        # here, never inside a node's callback (that would deadlock).
        while not self.stopped.is_set():
            if self._pids_dirty.wait(0.5):
                self._pids_dirty.clear()
                end.emit("pids", pids=self.service_pids())

    def service_pids(self) -> list[int]:
        return [pid for node in self.nodes.values() for pid in node.scm.pids()]

    def status(self) -> dict[str, Any]:
        nodes = []
        for name, node in self.nodes.items():
            doc = node.status()
            doc["shells"] = self.servers[name].shell_counts()
            nodes.append(doc)
        return {"nodes": nodes, "cpu": rusage(), "pid": os.getpid(),
                "service_cpu": _live_cpu(self.service_pids())}

    def fault(self, names: list[str], faults_text: str) -> dict[str, Any]:
        faults = [parse_fault(f, where="fault") for f in split_faults(faults_text)]
        for name in names:
            node = self.nodes[name]
            node.apply_faults(faults)
            self.servers[name].set_listening(not node.faults.unreachable)
        return {"nodes": {n: self.nodes[n].faults.active() for n in names}}

    def stop(self) -> None:
        """Close every listener, stop every service and task process and the port proxies."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        with contextlib.suppress(Exception):
            self.lab_server.stop_background()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda n: n.close(), self.nodes.values()))
        self.proxies.close()
        with contextlib.suppress(Exception):
            from fleetctl.lab.auth import remove_store_dir

            remove_store_dir()


def _live_cpu(pids: list[int]) -> float:
    """CPU seconds (user+sys) so far of the service processes still running."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def serve(worker: LabWorker, end: WorkerEnd) -> None:
    """Answer the supervisor's requests until `down` or end of file."""
    for request in end.requests():
        cmd = request.get("cmd")
        try:
            if cmd == "start":
                worker.start(list(request["nodes"]), float(request.get("idle_timeout_s") or DEFAULT_IDLE_TIMEOUT_S),
                             end)
                end.emit("ready", pid=os.getpid())
            elif cmd == "status":
                end.answer(request, ok=True, **worker.status())
            elif cmd == "fault":
                end.answer(request, ok=True, **worker.fault(list(request["nodes"]), str(request["faults"])))
            elif cmd == "wine":
                if worker.wine is not None:
                    worker.wine.prepared(request.get("error"))
            elif cmd == "down":
                worker.stop()
                end.answer(request, ok=True)
                return
            else:
                end.answer(request, ok=False, error=f"unknown worker command {cmd!r}", exit_code=2)
        except FleetError as err:
            if cmd == "start":
                end.emit("failed", error=str(err), exit_code=err.exit_code)
                return
            end.answer(request, ok=False, error=str(err), exit_code=err.exit_code)
        except Exception as err:  # the supervisor gets the reason, the log the traceback
            log.exception("lab worker %d: %s failed", worker.index, cmd)
            if cmd == "start":
                end.emit("failed", error=f"{type(err).__name__}: {err}", exit_code=1)
                return
            end.answer(request, ok=False, error=f"{type(err).__name__}: {err}", exit_code=1)


def _terminate(*_: Any) -> None:
    raise SystemExit(0)  # raised in the main thread, out of the blocking read of the request loop


def _ignore(signum: int, frame: object) -> None:
    """SIGINT in the worker: the supervisor decides (see main)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetctl.lab.worker", description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--no-wine", action="store_true")
    args = parser.parse_args(argv)
    # The channel is the original stdout; fd 1 becomes stderr (the lab log), so no print or child process can
    # ever write into it.
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker{args.index} %(name)s: "
                                                   "%(message)s")
    worker = LabWorker(LabLayout.at(args.dir), args.index, wine=not args.no_wine)
    end = WorkerEnd(sys.stdin.buffer, channel_out)
    # SIGTERM ends the worker like `down`; SIGINT is the supervisor's to handle (it then sends `down`). A handler
    # that does nothing rather than SIG_IGN: an ignored signal stays ignored across exec, so every service process
    # the worker starts would ignore the Ctrl-C (SIGINT) that the lab's SCM and NSSM model send to stop it.
    signal.signal(signal.SIGINT, _ignore)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        serve(worker, end)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        worker.stop()
        end.emit("pids", pids=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
