"""Loading and preparing a rollout, before any host is contacted: targets, plan, each host's rendered playbook and
connection, the artifact, each host's release. Every problem here is a ConfigError (exit 2) and nothing changed.

`prepare_deploy(options)` → `PreparedDeploy`; `prepare_rollback(options, to_version)` → `PreparedRollback`;
`load_fleet(options)` is the part they (and `fleetctl remove`) share. Running them is `rollout/runner.py`.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from fleetctl.artifacts.manifest import Manifest
from fleetctl.artifacts.url_artifact import ArtifactUrl, url_artifact
from fleetctl.artifacts.version import resolve_version
from fleetctl.artifacts.wrapper import Wrapper, find_wrapper
from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.playbook import Playbook
from fleetctl.config.project import find_project
from fleetctl.config.templating import render_string
from fleetctl.errors import ConfigError
from fleetctl.node.auth_budget import AuthBudget
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import connect_client
from fleetctl.plan import Plan
from fleetctl.rollout.bluegreen_run import ColourSet, colour_set
from fleetctl.rollout.deadlines import PhaseTimeouts
from fleetctl.rollout.events import RunInfo, RunKind
from fleetctl.rollout.health import HealthCheck
from fleetctl.rollout.release import Release, make_release
from fleetctl.rollout.traffic_steps import HostTraffic, balancer_for
from fleetctl.targets import RolloutOverrides, Targets, load_targets, plan_rollout

Connect = Callable[[str], NodeClient]


def new_run_id() -> str:
    """Sortable and unique enough across controllers: UTC time plus random hex."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


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
    strategy: str | None = None  # --strategy; None: the playbook's rollout.strategy
    unattended: bool = False  # no prompt, never --force, a dirty git tree refused unless --version
    schedule: str | None = None  # the schedule entry that started this run (history marks it scheduled)
    run_id: str | None = None  # given by `schedule run`, so the run's log and its history share one id

    def inputs(self) -> dict[str, object]:
        """What the run was asked, for the history (the journal redacts it)."""
        extra: dict[str, object] = {}
        for item in self.extra_vars:
            key, _, value = item.partition("=")
            extra[key.strip()] = value
        return {"playbook": str(self.playbook), "inventories": [str(p) for p in self.inventories],
                "limit": self.limit, "vars": extra, "canary": self.canary, "batch": self.batch,
                "max_failed": self.max_failed, "forks": self.forks, "version": self.version,
                "artifact": None if self.artifact is None else str(self.artifact), "unattended": self.unattended}


@dataclass
class RolloutTargets:
    """The targeted hosts, each with its rendered playbook and how to reach it."""

    targets: Targets
    plan: Plan
    playbooks: dict[str, Playbook]
    connections: dict[str, ConnectionSettings]
    forks: int
    owner: str
    lock_ttl: int
    timeouts: PhaseTimeouts = field(default_factory=PhaseTimeouts)  # rollout.timeouts: each phase's bound
    strategy: str = "rolling"  # --strategy, else the playbook's rollout.strategy (STRATEGIES)
    auth_budget: AuthBudget = field(default_factory=AuthBudget)  # the run's hosts share the lockout budget
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
        return lambda host: connect_client(self.connections[host], auth_budget=self.auth_budget)

    def run_info(self, run_id: str, kind: RunKind, *, version: str | None = None, release: str | None = None,
                 schedule: str | None = None, inputs: dict[str, object] | None = None) -> RunInfo:
        """What a run over these targets is, for its procedure (`RunStarted`, the journal); `schedule` names the
        schedule entry that started it (the history marks it scheduled)."""
        return RunInfo(run_id=run_id, kind=kind, playbook=str(self.targets.source.path),
                       service=self.targets.settings.name, version=version, release=release,
                       strategy=self.strategy, user=self.owner,
                       trigger="scheduled" if schedule else "manual", schedule=schedule,
                       inputs=self._with_environment(inputs))

    def _with_environment(self, inputs: dict[str, object] | None) -> dict[str, object]:
        # The fleet.yml environment (-E) is part of what every run over these targets was asked: `history -E`.
        recorded = dict(inputs or {})
        if self.targets.environment is not None:
            recorded["environment"] = self.targets.environment
        return recorded


