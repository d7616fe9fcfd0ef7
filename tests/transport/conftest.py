"""Misbehaving endpoints on loopback (refusing, resetting, silent, wrong certificate, fixed HTTP status) for
testing how the WinRM transport reports each failure. Addresses come from FLEETCTL_TEST_NET (default 127.0.30)."""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

NET = os.environ.get("FLEETCTL_TEST_NET", "127.0.30")


@dataclass
class Endpoint:
    address: str
    port: int
    accepted: int = 0


class _Listener:
    def __init__(self, address: str, behaviour: str, ssl_context: ssl.SSLContext | None = None,
                 status: int = 200) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.endpoint = Endpoint(address, self.sock.getsockname()[1])
        self.behaviour, self.ssl_context, self.status = behaviour, ssl_context, status
        self.stopping = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.endpoint.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif self.behaviour == "silent":
                self.held.append(conn)
            elif self.behaviour == "tls":
                assert self.ssl_context is not None
                try:
                    self.ssl_context.wrap_socket(conn, server_side=True).close()
                except (ssl.SSLError, OSError):
                    conn.close()
            elif self.behaviour == "status":
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                extra = b"WWW-Authenticate: Basic realm=\"x\"\r\n" if self.status == 401 else b""
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n%s\r\n"
                             % (self.status, extra))
                conn.close()
        except OSError:
            pass

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=2)
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def listener() -> Iterator:
    """listener(behaviour, address_suffix, ...) -> Endpoint; all stopped at teardown."""
    made: list[_Listener] = []

    def make(behaviour: str, suffix: int = 10, **kwargs) -> Endpoint:
        item = _Listener(f"{NET}.{suffix}", behaviour, **kwargs)
        made.append(item)
        return item.endpoint

    yield make
    for item in made:
        item.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, Path]:
    """(server TlsFiles for NET.11, the signing CA's TlsFiles, an unrelated CA's pem)."""
    from fleetctl.lab.certs import create_ca, issue_node_cert

    base = tmp_path_factory.mktemp("tls")
    ca = create_ca(base / "ca")
    server = issue_node_cert(ca, f"{NET}.11", [], base / "server")
    other = create_ca(base / "other", common_name="some other CA")
    return server, ca, other.cert


@dataclass
class LabNodeServed:
    """A real lab node (LabNode behind NodeServer) on its own loop thread, and settings that reach it."""

    server: object  # fleetctl.lab.wsman.NodeServer
    lab: object  # fleetctl.lab.wsman.LabServer
    settings: object  # fleetctl.config.connection.ConnectionSettings


LAB_PASSWORD = "Lab:Pass-w0rd!"


@pytest.fixture
def lab_node(tmp_path: Path) -> Iterator[object]:
    """`lab_node(address, idle_timeout_s=7200, cert_for=None, ca=None, **hostvars)`: serve a LabNode; its
    certificate is issued for `cert_for` (default: its own address) by `ca` (default: a CA made per test), and
    the returned settings trust that default CA."""
    from fleetctl.config.connection import ConnectionSettings
    from fleetctl.lab.certs import create_ca, issue_node_cert
    from fleetctl.lab.node import LabNode
    from fleetctl.lab.wsman import LabServer, NodeServer

    trusted = create_ca(tmp_path / "ca")
    started: list[tuple[LabServer, LabNode]] = []

    def serve(address: str, idle_timeout_s: float = 7200.0, cert_for: str | None = None,
              ca: object = None, **hostvars: object) -> LabNodeServed:
        name = f"node-{address.replace('.', '-')}"
        backend = LabNode(name.upper(), address, tmp_path / name)
        tls = issue_node_cert(ca or trusted, cert_for or address, [name], tmp_path / f"tls-{name}")  # type: ignore[arg-type]
        server = NodeServer(backend, address=address, credentials={"fleet": LAB_PASSWORD}, tls=tls,
                            idle_timeout_s=idle_timeout_s)
        lab = LabServer(workers=4)
        lab.add(server)
        lab.start_background()
        started.append((lab, backend))
        settings = ConnectionSettings.from_hostvars(name, {
            "fleet_host": address, "fleet_auth": "ntlm", "fleet_user": "fleet", "fleet_password": LAB_PASSWORD,
            "fleet_ca_bundle": str(trusted.cert), **hostvars})
        return LabNodeServed(server, lab, settings)

    yield serve
    for lab, backend in started:
        lab.stop_background()
        backend.close()
