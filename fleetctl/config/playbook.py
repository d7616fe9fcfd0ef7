"""The playbook: one service's artifact, install, service, health, rollout and traffic settings (docs/playbook.md).

A playbook is YAML with Jinja2 in its string values. `load_playbook` parses and checks its shape once;
`PlaybookSource.render(variables)` renders the templates with a host's variables and validates the result into
a `Playbook`. The artifact and rollout settings are the same for every host, so `render_global` renders them
with playbook vars and `--var` extra vars only (a host variable there is an error).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fleetctl.config.sizes import Duration, Size
from fleetctl.config.windows_paths import absolute_path_problem, file_name_problem, relative_path_problem
from fleetctl.config.yamlfile import KeyPath, YamlDocument, load_yaml
from fleetctl.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _list_of_str(value: Any) -> Any:
    """Accept a single string where a list of strings is expected."""
    return [value] if isinstance(value, str) else value


StrList = Annotated[list[str], BeforeValidator(_list_of_str)]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"


# --- artifact -------------------------------------------------------------------------------------------------


class GoBuild(_Model):
    """`artifact.build.go`: cross-compile a Go program (stdlib `go build`, CGO off)."""

    dir: str = "src"
    package: str = "."
    goos: str = "windows"
    goarch: str = "amd64"
    ldflags: StrList = []
    tags: StrList = []
    version_var: str = "main.Version"
    output_name: str | None = None
    host: str | None = None
    env: dict[str, str] = {}


class CommandBuild(_Model):
    """`artifact.build.command`: any build command and the file(s) it produces."""

    run: str | list[str]
    dir: str = "."
    outputs: StrList
    env: dict[str, str] = {}

    @model_validator(mode="after")
    def _outputs_present(self) -> CommandBuild:
        if not self.outputs:
            raise ValueError("outputs must name at least one file the command produces")
        return self


class BuildSpec(_Model):
    go: GoBuild | None = None
    command: CommandBuild | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> BuildSpec:
        if (self.go is None) == (self.command is None):
            raise ValueError("give exactly one of 'go' or 'command'")
        return self


class Collect(_Model):
    """`artifact.collect`: take an artifact built elsewhere. With `transfer: url` the nodes download `url`
    themselves (checked against `sha256` and `size`, trusting `ca`) and the controller never fetches it."""

    path: str | None = None
    url: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    size: int | None = Field(default=None, ge=1)  # bytes; required with transfer: url
    ca: str | None = None  # PEM file (relative to the playbook) of the CA that signed the url's server
    token: str | None = None  # sent as `Authorization: Bearer` with the url (an artifact repository's API token)
    ssh: str | None = Field(default=None, pattern=r"^ssh://[^/]+/.+")

    @model_validator(mode="after")
    def _one_source(self) -> Collect:
        given = [k for k in ("path", "url", "ssh") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of 'path', 'url' or 'ssh'")
        if self.url and not self.sha256:
            raise ValueError("'sha256' is required with 'url'")
        if not self.url and (self.ca or self.token):
            raise ValueError("'ca' and 'token' go with 'url'")
        return self


class ArtifactSpec(_Model):
    build: BuildSpec | None = None
    collect: Collect | None = None
    version: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ArtifactSpec:
        if (self.build is None) == (self.collect is None):
            raise ValueError("give exactly one of 'build' or 'collect'")
        return self


# --- install and service --------------------------------------------------------------------------------------


class TemplateFile(_Model):
    """A file rendered from a Jinja2 template into each release directory."""

    src: str  # relative to the playbook file
    dest: str  # relative to the release directory

    @field_validator("dest")
    @classmethod
    def _relative_dest(cls, dest: str) -> str:
        problem = relative_path_problem(dest)
        if problem:
            raise ValueError(f"expected a file path inside the release directory: {dest!r} {problem}")
        return dest


class Install(_Model):
    root: str
    keep_releases: int = Field(default=5, ge=2, le=100)
    exe: str | None = None  # file name of the exe in the release; default <service name>.exe
    files: list[TemplateFile] = []

    @field_validator("root")
    @classmethod
    def _absolute_root(cls, root: str) -> str:
        problem = absolute_path_problem(root)
        if problem:
            raise ValueError(problem if problem.startswith("expected") else f"{root!r} {problem}")
        return root

    @field_validator("exe")
    @classmethod
    def _exe_file_name(cls, exe: str | None) -> str | None:
        if exe is None:
            return exe
        if "\\" in exe or "/" in exe:
            raise ValueError(f"expected the exe's file name in the release directory, not a path: {exe!r}")
        problem = file_name_problem(exe)
        if problem:
            raise ValueError(f"expected the exe's file name in the release directory: {exe!r} {problem}")
        if not exe.lower().endswith(".exe"):
            raise ValueError(f"expected a file name ending in .exe, got {exe!r}")
        return exe


def _recovery_action(value: Any) -> Any:
    """`none` (run nothing) or `{restart: 5s}`; a bare `restart` restarts at once."""
    if value == "none":
        return {}
    if value == "restart":
        return {"restart": 0}
    return value


class RecoveryAction(_Model):
    """One entry of `service.recovery.actions`: restart after a delay, or (no `restart`) run nothing."""

    restart: Duration | None = None


class Recovery(_Model):
    """What the SCM does when the service fails: `actions` for the first, second and later failures (the last one
    repeats), or `restart_after` for all three; the failure count resets after `reset_after` without failures."""

    restart_after: Duration = Duration(10)
    reset_after: Duration = Duration(86400)
    actions: list[Annotated[RecoveryAction, BeforeValidator(_recovery_action)]] | None = Field(
        default=None, min_length=1, max_length=3)

    def sc_actions(self) -> tuple[str, ...]:
        """The actions as sc.exe's `<action>/<milliseconds>` tokens (what Set-FleetService -RecoveryActions takes)."""
        if self.actions is None:
            return ()
        return tuple(f"restart/{int(float(a.restart) * 1000)}" if a.restart is not None else "none/0"
                     for a in self.actions)


