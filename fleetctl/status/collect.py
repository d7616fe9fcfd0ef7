"""The core of `fleetctl status`: ask every targeted node for its state, probe health once, and compute drift.

For each host (in parallel, at most `forks` at a time): `Get-FleetState` gives the current and previous
release, the service state and the lock (the node is the source of truth: docs/node-protocol.md); then one health probe,
without retries, says whether it is healthy now. Drift is computed across the fleet: a host whose current
release is not the fleet's majority release is drifting, except while a run holds its lock: then it is in a
rollout (`rolling out`, `waiting`, `rolled back`, read from the node's history since the lock was taken) and the
majority is the fleet's before the run. A host that cannot be reached is reported (`service: "unreachable"`),
never fatal.

Service states: the node's state string (`Running`, `Stopped`, `StartPending`, ...), `absent` when the service
is not registered, `unreachable` when the host could not be reached or authenticated, `error` when the node
answered with an error. `healthy` is the single probe's verdict; with no `health:` section in the playbook it
means "service Running"; a service that is not Running is never healthy (and is not probed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.inventory import Host
from fleetctl.config.playbook import Playbook
from fleetctl.config.redaction import redact
from fleetctl.errors import ConfigError, FleetError
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import CRASH_WINDOW_MINUTES, LockInfo, NodeState, ServiceInfo, TaskInfo
from fleetctl.protocol.errors import TransportError
from fleetctl.rollout.bluegreen import ColourPorts, live_colour
from fleetctl.rollout.health import HealthCheck, ProbeVerdict, probe_once
from fleetctl.targets import Targets, load_targets

UNREACHABLE = "unreachable"
ABSENT = "absent"
ERROR = "error"


@dataclass(frozen=True)
class StatusTarget:
    """What status needs to know about one host: where the app lives and how to build its health check for
    the version it runs (health expectations often name the version, so the check depends on it)."""

    host: str
    app: str
    root: str
    service_name: str
    health_for: Callable[[str | None], HealthCheck | None]
    tasks: tuple[str, ...] = ()  # the playbook's scheduled tasks, whose last results status shows
    ports: ColourPorts | None = None  # blue-green: the public port and each colour's own port
    colour_health_for: Callable[[str | None, int], HealthCheck | None] | None = None  # (version, colour port)


@dataclass(frozen=True)
class ReleaseRef:
    release: str
    version: str | None

    @property
    def key(self) -> str:
        """What drift compares: the version when the node knows it, else the release id."""
        return self.version or self.release

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "release": self.release}


@dataclass(frozen=True)
class ColourStatus:
    """Blue-green: one colour of a host, with its own health (probed on its own port when it runs)."""

    colour: str
    live: bool
    release: ReleaseRef | None
    service: str
    healthy: bool
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"live": self.live, "release": self.release.to_json() if self.release else None,
                "service": self.service, "healthy": self.healthy, "reason": self.reason}


@dataclass(frozen=True)
class HostStatus:
    """One host as `fleetctl status` reports it. `drift` is None when unknown (host did not answer)."""

    host: str
    current: ReleaseRef | None
    previous: ReleaseRef | None
    service: str
    healthy: bool
    lock: LockInfo | None
    answered: bool
    error: str | None = None  # why the host did not answer, or why it is unhealthy (redacted)
    drift: bool | None = None
    releases_kept: int = 0
    tasks: tuple[TaskInfo, ...] = ()
    crash_loop: str | None = None  # the verdict, e.g. "4 restarts in 10 min", when the service keeps restarting
    colours: tuple[ColourStatus, ...] = ()  # blue-green hosts only, blue first
    # While a run holds this host's lock (from the node's history since the lock was taken): the versions it
    # installed here and whether it switched the current release in. `rollout` is then where the host stands in
    # that run: "rolling out" (on the run's new release), "waiting" (not moved yet) or "rolled back".
    installed_by_run: tuple[str, ...] = ()
    switched_by_run: bool = False
    rollout: str | None = None

    @property
    def run_lock(self) -> LockInfo | None:
        """The lock of a run in progress (not a change freeze, not expired), if one holds this host."""
        lock = self.lock
        return lock if lock is not None and not lock.freeze and not lock.expired else None

    @property
    def live(self) -> str | None:
        return next((c.colour for c in self.colours if c.live), None)

    def to_json(self) -> dict[str, Any]:
        """Exactly the shape docs/status-history.md documents: current, previous, service, healthy, lock (and, on a
        blue-green host, `live` and `colours`)."""
        colours = {"live": self.live, "colours": {c.colour: c.to_json() for c in self.colours}} \
            if self.colours else {}
        return {
            "current": self.current.to_json() if self.current else None,
            "previous": self.previous.to_json() if self.previous else None,
            "service": self.service,
            "healthy": self.healthy,
            "lock": lock_json(self.lock),
            "crash_loop": self.crash_loop,
            "tasks": [{"name": t.name, "exists": t.exists, "state": t.state,
                       "last_run": t.last_run.isoformat() if t.last_run else None, "last_result": t.last_result}
                      for t in self.tasks],
            **colours,
        }


@dataclass(frozen=True)
class RunInProgress:
    """A run that holds some hosts' locks right now: "rollout in progress (run R, by U, since T)"."""

    run_id: str
    owner: str
    since: datetime | None
    hosts: tuple[str, ...]
    target: tuple[str, ...]  # the version(s) the run moves hosts to, as far as the nodes tell (empty: not yet)


