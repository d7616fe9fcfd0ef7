"""A throwaway fleetctl project for CLI tests (fleet.yml, inventory, a playbook collecting a tiny PE file) and a
loopback listener standing in for the nodes, which counts every connection: "no node was contacted" is then a
number, not a hope. A uniquely named module: `conftest` is ambiguous across test directories."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PLAYBOOK = """\
name: app
vars:
  app_port: 8080
artifact:
  version: 1.0.0
  collect:
    path: app.exe
install:
  root: 'C:\\apps\\app'
  exe: app.exe
  files:
    - src: templates/app.json.j2
      dest: app.json
service:
  name: app
  arguments: ["-listen", ":{{ app_port }}"]
  environment:
    APP_ENV: production
health:
  url: "http://{{ ansible_host }}:{{ app_port }}/healthz"
  interval: 0.5s
  retries: 2
rollout:
  batch: 1
"""


def tiny_pe() -> bytes:
    """The smallest file fleetctl's header check takes for a Windows x64 exe (it is never run)."""
    head = bytearray(b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0x40))
    head += b"PE\0\0" + struct.pack("<H", 0x8664) + b"\0" * 18 + struct.pack("<H", 0x20B)
    return bytes(head + b"\0" * 512)


class NodeListener:
    """A TCP listener on loopback that accepts and counts connections, then closes them."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(64)
        self.address = address
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Project:
    root: Path
    listeners: list[NodeListener]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def playbook(self) -> Path:
        return self.root / "playbook.yml"

    @property
    def hosts(self) -> Path:
        return self.root / "inventory" / "hosts.yml"

    @property
    def connections(self) -> int:
        """How many times any "node" was contacted."""
        return sum(listener.connections for listener in self.listeners)

    def fleetctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        return subprocess.run([sys.executable, "-m", "fleetctl", *args], cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


def make_project(root: Path, *, cert_validation: bool = True, hosts: int = 2) -> Project:
    """fleet.yml, inventory/hosts.yml (host N at listener N on 127.0.0.1), playbook.yml, app.exe, templates/."""
    listeners = [NodeListener() for _ in range(hosts)]
    (root / "inventory").mkdir(parents=True, exist_ok=True)
    (root / "templates").mkdir(exist_ok=True)
    (root / "fleet.yml").write_text("inventory: [inventory]\n")
    (root / "app.exe").write_bytes(tiny_pe())
    (root / "templates" / "app.json.j2").write_text('{"port": {{ app_port }}}\n')
    (root / "playbook.yml").write_text(PLAYBOOK)
    lines = ["all:", "  children:", "    web:", "      hosts:"]
    for i, listener in enumerate(listeners, start=1):
        lines += [f"        web{i:02d}:", f"          ansible_host: {listener.address}",
                  f"          fleet_port: {listener.port}"]
    lines += ["      vars:", "        fleet_user: deploy", "        fleet_password: not-a-real-password",
              "        fleet_connect_timeout: 2"]
    if not cert_validation:
        lines.append("        fleet_cert_validation: false")
    (root / "inventory" / "hosts.yml").write_text("\n".join(lines) + "\n")
    return Project(root=root, listeners=listeners)


def linux_playbook(directory: Path, *, batch: int | None = None) -> Path:
    """The example playbook built as a Linux ELF (the lab runs it natively: fast), quick health retries, and the
    gate's stability window the variable `window` (default 1s); `batch` overrides rollout.batch."""
    hello = REPO / "playbooks" / "hello"
    text = (hello / "playbook.yml").read_text()
    text = text.replace("goos: windows", "goos: linux").replace("dir: src", f"dir: {hello / 'src'}")
    # The templates are copied, not named by absolute path: a playbook reads only under its project (issue 15).
    shutil.copytree(hello / "templates", directory / "templates", dirs_exist_ok=True)
    text = re.sub(r"stability_window: \S+", "stability_window: \"{{ window | default('1s') }}\"", text)
    text = re.sub(r"interval: \S+", "interval: 0.25s", text)
    if batch is not None:
        text = re.sub(r"\n  batch: \S+", f"\n  batch: {batch}", text)
    path = directory / "hello-linux.yml"
    path.write_text(text)
    return path
