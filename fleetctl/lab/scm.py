"""A lab node's service control manager: service definitions, real service processes, crash detection, recovery.

Services are real processes. A Windows PE exe runs under Wine (the lab's one prefix), a Linux ELF binary or a
`#!` script runs directly. Arguments and environment values that are absolute Windows paths are translated to
the node's sandbox; node-local listen addresses (`0.0.0.0:P`, `127.0.0.1:P`, `localhost:P`, `:P`) become the
node's own address, because every lab node shares the machine's loopback.

States follow Windows: Stopped, StartPending, Running, StopPending (and Paused while NSSM throttles). A process
counts as Running once it has stayed up for `settle_s` (a console program under Wine cannot report SERVICE_RUNNING
itself).

Where Windows fails, the lab fails the same way: a Windows exe registered natively that does not reference
`StartServiceCtrlDispatcherW` is a plain console program that never connects to the SCM, so its start fails with
error 1053 after the SCM's pipe timeout (30 s, `FLEETCTL_LAB_SERVICE_PIPE_TIMEOUT`) and the process is killed.
Such a program is hosted `nssm` instead (fleetctl/lab/nssm.py models nssm.exe). Linux ELF binaries and scripts
run natively as services, as before: they have no SCM to talk to.

Stop sends the process group SIGINT (a Windows exe: Wine's console Ctrl-C) or SIGTERM (Linux), the nearest a lab
gets to a Stop control. A native service that ignores it keeps running, as on Windows: after the stop timeout the
SCM gives up waiting and kills nothing. NSSM does terminate its program after AppStopMethodConsole. An exit nobody
asked for is a crash: recovery restarts it after the configured delay and counts the restart.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetctl.config.redaction import register_secret
from fleetctl.lab.eventlog import LAB_NOTE, WINEDEBUG_EVENTS, parse_events
from fleetctl.lab.faults import NodeFaults
from fleetctl.lab.nodeerror import NodeError
from fleetctl.lab.nssm import DEFAULT_THROTTLE_MS, NssmHost, NssmSettings, nssm_parameters
from fleetctl.lab.portproxy import ProxyHub, free_port
from fleetctl.lab.sandbox import Sandbox, is_windows_path
from fleetctl.lab.wine import WinePrefix, windows_path_for_wine
from fleetctl.protocol.cmdline import quote_argument, split_command_line

SETTLE_S = 0.3
START_TYPES = ("auto", "delayed-auto", "manual", "disabled")
HOSTINGS = ("native", "nssm")
TOOLS_DIR = "C:\\ProgramData\\fleetctl\\tools"
SCM_DISPATCHER = b"StartServiceCtrlDispatcherW"  # the import a Windows service (Go's x/sys svc, C, NSSM) has
_LOCAL_LISTEN = re.compile(r"^(?P<prefix>.*=)?(?P<host>0\.0\.0\.0|127\.0\.0\.1|localhost|\[::\]|\[::1\]|)"
                           r":(?P<port>\d{1,5})$")


@dataclass
class ServiceConfig:
    """What `Set-FleetService` defines; field names are the protocol's parameters in snake_case."""

    name: str
    binary_path: str
    display_name: str = ""  # empty: the service name is shown
    description: str = ""
    arguments: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    account: str = "LocalSystem"
    password: str | None = None
    start_type: str = "auto"
    dependencies: list[str] = field(default_factory=list)
    recovery_restart_seconds: int = 0
    recovery_reset_seconds: int = 86400
    recovery_actions: list[str] = field(default_factory=list)  # restart/<ms> or none/0 per failure
    stop_timeout_seconds: int | None = None  # None: not recorded (the module keeps it beside the service)
    hosting: str = "native"
    wrapper_sha256: str | None = None
    working_directory: str | None = None
    stdout_path: str | None = None
    stderr_path: str | None = None
    rotate_bytes: int = 0
    restart_delay_milliseconds: int = 0
    throttle_milliseconds: int = DEFAULT_THROTTLE_MS

    @property
    def wrapper_path(self) -> str | None:
        """Where the module keeps nssm.exe: one copy per sha256, never overwritten while a service runs it."""
        return f"{TOOLS_DIR}\\{self.wrapper_sha256}\\nssm.exe" if self.hosting == "nssm" else None

    @property
    def image_path(self) -> str:
        """The command line the SCM starts: nssm.exe for hosted services, else the exe and its arguments."""
        if self.wrapper_path is not None:
            return quote_argument(self.wrapper_path)
        return " ".join(quote_argument(a) for a in [self.binary_path, *self.arguments])

    def nssm_parameters(self) -> dict[str, Any] | None:
        """The NSSM parameters recorded for the service (None for native hosting)."""
        if self.hosting != "nssm":
            return None
        directory = self.working_directory or self.binary_path.rsplit("\\", 1)[0]
        return nssm_parameters(self.binary_path, self.arguments, self.environment, directory=directory,
                               stdout=self.stdout_path or "", stderr=self.stderr_path or "",
                               rotate_bytes=self.rotate_bytes, restart_delay_ms=self.restart_delay_milliseconds,
                               throttle_ms=self.throttle_milliseconds, stop_timeout_s=self.stop_timeout_seconds)


