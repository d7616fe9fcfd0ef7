"""`deploy --if-changed`: before any lock, compare the target with what each host runs, and narrow the deploy to
the hosts that differ (or stop at once when none does).

The target of a host is its release id (`rollout/release.py`): the version and a hash over the artifact's sha256,
the host's rendered files and its service definition. The artifact itself comes from `prepare_deploy`, which
reuses the earlier build in `dist/` when the build inputs' hash is unchanged (no compiler runs). A host runs the
target when its node state says so: current release = the target's id, and its service Running
(`release.is_current`). The comparison reads each node's state once (`Get-FleetState`, read only): no lock is
taken and nothing on a node changes. A host that cannot be asked counts as differing, so the deploy that follows
reports it like any unreachable host.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fleetctl.node.fleet import run_parallel
from fleetctl.rollout.host_steps import describe_error
from fleetctl.rollout.preparation import Connect, DeployOptions, PreparedDeploy
from fleetctl.rollout.release import is_current
from fleetctl.targets import RolloutOverrides, plan_rollout


@dataclass(frozen=True)
class HostComparison:
    host: str
    current: str | None  # the release id the host runs (None: none, or not known)
    target: str
    running: bool  # the host runs the target (release and service Running)
    error: str | None = None  # could not be asked


@dataclass(frozen=True)
class ChangeCheck:
    hosts: dict[str, HostComparison]

    @property
    def changed(self) -> tuple[str, ...]:
        """Hosts that do not run the target (or could not be asked), in plan order."""
        return tuple(h for h, c in self.hosts.items() if not c.running)

    @property
    def unchanged(self) -> bool:
        return not self.changed

    def to_json(self) -> dict[str, object]:
        return {h: {"current": c.current, "target": c.target, "runs_target": c.running, "error": c.error}
                for h, c in self.hosts.items()}


def compare_with_fleet(prepared: PreparedDeploy, *, connect: Connect | None = None) -> ChangeCheck:
    """Ask every targeted host (in parallel, bounded by forks) what it runs; read only, no lock."""
    factory = connect or prepared.fleet.client_factory()

    def ask(host: str) -> HostComparison:
        release = prepared.releases[host]
        client = factory(host)
        try:
            # Loader and Get-FleetState in one pipeline: one round trip once the pool is open.
            state = client.connect_and_get_state(app=release.app, root=release.root,
                                                 service_name=release.service.name)
            return HostComparison(host, state.current, release.id, is_current(release.id, state))
        except Exception as err:  # noqa: BLE001 - reported per host; such a host is deployed (and fails there)
            return HostComparison(host, None, release.id, False, describe_error(err))
        finally:
            client.close()

    hosts = list(prepared.plan.hosts)
    outcomes = run_parallel(hosts, ask, forks=prepared.fleet.forks)
    return ChangeCheck({h: outcomes[h].value or HostComparison(h, None, prepared.releases[h].id, False,
                                                               outcomes[h].error) for h in hosts})


def narrow_to(prepared: PreparedDeploy, options: DeployOptions, hosts: tuple[str, ...]) -> PreparedDeploy:
    """The same deploy over `hosts` only: batches, canary and failure budget planned again for those hosts
    (`--canary 10%` means 10 % of the hosts that are deployed)."""
    keep = set(hosts)
    fleet = prepared.fleet
    targets = replace(fleet.targets, hosts=[h for h in fleet.targets.hosts if h.name in keep])
    plan = plan_rollout(targets, RolloutOverrides(canary=options.canary, batch=options.batch,
                                                  max_failed=options.max_failed))
    narrowed = replace(fleet, targets=targets, plan=plan)
    return replace(prepared, fleet=narrowed, releases={h: r for h, r in prepared.releases.items() if h in keep},
                   wrappers={h: w for h, w in prepared.wrappers.items() if h in keep})
