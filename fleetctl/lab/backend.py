"""The seam between a lab node's protocol server (WS-Management + PSRP) and its simulated Windows machine.

The server side (`wsman.py`, `psrp.py`, `auth.py`) knows HTTP, SOAP, NTLM and PSRP and nothing of services or
files; the node side (`node.py` and what it uses) knows the simulated machine and nothing of the wire. They
meet here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class LabUnsupported(Exception):
    """Something only real Windows can do (arbitrary PowerShell, `cmd`); the message says so plainly."""


@dataclass(frozen=True)
class NetworkFaults:
    """What the node's network does to the controller right now (set by fault injection)."""

    unreachable: bool = False  # listeners closed: connection refused
    blackhole: bool = False  # connections accepted, never answered
    latency_ms: int = 0  # added before every response
    auth_failure: bool = False  # every authentication attempt is refused (401)
    idle_timeout_s: float = 0.0  # this node's WinRM shell idle timeout; 0: the lab's (`lab up --idle-timeout`)


class NodeBackend(Protocol):
    """One simulated Windows node, as the protocol server sees it."""

    name: str
    address: str  # the loopback address this node's listeners bind to

    def invoke(self, command: str, parameters: dict[str, Any], input_objects: list[Any]) -> list[Any]:
        """Run one command of a pipeline (a node-protocol operation by name, with named parameters).

        Returns the output objects (for protocol operations: one JSON string). Raises `LabUnsupported` for
        commands the lab cannot run. Called from a worker thread: may block (e.g. waiting for a service).
        """
        ...

    def run_script(self, script: str, arguments: list[Any], input_objects: list[Any]) -> list[Any]:
        """Run a script pipeline. The lab recognises only known scripts (the FleetNode module loader,
        pypsrp's `Client.copy` and `Client.fetch` scripts) and raises `LabUnsupported` for anything else."""
        ...

    def network_faults(self) -> NetworkFaults:
        ...

    def count_request(self, bytes_received: int) -> None:
        """Counters: one WS-Man request of this many body bytes arrived."""
        ...

    def count_logon(self, *, accepted: bool) -> None:
        """Counters: a client's credentials were checked (a logon accepted or refused)."""
        ...