class NssmOptions(_Model):
    """`service.nssm`: how nssm.exe runs a console program (hosting: nssm)."""

    exe: str | None = None  # the controller's nssm.exe (default: FLEETCTL_NSSM_EXE, else the bundled copy)
    rotate_bytes: int = Field(default=10 * 1024 * 1024, ge=0, le=2**32 - 1)  # 0: never rotate
    restart_delay: Duration = Duration(0)
    throttle: Duration = Duration(1.5)


class Service(_Model):
    name: str = Field(pattern=_NAME)
    display_name: str | None = None
    description: str | None = None
    arguments: StrList = []
    environment: dict[str, str] = {}
    account: str = "LocalSystem"
    password: str | None = None
    start_type: Literal["auto", "delayed-auto", "manual"] = "auto"
    dependencies: StrList = []
    recovery: Recovery | None = Recovery()
    start_timeout: Duration = Duration(30)
    stop_timeout: Duration = Duration(30)
    hosting: Literal["native", "nssm", "winsw"] = "native"
    working_directory: str | None = None  # hosting: nssm only (AppDirectory); default <root>\\current
    nssm: NssmOptions | None = None

    @field_validator("environment")
    @classmethod
    def _environment_names(cls, environment: dict[str, str]) -> dict[str, str]:
        for name in environment:
            # Windows keeps a service's environment as NAME=VALUE strings: a name with '=' cannot round-trip.
            if not name or "=" in name or not name.strip() or any(ord(c) < 32 for c in name):
                raise ValueError(f"environment variable name {name!r} is not valid: expected a non-empty name "
                                 "without '=' or control characters")
        return environment

    @model_validator(mode="after")
    def _hosting_settings(self) -> Service:
        if self.hosting == "winsw":
            raise ValueError("hosting 'winsw' is not implemented: use 'nssm' for a console program, or 'native' "
                             "for an exe that talks to the service control manager itself")
        if self.nssm is not None and self.hosting != "nssm":
            raise ValueError("'nssm' settings need hosting: nssm")
        if self.working_directory is not None:
            if self.hosting != "nssm":
                raise ValueError("working_directory needs hosting: nssm (the SCM starts every native service in "
                                 "%SystemRoot%\\System32 and has no setting for it)")
            if not re.match(r"^[A-Za-z]:\\", self.working_directory):
                raise ValueError(r"working_directory must be an absolute Windows path such as C:\apps\hello\shared")
        return self


