"""The lab process: N simulated nodes with their WinRM listeners, a control socket, and a clean shutdown.

Run as `python -m fleetctl.lab.fleet --dir DIR --nodes N --base ADDR [--faults SPEC] [--no-wine]` (what
`fleetctl lab up` starts in the background). It creates the lab CA and node certificates, the credentials file,
the inventory, and serves newline-terminated JSON requests on `DIR/control.sock`:
`{"cmd": "status"}`, `{"cmd": "fault", "target": T, "faults": "F+F"}`, `{"cmd": "down"}`.
`DIR/state.json` records this process's PID and every service PID, so `lab down` can clean up even after a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from fleetctl.config.redaction import register_secret
from fleetctl.errors import FleetError
from fleetctl.lab.certs import create_ca, issue_node_cert
from fleetctl.lab.faults import (
    Fault,
    NodeFaults,
    assign_faults,
    parse_fault,
    parse_fault_spec,
    resolve_target,
    split_faults,
)
from fleetctl.lab.layout import (
    HTTP_PORT,
    HTTPS_PORT,
    LAB_USER,
    LabLayout,
    node_addresses,
    node_name,
    write_inventory,
)
from fleetctl.lab.node import LabNode
from fleetctl.lab.portproxy import ProxyHub
from fleetctl.lab.wine import WinePrefix
from fleetctl.lab.wsman import LabServer, NodeServer

log = logging.getLogger("fleetctl.lab")


class Fleet:
    """Every node of one lab, their servers and shared machinery (port proxies, Wine prefix)."""

    def __init__(self, layout: LabLayout, count: int, base: str, faults_spec: str | None, wine: bool) -> None:
        self.layout = layout
        self.names = [node_name(i, count) for i in range(1, count + 1)]
        self.addresses = node_addresses(base, count)
        rules = parse_fault_spec(faults_spec) if faults_spec else []
        self.initial_faults = assign_faults(rules, self.names)
        self.proxies = ProxyHub()
        self.wine = WinePrefix(layout.wineprefix) if wine else None
        self.nodes: list[LabNode] = []
        self.servers: dict[str, NodeServer] = {}
        self.lab_server = LabServer()
        self.ready = False
        self.done = threading.Event()
        self._state_lock = threading.Lock()
        # Nodes report process changes while holding their own SCM lock; writing the state file needs every
        # node's PIDs, so it happens on a writer thread, never inside a node's callback (that would deadlock).
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
        ca = create_ca(layout.dir)
        if self.wine is not None:
            self.wine.prepare_in_background()
        for name, address in zip(self.names, self.addresses):
            faults = NodeFaults()
            for fault in self.initial_faults.get(name, []):
                faults.apply(fault)
            node = LabNode(name, address, layout.nodes / name, faults=faults, wine=self.wine,
                           proxies=self.proxies, http_port=HTTP_PORT, https_port=HTTPS_PORT,
                           on_processes_changed=self._state_dirty.set)
            node.sandbox.disk_full = faults.disk_full
            tls = issue_node_cert(ca, address, [name], layout.tls)
            server = NodeServer(node, address=address, http_port=HTTP_PORT, https_port=HTTPS_PORT,
                                credentials={LAB_USER: password}, tls=tls)
            self.nodes.append(node)
            self.servers[name] = server
            self.lab_server.add(server)
        try:
            self.lab_server.start_background()
        except OSError as err:
            raise FleetError(f"cannot open the nodes' listeners: {err.strerror or err} (is another lab or "
                             "service using these addresses? choose another --base)") from None
        threading.Thread(target=self._state_writer, name="lab-state", daemon=True).start()
        for node in self.nodes:
            if node.faults.unreachable:
                self.servers[node.name].set_listening(False)
        write_inventory(self.names, self.addresses, layout)
        self.ready = True
        self.write_state()
        log.info("lab up: %d nodes from %s", len(self.nodes), self.addresses[0] if self.addresses else "-")

    def stop(self) -> None:
        """Stop listeners, every service and task process, port proxies and Wine: nothing is left behind."""
        log.info("lab down: stopping")
        self.ready = False
        with contextlib.suppress(Exception):
            self.lab_server.stop_background()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda n: n.close(), self.nodes))
        self.proxies.close()
        if self.wine is not None:
            self.wine.shutdown()
        with contextlib.suppress(Exception):
            from fleetctl.lab.auth import remove_store_dir

            remove_store_dir()
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
            "service_pids": [] if stopped else [pid for n in self.nodes for pid in n.scm.pids()],
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        with self._state_lock:
            tmp = self.layout.state.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1))
            os.replace(tmp, self.layout.state)

    # ---- control requests --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"ready": self.ready, "pid": os.getpid(), "nodes": [n.status() for n in self.nodes],
                "ca": str(self.layout.ca), "inventory": str(self.layout.inventory)}

    def fault(self, target: str, faults_text: str) -> dict[str, Any]:
        faults: list[Fault] = [parse_fault(f, where="fault") for f in split_faults(faults_text)]
        names = resolve_target(target, self.names, seed=f"{target}={faults_text}", where="fault")
        by_name = {n.name: n for n in self.nodes}
        for name in names:
            node = by_name[name]
            node.apply_faults(faults)
            server = self.servers[name]
            server.set_listening(not node.faults.unreachable)
        return {"nodes": {n: by_name[n].faults.active() for n in names}}

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


def serve_control(fleet: Fleet) -> socket.socket:
    """Accept control requests on the unix socket in a daemon thread; returns the listening socket."""
    path = fleet.layout.control
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
            conn.sendall(json.dumps(fleet.handle(request)).encode() + b"\n")

    def loop() -> None:
        while not fleet.done.is_set():
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
    parser.add_argument("--no-wine", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    layout = LabLayout.at(args.dir)
    fleet = Fleet(layout, args.nodes, args.base, args.faults, wine=not args.no_wine)
    # SIGTERM/SIGINT end the lab like `lab down`: services are never orphaned by a killed lab process.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: fleet.done.set())
    control: socket.socket | None = None
    try:
        fleet.start()
        control = serve_control(fleet)
        while not fleet.done.wait(0.5):  # a timed wait keeps the main thread responsive to signals
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
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
