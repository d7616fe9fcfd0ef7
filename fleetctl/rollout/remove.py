"""The core of `fleetctl remove`: retire a playbook's service from the targeted hosts, under the same locks and
batches as a deploy, recorded in the history journal as a `remove` run.

Per host, in this order (`removal_steps` says it for --dry-run; `remove_host` does it):
1. the playbook's scheduled tasks, first, so that a guard cannot start the service again half-way;
2. the service: stopped and deleted (`Remove-FleetService`); a stop that hangs fails the host before anything
   else is removed (Windows kills nothing after the stop timeout, and a running exe keeps its files locked);
3. its firewall rules and the blue-green port proxy;
4. its files (`Remove-FleetApp`): the `current` junction; `releases\\` and `shared\\` stay unless --purge, which also
   deletes the node's state for the app.
A host with nothing left to remove is `skipped`; one that had something is `removed`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetctl.config.playbook import Playbook
from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import NodeState
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import EventBus, HostOutcome
from fleetctl.rollout.host_steps import HostContext, Interruption, describe_error
from fleetctl.rollout.lock_keeper import HolderJudge
from fleetctl.rollout.preparation import Connect, DeployOptions, RolloutTargets, load_fleet, new_run_id
from fleetctl.rollout.runner import HostPreview, run_procedure


@dataclass(frozen=True)
class RemovalTarget:
    """What one host's service consists of, from its rendered playbook."""

    app: str
    root: str
    service: str
    stop_timeout: int
    tasks: tuple[str, ...]
    firewall: tuple[tuple[str, int], ...]
    port_proxy: int | None  # blue-green listen port
    colour_services: tuple[str, ...] = ()  # blue-green: <service>-blue, <service>-green

    @classmethod
    def from_playbook(cls, playbook: Playbook) -> RemovalTarget:
        traffic = playbook.traffic
        proxy = traffic.blue_green.listen_port if traffic and traffic.kind == "portproxy" and traffic.blue_green \
            else None
        return cls(app=playbook.name, root=playbook.install.root, service=playbook.service.name,
                   stop_timeout=max(1, int(playbook.service.stop_timeout)),
                   tasks=tuple(t.name for t in playbook.scheduled_tasks),
                   firewall=tuple((r.name, r.port) for r in playbook.firewall), port_proxy=proxy,
                   colour_services=tuple(f"{playbook.service.name}-{c}" for c in ("blue", "green")) if proxy else ())


def removal_steps(target: RemovalTarget, state: NodeState, *, purge: bool) -> list[str]:
    """What removing would do on a host in `state`, in order (pure; the dry run shows it)."""
    steps = [f"remove scheduled task {name} (if present)" for name in target.tasks]
    service = state.service
    if service is not None and service.exists:
        steps.append(f"stop ({service.state}) and delete service {target.service}")
    for colour in state.colours:
        if colour.service is not None and colour.service.exists:
            steps.append(f"stop ({colour.service.state}) and delete service {target.service}-{colour.colour}")
    steps += [f"remove firewall rule {name} (if present)" for name, _ in target.firewall]
    if target.port_proxy is not None:
        steps.append(f"remove port proxy :{target.port_proxy} (if present)")
    if state.current:
        steps.append(f"delete the current junction (release {state.current})")
    kept = f"releases\\ ({len(state.releases)} release(s)) and shared\\"
    steps.append(f"delete {kept} and the node state" if purge else f"keep {kept}")
    return steps


