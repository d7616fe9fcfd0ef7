"""The balancer's pool as values: one `Backend` per host (where the balancer reaches it, and whether it takes new
traffic), and the pure changes a rollout makes to it (drain one host, return it, move it to another port). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

BackendState = Literal["up", "drain", "down"]
_SERVER_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Backend:
    """One host as the balancer sees it. `drain`: no new connections, open ones finish; `down`: out of the pool."""

    host: str  # inventory host name
    address: str
    port: int
    state: BackendState = "up"
    weight: int = 1

    @property
    def server(self) -> str:
        """The server's name in the balancer's configuration (HAProxy `BACKEND/SERVER`, an nginx comment)."""
        return _SERVER_NAME.sub("_", self.host)

    def template_vars(self) -> dict[str, Any]:
        return {"host": self.host, "name": self.server, "address": self.address, "port": self.port,
                "state": self.state, "weight": self.weight, "up": self.state == "up",
                "drained": self.state == "drain", "down": self.state == "down"}


@dataclass(frozen=True)
class Pool:
    """Every backend of one service on one balancer, in inventory order."""

    name: str  # HAProxy backend / nginx upstream name
    backends: tuple[Backend, ...]

    def backend(self, host: str) -> Backend:
        for b in self.backends:
            if b.host == host:
                return b
        raise KeyError(host)

    def with_state(self, host: str, state: BackendState) -> Pool:
        return self._change(host, state=state)

    def with_port(self, host: str, port: int) -> Pool:
        return self._change(host, port=port)

    def with_ports(self, ports: Mapping[str, int]) -> Pool:
        """Every backend named in `ports` at its port (blue-green: each host's live colour), the rest as they are."""
        return Pool(self.name, tuple(replace(b, port=ports[b.host]) if b.host in ports else b for b in self.backends))

    def _change(self, host: str, **changes: Any) -> Pool:
        self.backend(host)  # KeyError for a host outside the pool
        return Pool(self.name, tuple(replace(b, **changes) if b.host == host else b for b in self.backends))

    def template_vars(self) -> dict[str, Any]:
        """What a balancer template sees: `backends` (a list of each backend's variables), `upstream`/`backend`."""
        return {"backends": [b.template_vars() for b in self.backends], "upstream": self.name, "backend": self.name}
