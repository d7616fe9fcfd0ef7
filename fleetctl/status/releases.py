"""The core of `fleetctl releases`: what every targeted host keeps, and hosts grouped by identical release sets.

Each host is asked once (`Get-FleetState`, read-only, in parallel): the releases it keeps (oldest first), which is
current and which previous, which failed a health gate there, and on a blue-green host which release each colour
holds and which colour is live. A release counts as failed when the node marked it (`Set-FleetReleaseVerdict`) or
when the history journal remembers it failing on that host (the caller passes `Journal.gate_failures`: a node
that could not be told still shows it).

At many hosts the list is compact: hosts whose release sets are the same (same versions, same marks) form one
group. Release ids are not compared, since an id also hashes each host's own rendered files, so hosts on the same
version legitimately have different ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetctl.config.redaction import redact
from fleetctl.errors import FleetError
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import NodeState
from fleetctl.protocol.errors import TransportError
from fleetctl.status.collect import StatusTarget

FailureMarks = dict[str, dict[str, str]]  # host -> {release id: why it failed} (from the journal)


@dataclass(frozen=True)
class KeptRelease:
    """One release a host keeps, with what it is on that host."""

    release: str
    version: str
    installed_at: datetime | None
    current: bool = False
    previous: bool = False
    failed: str | None = None  # why it failed a health gate here (node mark or journal)
    colours: tuple[str, ...] = ()  # blue-green: the colour(s) holding it
    live: bool = False  # blue-green: held by the live colour

    @property
    def marks(self) -> tuple[str, ...]:
        """What the release is here, in words: current, previous, live blue, failed."""
        found = [m for m, on in (("current", self.current), ("previous", self.previous)) if on]
        found += [f"{'live ' if self.live and c else ''}{c}" for c in self.colours]
        if self.failed is not None:
            found.append("failed")
        return tuple(found)

    @property
    def shape(self) -> tuple[Any, ...]:
        """What grouping compares: the version and the marks, not the id nor the install time."""
        return (self.version, self.marks)

    def to_json(self) -> dict[str, Any]:
        return {"release": self.release, "version": self.version,
                "installed_at": self.installed_at.isoformat() if self.installed_at else None,
                "current": self.current, "previous": self.previous, "failed": self.failed,
                "colours": list(self.colours), "live": self.live}


@dataclass(frozen=True)
class HostReleases:
    host: str
    answered: bool
    releases: tuple[KeptRelease, ...] = ()  # oldest first, as the node keeps them
    live: str | None = None  # blue-green: the live colour
    error: str | None = None  # why the host did not answer (redacted)

    @property
    def shape(self) -> tuple[Any, ...]:
        if not self.answered:
            return ("unanswered", self.error)
        return tuple(r.shape for r in self.releases)

    def to_json(self) -> dict[str, Any]:
        return {"answered": self.answered, "error": self.error, "live": self.live,
                "releases": [r.to_json() for r in self.releases]}


@dataclass(frozen=True)
class ReleaseGroup:
    """Hosts whose release sets are the same; `example` is the first of them (its ids and times are shown)."""

    hosts: tuple[str, ...]
    example: HostReleases


@dataclass(frozen=True)
class FleetReleases:
    hosts: dict[str, HostReleases]

    @property
    def not_answered(self) -> list[str]:
        return [h for h, r in self.hosts.items() if not r.answered]

    def groups(self) -> list[ReleaseGroup]:
        """Hosts grouped by identical release sets, in order of first appearance (inventory order)."""
        found: dict[tuple[Any, ...], list[str]] = {}
        for host, kept in self.hosts.items():
            found.setdefault(kept.shape, []).append(host)
        return [ReleaseGroup(tuple(hosts), self.hosts[hosts[0]]) for hosts in found.values()]

    def to_json(self) -> dict[str, Any]:
        return {"hosts": {h: r.to_json() for h, r in self.hosts.items()},
                "groups": [{"hosts": list(g.hosts), "versions": [r.version for r in g.example.releases]}
                           for g in self.groups()]}


def host_releases(host: str, state: NodeState, failures: dict[str, str] | None = None) -> HostReleases:
    """One host's kept releases from its node state and the journal's failures there. Pure."""
    failed_here = failures or {}
    holders: dict[str, list[str]] = {}
    for colour in state.colours:
        if colour.release:
            holders.setdefault(colour.release, []).append(colour.colour)
    kept = tuple(
        KeptRelease(info.release, info.version, info.installed_at, current=info.release == state.current,
                    previous=info.release == state.previous,
                    failed=info.gate_failed if info.gate_failed is not None else failed_here.get(info.release),
                    colours=tuple(holders.get(info.release, ())), live=state.live in holders.get(info.release, ()))
        for info in state.releases)
    return HostReleases(host, True, kept, state.live)


def collect_releases(targets: Sequence[StatusTarget], connect: Callable[[str], NodeClient], *, forks: int = 50,
                     failures: FailureMarks | None = None) -> FleetReleases:
    """Every target's kept releases, in the given order; a host that cannot be asked is listed as such."""
    by_host = {t.host: t for t in targets}
    marks = failures or {}

    def one(host: str) -> HostReleases:
        target = by_host[host]
        client = connect(host)
        try:
            state = client.get_fleet_state(app=target.app, root=target.root, service_name=target.service_name,
                                           proxy_port=target.ports.listen if target.ports else None)
        except (TransportError, FleetError) as err:
            return HostReleases(host, False, error=redact(getattr(err, "reason", None) or str(err)))
        return host_releases(host, state, marks.get(host))

    outcomes = run_parallel(list(by_host), one, forks=forks)
    return FleetReleases({h: o.value if o.value is not None else HostReleases(h, False, error=o.error or "unknown "
                                                                                               "error")
                          for h, o in outcomes.items()})