class FirewallRule(_Model):
    name: str
    port: int = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP"] = "TCP"
    direction: Literal["Inbound", "Outbound"] = "Inbound"
    action: Literal["Allow", "Block"] = "Allow"
    remote_address: StrList = []


class ScheduledTask(_Model):
    """A task in Task Scheduler's \\fleetctl\\ folder: typically a guard that checks or restarts the service."""

    name: str = Field(pattern=_NAME)
    execute: str
    arguments: StrList = []
    at: str | None = Field(default=None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")  # daily
    at_startup: bool = False
    every: Duration | None = None  # repeat every N minutes, indefinitely
    user: str = "SYSTEM"
    restart_count: int = Field(default=0, ge=0, le=999)
    restart_interval: Duration = Duration(60)
    execution_time_limit: Duration | None = None  # None: Windows' 72 h; 0: no limit

    @model_validator(mode="after")
    def _triggers(self) -> ScheduledTask:
        if self.at is None and not self.at_startup and self.every is None:
            raise ValueError("give at least one trigger: 'at' (daily HH:MM), 'at_startup' or 'every'")
        # Task Scheduler counts these in whole minutes, one minute at least (restarts: up to 31 days).
        for key, value, low in (("every", self.every, 60), ("restart_interval", self.restart_interval, 60)):
            if value is not None and (float(value) < low or float(value) % 60):
                raise ValueError(f"'{key}' must be whole minutes, at least 1m, got {float(value):g}s")
        if self.execution_time_limit is not None and float(self.execution_time_limit) % 60:
            raise ValueError("'execution_time_limit' must be whole minutes (0 for no limit)")
        return self

    @property
    def every_minutes(self) -> int | None:
        return int(float(self.every)) // 60 if self.every is not None else None

    @property
    def execution_time_limit_minutes(self) -> int | None:
        limit = self.execution_time_limit
        return int(float(limit)) // 60 if limit is not None else None


class Hooks(_Model):
    """PowerShell run on the node around the restart. Real Windows only: the lab refuses them."""

    before_stop: StrList = []
    after_start: StrList = []


# --- health, rollout, traffic, notify ---------------------------------------------------------------------------


_MAX_HEALTH_WAIT = 3600.0


class Health(_Model):
    url: str
    from_: Literal["controller", "node"] = Field(default="controller", alias="from")
    expect_status: int = Field(default=200, ge=100, le=599)
    expect_body: str | None = None
    expect_json: dict[str, Any] = {}
    interval: Duration = Duration(1)
    timeout: Duration = Duration(5)
    retries: int = Field(default=30, ge=1, le=10000)
    stability_window: Duration = Duration(10)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"expected a URL with a host, got {url!r}")
        return url

    @field_validator("interval", "timeout", "stability_window")
    @classmethod
    def _at_most_an_hour(cls, value: Duration) -> Duration:
        # A health gate waits interval x retries and the stability window on every batch: hours would hang it.
        if float(value) > _MAX_HEALTH_WAIT:
            raise ValueError(f"expected at most 1h, got {float(value):g}s")
        return value


class Timeouts(_Model):
    """Wall-clock bounds of each phase of one host's work: past one, the host counts as lost (docs/playbook.md)."""

    connect: Duration = Duration(60)  # connect, authenticate, load the module, take the lock
    transfer: Duration = Duration(1800)  # move the artifact (and nssm.exe) to the host
    step: Duration = Duration(120)  # any other node call (stop/start: on top of the service's own timeouts)
    unlock: Duration = Duration(20)  # release the lock at the end

    @field_validator("connect", "transfer", "step", "unlock")
    @classmethod
    def _positive(cls, value: Duration) -> Duration:
        if float(value) <= 0:
            raise ValueError("expected a duration above 0s")
        return value