@dataclass(frozen=True)
class FleetStatus:
    hosts: dict[str, HostStatus]
    majority: str | None  # the version (or release id) most hosts run, None when no host runs one
    runs: tuple[RunInProgress, ...] = ()

    @property
    def not_answered(self) -> list[str]:
        return [h for h, s in self.hosts.items() if not s.answered]

    @property
    def drifting(self) -> list[str]:
        return [h for h, s in self.hosts.items() if s.drift]

    def to_json(self) -> dict[str, Any]:
        return {"hosts": {h: s.to_json() for h, s in self.hosts.items()}}


def lock_json(lock: LockInfo | None) -> dict[str, Any] | None:
    if lock is None:
        return None
    return {
        "owner": lock.owner,
        "deploy_id": lock.deploy_id,
        "acquired_at": lock.acquired_at.isoformat() if lock.acquired_at else None,
        "expires_at": lock.expires_at.isoformat() if lock.expires_at else None,
        "expired": lock.expired,
        "renewed_at": lock.renewed_at.isoformat() if lock.renewed_at else None,
        "reason": lock.reason,  # set: a change freeze (`fleetctl lock`)
    }


StatusProbe = Callable[[HealthCheck, NodeClient], ProbeVerdict]


def _default_probe(check: HealthCheck, client: NodeClient) -> ProbeVerdict:
    return probe_once(check, client)


def host_status(target: StatusTarget, client: NodeClient, probe: StatusProbe = _default_probe) -> HostStatus:
    """Ask one node; a transport failure becomes an `unreachable` status, a node error an `error` status."""
    try:
        state = client.get_fleet_state(app=target.app, root=target.root, service_name=target.service_name,
                                       task_names=list(target.tasks) or None,
                                       proxy_port=target.ports.listen if target.ports else None)
    except TransportError as err:
        return HostStatus(target.host, None, None, UNREACHABLE, False, None, answered=False,
                          error=redact(err.reason))
    except FleetError as err:
        return HostStatus(target.host, None, None, ERROR, False, None, answered=False, error=redact(str(err)))
    current = _ref(state, state.current)
    colours = _colours(target, client, state, probe)
    live = next((c for c in colours if c.live), None)
    service_info = state.service
    if live is not None:  # what serves the public port is the live colour's service
        info = state.colour(live.colour)
        service_info = info.service if info else None
    service = ABSENT
    if service_info is not None and service_info.exists:
        service = service_info.state or "Unknown"
    loop = crash_loop_verdict(service_info)
    healthy, reason = _probe_health(target, client, current, service, probe)
    if loop is not None:
        healthy, reason = False, f"crash loop: {loop}" + (f"; {reason}" if reason else "")
    installed, switched = _changes_under_lock(state)
    return HostStatus(target.host, current, _ref(state, state.previous), service, healthy, state.lock,
                      answered=True, error=reason, releases_kept=len(state.releases), tasks=state.tasks,
                      crash_loop=loop, colours=colours, installed_by_run=installed, switched_by_run=switched)


def _changes_under_lock(state: NodeState) -> tuple[tuple[str, ...], bool]:
    """What the node's history records since the current run lock was taken: the versions installed, and
    whether the current release was switched in (both clocks are the node's own, so no skew)."""
    lock = state.lock
    if lock is None or lock.freeze or lock.expired or lock.acquired_at is None:
        return (), False
    since = lock.acquired_at
    recent = [e for e in state.history if e.at is not None and e.at >= since]
    installed = []
    for entry in recent:
        info = state.release(entry.release) if entry.action == "install" else None
        if info is not None:
            installed.append(info.version or info.release)
    switched = any(e.action.startswith("switch") and e.release == state.current for e in recent)
    return tuple(dict.fromkeys(installed)), switched


