"""The core of `fleetctl deploy` and `fleetctl rollback`: load and check everything (ConfigError before any
change), produce the artifact, render each host's release, plan the batches, then run the engine.

`prepare_deploy(options)` → `PreparedDeploy` (pure data plus the artifact on disk); `dry_run(prepared)` says what
would change per host; `run_deploy(prepared, bus)` does it. `prepare_rollback` / `run_rollback` likewise. Pass
subscribers in through the `EventBus` (the live view, the `--json` report, the journal).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fleetctl.artifacts.manifest import Manifest
from fleetctl.artifacts.pull_server import PullServer, pull_server_for
from fleetctl.artifacts.url_artifact import ArtifactUrl, url_artifact
from fleetctl.artifacts.version import resolve_version
from fleetctl.artifacts.wrapper import Wrapper, find_wrapper
from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.playbook import Playbook
from fleetctl.config.project import find_project
from fleetctl.config.templating import render_string
from fleetctl.errors import ConfigError
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import run_parallel
from fleetctl.plan import Plan
from fleetctl.rollout.engine import (
    After,
    LockSpec,
    RolloutEngine,
    RunInfo,
    RunResult,
    Stage,
    new_run_id,
    sigint_handler,
)
from fleetctl.rollout.events import EventBus, HostOutcome
from fleetctl.rollout.health import HealthCheck
from fleetctl.rollout.host_steps import (
    DeployJob,
    HostContext,
    Interruption,
    RollbackJob,
    StagedDeploy,
    StagedRollback,
    activate_deploy,
    activate_rollback,
    describe_error,
    retain,
    rollback_host,
    stage_deploy,
    stage_rollback,
)
from fleetctl.rollout.release import Release, changes_for, is_current, make_release
from fleetctl.targets import RolloutOverrides, Targets, load_targets, plan_rollout

Connect = Callable[[str], NodeClient]


@dataclass(frozen=True)
class DeployOptions:
    """What `fleetctl deploy` was asked (and `fleetctl rollback`, which ignores the artifact fields)."""

    playbook: str | Path
    inventories: Sequence[str | Path]
    limit: str | None = None
    extra_vars: Sequence[str] = ()
    canary: str | None = None
    batch: str | None = None
    max_failed: str | None = None
    forks: int | None = None
    version: str | None = None
    artifact: str | Path | None = None
    force: bool = False
    owner: str | None = None
    dist_dir: Path | None = None


@dataclass
class Fleet:
    """The targeted hosts, each with its rendered playbook and how to reach it."""

    targets: Targets
    plan: Plan
    playbooks: dict[str, Playbook]
    connections: dict[str, ConnectionSettings]
    forks: int
    owner: str
    lock_ttl: int
    _health_cache: dict[tuple[str, str], HealthCheck | None] = field(default_factory=dict)

    def health_for(self, host: str) -> Callable[[str], HealthCheck | None]:
        """The health check of `host` for a given version (health expectations often name the version)."""
        def check(version: str) -> HealthCheck | None:
            key = (host, version)
            if key not in self._health_cache:
                self._health_cache[key] = _health_check(self, host, version)
            return self._health_cache[key]
        return check

    def client_factory(self) -> Connect:
        from fleetctl.node.client import NodeClient
        from fleetctl.transport.winrm import WinRMTransport

        return lambda host: NodeClient(WinRMTransport(self.connections[host]))


@dataclass
class PreparedDeploy:
    fleet: Fleet
    manifest: Manifest
    releases: dict[str, Release]
    transfer: str
    run_id: str = field(default_factory=new_run_id)
    wrappers: dict[str, Wrapper] = field(default_factory=dict)  # host -> the nssm.exe its service needs
    artifact_url: ArtifactUrl | None = None  # transfer: url: the nodes download this; the controller has no copy

    @property
    def artifact_source(self) -> Path | ArtifactUrl:
        return self.artifact_url if self.artifact_url is not None else self.manifest.path

    @property
    def plan(self) -> Plan:
        return self.fleet.plan

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass(frozen=True)
class HostPreview:
    """--dry-run: what a deploy would do on one host (`error` when the host could not be asked)."""

    host: str
    current: str | None
    target: str
    changes: tuple[str, ...]
    error: str | None = None


# --- loading --------------------------------------------------------------------------------------------------


def load_fleet(options: DeployOptions, builtins: dict[str, object] | None = None, *,
               refuse_unsupported: bool = True) -> Fleet:
    """Targets, plan, per-host playbooks and connection settings; every problem is a ConfigError (exit 2)."""
    targets = load_targets(options.playbook, options.inventories, limit=options.limit,
                           extra_vars=list(options.extra_vars), builtins=builtins)
    settings = targets.settings
    if settings.rollout.strategy != "rolling":
        raise ConfigError("only the rolling strategy is implemented by deploy/rollback (with --canary for a "
                          "canary first)", file=targets.source.path, key="rollout.strategy")
    plan = plan_rollout(targets, RolloutOverrides(canary=options.canary, batch=options.batch,
                                                  max_failed=options.max_failed))
    playbooks: dict[str, Playbook] = {}
    connections: dict[str, ConnectionSettings] = {}
    for host in targets.hosts:
        playbook = targets.render_for(host, builtins)
        if refuse_unsupported:  # `remove` retires what such a playbook describes without running it
            _refuse_unsupported(playbook)
        playbooks[host.name] = playbook
        connections[host.name] = ConnectionSettings.from_hostvars(
            host.name, targets.connection_vars(host), source=f"inventory host {host.name}")
    forks = options.forks if options.forks is not None else settings.rollout.forks
    if forks < 1:
        raise ConfigError(f"expected at least 1, got {forks}", key="--forks")
    owner = options.owner or f"{getpass.getuser()}@{socket.gethostname()}"
    return Fleet(targets, plan, playbooks, connections, forks, owner, max(1, int(settings.rollout.lock_ttl)))


def _refuse_unsupported(playbook: Playbook) -> None:
    # Nothing a user asked for is silently skipped (SPEC 9): refuse what deploy cannot do yet.
    if playbook.hooks.before_stop or playbook.hooks.after_start:
        raise ConfigError("hooks are not run by this version of deploy; remove them", file=playbook.path,
                          key="hooks")
    if playbook.traffic is not None:
        raise ConfigError("traffic management is not run by this version of deploy; remove it",
                          file=playbook.path, key="traffic")


def _health_check(fleet: Fleet, host_name: str, version: str) -> HealthCheck | None:
    host = next(h for h in fleet.targets.hosts if h.name == host_name)
    current = fleet.playbooks[host_name]
    if current.health is None:
        return None
    if not version:
        # Unknown version (a release installed by other means): check everything but version-bound JSON fields.
        base = HealthCheck.from_playbook(current.health)
        return replace(base, expect_json=())
    try:
        rendered = fleet.targets.render_for(host, {"version": version})
    except ConfigError:
        rendered = current
    return HealthCheck.from_playbook(rendered.health) if rendered.health else None


def render_files(playbook: Playbook, variables: dict[str, object]) -> dict[str, str]:
    """The playbook's `install.files` templates rendered for one host (relative path in the release -> text)."""
    files: dict[str, str] = {}
    for index, item in enumerate(playbook.install.files):
        # Only project files: a template outside it (`~/.ssh/id_rsa`) would land on every node.
        source = find_project(playbook.base_dir).readable(item.src, base=playbook.base_dir, what="template",
                                                          file=playbook.path, key=f"install.files.{index}.src")
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read template {source}: {err.strerror or err}", file=playbook.path,
                              key=f"install.files.{index}.src") from None
        files[item.dest.replace("/", "\\")] = str(render_string(text, variables, source=str(source),
                                                                key=f"install.files.{index}"))
    return files


