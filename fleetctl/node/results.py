"""Typed results of node operations: frozen values built from the protocol's JSON result documents."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time from a node as an aware UTC datetime (PowerShell may send 'Z' or an offset)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11 reads "Z" and offsets
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _opt_int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _opt_str(value: Any) -> str | None:
    return str(value) if value is not None else None


@dataclass(frozen=True)
class Facts:
    hostname: str
    os_name: str
    os_version: str
    os_build: str
    ps_version: str
    drives: dict[str, int]
    utc_now: datetime | None
    module_version: str
    lab: bool

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> Facts:
        drives = r.get("drives") if isinstance(r.get("drives"), dict) else {}
        return cls(
            hostname=str(r.get("hostname", "")),
            os_name=str(r.get("os_name", "")),
            os_version=str(r.get("os_version", "")),
            os_build=str(r.get("os_build", "")),
            ps_version=str(r.get("ps_version", "")),
            drives={str(k): int(v) for k, v in (drives or {}).items() if _opt_int(v) is not None},
            utc_now=parse_time(r.get("utc_now")),
            module_version=str(r.get("module_version", "")),
            lab=bool(r.get("lab", False)),
        )

    @property
    def system_drive_free(self) -> int | None:
        """Free bytes on C: (where releases and the cache live by default), else on the first drive."""
        for name, free in self.drives.items():
            if name.upper().rstrip(":\\") == "C":
                return free
        return next(iter(self.drives.values()), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["utc_now"] = self.utc_now.isoformat() if self.utc_now else None
        return data


@dataclass(frozen=True)
class LockInfo:
    """An app lock as the node reports it: a run's (with the controller `process` that holds it) or a change
    freeze (with its `reason`, held by a person)."""

    owner: str
    deploy_id: str
    acquired_at: datetime | None
    expires_at: datetime | None
    expired: bool = False
    renewed_at: datetime | None = None
    ttl_seconds: int | None = None
    process: str | None = None
    reason: str | None = None

    @property
    def freeze(self) -> bool:
        return bool(self.reason)

    @classmethod
    def from_result(cls, r: Any) -> LockInfo | None:
        if not isinstance(r, dict) or not r:
            return None
        ttl = r.get("ttl_seconds")
        return cls(str(r.get("owner", "")), str(r.get("deploy_id", "")), parse_time(r.get("acquired_at")),
                   parse_time(r.get("expires_at")), bool(r.get("expired", False)), parse_time(r.get("renewed_at")),
                   int(ttl) if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) else None,
                   str(r["process"]) if r.get("process") else None, str(r["reason"]) if r.get("reason") else None)


@dataclass(frozen=True)
class LockResult:
    lock: LockInfo | None
    taken_over: LockInfo | None


@dataclass(frozen=True)
class ArtifactStatus:
    present: bool
    path: str | None
    size: int | None


@dataclass(frozen=True)
class StoredArtifact:
    path: str
    sha256: str
    size: int
    received: int

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> StoredArtifact:
        return cls(str(r.get("path", "")), str(r.get("sha256", "")), _opt_int(r.get("size")) or 0,
                   _opt_int(r.get("received")) or 0)


@dataclass(frozen=True)
class InstalledRelease:
    release: str
    path: str
    created: bool


@dataclass(frozen=True)
class ServiceChange:
    created: bool
    changed: tuple[str, ...]


@dataclass(frozen=True)
class ServiceTransition:
    state: str
    was: str | None
    waited_ms: int | None
    pid: int | None = None


@dataclass(frozen=True)
class SwitchResult:
    current: str
    previous: str | None
    changed: bool


@dataclass(frozen=True)
class ReleaseInfo:
    release: str
    version: str
    sha256: str
    installed_at: datetime | None
    gate_failed: str | None = None  # why it failed its health gate on this node (Set-FleetReleaseVerdict)


CRASH_WINDOW_MINUTES = 10  # the window of Get-FleetState's service.recent_restarts (protocol)


@dataclass(frozen=True)
class ServiceInfo:
    exists: bool
    state: str | None
    pid: int | None
    start_time: datetime | None
    restarts: int
    binary_path: str | None
    recent_restarts: int = 0  # unexpected exits in the node's last CRASH_WINDOW_MINUTES (crash-loop verdict)

    @classmethod
    def from_result(cls, r: Any) -> ServiceInfo | None:
        if not isinstance(r, dict):
            return None
        return cls(bool(r.get("exists", False)), _opt_str(r.get("state")), _opt_int(r.get("pid")),
                   parse_time(r.get("start_time")), _opt_int(r.get("restarts")) or 0, _opt_str(r.get("binary_path")),
                   _opt_int(r.get("recent_restarts")) or 0)


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime | None
    action: str
    release: str | None


@dataclass(frozen=True)
class TaskInfo:
    """One scheduled task as `Get-FleetState` reports it; `last_result` None: it never ran."""

    name: str
    exists: bool
    state: str | None
    last_run: datetime | None
    last_result: int | None

    @property
    def failed(self) -> bool:
        """The last run ended with a non-zero result (0x41301 is "still running", not a failure)."""
        return self.last_result is not None and self.last_result not in (0, 0x41301)

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> TaskInfo:
        result = r.get("last_result")
        return cls(str(r.get("name", "")), bool(r.get("exists")), _opt_str(r.get("state")),
                   parse_time(r.get("last_run")), int(result) if isinstance(result, int) else None)


@dataclass(frozen=True)
class ColourInfo:
    """Blue-green: one colour of a service on a node, as `Get-FleetState` reports it."""

    colour: str
    release: str | None
    previous: str | None
    service: ServiceInfo | None


@dataclass(frozen=True)
class ProxyInfo:
    """The node-local port proxy on the blue-green public port: `listen` and `connect` as address:port."""

    listen: str
    connect: str

    @property
    def connect_port(self) -> int | None:
        port = self.connect.rpartition(":")[2]
        return int(port) if port.isdigit() else None


@dataclass(frozen=True)
class ColourSwitch:
    live: str
    current: str | None
    previous: str | None
    connect: str | None
    changed: bool


@dataclass(frozen=True)
class NodeState:
    """The node's truth about one app (docs/node-protocol.md, Node state)."""

    releases: tuple[ReleaseInfo, ...]
    current: str | None
    previous: str | None
    service: ServiceInfo | None
    lock: LockInfo | None
    history: tuple[HistoryEntry, ...] = field(default=())
    tasks: tuple[TaskInfo, ...] = field(default=())
    colours: tuple[ColourInfo, ...] = field(default=())  # blue-green only, blue before green
    live: str | None = None  # the colour recorded as live by Switch-FleetColour
    proxy: ProxyInfo | None = None  # asked for with ProxyPort

    def colour(self, name: str) -> ColourInfo | None:
        return next((c for c in self.colours if c.colour == name), None)

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> NodeState:
        releases = tuple(
            ReleaseInfo(str(x.get("release", "")), str(x.get("version", "")), str(x.get("sha256", "")),
                        parse_time(x.get("installed_at")), _opt_str(x.get("gate_failed")))
            for x in r.get("releases") or [] if isinstance(x, dict))
        history = tuple(HistoryEntry(parse_time(x.get("at")), str(x.get("action", "")), _opt_str(x.get("release")))
                        for x in r.get("history") or [] if isinstance(x, dict))
        tasks = tuple(TaskInfo.from_result(x) for x in r.get("tasks") or [] if isinstance(x, dict))
        raw = r.get("colours")
        raw_colours: dict[str, Any] = raw if isinstance(raw, dict) else {}
        colours = tuple(ColourInfo(name, _opt_str(c.get("release")), _opt_str(c.get("previous")),
                                   ServiceInfo.from_result(c.get("service")))
                        for name, c in sorted(raw_colours.items()) if isinstance(c, dict))
        proxy = r.get("proxy")
        proxy_info = ProxyInfo(str(proxy.get("listen", "")), str(proxy.get("connect", ""))) \
            if isinstance(proxy, dict) and proxy.get("connect") else None
        return cls(releases, _opt_str(r.get("current")), _opt_str(r.get("previous")),
                   ServiceInfo.from_result(r.get("service")), LockInfo.from_result(r.get("lock")), history, tasks,
                   colours, _opt_str(r.get("live")), proxy_info)

    def release(self, release_id: str | None) -> ReleaseInfo | None:
        return next((x for x in self.releases if x.release == release_id), None)