@dataclass
class _Service:
    config: ServiceConfig
    state: str = "Stopped"
    proc: subprocess.Popen[bytes] | NssmHost | None = None
    pid: int | None = None
    start_time: str | None = None
    restarts: int = 0
    exit_code: int | None = None
    failures: int = 0
    last_failure: float = 0.0
    stop_requested: bool = False
    generation: int = 0  # bumped by every explicit start/stop: cancels a pending recovery restart
    in_use: Path | None = None
    front: tuple[str, int] | None = None
    pe: bool = False  # a Windows exe under Wine: stopped with SIGINT, which Wine turns into a console Ctrl-C
    console_only: bool = False  # a native Windows exe without SCM code: its start fails with 1053
    host: NssmHost | None = None
    restart_times: list[float] = field(default_factory=list)  # time.time() of recent restarts (crash-loop verdict)
    timers: list[threading.Timer] = field(default_factory=list)


class ServiceControlManager:
    """The services of one node."""

    def __init__(
        self,
        sandbox: Sandbox,
        *,
        address: str,
        faults: NodeFaults,
        wine: WinePrefix | None,
        proxies: ProxyHub,
        log_dir: Path,
        on_restart: Callable[[], None] = lambda: None,
        on_processes_changed: Callable[[], None] = lambda: None,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.sandbox = sandbox
        self.address = address
        self.faults = faults
        self.wine = wine
        self.proxies = proxies
        self.log_dir = log_dir
        self.on_restart = on_restart
        self.on_processes_changed = on_processes_changed
        self.settle_s = settle_s
        self._services: dict[str, _Service] = {}
        self._cond = threading.Condition(threading.RLock())
        self._closing = False
        self._tasks: list[subprocess.Popen[bytes]] = []

    # ---- definitions -------------------------------------------------------------------------------------
    def _find(self, name: str) -> _Service | None:
        # Service names are case-insensitive on Windows.
        svc = self._services.get(name.lower())
        return svc

    def configure(self, config: ServiceConfig) -> tuple[bool, list[str]]:
        """Create or update a definition; returns (created, changed field names). Applies at the next start."""
        if config.start_type not in START_TYPES:
            raise NodeError("INVALID_ARGUMENT", f"StartType must be one of {', '.join(START_TYPES)}",
                            {"StartType": config.start_type})
        if not is_windows_path(config.binary_path):
            raise NodeError("INVALID_ARGUMENT", "BinaryPath must be an absolute Windows path",
                            {"BinaryPath": config.binary_path})
        if config.hosting not in HOSTINGS:
            raise NodeError("INVALID_ARGUMENT", f"Hosting must be one of {', '.join(HOSTINGS)}",
                            {"Hosting": config.hosting})
        if config.hosting == "nssm":
            for key, value in (("StdoutPath", config.stdout_path), ("StderrPath", config.stderr_path),
                               ("WorkingDirectory", config.working_directory)):
                if value is not None and not is_windows_path(value):
                    raise NodeError("INVALID_ARGUMENT", f"{key} must be an absolute Windows path", {key: value})
        elif config.working_directory is not None:
            # The SCM starts every native service in %SystemRoot%\System32 and has no setting to change that.
            raise NodeError("INVALID_ARGUMENT", "WorkingDirectory needs Hosting nssm: the SCM has no working "
                            "directory setting", {"WorkingDirectory": config.working_directory})
        register_secret(config.password)
        with self._cond:
            svc = self._find(config.name)
            if svc is None:
                self._services[config.name.lower()] = _Service(config=config)
                return True, []
            config.name = svc.config.name  # the name a service was created with stays its key (as on Windows)
            if config.stop_timeout_seconds is None:
                # Windows keeps the stop timeout beside the service; a call without one leaves it as it was.
                config.stop_timeout_seconds = svc.config.stop_timeout_seconds
            if config.password is None:
                config.password = svc.config.password  # likewise: a call without one changes no password
            # A password is applied on every call that gives one but never reported: Windows cannot read it back.
            changed = [_protocol_name(f.name) for f in fields(ServiceConfig)
                       if f.name not in ("name", "password")
                       and getattr(svc.config, f.name) != getattr(config, f.name)]
            svc.config = config
            return False, changed

    def delete(self, name: str) -> bool:
        """Delete a stopped service's definition (DeleteService); a running one is refused, as the module stops
        first. Returns whether there was one."""
        with self._cond:
            svc = self._find(name)
            if svc is None:
                return False
            if svc.state != "Stopped":
                raise NodeError("INVALID_ARGUMENT", f"service {name!r} is {svc.state}; stop it first",
                                {"state": svc.state})
            self._cancel_timers(svc)
            svc.generation += 1
            del self._services[name.lower()]
            return True

    def definition(self, name: str) -> ServiceConfig | None:
        """A copy of the service's current definition (None when absent)."""
        with self._cond:
            svc = self._find(name)
            return None if svc is None else replace(svc.config)

    def names(self) -> list[str]:
        with self._cond:
            return [s.config.name for s in self._services.values()]

    def status(self, name: str) -> dict[str, Any]:
        with self._cond:
            svc = self._find(name)
            if svc is None:
                return {"exists": False, "state": None, "pid": None, "start_time": None, "restarts": 0,
                        "binary_path": None, "recent_restarts": 0}
            return {"exists": True, "name": svc.config.name, "state": svc.state, "pid": svc.pid,
                    "start_time": svc.start_time, "restarts": svc.restarts, "binary_path": svc.config.binary_path,
                    "exit_code": svc.exit_code, "start_type": svc.config.start_type,
                    "hosting": svc.config.hosting, "image_path": svc.config.image_path,
                    "recent_restarts": sum(1 for t in svc.restart_times if t > time.time() - 600)}

    def pids(self) -> list[int]:
        with self._cond:
            return [s.pid for s in self._services.values() if s.pid] + [p.pid for p in self._tasks]

    # ---- start -------------------------------------------------------------------------------------------
    def start(self, name: str, timeout_s: float, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
        began = time.monotonic()
        deadline = began + max(0.0, timeout_s)
        with self._cond:
            svc = self._find(name)
            if svc is None:
                raise NodeError("NOT_FOUND", f"service {name!r} does not exist", {"name": name})
            was = svc.state
            if svc.state == "Running":
                return {"state": "Running", "pid": svc.pid, "waited_ms": 0, "was": was}
            if svc.config.start_type == "disabled":
                raise NodeError("SERVICE_START_FAILED", f"service {name!r} is disabled",
                                {"state": svc.state, "exit_code": None, "reason": "disabled"})
            if svc.state == "StopPending":
                self._wait_for(svc, ("Stopped",), deadline)
                if svc.state != "Stopped":
                    raise NodeError("SERVICE_START_TIMEOUT", f"service {name!r} is still stopping",
                                    {"state": svc.state})
            for dep in svc.config.dependencies:
                # Windows starts the services a service depends on first, and refuses when one is missing.
                if dep.lower() in _chain or self._find(dep) is None:
                    raise NodeError("SERVICE_START_FAILED", f"dependency {dep!r} of service {name!r} does not "
                                    "exist or depends on it", {"state": "Stopped", "reason": "dependency"})
                self.start(dep, max(0.0, deadline - time.monotonic()), _chain + (name.lower(),))
            if svc.state == "Stopped":
                svc.generation += 1
                self._cancel_timers(svc)
                self._launch(svc)
                if svc.console_only:
                    self._refuse_console_exe(svc, began)
            self._wait_for(svc, ("Running", "Stopped"), deadline)
            waited = int((time.monotonic() - began) * 1000)
            if svc.state == "Running":
                return {"state": "Running", "pid": svc.pid, "waited_ms": waited, "was": was}
            if svc.state == "Stopped":
                raise NodeError("SERVICE_START_FAILED", f"service {name!r} exited while starting "
                                f"(exit code {svc.exit_code})",
                                {"state": "Stopped", "exit_code": svc.exit_code, "reason": "process exited"})
            raise NodeError("SERVICE_START_TIMEOUT", f"service {name!r} did not reach Running within "
                            f"{timeout_s:g} s", {"state": svc.state, "waited_ms": waited})

    def _refuse_console_exe(self, svc: _Service, began: float) -> None:
        """A console exe started as a native service: the SCM waits for its StartServiceCtrlDispatcher call, which
        never comes, then kills the process and fails the start with 1053 (caller holds the lock)."""
        proc = svc.proc
        deadline = began + service_pipe_timeout_s()
        while svc.proc is proc and proc is not None and proc.poll() is None and time.monotonic() < deadline:
            self._cond.wait(max(0.0, min(0.2, deadline - time.monotonic())))
        if proc is not None and svc.proc is proc:
            svc.stop_requested = True  # not a crash: recovery does not restart a service that never started
            _signal_group(proc, signal.SIGKILL)
            self._wait_for(svc, ("Stopped",), time.monotonic() + 10)
        svc.exit_code = 1053
        raise NodeError("SERVICE_START_FAILED", f"service {svc.config.name!r} did not respond to the start "
                        "request in a timely fashion (error 1053): the exe never called StartServiceCtrlDispatcher, "
                        "so it is a console program; host it with NSSM (service.hosting: nssm)",
                        {"state": "Stopped", "win32_error": 1053, "exit_code": 1053, "reason": "no service "
                         "control dispatcher"})

    def _wait_for(self, svc: _Service, states: tuple[str, ...], deadline: float) -> None:
        while svc.state not in states:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _launch(self, svc: _Service) -> None:
        """Start the process (caller holds the lock); a watcher thread follows it from then on."""
        cfg = svc.config
        exe = self.sandbox.resolve(cfg.binary_path)
        kind = _exe_kind(exe)
        if kind is None:
            svc.exit_code = 2 if not exe.exists() else 193
            reason = "file not found" if not exe.exists() else "not a valid Win32 application"
            raise NodeError("SERVICE_START_FAILED", f"cannot start service {cfg.name!r}: {cfg.binary_path}: {reason}",
                            {"state": "Stopped", "exit_code": svc.exit_code, "reason": reason})
        pe = kind == "pe"
        svc.pe = pe
        nssm = cfg.hosting == "nssm"
        svc.console_only = pe and not nssm and not _references_dispatcher(exe)
        # NSSM passes its program one command line (AppParameters), which the program reads back.
        arguments = split_command_line(cfg.nssm_parameters()["AppParameters"]) if nssm else cfg.arguments  # type: ignore[index]
        args = [self._translate(a, pe) for a in arguments]
        env = self.wine.env() if pe and self.wine else {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
                                                          "LANG": "C.UTF-8"}
        env.update({k: self._translate(v, pe) for k, v in cfg.environment.items()})
        if pe:
            env["WINEDEBUG"] = WINEDEBUG_EVENTS  # ReportEventW's only trace under Wine (fleetctl/lab/eventlog.py)
        cwd = self.sandbox.resolve(cfg.working_directory) if nssm and cfg.working_directory else exe.parent
        if self.faults.health_failing:
            args = self._put_failing_front(svc, args)
        if pe:
            if self.wine is None:
                raise NodeError("SERVICE_START_FAILED", "this lab runs without Wine; Windows exes cannot start",
                                {"state": "Stopped", "reason": "wine"})
            svc.state = "StartPending"  # so a concurrent start waits instead of launching a second process
            generation = svc.generation
            self._cond.release()  # preparing the prefix can take ~20 s the first time; don't block the node
            try:
                self.wine.wait_ready(exe=exe)
            except NodeError:
                svc.state = "Stopped"
                self._drop_front(svc)
                raise
            finally:
                self._cond.acquire()
            if svc.generation != generation:  # stopped while waiting for Wine: do not launch after all
                self._drop_front(svc)
                raise NodeError("SERVICE_START_FAILED", f"service {cfg.name!r} was stopped while starting",
                                {"state": svc.state, "reason": "stopped"})
            argv = self.wine.command(exe, args)
        else:
            # Windows has no execute bit; a Linux binary copied in as an artifact needs one to run.
            os.chmod(exe, exe.stat().st_mode | 0o111)
            argv = [str(exe), *args]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        proc: subprocess.Popen[bytes] | NssmHost
        try:
            if nssm:
                proc = self._host_with_nssm(svc, argv, cwd, env)
            else:
                with open(self.log_dir / f"{cfg.name}.out", "ab") as out:
                    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as err:
            self._drop_front(svc)
            raise NodeError("SERVICE_START_FAILED", f"cannot start service {cfg.name!r}: {err.strerror}",
                            {"state": "Stopped", "reason": err.strerror}) from None
        svc.proc, svc.pid, svc.state = proc, proc.pid, "StartPending"
        svc.stop_requested = False
        svc.exit_code = None
        svc.start_time = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        svc.in_use = self.sandbox.mark_in_use(exe)
        if self.faults.crash_on_start:
            _crash(proc)  # the process really starts, then dies at once
        elif self.faults.crash_after_s > 0:
            self._add_timer(svc, self.faults.crash_after_s, lambda: _crash(proc))
        threading.Thread(target=self._watch, args=(svc, proc), name=f"scm-{cfg.name}", daemon=True).start()
        self.on_processes_changed()

    def _host_with_nssm(self, svc: _Service, argv: list[str], cwd: Path, env: dict[str, str]) -> NssmHost:
        """nssm.exe, started by the SCM: it starts the program itself and keeps it running (caller holds the lock)."""
        cfg = svc.config
        wrapper = self.sandbox.resolve(cfg.wrapper_path or "")
        if not wrapper.is_file():
            raise NodeError("SERVICE_START_FAILED", f"cannot start service {cfg.name!r}: {cfg.wrapper_path}: file "
                            "not found", {"state": "Stopped", "exit_code": 2, "reason": "file not found"})
        logs = self.sandbox.resolve(cfg.binary_path).parent
        stdout = self.sandbox.resolve(cfg.stdout_path) if cfg.stdout_path else logs / f"{cfg.name}.out"
        stderr = self.sandbox.resolve(cfg.stderr_path) if cfg.stderr_path else stdout
        params = cfg.nssm_parameters() or {}
        settings = NssmSettings(stdout=stdout, stderr=stderr, events=self.log_dir / f"{cfg.name}.out",
                                rotate_bytes=cfg.rotate_bytes,
                                restart_delay_s=cfg.restart_delay_milliseconds / 1000,
                                throttle_s=cfg.throttle_milliseconds / 1000,
                                stop_console_s=int(params.get("AppStopMethodConsole", 1500)) / 1000)

        def launch(out: int, err: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)

        def on_app_exit(code: int) -> None:
            with self._cond:
                svc.exit_code = code if code >= 0 else 1067
                svc.restarts += 1
                svc.restart_times = [*svc.restart_times[-19:], time.time()]
            self.on_restart()

        def on_paused(paused: bool) -> None:
            with self._cond:
                if svc.state in ("Running", "Paused"):
                    svc.state = "Paused" if paused else "Running"
                    self._cond.notify_all()

        def on_pid(pid: int | None) -> None:
            with self._cond:
                if svc.proc is not None and pid is not None:
                    svc.pid = pid
            self.on_processes_changed()

        host = NssmHost(settings, launch, on_app_exit=on_app_exit, on_paused=on_paused, on_pid=on_pid)
        svc.host = host
        return host

    def events(self, name: str, limit: int) -> dict[str, Any]:
        """Get-FleetEvents for a service's source: what its process wrote through ReportEventW, newest first."""
        with self._cond:
            svc = self._find(name)
            key = svc.config.name if svc is not None else name
        return {"events": parse_events(self.log_dir / f"{key}.out", limit), "note": LAB_NOTE}

    def nssm_parameters(self, name: str) -> dict[str, Any] | None:
        """What the module would have set with `nssm install`/`nssm set` for the service (tests compare it)."""
        with self._cond:
            svc = self._find(name)
            return None if svc is None else svc.config.nssm_parameters()

    def _translate(self, value: str, pe: bool) -> str:
        prefix, sep, rest = value.partition("=")
        candidates = [("", value)] + ([(prefix + sep, rest)] if sep else [])
        for head, tail in candidates:
            if is_windows_path(tail):
                path = self.sandbox.resolve(tail)
                return head + (windows_path_for_wine(path) if pe else str(path))
        match = _LOCAL_LISTEN.match(value)
        if match:
            return f"{match.group('prefix') or ''}{self.address}:{match.group('port')}"
        return value

    def _put_failing_front(self, svc: _Service, args: list[str]) -> list[str]:
        """Health-failing fault: move the service to a private port and answer its public one with HTTP 500."""
        pattern = re.compile(r"^(?P<prefix>.*=)?" + re.escape(self.address) + r":(?P<port>\d{1,5})$")
        for i, arg in enumerate(args):
            match = pattern.match(arg)
            if match:
                public = (self.address, int(match.group("port")))
                private = free_port(self.address)
                self.proxies.ensure(public, (self.address, private), failing=True)
                svc.front = public
                return args[:i] + [f"{match.group('prefix') or ''}{self.address}:{private}"] + args[i + 1:]
        return args

    def _drop_front(self, svc: _Service) -> None:
        if svc.front is not None:
            self.proxies.remove(svc.front)
            svc.front = None

    def set_health_failing(self, failing: bool) -> None:
        """Runtime toggle: existing fronts start/stop failing; a service without one gets it at its next start."""
        with self._cond:
            for svc in self._services.values():
                if svc.front is not None:
                    self.proxies.set_failing(svc.front, failing)

    def _watch(self, svc: _Service, proc: subprocess.Popen[bytes] | NssmHost) -> None:
        try:
            proc.wait(self.settle_s)
        except subprocess.TimeoutExpired:
            with self._cond:
                if svc.proc is proc and svc.state == "StartPending":
                    svc.state = "Running"
                    self._cond.notify_all()
            proc.wait()
        self._exited(svc, proc)

    def _exited(self, svc: _Service, proc: subprocess.Popen[bytes] | NssmHost) -> None:
        with self._cond:
            if svc.proc is not proc:
                return
            if svc.in_use is not None:
                self.sandbox.release(svc.in_use)
                svc.in_use = None
            self._drop_front(svc)
            self._cancel_timers(svc)
            svc.proc, svc.pid, svc.state = None, None, "Stopped"
            code = proc.returncode if proc.returncode is not None else 0
            svc.exit_code = code if code >= 0 else 1067  # 1067: terminated unexpectedly
            if not svc.stop_requested and not self._closing:
                now = time.monotonic()
                if now - svc.last_failure > svc.config.recovery_reset_seconds:
                    svc.failures = 0
                svc.failures += 1
                svc.last_failure = now
                svc.restart_times = [*svc.restart_times[-19:], time.time()]
                delay = _recovery_delay(svc.config, svc.failures)
                if delay is not None and svc.config.start_type != "disabled":
                    generation = svc.generation
                    self._add_timer(svc, delay, lambda: self._recover(svc, generation))
            self._cond.notify_all()
        self.on_processes_changed()

    def _recover(self, svc: _Service, generation: int) -> None:
        with self._cond:
            if self._closing or svc.generation != generation or svc.state != "Stopped":
                return
            svc.restarts += 1
            self.on_restart()
            try:
                self._launch(svc)
            except NodeError:
                svc.state = "Stopped"  # like Windows: a failed recovery start leaves the service stopped

    def _add_timer(self, svc: _Service, delay: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(delay, action)
        timer.daemon = True
        svc.timers.append(timer)
        timer.start()

    def _cancel_timers(self, svc: _Service) -> None:
        for timer in svc.timers:
            if timer is not threading.current_thread():
                timer.cancel()
        svc.timers.clear()

    # ---- scheduled-task runs ------------------------------------------------------------------------------
    def run_detached(self, windows_exe: str, arguments: list[str], label: str, *, time_limit_s: float | None = None,
                     on_exit: Callable[[int], None] | None = None) -> int:
        """Run an exe stored on the node once, not waited for (a scheduled task's Run); returns its PID. A run still
        going after `time_limit_s` is killed (the task's execution time limit); `on_exit` gets its exit code."""
        exe = self.sandbox.resolve(windows_exe)
        kind = _exe_kind(exe)
        if kind is None:
            raise NodeError("NOT_FOUND", f"{windows_exe} is not an executable stored on the node",
                            {"path": windows_exe})
        pe = kind == "pe"
        args = [self._translate(a, pe) for a in arguments]
        if pe:
            if self.wine is None:
                raise NodeError("UNSUPPORTED", "this lab runs without Wine; Windows exes cannot run")
            self.wine.wait_ready(exe=exe)
            argv, env = self.wine.command(exe, args), self.wine.env()
        else:
            os.chmod(exe, exe.stat().st_mode | 0o111)
            argv, env = [str(exe), *args], {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"task-{label}.out", "ab") as out:
            proc = subprocess.Popen(argv, cwd=exe.parent, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        with self._cond:
            self._tasks.append(proc)
        threading.Thread(target=self._reap_task, args=(proc, time_limit_s, on_exit), daemon=True).start()
        self.on_processes_changed()
        return proc.pid

    def _reap_task(self, proc: subprocess.Popen[bytes], time_limit_s: float | None,
                   on_exit: Callable[[int], None] | None) -> None:
        try:
            proc.wait(time_limit_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        if on_exit is not None:
            # Task Scheduler reports a run it stopped at the time limit as 0x41306 (SCHED_S_TASK_TERMINATED).
            on_exit(proc.returncode if proc.returncode >= 0 else 0x41306)
        with self._cond:
            if proc in self._tasks:
                self._tasks.remove(proc)
        self.on_processes_changed()

    # ---- stop --------------------------------------------------------------------------------------------
    def stop(self, name: str, timeout_s: float) -> dict[str, Any]:
        began = time.monotonic()
        with self._cond:
            svc = self._find(name)
            if svc is None:
                return {"state": "Stopped", "waited_ms": 0, "was": "Absent"}
            was = svc.state
            svc.generation += 1  # an explicit stop cancels a pending recovery restart
            if svc.state == "Stopped" or (svc.state == "StartPending" and svc.proc is None):
                # (StartPending without a process: still waiting for Wine; the bumped generation cancels it.)
                svc.state = "Stopped"
                self._cancel_timers(svc)
                self._cond.notify_all()
                return {"state": "Stopped", "waited_ms": 0, "was": was}
            if not svc.stop_requested and svc.proc is not None:
                svc.stop_requested = True
                svc.state = "StopPending"
                self._cancel_timers(svc)
                proc = svc.proc

                # The nearest a console process gets to the SCM's Stop control: a Go program under Wine
                # exits gracefully on the Ctrl-C event Wine makes of SIGINT (SIGTERM would kill Wine at once).
                # A native service that ignores it keeps running: the SCM never kills a service process. NSSM
                # (NssmHost.stop) sends Ctrl-C and terminates its program after AppStopMethodConsole.
                polite = signal.SIGINT if svc.pe else signal.SIGTERM

                def terminate() -> None:
                    _signal_group(proc, polite)

                # Slow-stop fault: the service ignores the stop request for N s, then honours it.
                delay = self.faults.slow_stop_s
                if delay > 0:
                    self._add_timer(svc, delay, terminate)
                else:
                    terminate()
            self._wait_for(svc, ("Stopped",), began + max(0.0, timeout_s))
            waited = int((time.monotonic() - began) * 1000)
            if svc.state != "Stopped":
                raise NodeError("SERVICE_STOP_TIMEOUT", f"service {name!r} did not stop within {timeout_s:g} s",
                                {"state": svc.state, "pid": svc.pid, "waited_ms": waited})
            return {"state": "Stopped", "waited_ms": waited, "was": was}

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop every service process (lab down): SIGTERM, then SIGKILL whatever is left after `grace_s`."""
        with self._cond:
            self._closing = True
            procs = []
            for svc in self._services.values():
                self._cancel_timers(svc)
                svc.generation += 1
                if svc.proc is not None:
                    svc.stop_requested = True
                    procs.append(svc.proc)
            procs.extend(self._tasks)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)


def _recovery_delay(config: ServiceConfig, failures: int) -> float | None:
    """Seconds until the SCM restarts a service after its `failures`-th failure (None: run nothing). The first,
    second and subsequent failures take the actions in order; the last action repeats."""
    if config.recovery_actions:
        action, _, ms = config.recovery_actions[min(failures, len(config.recovery_actions)) - 1].partition("/")
        return int(ms) / 1000 if action == "restart" else None
    return float(config.recovery_restart_seconds) if config.recovery_restart_seconds > 0 else None


def checked_recovery_action(token: str) -> str:
    """A RecoveryActions entry as sc.exe takes it: `restart/<ms>` or `none/0`."""
    if not re.match(r"^(restart/\d{1,9}|none/0)$", token):
        raise NodeError("INVALID_ARGUMENT", "RecoveryActions entries must be restart/<milliseconds> or none/0",
                        {"RecoveryActions": token})
    return token


def service_pipe_timeout_s() -> float:
    """How long the SCM waits for a new service process to connect (Windows' ServicesPipeTimeout, 30 s)."""
    try:
        return max(0.1, float(os.environ.get("FLEETCTL_LAB_SERVICE_PIPE_TIMEOUT", "30")))
    except ValueError:
        return 30.0


def _references_dispatcher(exe: Path) -> bool:
    """Whether a PE exe can be a native service: it names StartServiceCtrlDispatcherW (in its import table, or as
    the string Go's syscall and x/sys/windows/svc load it by)."""
    with open(exe, "rb") as f:
        return SCM_DISPATCHER in f.read()


def _crash(proc: subprocess.Popen[bytes] | NssmHost) -> None:
    if isinstance(proc, NssmHost):
        proc.kill_program()  # the program dies; NSSM restarts it
    else:
        _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[bytes] | NssmHost, sig: int) -> None:
    if isinstance(proc, NssmHost):
        if sig == signal.SIGKILL:
            proc.kill()
        else:
            threading.Thread(target=proc.stop, name="nssm-stop", daemon=True).start()
        return
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)  # the service ran in its own session: its children go too
    except (ProcessLookupError, PermissionError):
        pass


def _exe_kind(path: Path) -> str | None:
    """`pe`, `elf`, `script` or None (missing or not executable), judged by the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head[:2] == b"MZ" and len(head) >= 0x40:
        offset = int.from_bytes(head[0x3C:0x40], "little")
        if head[offset:offset + 4] == b"PE\0\0" or offset + 4 > len(head):
            return "pe"
        return None
    if head[:4] == b"\x7fELF":
        return "elf"
    if head[:2] == b"#!":
        return "script"
    return None


def _protocol_name(snake: str) -> str:
    return "".join(part.capitalize() for part in snake.split("_"))