class Rollout(_Model):
    strategy: Literal["rolling", "blue-green"] = "rolling"
    batch: Size = Size.parse("25%")
    canary: Size | None = None
    canary_bake: Duration = Duration(0)
    bake: Duration = Duration(0)  # blue-green: how long the old colour stays warm after the switch
    max_failed: Size = Size.parse("0")
    spread_by: str | None = None
    forks: int = Field(default=50, ge=1, le=1000)
    lock_ttl: Duration = Duration(1800)
    timeouts: Timeouts = Timeouts()
    on_failure: Literal["rollback-and-halt"] = "rollback-and-halt"

    @field_validator("batch", "canary")
    @classmethod
    def _not_zero(cls, size: Size | None) -> Size | None:
        if size is not None and size.is_zero:
            raise ValueError("expected at least 1 host or more than 0% (omit canary for none)")
        return size


class BlueGreen(_Model):
    blue_port: int = Field(ge=1, le=65535)
    green_port: int = Field(ge=1, le=65535)
    listen_port: int = Field(ge=1, le=65535)
    keep_warm: bool = False  # keep the old colour running after the bake (an instant switch back, at any time)

    @model_validator(mode="after")
    def _three_ports(self) -> BlueGreen:
        if len({self.blue_port, self.green_port, self.listen_port}) != 3:
            raise ValueError("listen_port, blue_port and green_port must be three different ports")
        return self


class Traffic(_Model):
    kind: Literal["nginx", "haproxy", "portproxy"]
    host: str | None = None  # inventory host of the load balancer (SSH)
    config_path: str | None = None  # the live balancer config file on that host
    template: str | None = None  # Jinja2, relative to the playbook; renders config_path from the backends
    port: int | None = Field(default=None, ge=1, le=65535)  # the port the balancer sends this host's traffic to
    backend: str | None = None  # HAProxy backend (default: the playbook's name); `upstream` in nginx templates
    admin_socket: str | None = None  # HAProxy runtime API socket on the balancer host
    check_command: StrList = []  # default `nginx -t` / `haproxy -c -f {config}`; {config}: the candidate file
    reload_command: StrList = []  # default `nginx -s reload`; HAProxy changes state at runtime, without reload
    drain: Duration = Duration(0)  # nginx: how long a drained host keeps serving its open requests
    drain_timeout: Duration = Duration(60)  # HAProxy: at most this long waiting for a server's sessions to end
    blue_green: BlueGreen | None = None

    @model_validator(mode="after")
    def _lb_needs_host(self) -> Traffic:
        if self.kind in ("nginx", "haproxy") and not (self.host and self.config_path and self.template):
            raise ValueError(f"kind '{self.kind}' needs 'host', 'config_path' and 'template'")
        if self.kind in ("nginx", "haproxy") and self.port is None and self.blue_green is None:
            raise ValueError(f"kind '{self.kind}' needs 'port' (where the balancer reaches each host) or "
                             "'blue_green' (the colours' ports)")
        if self.kind == "haproxy" and not self.admin_socket:
            raise ValueError("kind 'haproxy' needs 'admin_socket' (the runtime API socket, e.g. "
                             "/run/haproxy/admin.sock)")
        if self.kind == "portproxy" and self.blue_green is None:
            raise ValueError("kind 'portproxy' needs 'blue_green' (listen_port, blue_port, green_port)")
        return self


