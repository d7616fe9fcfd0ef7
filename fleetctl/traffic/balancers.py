"""Load balancers a rollout drains hosts from and returns them to: nginx (the upstream rendered, checked and
reloaded for every change) and HAProxy (the runtime API over its admin socket; the persistent config rendered and
checked, no reload). Both keep the pool's state for the run and serialise their changes: a batch's hosts drain in
parallel threads.

`prepare()` runs before any host is touched: it reaches the balancer and renders and checks the configuration of
the pool as it is, so an unreachable balancer or a broken template stops the rollout with nothing changed.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from fleetctl.traffic.backends import BackendState, Pool
from fleetctl.traffic.config_file import ConfigFile
from fleetctl.traffic.remote import BalancerError

RuntimeState = Literal["ready", "drain", "maint"]
# A constant script; the command and the socket path arrive as its positional parameters, never as shell text.
# `shut-none`: socat must not half-close the socket when its input ends, or HAProxy may cut its answer short.
_SOCAT = 'printf "%s\\n" "$1" | socat -t 5 stdio "UNIX-CONNECT:$2,shut-none"'
_RUNTIME_STATE: dict[BackendState, RuntimeState] = {"up": "ready", "drain": "drain", "down": "maint"}


@dataclass(frozen=True)
class DrainResult:
    """How draining one host went: its open sessions reached zero (`idle`) or the wait ran out."""

    host: str
    idle: bool
    waited_s: float
    sessions: int | None  # the last count seen (None: the balancer does not count them, e.g. nginx)


class Balancer(Protocol):
    kind: str

    @property
    def host_name(self) -> str: ...

    @property
    def pool(self) -> Pool: ...

    def prepare(self, *, check_only: bool = False) -> None: ...

    def drain(self, host: str, aborted: Callable[[], bool] = lambda: False) -> DrainResult: ...

    def ready(self, host: str) -> None: ...

    def move(self, host: str, port: int) -> None: ...

    def repoint(self, ports: Mapping[str, int]) -> None: ...

    def close(self) -> None: ...


@dataclass
class NginxBalancer:
    """nginx: a drained backend is rendered `down`; every change is a rendered, checked, reloaded upstream file.
    nginx counts no connections per upstream server: a drained host is given `drain_s` for its open requests
    (old workers finish theirs after the reload)."""

    config: ConfigFile
    initial: Pool
    drain_s: float
    kind: str = "nginx"
    _pool: Pool = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._pool = self.initial

    @property
    def host_name(self) -> str:
        return self.config.host.name

    @property
    def pool(self) -> Pool:
        return self._pool

    def prepare(self, *, check_only: bool = False) -> None:
        with self._lock:
            self.config.install(self._pool, check_only=check_only)

    def _set(self, change: Callable[[Pool], Pool]) -> None:
        with self._lock:
            wanted = change(self._pool)
            self.config.install(wanted)
            self._pool = wanted

    def drain(self, host: str, aborted: Callable[[], bool] = lambda: False) -> DrainResult:
        began = time.monotonic()
        if self._pool.backend(host).state != "up":
            return DrainResult(host, True, 0.0, None)  # already out of the pool (a rollback after a failure)
        self._set(lambda p: p.with_state(host, "down"))
        deadline = time.monotonic() + self.drain_s  # from the reload on: the rendering and checking took time
        while time.monotonic() < deadline and not aborted():
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return DrainResult(host, True, time.monotonic() - began, None)

    def ready(self, host: str) -> None:
        self._set(lambda p: p.with_state(host, "up"))

    def move(self, host: str, port: int) -> None:
        """The host's backend on `port` (blue-green: its new colour): rendered, checked, reloaded. Old workers keep
        their connections to the old port until their requests end; new requests go to the new one."""
        self._set(lambda p: p.with_port(host, port))

    def repoint(self, ports: Mapping[str, int]) -> None:
        """Before `prepare`: where each host is served now (blue-green: its live colour's port)."""
        with self._lock:
            self._pool = self._pool.with_ports(ports)

    def close(self) -> None:
        self.config.host.close()


@dataclass
class HaproxyBalancer:
    """HAProxy: `set server BACKEND/SERVER state drain|ready|maint` and `show stat` over the admin socket, through
    `socat` on the balancer host; the persistent config (rendered and checked with `haproxy -c`) follows every
    change so a restart keeps it, without a reload."""

    config: ConfigFile
    initial: Pool
    admin_socket: str
    drain_timeout_s: float
    kind: str = "haproxy"
    _pool: Pool = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._pool = self.initial

    @property
    def host_name(self) -> str:
        return self.config.host.name

    @property
    def pool(self) -> Pool:
        return self._pool

    def runtime(self, command: str) -> str:
        """One runtime API command (data on the socket, never shell text); its answer, or BalancerError."""
        result = self.config.host.run(["sh", "-c", _SOCAT, "fleetctl-haproxy", command, self.admin_socket],
                                      timeout=15)
        answer = result.output.strip()
        if not result.ok:
            raise BalancerError(f"HAProxy runtime API on {self.host_name} ({self.admin_socket}) failed: "
                                f"{answer or 'no output'}", host=self.host_name)
        first = answer.splitlines()[0] if answer else ""
        if first.startswith(("No such", "Unknown command", "Permission denied", "Require ")) or \
                "not found" in first.lower():
            raise BalancerError(f"HAProxy on {self.host_name} refused '{command}': {first}", host=self.host_name)
        return answer

    def server_states(self) -> dict[str, dict[str, str]]:
        """`show servers state BACKEND`: server name -> its fields (srv_op_state, srv_admin_state, srv_port...)."""
        answer = self.runtime(f"show servers state {self._pool.name}")
        lines = answer.splitlines()
        header = next((line for line in lines if line.startswith("# be_id")), None)
        if header is None:
            return {}
        names = header[2:].split()
        states: dict[str, dict[str, str]] = {}
        for line in lines:
            if line.startswith("#") or not line.strip() or line.strip().isdigit():
                continue
            row = dict(zip(names, line.split(), strict=False))
            if "srv_name" in row:
                states[row["srv_name"]] = row
        return states

    def sessions(self, server: str) -> int | None:
        """The server's current sessions (`scur` of `show stat`), or None when HAProxy does not list it."""
        answer = self.runtime("show stat")
        rows = csv.reader(io.StringIO(answer.lstrip("# ")))
        header = next(rows, [])
        try:
            px, sv, cur = header.index("pxname"), header.index("svname"), header.index("scur")
        except ValueError:
            return None
        for row in rows:
            if len(row) > cur and row[px] == self._pool.name and row[sv] == server:
                return int(row[cur] or 0)
        return None

    def prepare(self, *, check_only: bool = False) -> None:
        with self._lock:
            known = self.server_states()
            missing = [b.server for b in self._pool.backends if b.server not in known]
            if missing:
                raise BalancerError(f"HAProxy on {self.host_name} has no server {', '.join(missing)} in backend "
                                    f"{self._pool.name} (the running config must list every host of the pool)",
                                    host=self.host_name)
            self.config.install(self._pool, check_only=check_only)
            if not check_only:
                self._align_ports(known)

    def _align_ports(self, known: dict[str, dict[str, str]]) -> None:
        """The running servers at the pool's addresses and ports: a run that stopped between moving a blue-green
        host's server and recording its colour on the node left HAProxy on a port the pool (read from the nodes)
        does not name. The persistent config already says the pool's; the runtime follows, without a reload."""
        for b in self._pool.backends:
            # Ports only: srv_addr is the resolved address, which a host name in the inventory never equals.
            if known.get(b.server, {}).get("srv_port", str(b.port)) != str(b.port):
                self.runtime(f"set server {self._pool.name}/{b.server} addr {b.address} port {b.port}")

    def _set(self, change: Callable[[Pool], Pool], host: str) -> None:
        with self._lock:
            before = self._pool.backend(host)
            wanted = change(self._pool)
            after = wanted.backend(host)
            self.config.install(wanted)  # checked first: a refused config changes nothing at runtime either
            if (after.address, after.port) != (before.address, before.port):
                self.runtime(f"set server {wanted.name}/{after.server} addr {after.address} port {after.port}")
            self.runtime(f"set server {wanted.name}/{after.server} state {_RUNTIME_STATE[after.state]}")
            self._pool = wanted

    def drain(self, host: str, aborted: Callable[[], bool] = lambda: False) -> DrainResult:
        began = time.monotonic()
        if self._pool.backend(host).state == "up":
            self._set(lambda p: p.with_state(host, "drain"), host)
        server = self._pool.backend(host).server
        deadline = began + self.drain_timeout_s
        count = self.sessions(server)
        while count and time.monotonic() < deadline and not aborted():
            time.sleep(0.1)
            count = self.sessions(server)
        return DrainResult(host, not count, time.monotonic() - began, count)

    def ready(self, host: str) -> None:
        self._set(lambda p: p.with_state(host, "up"), host)

    def move(self, host: str, port: int) -> None:
        """`set server BACKEND/SERVER addr A port P`, then `state ready`: one server per host whose address moves
        (HAProxy 1.8+). Its open connections stay on the old port until they end; new ones go to the new port."""
        self._set(lambda p: p.with_port(host, port), host)

    def repoint(self, ports: Mapping[str, int]) -> None:
        """Before `prepare`: where each host is served now (blue-green: its live colour's port)."""
        with self._lock:
            self._pool = self._pool.with_ports(ports)

    def close(self) -> None:
        self.config.host.close()