def prepare_deploy(options: DeployOptions, *, on_output: Callable[[str], None] | None = None) -> PreparedDeploy:
    """Everything a deploy needs, checked before any host is contacted: targets, artifact, each host's release."""
    from fleetctl.artifacts.produce import produce_artifact

    # Fail fast on bad input before a possibly long build (the real version is known only after it).
    first = load_fleet(options, {"version": options.version or "0.0.0"})
    for playbook in first.playbooks.values():
        find_wrapper(playbook)
    artifact_url: ArtifactUrl | None = None
    if first.targets.settings.transfer == "url":
        # The nodes download it: nothing is built or fetched here. Rendered again with the real version, which
        # the URL usually names.
        spec = first.targets.settings.artifact
        version = resolve_version(options.version, spec.version, first.targets.settings.base_dir)
        fleet = load_fleet(options, {"version": version})
        manifest, artifact_url = url_artifact(fleet.targets.settings, version=version, given_artifact=options.artifact)
        builtins: dict[str, object] = {"version": version}
    else:
        manifest = produce_artifact(first.targets.settings, version=options.version, artifact=options.artifact,
                                    inventory=first.targets.inventory, dist_dir=options.dist_dir, on_output=on_output)
        builtins = {"version": manifest.version}
        fleet = load_fleet(options, builtins)
    releases: dict[str, Release] = {}
    wrappers: dict[str, Wrapper] = {}
    for host in fleet.targets.hosts:
        playbook = fleet.playbooks[host.name]
        variables = fleet.targets.host_variables(host, builtins)
        wrapper = find_wrapper(playbook)
        if wrapper is not None:
            wrappers[host.name] = wrapper
        releases[host.name] = make_release(playbook, version=manifest.version, artifact_sha256=manifest.sha256,
                                           files=render_files(playbook, variables),
                                           wrapper_sha256=wrapper.sha256 if wrapper else None)
    return PreparedDeploy(fleet, manifest, releases, fleet.targets.settings.transfer, wrappers=wrappers,
                          artifact_url=artifact_url)


