"""Releases as values: what a host should run (artifact, rendered files, service definition), its release id, and
what a deploy would change on a host given the node's state. Pure: no I/O.

A release id is `<version>-<8 hex>` where the hex is the start of a sha256 over the artifact's sha256, the rendered
files and the service definition, so a configuration-only change (a new argument, a changed template) is a new
release that is installed next to the old one and can be rolled back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fleetctl.config.playbook import NssmOptions, Playbook
from fleetctl.node.results import NodeState

# Written into every release directory (never part of the hash): the service definition that release runs with,
# so a rollback can restore the arguments/environment of the release it returns to. No secrets are written.
SERVICE_DEFINITION_FILE = "fleetctl-service.json"


@dataclass(frozen=True)
class ServiceDefinition:
    """The Windows service as `Set-FleetService` takes it (keyword names of `NodeClient.set_fleet_service`)."""

    name: str
    binary_path: str
    display_name: str | None = None
    description: str | None = None
    arguments: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    account: str | None = None
    password: str | None = field(default=None, repr=False)
    start_type: str | None = None
    dependencies: tuple[str, ...] = ()
    recovery_restart_seconds: int | None = None
    recovery_reset_seconds: int | None = None
    stop_timeout_seconds: int | None = None
    recovery_actions: tuple[str, ...] = ()  # sc.exe tokens; empty: RecoveryRestartSeconds for every failure
    # How the service is hosted; the rest only for nssm (NSSM's parameters, restored with the release).
    hosting: str = "native"
    wrapper_sha256: str | None = None
    working_directory: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    rotate_bytes: int | None = None
    restart_delay_milliseconds: int | None = None
    throttle_milliseconds: int | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `NodeClient.set_fleet_service`."""
        recovery = {"recovery_actions": list(self.recovery_actions)} if self.recovery_actions else {}
        return {**self._base_kwargs(), **recovery, **self._hosting_kwargs()}

    def _hosting_kwargs(self) -> dict[str, Any]:
        if self.hosting == "native":
            return {}  # left out, so a native definition (and its release id) is what it was before nssm existed
        return {"hosting": self.hosting, "wrapper_sha256": self.wrapper_sha256,
                "working_directory": self.working_directory, "stdout_path": self.stdout_path,
                "stderr_path": self.stderr_path, "rotate_bytes": self.rotate_bytes,
                "restart_delay_milliseconds": self.restart_delay_milliseconds,
                "throttle_milliseconds": self.throttle_milliseconds}

    def _base_kwargs(self) -> dict[str, Any]:
        return {
            "name": self.name, "binary_path": self.binary_path, "display_name": self.display_name,
            "description": self.description, "arguments": list(self.arguments),
            "environment": dict(self.environment), "account": self.account, "password": self.password,
            "start_type": self.start_type, "dependencies": list(self.dependencies),
            "recovery_restart_seconds": self.recovery_restart_seconds,
            "recovery_reset_seconds": self.recovery_reset_seconds,
            "stop_timeout_seconds": self.stop_timeout_seconds,
        }

    def public_json(self) -> dict[str, Any]:
        """The definition without its password: what is hashed and what is kept in the release directory."""
        data = self.client_kwargs()
        data.pop("password")
        return data

    @classmethod
    def from_public_json(cls, data: Mapping[str, Any], password: str | None = None) -> ServiceDefinition:
        """Read back a definition stored by `public_json` (the password comes from the current configuration)."""
        def opt_int(key: str) -> int | None:
            value = data.get(key)
            return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        env = data.get("environment") or {}
        return cls(
            name=str(data["name"]), binary_path=str(data["binary_path"]),
            display_name=data.get("display_name"), description=data.get("description"),
            arguments=tuple(str(a) for a in data.get("arguments") or ()),
            environment=tuple(sorted((str(k), str(v)) for k, v in dict(env).items())),
            account=data.get("account"), password=password, start_type=data.get("start_type"),
            dependencies=tuple(str(d) for d in data.get("dependencies") or ()),
            recovery_restart_seconds=opt_int("recovery_restart_seconds"),
            recovery_reset_seconds=opt_int("recovery_reset_seconds"),
            stop_timeout_seconds=opt_int("stop_timeout_seconds"),
            recovery_actions=tuple(str(a) for a in data.get("recovery_actions") or ()),
            hosting=str(data.get("hosting") or "native"), wrapper_sha256=data.get("wrapper_sha256"),
            working_directory=data.get("working_directory"), stdout_path=data.get("stdout_path"),
            stderr_path=data.get("stderr_path"), rotate_bytes=opt_int("rotate_bytes"),
            restart_delay_milliseconds=opt_int("restart_delay_milliseconds"),
            throttle_milliseconds=opt_int("throttle_milliseconds"),
        )