def _colours(target: StatusTarget, client: NodeClient, state: NodeState, probe: StatusProbe) -> tuple[ColourStatus, ...]:
    """Each colour a blue-green host has: its release, its service and whether it answers on its own port."""
    ports = target.ports
    if ports is None or not state.colours:
        return ()
    live = live_colour(state, ports)
    found = []
    for info in state.colours:
        ref = _ref(state, info.release)
        service = (info.service.state or "Unknown") if info.service and info.service.exists else ABSENT
        healthy: bool = False
        reason: str | None = f"service {service}"
        if service == "Running":
            healthy, reason = True, None
            if target.colour_health_for is not None:
                try:
                    check = target.colour_health_for(ref.version if ref else None, ports.port(info.colour))
                    if check is not None:
                        verdict = probe(check, client)
                        healthy, reason = verdict.ok, verdict.reason
                except (ConfigError, FleetError) as err:
                    healthy, reason = False, redact(str(err))
        found.append(ColourStatus(info.colour, info.colour == live, ref, service, healthy, reason))
    return tuple(found)


CRASH_LOOP_RESTARTS = 3  # unexpected exits within the node's window (CRASH_WINDOW_MINUTES) that make a loop


def crash_loop_verdict(service: ServiceInfo | None) -> str | None:
    """A service whose restart count keeps rising: CRASH_LOOP_RESTARTS or more unexpected exits in the node's
    recent window, whatever state it is caught in at the moment of asking (a looping service is often Running)."""
    if service is None or not service.exists or service.recent_restarts < CRASH_LOOP_RESTARTS:
        return None
    return f"{service.recent_restarts} restarts in the last {CRASH_WINDOW_MINUTES} min ({service.restarts} since " \
           "the release was switched in)"


def _ref(state: NodeState, release_id: str | None) -> ReleaseRef | None:
    if not release_id:
        return None
    info = state.release(release_id)
    return ReleaseRef(release_id, info.version if info and info.version else None)


def _probe_health(target: StatusTarget, client: NodeClient, current: ReleaseRef | None, service: str,
                  probe: StatusProbe) -> tuple[bool, str | None]:
    if service != "Running":
        return False, f"service {service}"
    try:
        check = target.health_for(current.version if current else None)
    except ConfigError as err:
        return False, redact(f"health check cannot be rendered: {err}")
    if check is None:
        return True, None
    try:
        verdict = probe(check, client)
    except FleetError as err:  # a node-side probe whose node went away between the two calls
        return False, redact(str(err))
    return verdict.ok, verdict.reason


def with_drift(statuses: dict[str, HostStatus]) -> FleetStatus:
    """Mark drift: answering hosts not on the fleet's majority release (ties go to the one seen first, in
    inventory order). Releases are compared by version: a release id also hashes each host's own rendered
    files, so hosts on the same version legitimately have different ids. Hosts without any release drift when
    others have one.

    While a run holds hosts' locks, those hosts are not drifting but in a rollout: on the run's new release
    ("rolling out"), not moved yet ("waiting"), or moved back ("rolled back"); and the majority is the one the
    fleet had before the run (a host that is rolling out counts with its previous release)."""
    runs = _runs_in_progress(statuses)
    target_of = {h: run.target for run in runs for h in run.hosts}
    placed: dict[str, HostStatus] = {}
    for host, s in statuses.items():
        if host in target_of:
            s = replace(s, rollout=_place(s, target_of[host]))
        placed[host] = s
    counts = Counter(k for s in placed.values() if (k := _baseline(s)) is not None)
    majority = None
    if counts:
        best = max(counts.values())
        majority = next(k for s in placed.values() if (k := _baseline(s)) is not None and counts[k] == best)
    marked = {}
    for host, s in placed.items():
        if not s.answered:
            drift = None
        elif s.rollout is not None:
            drift = False
        else:
            drift = majority is not None and (s.current is None or s.current.key != majority)
        marked[host] = replace(s, drift=drift)
    return FleetStatus(marked, majority, runs)


def _runs_in_progress(statuses: dict[str, HostStatus]) -> tuple[RunInProgress, ...]:
    by_run: dict[str, list[HostStatus]] = {}
    for s in statuses.values():
        if s.answered and s.run_lock is not None:
            by_run.setdefault(s.run_lock.deploy_id, []).append(s)
    runs = []
    for run_id, members in by_run.items():
        locks = [m.run_lock for m in members if m.run_lock is not None]
        times = [lock.acquired_at for lock in locks if lock.acquired_at is not None]
        # The new release: what the run installed; a run that installs nothing (a rollback, a redeploy of
        # kept releases) is moving hosts to what it switched them to.
        target = [v for m in members for v in m.installed_by_run]
        if not target:
            target = [m.current.key for m in members if m.switched_by_run and m.current is not None]
        runs.append(RunInProgress(run_id, locks[0].owner, min(times) if times else None,
                                  tuple(m.host for m in members), tuple(dict.fromkeys(target))))
    return tuple(runs)