NotifyEvent = Literal["start", "success", "failure", "halted", "interrupted"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("start", "success", "failure", "halted", "interrupted")


class Webhook(_Model):
    """`notify.webhooks[]`: one receiver. The URL (a Slack or Teams URL is itself the credential) and header values
    are registered as secrets when read, so no output, log or error ever shows them."""

    url: str
    format: Literal["json", "slack", "teams"] = "json"
    events: list[NotifyEvent] = list(NOTIFY_EVENTS)
    timeout: Duration = Duration(10)
    attempts: int = Field(default=3, ge=1, le=10)
    headers: dict[str, str] = {}
    ca_bundle: str | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _url_is_http(cls, value: Any) -> Any:
        from fleetctl.config.redaction import register_secret

        if isinstance(value, str):
            register_secret(value)
            if not re.match(r"^https?://[^/\s]+", value):
                # Never echo the value: it is a secret.
                raise ValueError("expected an http:// or https:// URL (the value is not shown: webhook URLs are "
                                 "secret)")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _headers_are_secret(cls, value: Any) -> Any:
        from fleetctl.config.redaction import register_secret

        if isinstance(value, dict):
            for v in value.values():
                if isinstance(v, str):
                    register_secret(v)
        return value

    @field_validator("events")
    @classmethod
    def _some_events(cls, events: list[str]) -> list[str]:
        if not events:
            raise ValueError(f"expected at least one of {', '.join(NOTIFY_EVENTS)} (remove the webhook to send "
                             "nothing)")
        if len(set(events)) != len(events):
            raise ValueError("each event may be listed once")
        return events

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, timeout: Duration) -> Duration:
        if timeout <= 0 or timeout > 300:
            raise ValueError("expected a timeout above 0 and at most 5m")
        return timeout


class Notify(_Model):
    webhooks: list[Webhook] = []


class Playbook(_Model):
    """One service, fully rendered for one host (or, from `render_global`, without host sections)."""

    name: str = Field(pattern=_NAME)
    description: str | None = None
    hosts: str = "all"
    vars: dict[str, Any] = {}
    artifact: ArtifactSpec
    transfer: Literal["auto", "push", "pull", "url"] = "auto"
    install: Install
    service: Service
    firewall: list[FirewallRule] = []
    scheduled_tasks: list[ScheduledTask] = []
    hooks: Hooks = Hooks()
    health: Health | None = None
    rollout: Rollout = Rollout()
    traffic: Traffic | None = None
    notify: Notify = Notify()

    # Set by the loader, not by the YAML.
    path: Path = Field(default=Path("playbook.yml"), exclude=True)


    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def exe_name(self) -> str:
        return self.install.exe or f"{self.service.name}.exe"


# Sections whose values are the same for every host: rendered once, without host variables.
GLOBAL_SECTIONS = ("name", "description", "hosts", "vars", "artifact", "transfer", "rollout", "notify")


# --- loading and rendering --------------------------------------------------------------------------------------


@dataclass
class PlaybookSource:
    """A parsed, shape-checked playbook file whose templates are not yet rendered."""

    document: YamlDocument
    defaults: dict[str, Any] = field(default_factory=dict)  # the playbook's own `vars:`

    @property
    def path(self) -> Path:
        return self.document.path

    def render(self, variables: Mapping[str, Any], *, host: str | None = None) -> Playbook:
        """Render every template with `variables` (host vars, playbook vars and extra vars, already merged)."""
        data = _render_tree(self.document.data, variables, self.document, (), host)
        return _validate(data, self.document)

    def render_global(self, variables: Mapping[str, Any]) -> Playbook:
        """Render the host-independent sections; host sections are validated for shape only."""
        data = dict(self.document.data)
        for key in GLOBAL_SECTIONS:
            if key in data:
                data[key] = _render_tree(data[key], variables, self.document, (key,), None)
        return _validate(data, self.document, check_templates_later=True)


def load_playbook(path: str | Path) -> PlaybookSource:
    """Parse a playbook file and check its shape (unknown keys, wrong types) before any template is rendered."""
    doc = load_yaml(path, what="playbook")
    if not isinstance(doc.data, dict):
        raise ConfigError("a playbook must be a YAML mapping (name:, artifact:, install:, service: ...)", file=doc.path)
    _validate(doc.data, doc, check_templates_later=True)
    defaults = doc.data.get("vars") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("expected a mapping of variable names to values", file=doc.path,
                          line=doc.line_of(("vars",)), key="vars")
    return PlaybookSource(document=doc, defaults=defaults)