# --- deploy ---------------------------------------------------------------------------------------------------


def dry_run(prepared: PreparedDeploy, *, connect: Connect | None = None) -> dict[str, HostPreview]:
    """Ask each host for its state (read-only) and say what a deploy would change; nothing is changed."""
    factory = connect or prepared.fleet.client_factory()

    def preview(host: str) -> HostPreview:
        release = prepared.releases[host]
        client = factory(host)
        try:
            state = client.get_fleet_state(app=release.app, root=release.root, service_name=release.service.name)
            present = state.release(release.id) is not None or \
                client.test_fleet_artifact(sha256=release.artifact_sha256).present
            return HostPreview(host, state.current, release.id, tuple(changes_for(release, state,
                                                                                  artifact_present=present)))
        except Exception as err:  # noqa: BLE001 - reported per host
            return HostPreview(host, None, release.id, (), describe_error(err))
        finally:
            client.close()

    outcomes = run_parallel(list(prepared.plan.hosts), preview, forks=prepared.fleet.forks)
    return {host: outcome.value if outcome.value is not None
            else HostPreview(host, None, prepared.releases[host].id, (), outcome.error)
            for host, outcome in outcomes.items()}


def run_deploy(
    prepared: PreparedDeploy,
    bus: EventBus,
    *,
    connect: Connect | None = None,
    interruption: Interruption | None = None,
    force: bool = False,
) -> RunResult:
    """Run the deploy: lock all, batches with health gates, failure budget, rollback, unlock. Never raises for
    host failures: the result's exit code says how it went (`RunResult.raise_for_exit()`)."""
    fleet = prepared.fleet
    pull_server, notes = _pull_server(prepared)
    any_release = next(iter(prepared.releases.values()), None)

    def job_for(host: str) -> DeployJob:
        playbook = fleet.playbooks[host]
        return DeployJob(release=prepared.releases[host], health_for=fleet.health_for(host),
                         artifact_path=prepared.artifact_source, transfer=prepared.transfer,  # type: ignore[arg-type]
                         pull_server=pull_server, keep_releases=playbook.install.keep_releases,
                         start_timeout=float(playbook.service.start_timeout),
                         stop_timeout=float(playbook.service.stop_timeout), ensure_extras=host_extras(playbook),
                         wrapper_path=wrapper.path if (wrapper := prepared.wrappers.get(host)) else None)

    def stage(ctx: HostContext) -> StagedDeploy | HostOutcome:
        return stage_deploy(ctx, job_for(ctx.host))

    def work(ctx: HostContext) -> HostOutcome:
        job = job_for(ctx.host)
        staged = ctx.staged if isinstance(ctx.staged, (StagedDeploy, HostOutcome)) else stage_deploy(ctx, job)
        return activate_deploy(ctx, job, staged)

    def after(ctx: HostContext, outcome: HostOutcome) -> HostOutcome:
        return retain(ctx, job_for(ctx.host), outcome)

    def undo(ctx: HostContext, before: HostOutcome) -> HostOutcome:
        after = rollback_host(ctx, _rollback_job(fleet, ctx.host, prepared.releases[ctx.host], None))
        if after.outcome == "deployed":
            return HostOutcome(ctx.host, "rolled_back", after.release, "rolled back because the canary batch "
                               "failed", ctx.timings)
        return after

    info = RunInfo(run_id=prepared.run_id, kind="deploy", playbook=str(fleet.targets.source.path),
                   service=fleet.targets.settings.name, version=prepared.version,
                   release=any_release.id if any_release else None, strategy="rolling", user=fleet.owner)
    try:
        return _run(fleet, info, work, undo, bus, connect, interruption, force, stage=stage, after=after,
                    notes=notes)
    finally:
        if pull_server is not None:
            pull_server.stop()


