"""A rollout's load balancer: the pool built from the playbook's `traffic:` section, checked before any host is
touched, and the two steps every restart is wrapped in: drain (no new requests; wait until the host's sessions
end) before the stop, ready (back in the pool) once the health gate passed. Blue-green moves a host's backend from
one colour's port to the other's instead (`HostTraffic.move`, used by `rollout/bluegreen.py`).

A balancer that fails (unreachable, a refused config, a failed reload) halts the run before the next host is
touched. A host whose change failed stays out of the pool until it is healthy again: ready is only called after
a passed gate, which is also how a host rolled back to its healthy previous release returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetctl.config.inventory import Host
from fleetctl.config.playbook import Playbook
from fleetctl.errors import ConfigError
from fleetctl.rollout.events import HostOutcome
from fleetctl.rollout.host_steps import HostContext
from fleetctl.targets import Targets
from fleetctl.traffic import Backend, Balancer, BalancerError, Pool, balancer_settings, make_balancer


class TrafficFailed(Exception):
    """The balancer failed around a host's restart; the run halts (message: what, where, the host's state)."""


@dataclass
class HostTraffic:
    """The balancer as host steps use it; `halt` stops the run before the next host (set by the runner)."""

    balancer: Balancer
    halt: Callable[[str], None] = field(default=lambda reason: None)
    grace_s: float = 0.0  # traffic.drain: how long a backend that takes no new requests keeps its open ones

    @property
    def where(self) -> str:
        return f"{self.balancer.kind} on {self.balancer.host_name}"

    def drain(self, host: str, aborted: Callable[[], bool]) -> str:
        """Take `host` out of the pool and wait for its sessions to end; returns a detail line for the step."""
        try:
            result = self.balancer.drain(host, aborted)
        except BalancerError as err:
            self.halt(err.message)
            raise TrafficFailed(f"drain: {err.message}; nothing was changed on this host") from None
        if result.sessions is None:
            return f"drained from {self.where} ({result.waited_s:.1f} s)"
        if result.idle:
            return f"drained from {self.where}: 0 sessions after {result.waited_s:.1f} s"
        return (f"drained from {self.where}: still {result.sessions} session(s) after the drain timeout "
                f"({result.waited_s:.1f} s); stopping anyway")

    def ready(self, host: str) -> None:
        try:
            self.balancer.ready(host)
        except BalancerError as err:
            self.halt(err.message)
            raise TrafficFailed(f"ready: {err.message}; the host is healthy but still out of the pool on "
                                f"{self.where}") from None

    def port_of(self, host: str) -> int:
        """The port the balancer sends `host`'s traffic to now."""
        return self.balancer.pool.backend(host).port

    def move(self, host: str, port: int) -> None:
        """Blue-green: the host's backend to `port` (its new colour); a failure halts the run and leaves the
        backend where it was (the config check or reload failed, and nginx's previous file is back)."""
        try:
            self.balancer.move(host, port)
        except BalancerError as err:
            self.halt(err.message)
            raise TrafficFailed(f"moving {host} to port {port} on {self.where}: {err.message}") from None

    def let_finish(self, aborted: Callable[[], bool]) -> None:
        """Give the requests already sent to a backend that takes no new ones `grace_s` to end (blue-green: the old
        colour after a move; HAProxy counts sessions per server, not per port, so it cannot tell them apart)."""
        deadline = time.monotonic() + self.grace_s
        while time.monotonic() < deadline and not aborted():
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def with_traffic(ctx: HostContext, traffic: HostTraffic | None, before: str | None,
                 change: Callable[[], HostOutcome]) -> HostOutcome:
    """drain → `change` → ready. The host leaves the pool before its service is touched and returns once it runs a
    healthy release (the new one, or the one it was returned to); a host left failed stays out. A balancer failure
    on drain leaves the host as it was (running `before`); on ready the host is healthy but out of the pool. Either
    way the run halts (`HostTraffic.halt`), and no rollback is tried (it would need the balancer again)."""
    if traffic is None:
        return change()
    try:
        ctx.step("drain", lambda: traffic.drain(ctx.host, ctx.interruption.abort.is_set), traffic.where)
    except TrafficFailed as err:
        return HostOutcome(ctx.host, "failed", before, str(err), ctx.timings)
    outcome = change()
    if outcome.outcome not in ("deployed", "rolled_back", "restarted"):
        return outcome
    try:
        ctx.step("ready", lambda: traffic.ready(ctx.host), traffic.where)
    except TrafficFailed as err:
        return HostOutcome(ctx.host, "failed", outcome.release, str(err), ctx.timings, outcome.transfer)
    return outcome


def pool_hosts(targets: Targets) -> list[Host]:
    """Every host of the playbook's `hosts:` pattern, --limit or not: the balancer's pool is the whole service,
    and a run limited to some hosts must not render the others out of it."""
    return targets.inventory.select(targets.settings.hosts or "all")


def pool_for(targets: Targets, playbooks: dict[str, Playbook], *, ports: dict[str, int] | None = None) -> Pool:
    """Every host of the playbook as a backend at its `ansible_host` and `traffic.port` (or `ports`), in inventory
    order; hosts outside --limit are rendered here only for their port."""
    first = next(iter(playbooks.values()))
    assert first.traffic is not None
    backends = []
    for host in pool_hosts(targets):
        playbook = playbooks.get(host.name) or targets.render_for(host, {"version": "0"})
        traffic = playbook.traffic
        port = (ports or {}).get(host.name) or (traffic.port if traffic else None)
        if port is None and traffic is not None and traffic.blue_green is not None:
            # Blue-green: the port a host not on blue-green yet serves on; the run repoints each host to its live
            # colour before the balancer is touched (`bluegreen_run.live_backend_ports`).
            port = traffic.blue_green.listen_port
        if port is None:
            raise ConfigError(f"host {host.name}: no port for the load balancer", file=first.path, key="traffic.port")
        address = str(targets.connection_vars(host).get("ansible_host") or host.name)
        backends.append(Backend(host.name, address, int(port)))
    return Pool(first.traffic.backend or first.name, tuple(backends))


def balancer_for(targets: Targets, playbooks: dict[str, Playbook], *,
                 ports: dict[str, int] | None = None) -> HostTraffic | None:
    """The run's balancer (None without one); ConfigError when its host or template is wrong."""
    first = next(iter(playbooks.values()), None)
    traffic = first.traffic if first else None
    if first is None or traffic is None or traffic.kind not in ("nginx", "haproxy"):
        return None
    assert traffic.host is not None
    matches = targets.inventory.select(traffic.host)
    if len(matches) != 1:
        raise ConfigError(f"expected one inventory host for the load balancer, '{traffic.host}' matches "
                          f"{len(matches)}", file=first.path, key="traffic.host")
    lb = matches[0]
    if any(h.name == lb.name for h in pool_hosts(targets)):
        raise ConfigError(f"the load balancer {lb.name} is also a target of this playbook; narrow `hosts:` (or "
                          "--limit) to the Windows hosts", file=first.path, key="traffic.host")
    ssh = balancer_settings(lb.name, targets.connection_vars(lb))
    return HostTraffic(make_balancer(traffic, first.path, pool_for(targets, playbooks, ports=ports), ssh),
                       grace_s=float(traffic.drain))