@dataclass
class PreparedDeploy:
    fleet: RolloutTargets
    manifest: Manifest
    releases: dict[str, Release]
    transfer: str
    run_id: str = field(default_factory=new_run_id)
    wrappers: dict[str, Wrapper] = field(default_factory=dict)  # host -> the nssm.exe its service needs
    artifact_url: ArtifactUrl | None = None  # transfer: url: the nodes download this; the controller has no copy
    traffic: HostTraffic | None = None  # the load balancer hosts are drained from around their restarts
    colours: dict[str, ColourSet] | None = None  # blue-green: each host's two colour releases and gates
    options: DeployOptions | None = None  # what was asked (the history keeps it as the run's inputs)

    @property
    def artifact_source(self) -> Path | ArtifactUrl:
        return self.artifact_url if self.artifact_url is not None else self.manifest.path

    @property
    def plan(self) -> Plan:
        return self.fleet.plan

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass
class PreparedRollback:
    fleet: RolloutTargets
    references: dict[str, Release]  # host -> its app/root/service as configured now (the id is not used)
    to_version: str | None
    run_id: str = field(default_factory=new_run_id)
    force: bool = False  # --to a release that failed its gate on a host is refused unless forced
    traffic: HostTraffic | None = None
    colours: dict[str, ColourSet] | None = None

    @property
    def plan(self) -> Plan:
        return self.fleet.plan


STRATEGIES = ("rolling", "blue-green")


def load_fleet(options: DeployOptions, builtins: dict[str, object] | None = None, *,
               refuse_unsupported: bool = True) -> RolloutTargets:
    """Targets, plan, per-host playbooks and connection settings; every problem is a ConfigError (exit 2)."""
    targets = load_targets(options.playbook, options.inventories, limit=options.limit,
                           extra_vars=list(options.extra_vars), builtins=builtins)
    settings = targets.settings
    strategy = options.strategy or settings.rollout.strategy
    if strategy not in STRATEGIES:
        if options.strategy:
            raise ConfigError(f"expected one of {', '.join(STRATEGIES)}, got {strategy!r}", key="--strategy")
        raise ConfigError(f"expected one of {', '.join(STRATEGIES)}, got {strategy!r}", file=targets.source.path,
                          key="rollout.strategy")
    plan = plan_rollout(targets, RolloutOverrides(canary=options.canary, batch=options.batch,
                                                  max_failed=options.max_failed))
    playbooks: dict[str, Playbook] = {}
    connections: dict[str, ConnectionSettings] = {}
    for host in targets.hosts:
        playbook = targets.render_for(host, builtins)
        if refuse_unsupported:  # `remove` retires what such a playbook describes without running it
            _refuse_unsupported(playbook, strategy)
        playbooks[host.name] = playbook
        connections[host.name] = ConnectionSettings.from_hostvars(
            host.name, targets.connection_vars(host), source=f"inventory host {host.name}")
    forks = options.forks if options.forks is not None else settings.rollout.forks
    if forks < 1:
        raise ConfigError(f"expected at least 1, got {forks}", key="--forks")
    owner = options.owner or f"{getpass.getuser()}@{socket.gethostname()}"
    t = settings.rollout.timeouts
    timeouts = PhaseTimeouts(connect=float(t.connect), transfer=float(t.transfer), step=float(t.step),
                             unlock=float(t.unlock))
    return RolloutTargets(targets, plan, playbooks, connections, forks, owner, max(1, int(settings.rollout.lock_ttl)),
                          timeouts=timeouts, strategy=strategy)


def _refuse_unsupported(playbook: Playbook, strategy: str) -> None:
    # Nothing a user asked for is silently skipped (docs/playbook.md): refuse what deploy cannot do yet.
    if playbook.hooks.before_stop or playbook.hooks.after_start:
        raise ConfigError("hooks are not run by this version of deploy; remove them", file=playbook.path,
                          key="hooks")
    traffic = playbook.traffic
    if strategy == "blue-green" and (traffic is None or traffic.blue_green is None):
        raise ConfigError("the blue-green strategy needs traffic.blue_green (listen_port, blue_port, green_port): "
                          "the public port and each colour's own port", file=playbook.path, key="traffic.blue_green")


