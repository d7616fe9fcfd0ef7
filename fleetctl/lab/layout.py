"""Where a lab keeps its files, how its nodes are named and addressed, and the inventory it writes for itself.

Which directory a lab command uses: `--dir`, else $FLEETCTL_LAB_DIR, else the directory the last `lab up --dir`
of this project named (remembered in `.fleetctl/lab-dir` until `lab down`), else `.fleetctl/lab` at the project
root. The inventory a lab writes says which lab it belongs to (`# fleetctl lab: DIR`), so a command can tell a
stopped lab from unreachable hosts before contacting any of them.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fleetctl.config.project import state_dir
from fleetctl.errors import ConfigError

DEFAULT_BASE = "127.0.1.1"
HTTP_PORT = 5985
HTTPS_PORT = 5986
LAB_USER = "fleet"
# Windows' WinRM shell idle timeout by default (`winrm get winrm/config/winrs`: IdleTimeout = 7200000 ms).
DEFAULT_IDLE_TIMEOUT_S = 7200.0
NODES_PER_OCTET = 250  # node addresses use .1 .. .250 of each 127.0.X.0/24, then move to the next X
_SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes on Linux


POINTER_FILE = "lab-dir"  # under the project's .fleetctl/: the lab directory the last `lab up --dir` named
INVENTORY_MARK = "# fleetctl lab: "  # the line of a lab inventory that names its lab directory


@dataclass(frozen=True)
class LabLayout:
    """The files of one lab under its state directory (default `.fleetctl/lab` at the project root)."""

    dir: Path
    # How the directory was chosen: "--dir", "$FLEETCTL_LAB_DIR", "remembered" (a `lab up --dir` before) or
    # "default"; commands say which lab they use when it is not the one named on their command line.
    origin: str = field(default="--dir", compare=False)

    @classmethod
    def at(cls, directory: str | Path | None) -> LabLayout:
        if directory:
            layout = cls(Path(directory).absolute(), "--dir")
        elif os.environ.get("FLEETCTL_LAB_DIR"):
            layout = cls(Path(os.environ["FLEETCTL_LAB_DIR"]).absolute(), "$FLEETCTL_LAB_DIR")
        else:
            remembered = remembered_lab_dir()
            layout = cls(remembered, "remembered") if remembered is not None else cls(default_lab_dir(), "default")
        if len(str(layout.control)) > _SOCKET_PATH_MAX:
            raise ConfigError(f"the lab directory path is too long for its control socket (max "
                              f"{_SOCKET_PATH_MAX - 12} characters); choose a shorter --dir", key="--dir")
        return layout

    inventory = property(lambda self: self.dir / "inventory.yml")
    ca = property(lambda self: self.dir / "ca.pem")
    credentials = property(lambda self: self.dir / "credentials")
    control = property(lambda self: self.dir / "control.sock")
    state = property(lambda self: self.dir / "state.json")
    log = property(lambda self: self.dir / "lab.log")
    nodes = property(lambda self: self.dir / "nodes")
    tls = property(lambda self: self.dir / "tls")
    wineprefix = property(lambda self: self.dir / "wineprefix")


def node_name(index: int, count: int) -> str:
    """`lab-node01`, ..., zero-padded to at least two digits and to the width of the largest index."""
    return f"lab-node{index:0{max(2, len(str(count)))}d}"


def node_addresses(base: str, count: int) -> list[str]:
    """Addresses of nodes 1..count from `base` (127.0.A.B): B, B+1, ... up to .250, then 127.0.(A+1).1 ..."""
    try:
        first = ipaddress.IPv4Address(base)
    except ValueError:
        raise ConfigError(f"--base {base!r} is not an IPv4 address; expected e.g. 127.0.1.1", key="--base") from None
    octets = first.packed
    if octets[0] != 127 or octets[1] != 0 or not 1 <= octets[3] <= NODES_PER_OCTET:
        raise ConfigError(f"--base {base!r} must be 127.0.X.Y with Y in 1..{NODES_PER_OCTET} (loopback only)",
                          key="--base")
    out = []
    for i in range(count):
        offset = octets[3] - 1 + i
        third = octets[2] + offset // NODES_PER_OCTET
        if third > 255:
            raise ConfigError(f"{count} nodes from {base} run past 127.0.255.x; choose a lower --base",
                              key="--nodes")
        out.append(f"127.0.{third}.{offset % NODES_PER_OCTET + 1}")
    return out


def inventory_document(names: list[str], addresses: list[str], layout: LabLayout) -> dict[str, object]:
    """An Ansible-style inventory of the lab; the password is read through `file()`, never written inline."""
    return {
        "all": {
            "children": {
                "lab": {
                    "hosts": {n: {"ansible_host": a} for n, a in zip(names, addresses)},
                    "vars": {
                        "fleet_transport": "winrm",
                        "fleet_port": HTTPS_PORT,
                        "fleet_scheme": "https",
                        "fleet_auth": "ntlm",
                        "fleet_user": LAB_USER,
                        "fleet_password": "{{ file('" + str(layout.credentials) + "') }}",
                        "fleet_ca_bundle": str(layout.ca),
                    },
                }
            }
        }
    }


def write_inventory(names: list[str], addresses: list[str], layout: LabLayout) -> None:
    text = ("# Written by `fleetctl lab up`: the lab's simulated Windows nodes. Rewritten at every `lab up`.\n"
            f"{INVENTORY_MARK}{layout.dir}\n"
            + yaml.safe_dump(inventory_document(names, addresses, layout), sort_keys=False))
    tmp = layout.inventory.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, layout.inventory)


def lab_dir_of_inventory(path: Path) -> Path | None:
    """The lab directory an inventory file (or a directory holding `inventory.yml`) was written for by `lab up`,
    read from its `# fleetctl lab: DIR` line (a copy of the file keeps it); None for any other inventory."""
    candidate = path / "inventory.yml" if path.is_dir() else path
    try:
        with open(candidate, encoding="utf-8", errors="replace") as handle:
            head = [handle.readline() for _ in range(3)]
    except OSError:
        return None
    for line in head:
        if line.startswith(INVENTORY_MARK):
            return Path(line[len(INVENTORY_MARK):].strip())
    return None


def default_lab_dir() -> Path:
    """`.fleetctl/lab` at the project root."""
    return state_dir() / "lab"


def _pointer() -> Path:
    return state_dir() / POINTER_FILE


def remembered_lab_dir() -> Path | None:
    """The directory the project's last `lab up --dir` named, if it is still remembered."""
    try:
        text = _pointer().read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text) if text else None


def remember_lab_dir(layout: LabLayout) -> None:
    """After `lab up --dir DIR`: later lab commands of this project use DIR without repeating it. The default
    directory needs no pointer (an old one is removed)."""
    pointer = _pointer()
    if layout.dir == default_lab_dir():
        pointer.unlink(missing_ok=True)
        return
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(f"{layout.dir}\n", encoding="utf-8")
    os.replace(tmp, pointer)


def forget_lab_dir(layout: LabLayout) -> None:
    """After `lab down`: the pointer goes if it named this lab."""
    if remembered_lab_dir() == layout.dir:
        _pointer().unlink(missing_ok=True)
