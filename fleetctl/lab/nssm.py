"""What NSSM (2.24) does for a service it hosts, modelled for the lab: which parameters the module sets, and how
nssm.exe then runs the console program.

`nssm_parameters` is the registry picture (`HKLM\\...\\Services\\<name>\\Parameters`) that `Set-FleetService
-Hosting nssm` leaves behind through `nssm install` / `nssm set`, so tests can compare what was recorded.
`NssmHost` plays nssm.exe at run time:
- starts `Application` with `AppParameters` (one command line, read back with the Windows rules), in
  `AppDirectory`, with `AppEnvironmentExtra` added to the environment;
- reads the program's stdout/stderr and writes them to `AppStdout`/`AppStderr` (one file when they are the same
  path); with `AppRotateFiles` an existing file over `AppRotateBytes` is renamed to `<base>-YYYYMMDDTHHMMSS.mmm<ext>`
  at start, and with `AppRotateOnline` also while it runs, when the next write would pass the limit;
- restarts the program whenever it exits (`AppExit Default Restart`) after `AppRestartDelay`; a program that ran
  less than `AppThrottle` is restarted after a growing delay instead (NSSM's throttling: 2 s doubling up to 256 s,
  never shorter than AppRestartDelay), during which the service reports Paused;
- on Stop sends Ctrl-C (SIGINT: Wine turns it into a console Ctrl-C event), waits `AppStopMethodConsole` ms,
  then terminates the process (SIGKILL: TerminateProcess). A console program has no windows or message queue, so
  NSSM's WM_CLOSE and WM_QUIT steps find nothing to wait for.
The host's PID is the program's (no nssm.exe process runs in the lab).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from fleetctl.lab.eventlog import is_event_line
from fleetctl.protocol.cmdline import join_command_line

DEFAULT_THROTTLE_MS = 1500
DEFAULT_STOP_CONSOLE_MS = 1500
THROTTLE_FIRST_S = 2.0
THROTTLE_MAX_S = 256.0


def nssm_parameters(application: str, arguments: list[str], environment: dict[str, str], *, directory: str,
                    stdout: str, stderr: str, rotate_bytes: int, restart_delay_ms: int, throttle_ms: int,
                    stop_timeout_s: int | None) -> dict[str, Any]:
    """The NSSM parameters of a service, as the module sets them (names and values as nssm stores them)."""
    return {
        "Application": application,
        "AppDirectory": directory,
        "AppParameters": join_command_line(arguments),
        "AppEnvironmentExtra": [f"{k}={v}" for k, v in sorted(environment.items())],
        "AppStdout": stdout,
        "AppStderr": stderr,
        "AppRotateFiles": 1 if rotate_bytes > 0 else 0,
        "AppRotateOnline": 1 if rotate_bytes > 0 else 0,
        "AppRotateBytes": rotate_bytes,
        "AppExit": {"Default": "Restart"},
        "AppRestartDelay": restart_delay_ms,
        "AppThrottle": throttle_ms,
        "AppStopMethodSkip": 0,
        "AppStopMethodConsole": (stop_timeout_s or 0) * 1000 or DEFAULT_STOP_CONSOLE_MS,
    }


def rotated_name(path: Path, when: datetime | None = None) -> Path:
    """NSSM's name for a rotated output file: `<base>-YYYYMMDDTHHMMSS.mmm<ext>` beside it."""
    moment = when or datetime.now(UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f".{moment.microsecond // 1000:03d}"
    return path.with_name(f"{path.stem}-{stamp}{path.suffix}")


def _free_rotated_name(path: Path) -> Path:
    """A rotated name not taken yet: two rotations in one millisecond must not overwrite each other."""
    when = datetime.now(UTC)
    target = rotated_name(path, when)
    while target.exists():
        when += timedelta(milliseconds=1)
        target = rotated_name(path, when)
    return target


def throttle_delay(failures: int) -> float:
    """Seconds NSSM waits before the `failures`-th quick restart in a row."""
    return min(THROTTLE_MAX_S, THROTTLE_FIRST_S * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class NssmSettings:
    """What `NssmHost` needs, with sandbox paths already resolved."""

    stdout: Path
    stderr: Path
    events: Path  # where Wine's ReportEventW lines go instead of AppStderr (fleetctl/lab/eventlog.py)
    rotate_bytes: int
    restart_delay_s: float
    throttle_s: float
    stop_console_s: float


class _OutputFile:
    """One AppStdout/AppStderr file, written by NSSM and rotated by size (shared when stdout and stderr match)."""

    def __init__(self, path: Path, rotate_bytes: int) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        if rotate_bytes > 0 and path.exists() and path.stat().st_size > rotate_bytes:
            os.replace(path, _free_rotated_name(path))  # AppRotateFiles: at service start
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - kept open while the service runs

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._file.closed:
                return  # the host ended; what a dying program still wrote has nowhere to go, as with NSSM
            for line in data.splitlines(keepends=True) if self.rotate_bytes > 0 else [data]:
                if self.rotate_bytes > 0 and self._file.tell() > 0 and \
                        self._file.tell() + len(line) > self.rotate_bytes:
                    self._file.close()  # AppRotateOnline: while running, before the write that would pass it
                    os.replace(self.path, _free_rotated_name(self.path))
                    self._file = open(self.path, "ab")  # noqa: SIM115
                self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class NssmHost:
    """nssm.exe hosting one console program: started once per service start, ended by `stop()`."""

    def __init__(self, settings: NssmSettings, launch: Callable[[int, int], subprocess.Popen[bytes]], *,
                 on_app_exit: Callable[[int], None], on_paused: Callable[[bool], None],
                 on_pid: Callable[[int | None], None]) -> None:
        self.settings = settings
        self._launch = launch  # (stdout, stderr) pipe ends -> the started program
        self._on_app_exit = on_app_exit
        self._on_paused = on_paused
        self._on_pid = on_pid
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.returncode: int | None = None
        self.app_restarts = 0
        out = _OutputFile(settings.stdout, settings.rotate_bytes)
        err = out if settings.stderr == settings.stdout else _OutputFile(settings.stderr, settings.rotate_bytes)
        self._files = (out, err)
        self.pid = self._start_program()
        threading.Thread(target=self._supervise, name="nssm", daemon=True).start()

    # ---- the Popen-like surface the SCM uses ---------------------------------------------------------------
    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired("nssm", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def stop(self) -> None:
        """The SCM's Stop control: Ctrl-C, AppStopMethodConsole, then TerminateProcess; ends the host."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is None:
            return
        _signal(proc, signal.SIGINT)
        try:
            proc.wait(self.settings.stop_console_s)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)

    def kill(self) -> None:
        """Lab down: end the program and the host at once."""
        self._stopping.set()
        self.kill_program()

    def kill_program(self) -> None:
        """The program dies (a crash fault); NSSM notices and restarts it."""
        with self._lock:
            proc = self._proc
        if proc is not None:
            _signal(proc, signal.SIGKILL)

    # ---- inside nssm.exe ----------------------------------------------------------------------------------
    def _start_program(self) -> int:
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe() if self._files[1] is not self._files[0] else (out_read, out_write)
        try:
            proc = self._launch(out_write, err_write)
        finally:
            os.close(out_write)
            if err_write != out_write:
                os.close(err_write)
        for fd, target in {(out_read, self._files[0]), (err_read, self._files[1])}:
            threading.Thread(target=_pump, args=(fd, target, self.settings.events), name="nssm-output",
                             daemon=True).start()
        with self._lock:
            self._proc = proc
        self._on_pid(proc.pid)
        return proc.pid

    def _supervise(self) -> None:
        quick_failures = 0
        try:
            while True:
                with self._lock:
                    proc = self._proc
                assert proc is not None
                started = time.monotonic()
                code = proc.wait()
                ran = time.monotonic() - started
                with self._lock:
                    self._proc = None
                self._on_pid(None)
                if self._stopping.is_set():
                    return
                self._on_app_exit(code)
                quick_failures = quick_failures + 1 if ran < self.settings.throttle_s else 0
                delay = self.settings.restart_delay_s
                if quick_failures:
                    delay = max(delay, throttle_delay(quick_failures))
                    self._on_paused(True)
                if self._stopping.wait(delay):
                    return
                self._on_paused(False)
                self.app_restarts += 1
                try:
                    self.pid = self._start_program()
                except OSError:
                    return  # NSSM gives up when the program cannot be started at all: the service stops
        finally:
            for f in set(self._files):
                f.close()
            self.returncode = 0
            self._done.set()


def _pump(fd: int, target: _OutputFile, events: Path) -> None:
    with os.fdopen(fd, "rb") as pipe:
        for line in iter(pipe.readline, b""):
            if is_event_line(line):
                # Wine's trace of an event-log write is not the program's output: kept for Get-FleetEvents.
                events.parent.mkdir(parents=True, exist_ok=True)
                with open(events, "ab") as record:
                    record.write(line)
                continue
            target.write(line)


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