def host_extras(playbook: Playbook) -> Callable[[NodeClient], None] | None:
    """Firewall rules and scheduled tasks of a host: idempotent ensures run after the install step."""
    if not playbook.firewall and not playbook.scheduled_tasks:
        return None

    def ensure(client: NodeClient) -> None:
        for rule in playbook.firewall:
            client.set_fleet_firewall_rule(name=rule.name, port=rule.port, protocol=rule.protocol,
                                           direction=rule.direction, action=rule.action,
                                           remote_address=rule.remote_address or None)
        for task in playbook.scheduled_tasks:
            client.set_fleet_scheduled_task(name=task.name, execute=task.execute, arguments=task.arguments,
                                            at=task.at, at_startup=task.at_startup, every_minutes=task.every_minutes,
                                            user=task.user, restart_count=task.restart_count,
                                            restart_interval_minutes=int(float(task.restart_interval)) // 60,
                                            execution_time_limit_minutes=task.execution_time_limit_minutes)
    return ensure


def _pull_server(prepared: PreparedDeploy) -> tuple[PullServer | None, tuple[str, ...]]:
    """The controller's pull server for `pull` and `auto` (None for `push`), bound to the local address that faces
    the nodes, and any note for the live view. `auto` without one (it cannot start) pushes; `pull` without one is
    an error, since the playbook asked for it. It serves HTTPS with a certificate from its own per-deploy CA, whose
    PEM the nodes pin (CaCertificate), so the bearer token never crosses the network in clear."""
    connections = prepared.fleet.connections
    if prepared.transfer in ("push", "url") or not connections:  # url: the nodes fetch from the artifact's home
        return None, ()
    try:
        server = pull_server_for([c.address for c in connections.values()]).start()
    except (OSError, ValueError) as err:
        if prepared.transfer == "pull":
            raise ConfigError(f"transfer: pull needs the controller's pull server, which could not start: {err}",
                              file=prepared.fleet.targets.source.path, key="transfer") from None
        return None, (f"the artifact pull server could not start ({err}); transfer: auto pushes over WinRM",)
    return server, ()


