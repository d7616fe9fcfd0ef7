"""Reach, authenticate and gather facts on many hosts in parallel: the core of `fleetctl ping`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import HostClients, HostResult
from fleetctl.node.results import Facts


@dataclass(frozen=True)
class PingResult:
    host: str
    ok: bool
    error: str | None
    facts: Facts | None
    rtt_ms: float | None  # one operation's round trip on an open connection (not the connection setup)
    connect_ms: float | None  # connect + authenticate + load the node module
    clock_skew_ms: float | None  # node clock minus controller clock, at the middle of the facts call

    def to_json(self) -> dict[str, Any]:
        """The `--json` shape: {"ok", "error", "facts", "rtt_ms"}; facts carry clock_skew_ms and connect_ms."""
        facts = None
        if self.facts is not None:
            facts = self.facts.to_json() | {"clock_skew_ms": _round(self.clock_skew_ms),
                                            "connect_ms": _round(self.connect_ms)}
        return {"ok": self.ok, "error": self.error, "facts": facts, "rtt_ms": _round(self.rtt_ms)}


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


@dataclass(frozen=True)
class _Measured:
    facts: Facts
    rtt_ms: float
    connect_ms: float
    clock_skew_ms: float | None


def _ping_one(client: NodeClient) -> _Measured:
    started = time.perf_counter()
    client.connect()
    connected = time.perf_counter()
    facts = client.get_fleet_facts()
    done = time.perf_counter()
    skew = None
    if facts.utc_now is not None:
        middle = datetime.now(UTC).timestamp() - (done - connected) / 2
        node_time = facts.utc_now.timestamp()
        if facts.utc_now.microsecond == 0:
            node_time += 0.5  # whole seconds: the node's clock was somewhere in the following second
        skew = (node_time - middle) * 1000
    return _Measured(facts, (done - connected) * 1000, (connected - started) * 1000, skew)


def ping_hosts(fleet: HostClients, on_done: Callable[[PingResult], None] | None = None) -> dict[str, PingResult]:
    """Ping every host of `fleet` (at most `fleet.forks` at once); one result per host, in inventory order."""

    def convert(outcome: HostResult[_Measured]) -> PingResult:
        m = outcome.value
        if m is None:
            return PingResult(outcome.host, False, outcome.error, None, None, None, None)
        return PingResult(outcome.host, True, None, m.facts, m.rtt_ms, m.connect_ms, m.clock_skew_ms)

    outcomes = fleet.run(_ping_one, on_done=(lambda o: on_done(convert(o))) if on_done else None)
    return {host: convert(outcome) for host, outcome in outcomes.items()}