def merge_variables(
    source: PlaybookSource,
    host_vars: Mapping[str, Any] | None,
    extra_vars: Mapping[str, Any] | None,
    builtins: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Precedence, lowest first: playbook `vars:` (defaults), inventory host vars, fleetctl's builtins
    (`version`, `inventory_hostname`), `--var` extra vars."""
    merged: dict[str, Any] = dict(source.defaults)
    merged.update(host_vars or {})
    merged.update(builtins or {})
    merged.update(extra_vars or {})
    return merged


def parse_extra_vars(pairs: list[str] | None) -> dict[str, Any]:
    """`--var KEY=VALUE` pairs: the value exactly as typed, a string (`010` stays "010", a newline stays one).
    `--var KEY:=JSON` gives a typed value (`port:=8080`, `debug:=true`, `tags:=["a","b"]`). `-e @FILE` reads a
    YAML (or JSON) mapping of variables from FILE, as Ansible's `-e @vars.yml` does; later options win."""
    import json

    result: dict[str, Any] = {}
    for pair in pairs or []:
        if pair.startswith("@"):
            result.update(load_vars_file(pair[1:]))
            continue
        key, sep, value = pair.partition("=")
        typed = sep and key.endswith(":")
        if typed:
            key = key[:-1]
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ConfigError(f"expected KEY=VALUE (or KEY:=JSON) with KEY a variable name, got {pair!r}",
                              key="--var")
        if "\x00" in value:
            raise ConfigError(f"the value of {key} holds a NUL character", key="--var")
        if not typed:
            result[key] = value
            continue
        try:
            result[key] = json.loads(value) if value.strip() else None
        except ValueError as err:
            raise ConfigError(f"{key}:= expects a JSON value (8080, true, \"text\", [1, 2], {{\"a\": 1}}), got "
                              f"{value!r}: {err}", key="--var") from None
    return result


def load_vars_file(path: str, *, key: str = "--var") -> dict[str, Any]:
    """The variables of `-e @FILE` (or an environment's `vars_files`, named by `key` in errors): a mapping whose
    keys are variable names, values typed as YAML types them."""
    if not path:
        raise ConfigError("expected a file after @ (-e @vars.yml)", key=key)
    doc = load_yaml(path, what="vars file")
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of variable names to values, got {type(data).__name__}",
                          file=path, key=key)
    for name in data:
        if not isinstance(name, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ConfigError("expected a variable name (letters, digits, _; not starting with a digit)",
                              file=path, line=doc.line_of((name,)), key=str(name))
        if isinstance(data[name], str) and "\x00" in data[name]:
            raise ConfigError(f"the value of {name} holds a NUL character", file=path, line=doc.line_of((name,)),
                              key=str(name))
    return dict(data)


def _render_tree(value: Any, variables: Mapping[str, Any], doc: YamlDocument, path: KeyPath, host: str | None) -> Any:
    from fleetctl.config.templating import render_string

    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        key = ".".join(str(p) for p in path)
        where = f"{doc.path}:{doc.line_of(path)}" if doc.line_of(path) else str(doc.path)
        source = f"{where} (host {host})" if host else where
        return render_string(value, variables, source=source, key=key)
    if isinstance(value, dict):
        return {k: _render_tree(v, variables, doc, path + (k,), host) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_tree(v, variables, doc, path + (i,), host) for i, v in enumerate(value)]
    return value


_TEMPLATE_RE = re.compile(r"{{|{%")


def _shape_only(value: Any) -> Any:
    """Replace templated scalars by a marker that the validator treats as 'checked after rendering'."""
    if isinstance(value, str) and _TEMPLATE_RE.search(value):
        return _Deferred()
    if isinstance(value, dict):
        return {k: _shape_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape_only(v) for v in value]
    return value


class _Deferred:
    """A templated value whose type can only be checked once rendered."""


def _validate(data: Any, doc: YamlDocument, *, check_templates_later: bool = False) -> Playbook:
    _refuse_nul(data, doc, ())
    if check_templates_later:
        data = _shape_only(data)
    try:
        playbook = Playbook.model_validate({**data, "path": doc.path.resolve()})
    except ValidationError as err:
        problems = [e for e in err.errors() if not _is_deferred(e, data)]
        if not problems:
            return _construct_partial(data, doc)
        first = problems[0]
        loc = tuple(first["loc"])
        key = ".".join(str(p) for p in loc if not (isinstance(p, str) and p[:1].isupper())) or None
        hint = _suggest_key(loc) if first["type"] == "extra_forbidden" else ""
        msg = f"unknown key{hint}; see docs/playbook.md for every key" if hint else _explain(first)
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" if len(problems) > 1 else ""
        raise ConfigError(msg + more, file=doc.path, line=doc.line_of(_key_path(loc)), key=key) from None
    _files_do_not_collide(playbook, doc)
    return playbook


def _refuse_nul(value: Any, doc: YamlDocument, path: KeyPath) -> None:
    # Windows APIs end a string at NUL: what the node saw would not be what the playbook says.
    if isinstance(value, str):
        if "\x00" in value:
            raise ConfigError("the value holds a NUL character", file=doc.path, line=doc.line_of(path),
                              key=".".join(str(p) for p in path) or None)
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_nul(k, doc, path + (k,))
            _refuse_nul(v, doc, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_nul(v, doc, path + (i,))


def _files_do_not_collide(playbook: Playbook, doc: YamlDocument) -> None:
    """No template lands on the exe, and no two land on one file (Windows compares names without case)."""
    if "install" not in playbook.model_fields_set or "service" not in playbook.model_fields_set:
        return
    exe = playbook.exe_name.lower()
    seen: set[str] = set()
    for index, item in enumerate(playbook.install.files):
        dest = item.dest.replace("/", "\\").lower()
        problem = ("would overwrite the service's exe" if dest == exe else
                   "is written by an earlier entry too" if dest in seen else None)
        if problem:
            raise ConfigError(f"{item.dest!r} {problem}", file=doc.path,
                              line=doc.line_of(("install", "files", index, "dest")), key=f"install.files.{index}.dest")
        seen.add(dest)


def _construct_partial(data: Any, doc: YamlDocument) -> Playbook:
    """A playbook whose templated sections wait for rendering: every section without a template is kept, validated
    (`render_global` callers need artifact and rollout even when host sections still hold templates)."""
    from pydantic import TypeAdapter

    def deferred(value: Any) -> bool:
        if isinstance(value, _Deferred):
            return True
        if isinstance(value, dict):
            return any(deferred(v) for v in value.values())
        if isinstance(value, list):
            return any(deferred(v) for v in value)
        return False

    values: dict[str, Any] = {"path": doc.path.resolve()}
    for key, value in data.items():
        field_info = Playbook.model_fields.get(key)
        if field_info is not None and field_info.annotation is not None and not deferred(value):
            values[key] = TypeAdapter(field_info.annotation).validate_python(value)
    return Playbook.model_construct(**values)


def _key_path(loc: tuple[Any, ...]) -> KeyPath:
    # pydantic inserts union member names ("str", "list[str]", "function-after[...]") into locations; drop them
    return tuple(p for p in loc if isinstance(p, int) or (isinstance(p, str) and not _is_type_tag(p)))


def _is_type_tag(part: str) -> bool:
    return bool(re.match(r"^(str|int|list\[|dict\[|function-|tagged-union|lax-|json-)", part))


def _is_deferred(error: Any, data: Any) -> bool:
    if isinstance(error.get("input"), _Deferred):
        return True
    node = data
    for part in _key_path(tuple(error["loc"])):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, _Deferred)


def _suggest_key(loc: tuple[Any, ...]) -> str:
    """For an unknown key at `loc`: the nearest key the model at that place knows."""
    path = _key_path(loc)
    if not path or not isinstance(path[-1], str):
        return ""
    model: Any = Playbook
    for part in path[:-1]:
        if isinstance(part, int):
            continue
        field_info = getattr(model, "model_fields", {}).get(part)
        if field_info is None:
            return ""
        model = _model_in(field_info.annotation)
        if model is None:
            return ""
    fields = getattr(model, "model_fields", None)
    if not fields:
        return ""
    from fleetctl.config.suggest import did_you_mean

    names = [info.alias or name for name, info in fields.items() if name != "path"]
    return did_you_mean(path[-1], names)


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (through Optional, list[...], dict[..., ...], Annotated), or None."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _explain(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see docs/playbook.md for every key)"
    if kind == "missing":
        return "required key is missing"
    msg = str(error["msg"])
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and kind not in ("value_error",):
        return f"{msg}, got {value!r}"
    return msg