@dataclass(frozen=True)
class NodeHealthProbe:
    status: int | None
    body: str
    elapsed_ms: int | None
    error: str | None


@dataclass(frozen=True)
class RetentionResult:
    removed: tuple[str, ...]
    kept: tuple[str, ...]


@dataclass(frozen=True)
class ServiceRemoval:
    """Result of `Remove-FleetService`: whether a service was deleted, and its state before."""

    removed: bool
    was: str | None


@dataclass(frozen=True)
class Changed:
    """Result of an ensure-style operation (firewall rule, scheduled task, port proxy)."""

    changed: bool
    last_run: datetime | None = None  # scheduled tasks
    last_result: int | None = None  # scheduled tasks: exit code of the last run (None: never ran)
    connect: str | None = None  # port proxies: "address:port" or None


@dataclass(frozen=True)
class ServiceEvent:
    """One Application-log event; `time` and `id` are None where the node cannot tell (the lab)."""

    time: datetime | None
    level: str
    id: int | None
    message: str


@dataclass(frozen=True)
class EventTail:
    events: tuple[ServiceEvent, ...]  # newest first
    note: str | None  # what the node could not report

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> EventTail:
        events = tuple(ServiceEvent(parse_time(e.get("time")), str(e.get("level") or ""), _opt_int(e.get("id")),
                                    str(e.get("message") or "")) for e in r.get("events") or [] if isinstance(e, dict))
        return cls(events, _opt_str(r.get("note")))