# --- rollback -------------------------------------------------------------------------------------------------


@dataclass
class PreparedRollback:
    fleet: Fleet
    references: dict[str, Release]
    to_version: str | None
    run_id: str = field(default_factory=new_run_id)

    @property
    def plan(self) -> Plan:
        return self.fleet.plan


def prepare_rollback(options: DeployOptions, to_version: str | None = None) -> PreparedRollback:
    """Targets and plan for a rollback; no artifact is built or moved."""
    fleet = load_fleet(options, {"version": to_version or "rollback"})
    references = {h: make_release(pb, version="ref", artifact_sha256="", files={})
                  for h, pb in fleet.playbooks.items()}
    return PreparedRollback(fleet, references, to_version)


def _rollback_job(fleet: Fleet, host: str, reference: Release, to_version: str | None) -> RollbackJob:
    playbook = fleet.playbooks[host]
    return RollbackJob(reference=reference, health_for=fleet.health_for(host), to_version=to_version,
                       start_timeout=float(playbook.service.start_timeout),
                       stop_timeout=float(playbook.service.stop_timeout))


def run_rollback(
    prepared: PreparedRollback,
    bus: EventBus,
    *,
    connect: Connect | None = None,
    interruption: Interruption | None = None,
    force: bool = False,
) -> RunResult:
    """Switch every targeted host to its previous (or the named) kept release, batch by batch, gated."""
    fleet = prepared.fleet

    def job_for(host: str) -> RollbackJob:
        return _rollback_job(fleet, host, prepared.references[host], prepared.to_version)

    def stage(ctx: HostContext) -> StagedRollback | HostOutcome:
        return stage_rollback(ctx, job_for(ctx.host))

    def work(ctx: HostContext) -> HostOutcome:
        job = job_for(ctx.host)
        staged = ctx.staged if isinstance(ctx.staged, (StagedRollback, HostOutcome)) else stage_rollback(ctx, job)
        return activate_rollback(ctx, job, staged)

    def undo(ctx: HostContext, before: HostOutcome) -> HostOutcome:
        after = rollback_host(ctx, _rollback_job(fleet, ctx.host, prepared.references[ctx.host], None))
        if after.outcome == "deployed":
            return HostOutcome(ctx.host, "rolled_back", after.release, "returned because the canary batch failed",
                               ctx.timings)
        return after

    info = RunInfo(run_id=prepared.run_id, kind="rollback", playbook=str(fleet.targets.source.path),
                   service=fleet.targets.settings.name, version=prepared.to_version, release=None,
                   strategy="rolling", user=fleet.owner)
    return _run(fleet, info, work, undo, bus, connect, interruption, force, stage=stage)


def _run(fleet: Fleet, info: RunInfo, work: Callable[[HostContext], HostOutcome],
         undo: Callable[[HostContext, HostOutcome], HostOutcome], bus: EventBus, connect: Connect | None,
         interruption: Interruption | None, force: bool, *, stage: Stage | None = None, after: After | None = None,
         notes: tuple[str, ...] = ()) -> RunResult:
    interruption = interruption or Interruption()
    engine = RolloutEngine(
        plan=fleet.plan, info=info, connect=connect or fleet.client_factory(), work=work, undo=undo, bus=bus,
        lock=LockSpec(app=fleet.targets.settings.name, owner=fleet.owner, ttl_seconds=fleet.lock_ttl, force=force),
        forks=fleet.forks, interruption=interruption, stage=stage, after=after, notes=notes)
    with sigint_handler(interruption):
        return engine.run()


__all__ = [
    "DeployOptions",
    "HostPreview",
    "PreparedDeploy",
    "PreparedRollback",
    "dry_run",
    "is_current",
    "prepare_deploy",
    "prepare_rollback",
    "run_deploy",
    "run_rollback",
]