@dataclass(frozen=True)
class Release:
    """One host's desired release: everything `Install-FleetRelease` and `Set-FleetService` need."""

    id: str
    version: str
    app: str
    root: str
    artifact_sha256: str
    exe_name: str
    files: tuple[tuple[str, str], ...]  # relative path -> rendered text, as installed (definition file included)
    service: ServiceDefinition

    @property
    def files_map(self) -> dict[str, str]:
        return dict(self.files)


def service_definition(playbook: Playbook, wrapper_sha256: str | None = None) -> ServiceDefinition:
    """The service definition of a playbook rendered for one host (`wrapper_sha256`: its nssm.exe, if hosted)."""
    svc = playbook.service
    recovery = svc.recovery
    hosting: dict[str, Any] = {}
    if svc.hosting == "nssm":
        options = svc.nssm or NssmOptions()
        # Both streams into one file under shared\logs, which survives releases and is where `fleetctl logs` looks.
        log = playbook.install.root.rstrip("\\") + f"\\shared\\logs\\{svc.name}.log"
        hosting = {"hosting": "nssm", "wrapper_sha256": wrapper_sha256,
                   "working_directory": svc.working_directory or playbook.install.root.rstrip("\\") + "\\current",
                   "stdout_path": log, "stderr_path": log, "rotate_bytes": options.rotate_bytes,
                   "restart_delay_milliseconds": int(float(options.restart_delay) * 1000),
                   "throttle_milliseconds": int(float(options.throttle) * 1000)}
    return ServiceDefinition(
        name=svc.name,
        binary_path=current_exe_path(playbook.install.root, playbook.exe_name),
        display_name=svc.display_name,
        description=svc.description,
        arguments=tuple(str(a) for a in svc.arguments),
        environment=tuple(sorted((str(k), str(v)) for k, v in svc.environment.items())),
        account=svc.account,
        password=svc.password,
        start_type=svc.start_type,
        dependencies=tuple(svc.dependencies),
        recovery_restart_seconds=int(recovery.restart_after) if recovery else 0,
        recovery_reset_seconds=int(recovery.reset_after) if recovery else None,
        stop_timeout_seconds=max(1, int(svc.stop_timeout)),
        recovery_actions=recovery.sc_actions() if recovery else (),
        **hosting,
    )


def current_exe_path(root: str, exe_name: str) -> str:
    """The service always runs the exe through the `current` junction (docs/windows.md, Junction semantics)."""
    return root.rstrip("\\") + "\\current\\" + exe_name


def release_id(version: str, artifact_sha256: str, files: Mapping[str, str], service: ServiceDefinition) -> str:
    """`<version>-<8 hex>` over artifact sha256 + rendered files + service definition (password excluded)."""
    canonical = json.dumps(
        {"artifact": artifact_sha256.lower(), "files": sorted(files.items()), "service": service.public_json()},
        sort_keys=True, separators=(",", ":"),
    )
    return f"{version}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}"


def make_release(playbook: Playbook, *, version: str, artifact_sha256: str, files: Mapping[str, str],
                 wrapper_sha256: str | None = None, colour: str | None = None) -> Release:
    """The release a host should run, from its rendered playbook and rendered template files. With `colour`
    (blue-green), the service is `<name>-<colour>` running `<root>\\<colour>\\<exe>`: its own service, its own
    junction, its own release (the colour's port is in the playbook rendered with `colour_port`)."""
    service = service_definition(playbook, wrapper_sha256)
    if colour is not None:
        service = replace(service, name=f"{service.name}-{colour}",
                          binary_path=playbook.install.root.rstrip("\\") + f"\\{colour}\\{playbook.exe_name}",
                          display_name=f"{service.display_name} ({colour})" if service.display_name else None)
    rid = release_id(version, artifact_sha256, files, service)
    installed = dict(files)
    installed[SERVICE_DEFINITION_FILE] = json.dumps(service.public_json(), indent=2, sort_keys=True)
    return Release(
        id=rid, version=version, app=playbook.name, root=playbook.install.root,
        artifact_sha256=artifact_sha256.lower(), exe_name=playbook.exe_name,
        files=tuple(sorted(installed.items())), service=service,
    )


def is_current(release_id_: str, state: NodeState) -> bool:
    """Idempotency rule: the host already runs this release and its service is Running."""
    return state.current == release_id_ and state.service is not None and state.service.state == "Running"
