"""Many nodes at once: one `NodeClient` per host kept for the whole command, and a runner that applies a function
to many hosts in parallel (bounded by `--forks`), returning one outcome per host, never dropping one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Self, TypeVar

from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.redaction import redact
from fleetctl.errors import FleetError
from fleetctl.node.auth_budget import AuthBudget
from fleetctl.node.client import NodeClient
from fleetctl.transport.base import Transport

T = TypeVar("T")
DEFAULT_FORKS = 50
TransportFactory = Callable[[ConnectionSettings], Transport]


@dataclass(frozen=True)
class HostResult(Generic[T]):
    """What happened on one host: a value, or the one-line (redacted) error and its exception."""

    host: str
    value: T | None
    error: str | None
    exception: BaseException | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


def winrm_transport(settings: ConnectionSettings) -> Transport:
    from fleetctl.transport.winrm import WinRMTransport

    return WinRMTransport(settings)


def connect_client(settings: ConnectionSettings, transport_factory: TransportFactory = winrm_transport,
                   auth_budget: AuthBudget | None = None) -> NodeClient:
    """A client for one host: the one place a command's transports are made (the connection opens on first use).
    With the command's `auth_budget`, a host is not tried once its account failed on enough other hosts."""
    transport = transport_factory(settings)
    return NodeClient(auth_budget.guard(transport, settings) if auth_budget is not None else transport)


class HostClients:
    """The connections of one command: a client per host, created on first use, all closed by `close()`."""

    def __init__(
        self,
        settings: Mapping[str, ConnectionSettings],
        *,
        transport_factory: TransportFactory = winrm_transport,
        forks: int = DEFAULT_FORKS,
    ) -> None:
        if forks < 1:
            raise ValueError("forks must be at least 1")
        self.settings = dict(settings)
        self.forks = forks
        self._factory = transport_factory
        self.auth_budget = AuthBudget()  # one per command: its hosts share the lockout budget
        self._clients: dict[str, NodeClient] = {}
        self._lock = threading.Lock()

    @property
    def hosts(self) -> list[str]:
        return list(self.settings)

    def client(self, host: str) -> NodeClient:
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = connect_client(self.settings[host], self._factory, self.auth_budget)
                self._clients[host] = client
            return client

    def run(
        self,
        fn: Callable[[NodeClient], T],
        hosts: Iterable[str] | None = None,
        on_done: Callable[[HostResult[T]], None] | None = None,
    ) -> dict[str, HostResult[T]]:
        """Apply `fn` to each host's client, at most `forks` at a time; outcomes keyed and ordered by host."""
        names = list(hosts) if hosts is not None else self.hosts
        return run_parallel(names, lambda host: fn(self.client(host)), forks=self.forks, on_done=on_done)

    def close(self) -> None:
        with self._lock:
            clients = dict(self._clients)
            self._clients.clear()
        # Closing is a network round trip per host; do it in parallel too.
        run_parallel(list(clients), lambda host: clients[host].close(), forks=self.forks)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def run_parallel(
    hosts: list[str],
    fn: Callable[[str], T],
    *,
    forks: int = DEFAULT_FORKS,
    on_done: Callable[[HostResult[T]], None] | None = None,
) -> dict[str, HostResult[T]]:
    """Run `fn(host)` for every host with at most `forks` threads; every host gets an outcome.

    Exceptions become failed outcomes (FleetError messages as they are, others prefixed with their type).
    Ctrl-C cancels hosts not started yet, waits for running ones and re-raises.
    """
    outcomes: dict[str, HostResult[T]] = {}
    if not hosts:
        return outcomes

    def one(host: str) -> HostResult[T]:
        started = time.monotonic()
        try:
            value = fn(host)
        except Exception as exc:  # noqa: BLE001 - each host's failure is reported, never lost
            text = str(exc) if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
            return HostResult(host, None, redact(text), exc, time.monotonic() - started)
        return HostResult(host, value, None, None, time.monotonic() - started)

    executor = ThreadPoolExecutor(max_workers=min(forks, len(hosts)), thread_name_prefix="fleetctl-host")
    futures: dict[Future[HostResult[T]], str] = {executor.submit(one, h): h for h in hosts}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                outcome = future.result()
                outcomes[outcome.host] = outcome
                if on_done:
                    on_done(outcome)
    except KeyboardInterrupt:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return {h: outcomes[h] for h in hosts}