@dataclass(frozen=True)
class LogTail:
    path: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class LogChunk:
    """`Read-FleetLog`: complete lines from a cursor, and the cursor (`path`, `offset`) to read from next."""

    path: str
    lines: tuple[str, ...]
    offset: int
    size: int
    reset: bool  # the cursor did not apply (another file, or the file shrank): read from the beginning
    more: bool  # more bytes follow than one answer carries: read again at once

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> LogChunk:
        return cls(str(r.get("path", "")), tuple(str(x) for x in r.get("lines") or ()), _opt_int(r.get("offset")) or 0,
                   _opt_int(r.get("size")) or 0, bool(r.get("reset")), bool(r.get("more")))


@dataclass(frozen=True)
class CommandResult:
    """`Invoke-FleetCommand`: what the operator's script printed, and how it ended."""

    output: tuple[str, ...]
    errors: int
    exit_code: int
    elapsed_ms: int | None

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> CommandResult:
        code = _opt_int(r.get("exit_code"))
        return cls(tuple(str(x) for x in r.get("output") or ()), _opt_int(r.get("errors")) or 0,
                   code if code is not None else 1, _opt_int(r.get("elapsed_ms")))


@dataclass(frozen=True)
class DeployedFile:
    """One file of an installed release (Get-FleetDeployed): `text` is None when too large or not UTF-8."""

    path: str
    size: int
    sha256: str
    text: str | None


@dataclass(frozen=True)
class DeployedService:
    """A service definition as the node reads it back, in `Set-FleetService`'s terms (snake_case)."""

    binary_path: str | None
    arguments: tuple[str, ...]
    display_name: str
    description: str
    environment: dict[str, str]  # values as the node reports them (the lab masks secret-named ones)
    environment_sha256: dict[str, str]  # name -> sha256 of the value: compares a secret without reading it
    account: str
    start_type: str | None
    dependencies: tuple[str, ...]
    recovery_actions: tuple[str, ...]
    recovery_reset_seconds: int | None
    stop_timeout_seconds: int | None
    hosting: str
    working_directory: str | None
    stdout_path: str | None
    stderr_path: str | None
    rotate_bytes: int | None
    restart_delay_milliseconds: int | None
    throttle_milliseconds: int | None

    @classmethod
    def from_result(cls, r: Any) -> DeployedService | None:
        if not isinstance(r, dict):
            return None
        env = r.get("environment")
        return cls(
            binary_path=_opt_str(r.get("binary_path")), arguments=tuple(str(a) for a in r.get("arguments") or ()),
            display_name=str(r.get("display_name") or ""), description=str(r.get("description") or ""),
            environment={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
            environment_sha256={str(h.get("name")): str(h.get("sha256")) for h in r.get("environment_sha256") or ()
                                if isinstance(h, dict)},
            account=str(r.get("account") or ""), start_type=_opt_str(r.get("start_type")),
            dependencies=tuple(str(d) for d in r.get("dependencies") or ()),
            recovery_actions=tuple(str(a) for a in r.get("recovery_actions") or ()),
            recovery_reset_seconds=_opt_int(r.get("recovery_reset_seconds")),
            stop_timeout_seconds=_opt_int(r.get("stop_timeout_seconds")), hosting=str(r.get("hosting") or "native"),
            working_directory=_opt_str(r.get("working_directory")), stdout_path=_opt_str(r.get("stdout_path")),
            stderr_path=_opt_str(r.get("stderr_path")), rotate_bytes=_opt_int(r.get("rotate_bytes")),
            restart_delay_milliseconds=_opt_int(r.get("restart_delay_milliseconds")),
            throttle_milliseconds=_opt_int(r.get("throttle_milliseconds")))


@dataclass(frozen=True)
class Deployed:
    """What a host has now for one app (Get-FleetDeployed): a release's files and the service definition."""

    release: str | None
    files: tuple[DeployedFile, ...]
    service: DeployedService | None

    @classmethod
    def from_result(cls, r: dict[str, Any]) -> Deployed:
        files = tuple(DeployedFile(str(f.get("path", "")), _opt_int(f.get("size")) or 0, str(f.get("sha256") or ""),
                                   _opt_str(f.get("text")))
                      for f in r.get("files") or () if isinstance(f, dict))
        return cls(_opt_str(r.get("release")), files, DeployedService.from_result(r.get("service")))
