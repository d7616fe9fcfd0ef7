"""What a deploy changes on one host, decided once from the release and the node's state: the host plan.

`plan_host(release, state)` is pure. The deploy procedure (`rollout/deploy.py`) carries it out step by step and
`--dry-run` prints `HostPlan.changes()`; since both read the same plan, what the dry run says is what the deploy
does (pyinfra's operations work the same way: facts first, then one list of changes used by both).
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetctl.node.results import NodeState
from fleetctl.rollout.release import Release, is_current


@dataclass(frozen=True)
class HostPlan:
    """One host's deploy, as data. `skip`: the host already runs the release (nothing happens). Otherwise, in
    order: `install` (transfer the artifact unless the node caches it, then install the release next to the running
    one), the service definition (`create_service` or update), stop, `switch` from `current` to the release, start
    (`restart` when the service was running), health, record. `rollback_to` is where a failing host returns."""

    release: str
    current: str | None
    skip: bool
    install: bool
    create_service: bool
    switch: bool
    restart: bool
    rollback_to: str | None
    rollback_version: str | None
    artifact_cached: bool | None = None  # None: not asked (the transfer step asks the node's cache itself)

    def changes(self, artifact_sha256: str, service_name: str) -> list[str]:
        """The plan in words, in the order the deploy does it (the dry run's "would do" column)."""
        if self.skip:
            return []
        changes: list[str] = []
        if self.install:
            if not self.artifact_cached:
                changes.append(f"transfer artifact {artifact_sha256[:12]}")
            changes.append(f"install release {self.release}")
        changes.append(f"create service {service_name}" if self.create_service
                       else f"update service {service_name} definition (if changed)")
        if self.switch:
            changes.append(f"switch {self.current or '(none)'} -> {self.release}")
        changes.append("restart service" if self.restart else "start service")
        return changes


def plan_host(release: Release, state: NodeState, *, artifact_cached: bool | None = None) -> HostPlan:
    """The host plan for deploying `release` on a host in `state` (`artifact_cached`: the node's artifact cache
    already holds the release's artifact, when that was asked)."""
    service = state.service
    exists = service is not None and service.exists
    # Roll back to what ran before; a host already on this release (but not running it) goes back further.
    rollback_to = state.previous if state.current == release.id else state.current
    rollback_info = state.release(rollback_to)
    installed = state.release(release.id) is not None
    return HostPlan(
        release=release.id, current=state.current, skip=is_current(release.id, state), install=not installed,
        create_service=not exists, switch=state.current != release.id,
        restart=exists and service is not None and service.state == "Running", rollback_to=rollback_to,
        rollback_version=rollback_info.version if rollback_info else None,
        artifact_cached=True if installed else artifact_cached)