def _place(s: HostStatus, target: tuple[str, ...]) -> str:
    if s.current is not None and s.current.key in target:
        return "rolling out"
    return "rolled back" if s.switched_by_run else "waiting"


def _baseline(s: HostStatus) -> str | None:
    """The release a host counts with for the majority: during a rollout, where it came from."""
    if not s.answered or s.current is None:
        return None
    if s.rollout == "rolling out" and s.switched_by_run:
        return s.previous.key if s.previous else None
    return s.current.key


def collect_status(
    targets: Sequence[StatusTarget],
    connect: Callable[[str], NodeClient],
    *,
    forks: int = 50,
    probe: StatusProbe = _default_probe,
    on_done: Callable[[HostStatus], None] | None = None,
) -> FleetStatus:
    """Status of every target, in the given order; every host gets a status, whatever happens to it."""
    by_host = {t.host: t for t in targets}

    def one(host: str) -> HostStatus:
        status = host_status(by_host[host], connect(host), probe)
        if on_done is not None:
            on_done(status)
        return status

    outcomes = run_parallel(list(by_host), one, forks=forks)
    statuses: dict[str, HostStatus] = {}
    for host, outcome in outcomes.items():
        if outcome.value is not None:
            statuses[host] = outcome.value
        else:  # an unexpected exception (a bug, or a connect() failure): still a reported state
            statuses[host] = HostStatus(host, None, None, ERROR, False, None, answered=False,
                                        error=outcome.error or "unknown error")
    return with_drift(statuses)


# --- loading ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusRequest:
    """Everything `fleetctl status` needs before contacting a host; built by `load_status_request`."""

    name: str
    targets: tuple[StatusTarget, ...]
    connections: dict[str, ConnectionSettings]
    forks: int


def load_status_request(
    playbook: str | Path,
    inventories: Sequence[str | Path],
    *,
    limit: str | None = None,
    extra_vars: list[str] | None = None,
    forks: int | None = None,
) -> StatusRequest:
    """Render the playbook for each targeted host (root, service name, connection, health check); every
    problem is a ConfigError (exit 2), raised before any host is contacted."""
    loaded = load_targets(playbook, inventories, limit=limit, extra_vars=extra_vars, builtins=_NO_VERSION)
    targets: list[StatusTarget] = []
    connections: dict[str, ConnectionSettings] = {}
    for host in loaded.hosts:
        rendered = loaded.render_for(host, _NO_VERSION)
        connections[host.name] = ConnectionSettings.from_hostvars(
            host.name, loaded.connection_vars(host), source=f"inventory host {host.name}")
        blue_green = rendered.traffic.blue_green if rendered.traffic else None
        targets.append(StatusTarget(host=host.name, app=loaded.settings.name, root=rendered.install.root,
                                    service_name=rendered.service.name,
                                    health_for=_health_resolver(loaded, host, rendered),
                                    tasks=tuple(t.name for t in rendered.scheduled_tasks),
                                    ports=ColourPorts.from_playbook(blue_green) if blue_green else None,
                                    colour_health_for=_colour_health_resolver(loaded, host, rendered)))
    chosen = forks if forks is not None else loaded.settings.rollout.forks
    if chosen < 1:
        raise ConfigError(f"expected at least 1, got {chosen}", key="--forks")
    return StatusRequest(loaded.settings.name, tuple(targets), connections, chosen)


# The playbook may name `{{ version }}` (typically in health expectations); status learns each host's version
# only from the node, so the first rendering gets an empty one and the health check is rendered again per host.
_NO_VERSION: dict[str, Any] = {"version": ""}


def _health_resolver(loaded: Targets, host: Host, rendered: Playbook) -> Callable[[str | None], HealthCheck | None]:
    def check(version: str | None) -> HealthCheck | None:
        if rendered.health is None:
            return None
        if not version:
            # Unknown version (nothing installed by fleetctl): check all but the version-bound JSON fields.
            return replace(HealthCheck.from_playbook(rendered.health), expect_json=())
        again = loaded.render_for(host, {"version": version})
        return HealthCheck.from_playbook(again.health) if again.health else None

    return check


def _colour_health_resolver(loaded: Targets, host: Host,
                            rendered: Playbook) -> Callable[[str | None, int], HealthCheck | None]:
    """A colour's health check: the playbook's, rendered with that colour's port (`colour_port`)."""
    def check(version: str | None, port: int) -> HealthCheck | None:
        if rendered.health is None:
            return None
        again = loaded.render_for(host, {"version": version or "", "colour_port": port})
        if again.health is None:
            return None
        found = HealthCheck.from_playbook(again.health)
        return found if version else replace(found, expect_json=())

    return check