def _health_check(fleet: RolloutTargets, host_name: str, version: str) -> HealthCheck | None:
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
    if options.unattended and not options.version:
        refuse_dirty_tree(first.targets.settings)
    for playbook in first.playbooks.values():
        find_wrapper(playbook)
    artifact_url: ArtifactUrl | None = None
    builtins: dict[str, object]
    if first.targets.settings.transfer == "url":
        # The nodes download it: nothing is built or fetched here. Rendered again with the real version, which
        # the URL usually names.
        spec = first.targets.settings.artifact
        version = resolve_version(options.version, spec.version, first.targets.settings.base_dir)
        fleet = load_fleet(options, {"version": version})
        manifest, artifact_url = url_artifact(fleet.targets.settings, version=version, given_artifact=options.artifact)
        builtins = {"version": version}
    else:
        manifest = produce_artifact(first.targets.settings, version=options.version, artifact=options.artifact,
                                    inventory=first.targets.inventory, dist_dir=options.dist_dir,
                                    on_output=on_output)
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
    colours: dict[str, ColourSet] | None = None
    if fleet.strategy == "blue-green":
        colours = {}
        for host in fleet.targets.hosts:
            wrapper = wrappers.get(host.name)
            colours[host.name] = colour_set(fleet.targets, fleet.playbooks[host.name], host.name,
                                            version=manifest.version, artifact_sha256=manifest.sha256,
                                            render_files=render_files,
                                            wrapper_sha256=wrapper.sha256 if wrapper else None)
            releases[host.name] = colours[host.name].releases["blue"]
    # Blue-green behind nginx/HAProxy moves each host's backend between its colours' ports (rollout/bluegreen.py).
    traffic = balancer_for(fleet.targets, fleet.playbooks)
    prepared = PreparedDeploy(fleet, manifest, releases, fleet.targets.settings.transfer, wrappers=wrappers,
                              artifact_url=artifact_url, traffic=traffic, colours=colours, options=options)
    if options.run_id:
        prepared.run_id = options.run_id
    return prepared


def refuse_dirty_tree(playbook: Playbook) -> None:
    """An unattended run deploys what is committed: the git work trees of the project (the current directory),
    the playbook and the build's source must have no uncommitted changes to tracked files, unless `--version`
    says what this is. Trees that are not in git are not checked (their version comes from elsewhere)."""
    from fleetctl.artifacts.version import uncommitted_changes

    places = [Path.cwd(), playbook.base_dir]
    build = playbook.artifact.build
    if build is not None and build.go is not None and (playbook.base_dir / build.go.dir).is_dir():
        places.append(playbook.base_dir / build.go.dir)
    seen: set[str] = set()
    for place in places:
        changes = uncommitted_changes(place.resolve())
        if not changes:
            continue
        shown = ", ".join(line[3:] for line in changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5
                                                                else "")
        if shown in seen:
            continue
        seen.add(shown)
        raise ConfigError(f"the git tree at {place.resolve()} has uncommitted changes ({shown}): an unattended run "
                          "deploys only committed work; commit or stash them, or give --version to deploy this tree "
                          "as that version", file=playbook.path, key="--unattended")


def prepare_rollback(options: DeployOptions, to_version: str | None = None) -> PreparedRollback:
    """Targets and plan for a rollback; no artifact is built or moved."""
    fleet = load_fleet(options, {"version": to_version or "rollback"})
    references = {h: make_release(pb, version="ref", artifact_sha256="", files={})
                  for h, pb in fleet.playbooks.items()}
    traffic = balancer_for(fleet.targets, fleet.playbooks)
    colours = None
    if fleet.strategy == "blue-green":
        colours = {h.name: colour_set(fleet.targets, fleet.playbooks[h.name], h.name, version="ref",
                                      artifact_sha256="", render_files=lambda pb, v: {}, gate_version=False)
                   for h in fleet.targets.hosts}
    return PreparedRollback(fleet, references, to_version, force=options.force, traffic=traffic,
                            colours=colours)
