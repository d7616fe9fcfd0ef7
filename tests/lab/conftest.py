"""Shared lab fixtures: a per-session lab CA, loopback addresses, and WinRM listeners around any `NodeBackend`.

Fixtures (all clean up what they start):
- `lab_ca` / `other_ca`: a session-wide lab CA (`TlsFiles`) and an unrelated CA (for "wrong CA" tests).
- `lab_address()`: a fresh loopback address per call, `<FLEETCTL_TEST_ADDR_BASE>.<n>` (default base 127.0.10),
  so connections pooled by one test never reach another test's node.
- `serve_backend(backend, **node_server_kwargs) -> ServedNode`: starts a `NodeServer` for any backend (a
  `FakeBackend` below, or a real `fleetctl.lab.node.LabNode`) on its own `LabServer` loop thread; stopped at
  teardown. `ServedNode` has address, ports, credentials, CA path and `wsman(**kw)` / `client(**kw)` that build
  pypsrp objects pointed at it with certificate validation against the lab CA.
- `fake_node`: a `ServedNode` around a `FakeBackend` (dict-backed sandbox, a few test commands);
  `fake_backend_class` is that class, for tests that build their own (test modules cannot import conftest
  reliably: several test directories have one).
Ports: FLEETCTL_TEST_HTTP_PORT / FLEETCTL_TEST_HTTPS_PORT (default 5985/5986, as on real hosts).
"""

from __future__ import annotations

import itertools
import json
import ntpath
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pypsrp.client import Client
from pypsrp.wsman import WSMan

from fleetctl.lab.backend import LabUnsupported, NetworkFaults, NodeBackend
from fleetctl.lab.certs import TlsFiles, create_ca, issue_node_cert
from fleetctl.lab.scripts import run_known_script
from fleetctl.lab.wsman import LabServer, NodeServer

ADDR_BASE = os.environ.get("FLEETCTL_TEST_ADDR_BASE", "127.0.10")
HTTP_PORT = int(os.environ.get("FLEETCTL_TEST_HTTP_PORT", "5985"))
HTTPS_PORT = int(os.environ.get("FLEETCTL_TEST_HTTPS_PORT", "5986"))
LAB_USER = "fleet"
LAB_PASSWORD = "Lab:Pass-w0rd!"  # contains ':' on purpose (Basic and NTLM store parsing)

_host_numbers = itertools.count(1)


class DictSandbox:
    """A node file system in a dict, keyed by lower-cased Windows path (as NTFS is case-insensitive)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = {"c:\\", "c:\\temp"}

    def read_bytes(self, windows_path: str) -> bytes:
        key = ntpath.normpath(windows_path).lower()
        if key in self.dirs:
            raise IsADirectoryError(windows_path)
        if key not in self.files:
            raise FileNotFoundError(windows_path)
        return self.files[key]

    def write_bytes(self, windows_path: str, data: bytes) -> None:
        self.files[ntpath.normpath(windows_path).lower()] = bytes(data)

    def resolve(self, windows_path: str) -> Path:
        return Path("/nonexistent-lab-sandbox") / ntpath.normpath(windows_path).replace("\\", "/").lstrip("/")


@dataclass
class FakeBackend:
    """A `NodeBackend` for protocol tests. Commands:
    `Get-Echo` -> one JSON string of its parameters and input; `Wait-Release` blocks until `release` is set
    (for stop tests); `Get-Many -Count N` -> N strings; anything else -> LabUnsupported."""

    name: str
    address: str
    sandbox: DictSandbox = field(default_factory=DictSandbox)
    faults: NetworkFaults = field(default_factory=NetworkFaults)
    requests: int = 0
    bytes_received: int = 0
    logons: dict[bool, int] = field(default_factory=dict)  # accepted? -> how many (count_logon)
    release: threading.Event = field(default_factory=threading.Event)
    invoked: list[str] = field(default_factory=list)

    def invoke(self, command: str, parameters: dict[str, Any], input_objects: list[Any]) -> list[Any]:
        self.invoked.append(command)
        if command == "Get-Echo":
            return [json.dumps({"ok": True, "result": {"parameters": parameters, "input": input_objects}})]
        if command == "Wait-Release":
            self.release.wait(30)
            return ["released"]
        if command == "Get-Many":
            return [f"item-{i}" for i in range(int(parameters["Count"]))]
        raise LabUnsupported(f"the fake node has no command {command!r}")

    def run_script(self, script: str, arguments: list[Any], input_objects: list[Any]) -> list[Any]:
        return run_known_script(script, arguments, input_objects, self.sandbox)

    def network_faults(self) -> NetworkFaults:
        return self.faults

    def count_request(self, bytes_received: int) -> None:
        self.requests += 1
        self.bytes_received += bytes_received

    def count_logon(self, *, accepted: bool) -> None:
        self.logons[accepted] = self.logons.get(accepted, 0) + 1


@dataclass
class ServedNode:
    """A backend behind real WinRM listeners, and helpers to reach it with pypsrp."""

    backend: Any
    server: NodeServer
    lab: LabServer
    address: str
    http_port: int
    https_port: int
    ca: TlsFiles
    user: str = LAB_USER
    password: str = LAB_PASSWORD

    def wsman(self, **kw: Any) -> WSMan:
        """pypsrp WSMan to this node: NTLM over HTTPS with validation against the lab CA unless overridden."""
        return WSMan(self.address, **self._args(kw))

    def client(self, **kw: Any) -> Client:
        return Client(self.address, **self._args(kw))

    def _args(self, kw: dict[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {"username": self.user, "password": self.password, "ssl": True, "auth": "ntlm",
                                    "cert_validation": str(self.ca.cert), "connection_timeout": 5, "read_timeout": 30}
        args.update(kw)
        if "port" not in kw:
            args["port"] = self.https_port if args["ssl"] else self.http_port
        return args

    def set_listening(self, on: bool) -> None:
        self.server.set_listening(on)


@pytest.fixture(scope="session")
def lab_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return create_ca(tmp_path_factory.mktemp("lab-ca"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return create_ca(tmp_path_factory.mktemp("other-ca"), common_name="some other CA")


@pytest.fixture
def lab_address() -> Callable[[], str]:
    def next_address() -> str:
        n = next(_host_numbers)
        return f"{ADDR_BASE}.{(n % 250) + 1}"
    return next_address


@pytest.fixture
def serve_backend(lab_ca: TlsFiles, tmp_path: Path) -> Iterator[Callable[..., ServedNode]]:
    started: list[LabServer] = []

    def serve(backend: NodeBackend, **kw: Any) -> ServedNode:
        address = kw.pop("address", backend.address)
        credentials = kw.pop("credentials", {LAB_USER: LAB_PASSWORD})
        tls = issue_node_cert(lab_ca, address, [backend.name.lower()], tmp_path / "tls")
        server = NodeServer(backend, address=address, http_port=HTTP_PORT, https_port=HTTPS_PORT,
                            credentials=credentials, tls=tls, **kw)
        lab = LabServer(workers=8)
        lab.add(server)
        lab.start_background()
        started.append(lab)
        return ServedNode(backend, server, lab, address, HTTP_PORT, HTTPS_PORT, lab_ca)

    yield serve
    for lab in started:
        lab.stop_background()


@pytest.fixture
def fake_node(serve_backend: Callable[..., ServedNode], lab_address: Callable[[], str]) -> ServedNode:
    address = lab_address()
    return serve_backend(FakeBackend(name="LABNODE1", address=address))


@pytest.fixture
def fake_backend_class() -> type[FakeBackend]:
    return FakeBackend