def remove_host(ctx: HostContext, target: RemovalTarget, *, purge: bool) -> HostOutcome:
    """Retire the service on one (already locked) host; never raises for host errors."""
    client = ctx.client
    changed = False
    try:
        for name in target.tasks:
            changed |= ctx.step("remove", lambda n=name: client.set_fleet_scheduled_task(  # type: ignore[misc]
                name=n, remove=True), f"scheduled task {name}").changed
        for service in (target.service, *target.colour_services):
            try:
                removal = ctx.step("stop", lambda s=service: client.remove_fleet_service(  # type: ignore[misc]
                    name=s, timeout_seconds=target.stop_timeout), f"stop and delete {service}")
            except NodeOperationError as err:
                if err.code != "SERVICE_STOP_TIMEOUT":
                    raise
                return HostOutcome(ctx.host, "failed", None, f"{describe_error(err)} ({service} is still stopping "
                                   "and was not deleted; nothing else was removed after it)", ctx.timings)
            changed |= removal.removed
        for name, port in target.firewall:
            changed |= ctx.step("remove", lambda n=name, p=port: client.set_fleet_firewall_rule(  # type: ignore[misc]
                name=n, port=p, remove=True), f"firewall rule {name}").changed
        if target.port_proxy is not None:
            port = target.port_proxy
            changed |= ctx.step("remove", lambda: client.set_fleet_port_proxy(listen_port=port, remove=True),
                                f"port proxy :{port}").changed
        files = ctx.step("remove", lambda: client.remove_fleet_app(app=target.app, root=target.root, purge=purge),
                         "files" + (" (purge)" if purge else ""))
        changed |= bool(files.removed)
    except Exception as err:  # noqa: BLE001 - reported per host
        return HostOutcome(ctx.host, "failed", None, describe_error(err), ctx.timings)
    return HostOutcome(ctx.host, "removed" if changed else "skipped", None, None, ctx.timings)


@dataclass
class PreparedRemove:
    fleet: RolloutTargets
    targets: dict[str, RemovalTarget]
    purge: bool
    run_id: str


def prepare_remove(options: DeployOptions, *, purge: bool) -> PreparedRemove:
    """Targets and plan, checked before any host is contacted (ConfigError, exit 2)."""
    fleet = load_fleet(options, {"version": "remove"}, refuse_unsupported=False)
    targets = {host: RemovalTarget.from_playbook(playbook) for host, playbook in fleet.playbooks.items()}
    return PreparedRemove(fleet, targets, purge, new_run_id())


def dry_run_remove(prepared: PreparedRemove, *, connect: Connect | None = None) -> dict[str, HostPreview]:
    """Ask each host for its state (read-only) and say what removing would do there."""
    factory = connect or prepared.fleet.client_factory()

    def preview(host: str) -> HostPreview:
        target = prepared.targets[host]
        client = factory(host)
        try:
            state = client.get_fleet_state(app=target.app, root=target.root, service_name=target.service)
            return HostPreview(host, state.current, "(removed)", tuple(removal_steps(target, state,
                                                                                     purge=prepared.purge)))
        except Exception as err:  # noqa: BLE001
            return HostPreview(host, None, "(removed)", (), describe_error(err))
        finally:
            client.close()

    outcomes = run_parallel(list(prepared.fleet.plan.hosts), preview, forks=prepared.fleet.forks)
    return {h: o.value if o.value is not None else HostPreview(h, None, "(removed)", (), o.error)
            for h, o in outcomes.items()}


class RemoveProcedure:
    """`HostProcedure` for `fleetctl remove` (rollout/procedure.py): all of a host's work is `activate`."""

    notes: tuple[str, ...] = ()

    def __init__(self, prepared: PreparedRemove) -> None:
        self.prepared = prepared
        self.info = prepared.fleet.run_info(prepared.run_id, "remove")

    def stage(self, ctx: HostContext) -> RemovalTarget:
        return self.prepared.targets[ctx.host]  # nothing to read ahead: removing starts at the scheduled tasks

    def activate(self, ctx: HostContext, staged: object) -> HostOutcome:
        assert isinstance(staged, RemovalTarget)
        return remove_host(ctx, staged, purge=self.prepared.purge)

    def follow_up(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        return outcome

    def undo(self, ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        return outcome  # a removal is not undone when another canary fails: the service is gone either way


def run_remove(prepared: PreparedRemove, bus: EventBus, *, connect: Connect | None = None,
               interruption: Interruption | None = None, force: bool = False,
               judge: HolderJudge | None = None) -> RunResult:
    """Lock every host, remove batch by batch, unlock; the result's exit code says how it went."""
    return run_procedure(prepared.fleet, RemoveProcedure(prepared), bus, connect=connect, interruption=interruption,
                         force=force, judge=judge)
