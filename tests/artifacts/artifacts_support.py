"""Constants and helpers shared by the artifact tests (a uniquely named module: `conftest` is ambiguous when
several test directories are on sys.path)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fleetctl.config.playbook import Playbook, load_playbook

NET = os.environ.get("FLEETCTL_TEST_ARTIFACTS_NET", "127.0.40")
REPO = Path(__file__).resolve().parents[2]
HELLO_SRC = REPO / "playbooks" / "hello" / "src"
WINE64 = os.environ.get("FLEETCTL_WINE64", "/usr/lib/wine/wine64")
SSHD = "/usr/sbin/sshd"
TEST_VERSION = "1.2.3-test"






def write_playbook(directory: Path, artifact_yaml: str, name: str = "hello") -> Playbook:
    """A minimal playbook with the given `artifact:` section, loaded through the real loader."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "playbook.yml"
    body = "\n".join("  " + line for line in artifact_yaml.strip().splitlines())
    path.write_text(f"name: {name}\nartifact:\n{body}\ninstall:\n  root: 'C:\\apps\\{name}'\n"
                    f"service:\n  name: {name}\n")
    return load_playbook(path).render_global({})


@dataclass
class SshServer:
    """A running sshd and what a client needs to reach it."""

    address: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    other_key: Path  # a key sshd does not accept
    process: subprocess.Popen[bytes]

    def hostvars(self, **extra: object) -> dict[str, object]:
        return {"ansible_host": self.address, "ansible_port": self.port, "ansible_user": self.user,
                "ansible_ssh_private_key_file": str(self.client_key),
                "fleet_ssh_known_hosts": str(self.known_hosts), **extra}
