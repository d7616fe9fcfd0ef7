"""One simulated Windows node: the node protocol's operations in Python over the node's sandbox and its SCM.

`LabNode` implements `NodeBackend`. Each protocol operation `Verb-FleetNoun` is the method
`protocol.function_name(op)` taking the parameters as `protocol.snake_case(name)` keywords; `invoke` binds the
PowerShell-style named parameters (case-insensitive, typed), calls the method and returns one JSON document,
exactly as the PowerShell module does on Windows. Anything that is not a protocol operation is refused with
`LabUnsupported`: the lab never pretends to run arbitrary PowerShell.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetctl.config.redaction import redact_value, register_secret
from fleetctl.lab.artifact_store import store_chunks, store_download
from fleetctl.lab.backend import LabUnsupported, NetworkFaults
from fleetctl.lab.binding import bind, checked_choice, checked_name, checked_port, checked_sha
from fleetctl.lab.faults import Fault, NodeFaults
from fleetctl.lab.nodeerror import NodeError
from fleetctl.lab.portproxy import ProxyHub
from fleetctl.lab.sandbox import DEFAULT_CAPACITY_BYTES, Sandbox
from fleetctl.lab.scm import ServiceConfig, ServiceControlManager, checked_recovery_action
from fleetctl.lab.wine import WinePrefix
from fleetctl.protocol.locking import lock_decision
from fleetctl.protocol.operations import MODULE_NAME, OPERATIONS, PROTOCOL_VERSION, function_name

log = logging.getLogger(__name__)

STATE_DIR = "C:\\ProgramData\\fleetctl"
HISTORY_KEPT = 50
LOG_CHUNK_BYTES = 1 << 20  # Read-FleetLog: at most this much per answer from a cursor (the protocol's 1 MiB)
LOG_TAIL_BYTES = 4 << 20  # without a cursor, the last 4 MiB are read, as Get-FleetLog does
DEPLOYED_TEXT_LIMIT = 256 * 1024  # Get-FleetDeployed: larger files are listed with their hash only
COLOURS = ("blue", "green")  # blue-green: the two instances of a service, each `<name>-<colour>`
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]"}
_OPS_BY_LOWER = {name.lower(): op for name, op in OPERATIONS.items()}


class LabNode:
    """A simulated Windows node rooted at `root` (its `C/` directory is drive C:)."""

    def __init__(
        self,
        name: str,
        address: str,
        root: Path,
        *,
        faults: NodeFaults | None = None,
        wine: WinePrefix | None = None,
        proxies: ProxyHub | None = None,
        http_port: int = 5985,
        https_port: int = 5986,
        capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
        settle_s: float | None = None,
        on_processes_changed: Any = None,
    ) -> None:
        self.name = name
        self.address = address
        self.http_port = http_port
        self.https_port = https_port
        self.faults = faults or NodeFaults()
        self.sandbox = Sandbox(root, capacity_bytes)
        self.sandbox.disk_full = self.faults.disk_full
        self._own_proxies = proxies is None
        self.proxies = proxies or ProxyHub()
        extra = {"settle_s": settle_s} if settle_s is not None else {}
        self.scm = ServiceControlManager(
            self.sandbox, address=address, faults=self.faults, wine=wine, proxies=self.proxies,
            log_dir=root / "_lab" / "services", on_restart=self._count_restart,
            on_processes_changed=on_processes_changed or (lambda: None), **extra)
        self.counters = {"requests": 0, "bytes_received": 0, "artifact_bytes_stored": 0, "service_restarts": 0,
                         "service_starts": 0, "service_stops": 0}
        self.operation_counts: dict[str, int] = {}  # protocol operation -> calls (what a run asked of this node)
        self.firewall_rules: dict[str, dict[str, Any]] = {}
        self.scheduled_tasks: dict[str, dict[str, Any]] = {}
        self._port_proxies: set[tuple[str, int]] = set()
        self._lock = threading.RLock()  # node state files (state.json, lock.json) change under this
        self._counter_lock = threading.Lock()
        self._input = threading.local()  # pipeline input of the operation running on this thread
        self.task_minute_s = 60.0  # how long a Task Scheduler minute lasts here (tests shorten it)

    # ---- NodeBackend -------------------------------------------------------------------------------------
    def invoke(self, command: str, parameters: dict[str, Any], input_objects: list[Any]) -> list[Any]:
        op = _OPS_BY_LOWER.get(command.lower())
        if op is None:
            raise LabUnsupported(
                f"the fleetctl lab cannot run {command!r}: a lab node only implements the {MODULE_NAME} "
                "operations; arbitrary PowerShell needs a real Windows host")
        with self._counter_lock:
            self.operation_counts[op.name] = self.operation_counts.get(op.name, 0) + 1
        try:
            kwargs = bind(op, parameters)
            self._input.objects = input_objects if op.pipeline_input else []
            result = getattr(self, function_name(op.name))(**kwargs)
            document: dict[str, Any] = {"ok": True, "result": result}
        except NodeError as err:
            document = err.to_document()
        except Exception as err:
            log.exception("lab node %s: %s failed", self.name, op.name)
            document = NodeError("INTERNAL", f"{type(err).__name__}: {err}").to_document()
        finally:
            self._input.objects = []
        return [json.dumps(redact_value(document))]

    def run_script(self, script: str, arguments: list[Any], input_objects: list[Any]) -> list[Any]:
        try:
            from fleetctl.lab.scripts import run_known_script
        except ImportError:
            raise LabUnsupported("the fleetctl lab cannot run scripts (fleetctl.lab.scripts is missing)") from None
        return list(run_known_script(script, arguments, input_objects, self.sandbox))

    def network_faults(self) -> NetworkFaults:
        return self.faults.network()

    def count_request(self, bytes_received: int) -> None:
        with self._counter_lock:
            self.counters["requests"] += 1
            self.counters["bytes_received"] += bytes_received

    def _count(self, key: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[key] += n

    def _count_restart(self) -> None:
        self._count("service_restarts")

    # ---- faults, status, shutdown ------------------------------------------------------------------------
    def apply_faults(self, faults: list[Fault]) -> None:
        for fault in faults:
            self.faults.apply(fault)
        self.sandbox.disk_full = self.faults.disk_full
        self.scm.set_health_failing(self.faults.health_failing)

    def status(self) -> dict[str, Any]:
        with self._counter_lock:
            counters = dict(self.counters)
            operations = dict(self.operation_counts)
        return {
            "name": self.name, "address": self.address, "http_port": self.http_port,
            "https_port": self.https_port,
            "services": [dict(self.scm.status(n), nssm=self.scm.nssm_parameters(n)) for n in self.scm.names()],
            "counters": counters, "operations": operations, "faults": self.faults.active(),
            "firewall_rules": sorted(self.firewall_rules), "scheduled_tasks": sorted(self.scheduled_tasks),
            "port_proxies": [f"{a}:{p}" for a, p in sorted(self._port_proxies)],
        }

    def close(self) -> None:
        """Stop every process this node started and its port proxies."""
        for task in self.scheduled_tasks.values():
            if task.get("timer") is not None:
                task["timer"].cancel()
        self.scm.shutdown()
        for listen in list(self._port_proxies):
            self.proxies.remove(listen)
        self._port_proxies.clear()
        if self._own_proxies:
            self.proxies.close()

    # ---- clock and paths ---------------------------------------------------------------------------------
    def now(self) -> datetime:
        """The node's clock: real UTC shifted by the clock-skew fault."""
        return datetime.now(UTC) + timedelta(seconds=self.faults.clock_skew_s)

    def _iso(self, when: datetime | None = None) -> str:
        return (when or self.now()).isoformat(timespec="seconds").replace("+00:00", "Z")

    def _app_dir(self, app: str) -> Path:
        return self.sandbox.resolve(f"{STATE_DIR}\\apps\\{checked_name(app, 'App')}")

    def _artifact_path(self, sha256: str) -> Path:
        return self.sandbox.resolve(f"{STATE_DIR}\\artifacts\\{checked_sha(sha256)}")

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def _write_json(self, path: Path, data: Any) -> None:
        self.sandbox.write_path(path, json.dumps(data, indent=1).encode())

    def _load_state(self, app: str, root: str | None = None) -> dict[str, Any]:
        state = self._read_json(self._app_dir(app) / "state.json")
        return state or {"app": app, "root": root, "releases": [], "current": None, "previous": None,
                         "history": []}

    def _save_state(self, app: str, state: dict[str, Any], action: str | None = None,
                    release: str | None = None) -> None:
        if action:
            state["history"] = (state["history"] + [{"at": self._iso(), "action": action,
                                                      "release": release}])[-HISTORY_KEPT:]
        self._write_json(self._app_dir(app) / "state.json", state)

    # ---- operations: facts and locks ---------------------------------------------------------------------
    def get_fleet_facts(self) -> dict[str, Any]:
        return {
            "hostname": self.name.upper(),
            "os_name": "Microsoft Windows Server 2022 Datacenter (fleetctl lab simulation)",
            "os_version": "10.0.20348",
            "os_build": "20348",
            "ps_version": "5.1.20348.2031",
            "drives": {"C": self.sandbox.free_bytes()},
            "utc_now": self._iso(),
            "module_version": PROTOCOL_VERSION,
            "lab": True,
        }

    def lock_fleet_app(self, app: str, owner: str, deploy_id: str, ttl_seconds: int, process: str | None = None,
                       reason: str | None = None, take_over: str | None = None) -> dict[str, Any]:
        if ttl_seconds <= 0:
            raise NodeError("INVALID_ARGUMENT", "TtlSeconds must be positive", {"TtlSeconds": ttl_seconds})
        with self._lock:
            path = self._app_dir(app) / "lock.json"
            held = self._read_json(path)
            now = self.now()
            view = _lock_view(held, now)
            decision = lock_decision(str(held.get("deploy_id") or "") if held else "",
                                     bool(view and view["expired"]), bool(held and held.get("reason")),
                                     deploy_id, take_over or "")
            if decision == "held":
                assert view is not None
                what = "frozen" if view.get("reason") else "locked"
                raise NodeError("LOCK_HELD", f"app {app!r} is {what} by {view.get('owner')} "
                                f"(deploy {view.get('deploy_id')}) until {view.get('expires_at')}", {"holder": view})
            stamp = self._iso(now)
            acquired = str(held.get("acquired_at")) if decision == "renew" and held else stamp
            lock = {"owner": owner, "deploy_id": deploy_id, "acquired_at": acquired, "renewed_at": stamp,
                    "expires_at": self._iso(now + timedelta(seconds=ttl_seconds)), "ttl_seconds": ttl_seconds,
                    "process": process or None, "reason": reason or None}
            self._write_json(path, lock)
            return {"lock": lock, "taken_over": view if decision in ("replace-expired", "take-over") else None}

    def update_fleet_app_lock(self, app: str, deploy_id: str, ttl_seconds: int) -> dict[str, Any]:
        if ttl_seconds <= 0:
            raise NodeError("INVALID_ARGUMENT", "TtlSeconds must be positive", {"TtlSeconds": ttl_seconds})
        with self._lock:
            path = self._app_dir(app) / "lock.json"
            held = self._read_json(path)
            now = self.now()
            if not held or held.get("deploy_id") != deploy_id:
                # Gone (released or replaced): renewing must never re-take a lock someone else may have used.
                raise NodeError("LOCK_NOT_OWNED", f"app {app!r} is not locked by deploy {deploy_id}",
                                {"holder": _lock_view(held, now)})
            lock = dict(held, renewed_at=self._iso(now), ttl_seconds=ttl_seconds,
                        expires_at=self._iso(now + timedelta(seconds=ttl_seconds)))
            self._write_json(path, lock)
            return {"lock": lock}

    def unlock_fleet_app(self, app: str, deploy_id: str) -> dict[str, Any]:
        with self._lock:
            path = self._app_dir(app) / "lock.json"
            held = self._read_json(path)
            if not held:
                return {"released": False}
            if held.get("deploy_id") != deploy_id:
                raise NodeError("LOCK_NOT_OWNED", f"app {app!r} is locked by deploy {held.get('deploy_id')}, "
                                f"not {deploy_id}", {"holder": _lock_view(held, self.now())})
            self.sandbox.remove(path)
            return {"released": True}

    # ---- operations: artifacts ---------------------------------------------------------------------------
    def test_fleet_artifact(self, sha256: str) -> dict[str, Any]:
        path = self._artifact_path(sha256)
        if path.is_file():
            return {"present": True, "path": self.sandbox.to_windows(path), "size": path.stat().st_size}
        return {"present": False, "path": None, "size": None}

    def receive_fleet_artifact(self, sha256: str, size: int, compression: str = "gzip") -> dict[str, Any]:
        target = self._artifact_path(sha256)
        chunks = getattr(self._input, "objects", [])
        received = store_chunks(self.sandbox, target, chunks, sha256, size, compression or "gzip")
        self._count("artifact_bytes_stored", size)
        return {"path": self.sandbox.to_windows(target), "sha256": sha256, "size": size, "received": received}

    def save_fleet_artifact_from_url(self, url: str, sha256: str, size: int, token: str | None = None,
                                     ca_certificate: str | None = None) -> dict[str, Any]:
        register_secret(token)
        target = self._artifact_path(sha256)
        if target.is_file() and target.stat().st_size == size:
            return {"path": self.sandbox.to_windows(target), "sha256": sha256, "size": size, "received": 0}
        received = store_download(self.sandbox, target, url, sha256, size, token, ca_certificate)
        self._count("artifact_bytes_stored", size)
        return {"path": self.sandbox.to_windows(target), "sha256": sha256, "size": size, "received": received}

    # ---- operations: releases ----------------------------------------------------------------------------
    def install_fleet_release(self, app: str, root: str, release: str, version: str, sha256: str, exe_name: str,
                              files: dict[str, str] | None = None) -> dict[str, Any]:
        checked_name(release, "Release")
        checked_sha(sha256)
        checked_name(exe_name, "ExeName")  # a plain file name: no directory part
        rendered = {tuple(_release_relative_parts(rel)): text.encode("utf-8") for rel, text in (files or {}).items()}
        with self._lock:
            state = self._load_state(app, root)
            known = next((r for r in state["releases"] if r["release"] == release), None)
            if known is not None and known["sha256"] != sha256:
                # Releases are never modified after install: the same id from other bytes is a caller's mistake.
                raise NodeError("INVALID_ARGUMENT", f"release {release} is already installed from another "
                                "artifact", {"release": release, "sha256": known["sha256"]})
            release_dir = self.sandbox.resolve(f"{root}\\releases\\{release}")
            created = False
            # An existing directory is kept as it is, recorded or not: on Windows it cannot be replaced while its
            # exe runs (a node that lost its state may still be running it), and a release is complete or absent.
            if not release_dir.is_dir():
                self._build_release(release_dir, release, sha256, exe_name, rendered)
                self.sandbox.resolve(f"{root}\\shared\\logs").mkdir(parents=True, exist_ok=True)
                created = True
            if known is None:
                state["root"] = root
                state["releases"] = state["releases"] + [
                    {"release": release, "version": version, "sha256": sha256, "exe_name": exe_name,
                     "installed_at": self._iso()}]
                self._save_state(app, state, "install", release)
            return {"release": release, "path": self.sandbox.to_windows(release_dir), "created": created}

    def _build_release(self, release_dir: Path, release: str, sha256: str, exe_name: str,
                       rendered: dict[tuple[str, ...], bytes]) -> None:
        artifact = self._artifact_path(sha256)
        if not artifact.is_file():
            raise NodeError("NOT_FOUND", f"artifact {sha256} is not in the node's cache", {"sha256": sha256})
        self.sandbox.ensure_space(artifact.stat().st_size + sum(len(b) for b in rendered.values()),
                                  f"release {release}")
        # Built under a temporary name and renamed: a half-installed release is never seen as installed.
        staging = release_dir.with_name(f".{release}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.sandbox.copy_file(artifact, staging / exe_name)
            for parts, data in rendered.items():
                self.sandbox.write_path(staging.joinpath(*parts), data)
            os.replace(staging, release_dir)
        finally:
            if staging.exists():
                self.sandbox.remove(staging)

    def switch_fleet_release(self, app: str, root: str, release: str, colour: str | None = None) -> dict[str, Any]:
        link_name = "current" if colour is None else checked_choice(colour, COLOURS, "Colour")
        with self._lock:
            release_dir = self.sandbox.resolve(f"{root}\\releases\\{checked_name(release, 'Release')}")
            # Only the directory is needed, not a state entry: a node that lost its state can still switch.
            if not release_dir.is_dir():
                raise NodeError("NOT_FOUND", f"release {release!r} is not installed under {root}",
                                {"release": release})
            link = self.sandbox.resolve(f"{root}\\{link_name}")
            target = self.sandbox.read_junction(link)
            if target is None or Path(target) != release_dir.absolute():
                self.sandbox.set_junction(link, release_dir)
            state = self._load_state(app, root)
            if colour is not None:
                entry = state.setdefault("colours", {}).setdefault(link_name, {"release": None, "previous": None})
                changed = entry["release"] != release
                if changed:
                    entry["previous"], entry["release"] = entry["release"], release
                    state["root"] = root
                    self._save_state(app, state, f"switch-{link_name}", release)
                return {"current": release, "previous": entry["previous"], "changed": changed}
            # `changed` is about the recorded current release; repairing a stray junction is not a switch.
            changed = state["current"] != release
            if changed:
                if state["current"] is not None:
                    state["previous"] = state["current"]
                state["current"] = release
                state["root"] = root
                self._save_state(app, state, "switch", release)
            return {"current": release, "previous": state["previous"], "changed": changed}

    def set_fleet_release_verdict(self, app: str, release: str, verdict: str,
                                  reason: str | None = None) -> dict[str, Any]:
        if verdict not in ("failed", "cleared"):
            raise NodeError("INVALID_ARGUMENT", f"Verdict must be failed or cleared, not {verdict!r}",
                            {"parameter": "Verdict"})
        checked_name(release, "Release")
        with self._lock:
            state = self._load_state(app)
            entry = next((r for r in state["releases"] if r["release"] == release), None)
            if entry is None:
                raise NodeError("NOT_FOUND", f"release {release!r} is not recorded for {app}", {"release": release})
            entry["gate_failed"] = (reason or "failed its health gate") if verdict == "failed" else None
            self._save_state(app, state, "gate-failed" if verdict == "failed" else "gate-cleared", release)
            return {"release": release, "gate_failed": entry["gate_failed"]}

    def switch_fleet_colour(self, app: str, root: str, colour: str, listen_port: int, connect_port: int,
                            listen_address: str | None = None, connect_address: str | None = None) -> dict[str, Any]:
        colour = checked_choice(colour, COLOURS, "Colour")
        with self._lock:
            state = self._load_state(app, root)
            entry = (state.get("colours") or {}).get(colour) or {}
            release = entry.get("release")
            if not release:
                raise NodeError("NOT_FOUND", f"colour {colour} has no release under {root} (Switch-FleetRelease "
                                "-Colour first)", {"colour": colour})
            # The proxy first: the state records what the proxy already does, and a repeated call repairs both.
            proxy = self.set_fleet_port_proxy(listen_port, listen_address, connect_port, connect_address)
            changed = bool(proxy["changed"]) or state.get("live") != colour or state["current"] != release
            if state["current"] != release:
                state["previous"], state["current"] = state["current"], release
                self._save_state(app, state, "switch", release)
            if state.get("live") != colour:
                state["live"] = colour
                state["root"] = root
                self._save_state(app, state, f"live-{colour}", release)
            return {"live": colour, "current": release, "previous": state["previous"], "connect": proxy["connect"],
                    "changed": changed}

    def get_fleet_state(self, app: str, root: str, service_name: str | None = None,
                        task_names: list[str] | None = None, proxy_port: int | None = None) -> dict[str, Any]:
        with self._lock:
            state = self._load_state(app, root)
            lock = self._read_json(self._app_dir(app) / "lock.json")
        lock = _lock_view(lock, self.now())
        service = service_name or app
        releases = [{**{k: r[k] for k in ("release", "version", "sha256", "installed_at")},
                     "gate_failed": r.get("gate_failed")} for r in state["releases"]]
        colours = {c: {"release": e.get("release"), "previous": e.get("previous"),
                       "service": self.scm.status(f"{service}-{c}")}
                   for c, e in sorted((state.get("colours") or {}).items()) if e.get("release")}
        return {"releases": releases, "current": state["current"], "previous": state["previous"],
                "service": self.scm.status(service), "lock": lock,
                "history": state["history"][-HISTORY_KEPT:], "tasks": [self._task_status(n) for n in task_names or []],
                "colours": colours, "live": state.get("live"), "proxy": self._proxy_view(proxy_port)}

    def _proxy_view(self, port: int | None) -> dict[str, str] | None:
        if port is None:
            return None
        for listen in sorted(self._port_proxies):
            proxy = self.proxies.get(listen)
            if listen[1] == port and proxy is not None:
                return {"listen": f"{listen[0]}:{listen[1]}", "connect": f"{proxy.connect[0]}:{proxy.connect[1]}"}
        return None

    def remove_fleet_release(self, app: str, root: str, keep: int | None = None,
                             release: str | None = None) -> dict[str, Any]:
        if keep is None and release is None:
            raise NodeError("INVALID_ARGUMENT", "give Keep or Release")
        if keep is not None and keep < 0:
            raise NodeError("INVALID_ARGUMENT", "Keep must be 0 or more", {"Keep": keep})
        with self._lock:
            state = self._load_state(app, root)
            protected = {state["current"], state["previous"]} | \
                {e.get("release") for e in (state.get("colours") or {}).values()}
            protected -= {None}
            ids = [r["release"] for r in state["releases"]]
            if release is not None:
                if release in protected:
                    raise NodeError("RELEASE_IN_USE", f"release {release!r} is the current or previous one, or a "
                                    "blue-green colour's",
                                    {"release": release})
                doomed = [release] if release in ids else []
            else:
                assert keep is not None
                # Oldest first; current and previous are never removed and count towards Keep.
                excess = max(0, len(ids) - max(keep, len(protected)))
                doomed = [r for r in ids if r not in protected][:excess]
            removed = []
            for rid in doomed:
                self.sandbox.remove(self.sandbox.resolve(f"{root}\\releases\\{rid}"))
                removed.append(rid)
                state["releases"] = [r for r in state["releases"] if r["release"] != rid]
                self._save_state(app, state, "remove", rid)
            return {"removed": removed, "kept": [r["release"] for r in state["releases"]]}

    # ---- operations: services ----------------------------------------------------------------------------
    def set_fleet_service(self, name: str, binary_path: str, display_name: str | None = None,
                          description: str | None = None, arguments: list[str] | None = None,
                          environment: dict[str, str] | None = None, account: str | None = None,
                          password: str | None = None, start_type: str | None = None,
                          dependencies: list[str] | None = None, recovery_restart_seconds: int | None = None,
                          recovery_reset_seconds: int | None = None,
                          recovery_actions: list[str] | None = None,
                          stop_timeout_seconds: int | None = None, hosting: str | None = None,
                          wrapper_sha256: str | None = None, working_directory: str | None = None,
                          stdout_path: str | None = None, stderr_path: str | None = None,
                          rotate_bytes: int | None = None, restart_delay_milliseconds: int | None = None,
                          throttle_milliseconds: int | None = None) -> dict[str, Any]:
        config = ServiceConfig(
            name=name, binary_path=binary_path, display_name=display_name or "", description=description or "",
            arguments=list(arguments or []), environment=dict(environment or {}),
            account=account or "LocalSystem", password=password or None, start_type=(start_type or "auto").lower(),
            dependencies=list(dependencies or []), recovery_restart_seconds=recovery_restart_seconds or 0,
            recovery_reset_seconds=recovery_reset_seconds if recovery_reset_seconds is not None else 86400,
            recovery_actions=[checked_recovery_action(a) for a in recovery_actions or []],
            # As on Windows, only a positive value is recorded; absent keeps what an earlier call recorded.
            stop_timeout_seconds=stop_timeout_seconds if stop_timeout_seconds and stop_timeout_seconds > 0
            else None,
            hosting=(hosting or "native").lower(), wrapper_sha256=wrapper_sha256, working_directory=working_directory,
            stdout_path=stdout_path, stderr_path=stderr_path, rotate_bytes=max(0, rotate_bytes or 0),
            restart_delay_milliseconds=max(0, restart_delay_milliseconds or 0),
            throttle_milliseconds=throttle_milliseconds if throttle_milliseconds is not None else 1500)
        if config.hosting == "nssm":
            self._install_wrapper(wrapper_sha256)
        created, changed = self.scm.configure(config)
        return {"created": created, "changed": changed, "image_path": config.image_path}

    def _install_wrapper(self, sha256: str | None) -> None:
        """nssm.exe from the artifact cache into C:\\ProgramData\\fleetctl\\tools\\<sha256>\\ (as the module does)."""
        if not sha256:
            raise NodeError("INVALID_ARGUMENT", "Hosting nssm needs WrapperSha256 (nssm.exe in the artifact cache)")
        cached = self._artifact_path(sha256)
        if not cached.is_file():
            raise NodeError("NOT_FOUND", f"nssm.exe {sha256} is not in the node's artifact cache", {"sha256": sha256})
        target = self.sandbox.resolve(f"{STATE_DIR}\\tools\\{sha256}\\nssm.exe")
        if not target.is_file():
            self.sandbox.copy_file(cached, target)

    def stop_fleet_service(self, name: str, timeout_seconds: int) -> dict[str, Any]:
        result = self.scm.stop(name, timeout_seconds)
        if result.get("was") not in (None, "Stopped", "Absent"):
            self._count("service_stops")  # lab counter: stops that stopped something (blue-green tests read it)
        return result

    def start_fleet_service(self, name: str, timeout_seconds: int) -> dict[str, Any]:
        result = self.scm.start(name, timeout_seconds)
        if result.get("was") != "Running":
            self._count("service_starts")
        return result

    def get_fleet_events(self, source: str, max: int | None = None) -> dict[str, Any]:
        limit = 50 if max is None else max
        if limit < 0:
            raise NodeError("INVALID_ARGUMENT", "Max must be 0 or more", {"Max": limit})
        return self.scm.events(checked_name(source, "Source"), limit)

    # ---- operations: retiring a service ------------------------------------------------------------------
    def remove_fleet_service(self, name: str, timeout_seconds: int) -> dict[str, Any]:
        was = self.scm.status(name)["state"] if self.scm.status(name)["exists"] else "Absent"
        if was != "Absent":
            self.scm.stop(name, timeout_seconds)  # SERVICE_STOP_TIMEOUT: nothing is deleted
        return {"removed": self.scm.delete(name), "was": was}

    def remove_fleet_app(self, app: str, root: str, purge: bool = False) -> dict[str, Any]:
        removed: list[str] = []
        kept: list[str] = []
        with self._lock:
            base = self.sandbox.resolve(root)
            for link_name in ("current", *COLOURS):
                link = self.sandbox.resolve(f"{root}\\{link_name}")
                if link.is_symlink():
                    self.sandbox.remove(link)  # the junction only, never its target
                    removed.append(self.sandbox.to_windows(link))
            for part in ("releases", "shared"):
                path = self.sandbox.resolve(f"{root}\\{part}")
                if not path.exists():
                    continue
                if purge:
                    self.sandbox.remove(path)  # FILE_IN_USE while anything below runs
                    removed.append(self.sandbox.to_windows(path))
                else:
                    kept.append(self.sandbox.to_windows(path))
            if purge:
                if base.is_dir() and not any(base.iterdir()):
                    base.rmdir()
                    removed.append(root)
                app_dir = self._app_dir(app)
                if app_dir.exists():
                    self.sandbox.remove(app_dir)  # the node state: history, lock
                    removed.append(self.sandbox.to_windows(app_dir))
            else:
                state = self._load_state(app, root)
                if state["current"] is not None or state.get("colours"):
                    if state["current"] is not None:
                        state["previous"], state["current"] = state["current"], None
                    state["colours"], state["live"] = {}, None  # their junctions are gone
                    self._save_state(app, state, "retire", state["previous"])
        return {"removed": removed, "kept": kept}

    # ---- operations: health and logs ---------------------------------------------------------------------
    def _node_local_url(self, url: str) -> str:
        """`http://localhost:8080/` on a lab node means the node itself, i.e. its own address."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NodeError("INVALID_ARGUMENT", f"not an http(s) URL: {url!r}", {"Url": url})
        if parts.hostname in _LOCAL_HOSTS:
            netloc = self.address + (f":{parts.port}" if parts.port else "")
            return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        return url

    def test_fleet_health(self, url: str, timeout_seconds: int) -> dict[str, Any]:
        target = self._node_local_url(url)
        began = time.monotonic()
        status, body, error = None, "", None
        try:
            with urllib.request.urlopen(target, timeout=max(1, timeout_seconds)) as response:
                status, body = response.status, response.read(4096).decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read(4096).decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as err:
            error = str(getattr(err, "reason", err))
        return {"status": status, "body": body, "elapsed_ms": int((time.monotonic() - began) * 1000),
                "error": error}

    def get_fleet_log(self, app: str, root: str, tail: int | None = None,
                      path: str | None = None) -> dict[str, Any]:
        tail = 100 if tail is None else tail
        if tail < 0:
            raise NodeError("INVALID_ARGUMENT", "Tail must be 0 or more", {"Tail": tail})
        where = self._log_file(root, path)
        lines = where.read_text(encoding="utf-8", errors="replace").splitlines()
        return {"path": self.sandbox.to_windows(where), "lines": lines[-tail:] if tail else []}

    # ---- operations: firewall, scheduled tasks, port proxy -----------------------------------------------
    def set_fleet_firewall_rule(self, name: str, port: int, protocol: str | None = None,
                                direction: str | None = None, action: str | None = None,
                                remote_address: list[str] | None = None, remove: bool = False) -> dict[str, Any]:
        if remove:
            return {"changed": self.firewall_rules.pop(name, None) is not None}
        rule = {
            "port": checked_port(port, "Port"),
            "protocol": checked_choice(protocol or "TCP", ("TCP", "UDP"), "Protocol"),
            "direction": checked_choice(direction or "Inbound", ("Inbound", "Outbound"), "Direction"),
            "action": checked_choice(action or "Allow", ("Allow", "Block"), "Action"),
            "remote_address": list(remote_address or ["Any"]),
        }
        changed = self.firewall_rules.get(name) != rule
        self.firewall_rules[name] = rule
        return {"changed": changed}

    def set_fleet_scheduled_task(self, name: str, execute: str | None = None, arguments: list[str] | None = None,
                                 at: str | None = None, at_startup: bool = False, every_minutes: int | None = None,
                                 user: str | None = None, restart_count: int | None = None,
                                 restart_interval_minutes: int | None = None,
                                 execution_time_limit_minutes: int | None = None, remove: bool = False,
                                 run_now: bool = False) -> dict[str, Any]:
        if remove:
            gone = self.scheduled_tasks.pop(name, None)
            if gone is not None and gone.get("timer") is not None:
                gone["timer"].cancel()
            return {"changed": gone is not None, "last_run": None, "last_result": None}
        task = self.scheduled_tasks.get(name)
        changed = False
        if execute is not None:
            if at is not None and not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", at):
                raise NodeError("INVALID_ARGUMENT", "At must be HH:MM (24 h)", {"At": at})
            if at is None and not at_startup and not every_minutes:
                raise NodeError("INVALID_ARGUMENT", "give a trigger: At, AtStartup or EveryMinutes")
            for key, value, low in (("EveryMinutes", every_minutes, 1), ("RestartCount", restart_count, 0),
                                    ("RestartIntervalMinutes", restart_interval_minutes, 1),
                                    ("ExecutionTimeLimitMinutes", execution_time_limit_minutes, 0)):
                if value is not None and value < low:
                    raise NodeError("INVALID_ARGUMENT", f"{key} must be {low} or more", {key: value})
            definition = {"execute": execute, "arguments": list(arguments or []), "at": at,
                          "at_startup": bool(at_startup), "every_minutes": every_minutes or None,
                          "user": user or "SYSTEM", "restart_count": restart_count or 0,
                          "restart_interval_minutes": restart_interval_minutes or 1,
                          "execution_time_limit_minutes": 4320 if execution_time_limit_minutes is None
                          else execution_time_limit_minutes}
            changed = task is None or {k: task.get(k) for k in definition} != definition
            if changed and task is not None and task.get("timer") is not None:
                task["timer"].cancel()
            task = dict(task or {"last_run": None, "last_result": None, "last_pid": None},
                        **definition, timer=None if changed else (task or {}).get("timer"))
            self.scheduled_tasks[name] = task
            if changed and task["every_minutes"]:
                self._repeat_task(name, task)
        if task is None:
            raise NodeError("NOT_FOUND" if run_now else "INVALID_ARGUMENT",
                            f"scheduled task {name!r} does not exist" + ("" if run_now else "; give Execute"),
                            {"name": name})
        if run_now:
            self._run_task(name, task)
        return {"changed": changed, "last_run": task["last_run"], "last_result": task["last_result"]}

    def _run_task(self, name: str, task: dict[str, Any]) -> None:
        if not re.match(r"^[A-Za-z]:[\\/]", task["execute"]):
            raise NodeError("UNSUPPORTED", f"the fleetctl lab can only run executables stored on the node "
                            f"(an absolute C:\\ path), not {task['execute']!r}")

        def finished(code: int) -> None:
            task["last_result"] = code

        limit = task["execution_time_limit_minutes"]
        task["last_pid"] = self.scm.run_detached(task["execute"], task["arguments"], name,
                                                 time_limit_s=limit * 60 if limit else None, on_exit=finished)
        task["last_run"] = self._iso()

    def _repeat_task(self, name: str, task: dict[str, Any]) -> None:
        """The every-N-minutes trigger, fired by the lab like Task Scheduler does (startup and daily are not)."""
        def fire() -> None:
            if self.scheduled_tasks.get(name) is not task:
                return
            try:
                self._run_task(name, task)
            except NodeError as err:
                log.warning("lab node %s: scheduled task %s: %s", self.name, name, err.message)
            self._repeat_task(name, task)

        timer = threading.Timer(task["every_minutes"] * 60.0 * self.task_minute_s / 60.0, fire)
        timer.daemon = True
        task["timer"] = timer
        timer.start()

    def _task_status(self, name: str) -> dict[str, Any]:
        task = self.scheduled_tasks.get(name)
        if task is None:
            return {"name": name, "exists": False, "state": None, "last_run": None, "last_result": None,
                    "next_run": None}
        running = task.get("last_pid") is not None and task.get("last_result") is None and task["last_run"]
        return {"name": name, "exists": True, "state": "Running" if running else "Ready",
                "last_run": task["last_run"], "last_result": task["last_result"], "next_run": None}

    def set_fleet_port_proxy(self, listen_port: int, listen_address: str | None = None,
                             connect_port: int | None = None, connect_address: str | None = None,
                             remove: bool = False) -> dict[str, Any]:
        listen = (self._node_address(listen_address or "0.0.0.0", "ListenAddress"),
                  checked_port(listen_port, "ListenPort"))
        if remove:
            self._port_proxies.discard(listen)
            return {"changed": self.proxies.remove(listen), "connect": None}
        if connect_port is None:
            raise NodeError("INVALID_ARGUMENT", "ConnectPort is required unless -Remove")
        connect_host = connect_address or "127.0.0.1"
        connect_host = self.address if connect_host in _LOCAL_HOSTS else connect_host
        connect = (connect_host, checked_port(connect_port, "ConnectPort"))
        try:
            changed = self.proxies.ensure(listen, connect)
        except OSError as err:
            raise NodeError("INVALID_ARGUMENT", f"cannot listen on {listen[0]}:{listen[1]}: {err.strerror}",
                            {"ListenPort": listen_port}) from None
        self._port_proxies.add(listen)
        return {"changed": changed, "connect": f"{connect[0]}:{connect[1]}"}

    def _node_address(self, address: str, key: str) -> str:
        if address in _LOCAL_HOSTS or address == self.address:
            return self.address  # every lab node shares the machine: "all interfaces" means the node's address
        raise NodeError("INVALID_ARGUMENT", f"{key} {address!r} is not an address of this node ({self.address})",
                        {key: address})

    # ---- operations: the day-one commands (logs -f, exec) --------------------------------------------------
    def _log_file(self, root: str, path: str | None) -> Path:
        """The log file Get-FleetLog and Read-FleetLog read: Path under Root (default shared\\logs); a directory
        means its most recently written file (dot-files excluded)."""
        if path and (path.startswith(("\\", "/")) or ":" in path or ".." in re.split(r"[\\/]+", path)):
            raise NodeError("INVALID_ARGUMENT", "Path must be relative to Root", {"Path": path})
        where = self.sandbox.resolve(f"{root}\\{path}" if path else f"{root}\\shared\\logs")
        if where.is_dir():
            files = [p for p in self.sandbox.walk_files(where) if not p.name.startswith(".")]
            if not files:
                raise NodeError("NOT_FOUND", f"no log file under {self.sandbox.to_windows(where)}")
            where = max(files, key=lambda p: p.stat().st_mtime)
        if not where.is_file():
            raise NodeError("NOT_FOUND", f"no log file at {self.sandbox.to_windows(where)}")
        return where

    def read_fleet_log(self, app: str, root: str, path: str | None = None, file: str | None = None,
                       offset: int | None = None, tail: int | None = None) -> dict[str, Any]:
        checked_name(app, "App")
        tail = 100 if tail is None else tail
        if tail < 0:
            raise NodeError("INVALID_ARGUMENT", "Tail must be 0 or more", {"Tail": tail})
        if offset is not None and offset < 0:
            raise NodeError("INVALID_ARGUMENT", "Offset must be 0 or more", {"Offset": offset})
        where = self._log_file(root, path)
        shown = self.sandbox.to_windows(where)
        following = offset is not None
        cap = LOG_CHUNK_BYTES if following else LOG_TAIL_BYTES
        with where.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            reset = False
            if offset is not None:
                start = offset
                # Another file there now (rotated), or this one shrank (truncated): the cursor means nothing here.
                if (file and file != shown) or offset > size:
                    start, reset = 0, True
            else:
                start = max(0, size - cap)
            handle.seek(start)
            data = handle.read(min(cap, size - start))
        # Complete lines only: a line still being written is returned by the next call, whole.
        take = data.rfind(b"\n") + 1
        if take == 0 and len(data) >= cap:
            take = len(data)  # one line longer than an answer: cut it
        lines = data[:take].decode("utf-8", errors="replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not following and start > 0:
            lines = lines[1:]  # the window began inside a line
        lines = [line.rstrip("\r") for line in lines]
        if not following:
            lines = lines[-tail:] if tail else []
        return {"path": shown, "lines": lines, "offset": start + take, "size": size, "reset": reset,
                "more": start + len(data) < size}

    def invoke_fleet_command(self, script: str) -> dict[str, Any]:
        # A typed refusal, not a guess: the controller tells "needs real Windows" from this code (docs/windows.md).
        raise NodeError("UNSUPPORTED", "the lab does not run arbitrary PowerShell: exec needs real Windows hosts",
                        {"operation": "Invoke-FleetCommand", "lab": True})

    # ---- operations: reading back what is deployed (deploy --dry-run --diff) ------------------------------
    def get_fleet_deployed(self, app: str, root: str, service_name: str | None = None,
                           release: str | None = None) -> dict[str, Any]:
        with self._lock:
            state = self._load_state(app, root)
        chosen = release or state["current"]
        files: list[dict[str, Any]] = []
        if chosen:
            entry = next((r for r in state["releases"] if r["release"] == checked_name(chosen, "Release")), None)
            if entry is None:
                raise NodeError("NOT_FOUND", f"release {chosen} is not installed", {"release": chosen})
            files = self._release_files(self.sandbox.resolve(f"{root}\\releases\\{chosen}"),
                                        str(entry.get("exe_name") or ""))
        config = self.scm.definition(checked_name(service_name or app, "ServiceName"))
        return {"release": chosen or None, "files": files, "service": _definition_view(config)}

    def _release_files(self, directory: Path, exe_name: str) -> list[dict[str, Any]]:
        """Every file of a release but its exe, as the module lists them: text when small, valid UTF-8."""
        if not directory.is_dir():
            return []
        listed = []
        for path in sorted(self.sandbox.walk_files(directory)):
            relative = "\\".join(path.relative_to(directory).parts)
            if relative.lower() == exe_name.lower():
                continue
            data = path.read_bytes()
            text: str | None = None
            if len(data) <= DEPLOYED_TEXT_LIMIT:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
            listed.append({"path": relative, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                           "text": text})
        return listed


def _definition_view(config: ServiceConfig | None) -> dict[str, Any] | None:
    """A service definition as Get-FleetDeployed reports it: what Windows would read back (an empty display name
    is the service name; recovery as sc.exe tokens, a restart-after as three restarts)."""
    if config is None:
        return None
    actions = list(config.recovery_actions) or (
        [f"restart/{config.recovery_restart_seconds * 1000}"] * 3 if config.recovery_restart_seconds > 0 else [])
    nssm = config.hosting == "nssm"
    return {"binary_path": config.binary_path, "arguments": list(config.arguments),
            "display_name": config.display_name or config.name, "description": config.description,
            "environment": dict(config.environment),
            # A list of {name, sha256}: the answer's redaction masks values under secret names, not these.
            "environment_sha256": [{"name": k, "sha256": hashlib.sha256(v.encode("utf-8")).hexdigest()}
                                   for k, v in sorted(config.environment.items())],
            "account": config.account, "start_type": config.start_type,
            "dependencies": list(config.dependencies), "recovery_actions": actions,
            "recovery_reset_seconds": config.recovery_reset_seconds,
            "stop_timeout_seconds": config.stop_timeout_seconds, "hosting": config.hosting,
            "working_directory": (config.working_directory or config.binary_path.rsplit("\\", 1)[0]) if nssm else None,
            "stdout_path": config.stdout_path if nssm else None, "stderr_path": config.stderr_path if nssm else None,
            "rotate_bytes": config.rotate_bytes if nssm else None,
            "restart_delay_milliseconds": config.restart_delay_milliseconds if nssm else None,
            "throttle_milliseconds": config.throttle_milliseconds if nssm else None,
            "image_path": config.image_path}


def _release_relative_parts(rel: str) -> list[str]:
    """The path parts of a `Files` key; refused unless it stays inside the release (no drive, root or `..`)."""
    parts = re.split(r"[\\/]+", rel)
    if not rel or any(p in ("..", ".", "") or ":" in p for p in parts):
        raise NodeError("INVALID_ARGUMENT", f"Files key {rel!r} must be a relative path inside the release",
                        {"Files": rel})
    return parts


def _lock_view(lock: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """A lock as the node reports it (Get-FleetState, LOCK_HELD details): every field, plus `expired`."""
    if not lock:
        return None
    view = {key: lock.get(key) for key in ("owner", "deploy_id", "acquired_at", "renewed_at", "expires_at",
                                           "ttl_seconds", "process", "reason")}
    view["expired"] = _expired(lock, now)
    return view


def _expired(lock: dict[str, Any], now: datetime) -> bool:
    try:
        expires = datetime.fromisoformat(str(lock["expires_at"]))
    except (KeyError, ValueError):
        return True
    return expires <= now
