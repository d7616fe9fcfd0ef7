"""One firing of a schedule entry (`fleetctl schedule run NAME`, what the scheduler starts): take the entry's
controller-side lock, start `fleetctl deploy PLAYBOOK ... --unattended` in the project directory with the run's
id, and write everything it prints to `.fleetctl/logs/<run-id>.log`.

The lock is an OS file lock on `.fleetctl/schedules/<name>.lock` (flock on POSIX, msvcrt on Windows), so it goes
away with the process that held it: two runs of one entry never overlap, and a crashed run never blocks the next
night. A run that finds the lock taken writes its own short log saying so and exits 4 without deploying.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fleetctl.config.redaction import redact, register_secret
from fleetctl.errors import EXIT_BAD_INPUT, EXIT_LOCKED, ConfigError
from fleetctl.rollout.preparation import new_run_id
from fleetctl.schedule.entry import LOGS_DIR, ScheduleEntry

EXIT_MEANING = {0: "succeeded", 1: "rollout failed (failed hosts rolled back)", 2: "bad input, nothing changed",
                3: "halted with hosts on mixed versions", 4: "locked (another run, or a change freeze); nothing changed",
                130: "interrupted"}


@dataclass(frozen=True)
class ScheduledRun:
    run_id: str
    exit_code: int
    log: Path
    skipped: bool = False  # the entry's previous run still held the lock


class EntryBusy(Exception):
    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextmanager
def entry_lock(path: Path, holder: str) -> Iterator[None]:
    """Hold the entry's lock for the block, or raise EntryBusy naming whoever holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block's duration
    try:
        try:
            _lock_file(handle)
        except OSError:
            handle.seek(0)
            raise EntryBusy(handle.read().strip() or "another run") from None
        handle.seek(0)
        handle.truncate()
        handle.write(holder)
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            _unlock_file(handle)
    finally:
        handle.close()


def _lock_file(handle: IO[str]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock_file(handle: IO[str]) -> None:
    if os.name == "nt":
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
    else:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines (`#` comments, blank lines, an optional `export ` and quotes around the value), as
    systemd's EnvironmentFile and docker's --env-file read them. Every value is treated as a secret."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read the environment file: {err.strerror or err}", file=path,
                          key="--env-file") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise ConfigError("expected KEY=VALUE (KEY of letters, digits and '_')", file=path, line=number,
                              key="--env-file")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def run_entry(entry: ScheduleEntry, *, echo: Callable[[str], None] | None = None,
              after_run: Callable[[ScheduledRun], list[str]] | None = None) -> ScheduledRun:
    """Fire ENTRY once, exactly as its scheduler does. `echo` also gets every line the log gets (a person
    running `schedule run` at a terminal); `after_run` is called with the finished run and returns lines for
    the log (the reports and notifications a scheduled run leaves)."""
    project = entry.project
    if not project.is_dir():
        raise ConfigError(f"the schedule's project directory {project} does not exist", key=entry.name)
    env = dict(os.environ)
    if entry.path:
        env["PATH"] = entry.path
    if entry.env_file:
        extra = read_env_file(project / entry.env_file)
        for value in extra.values():
            register_secret(value)
        env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("COLUMNS", "160")  # tables in the log are as wide as on a terminal, not 80 columns
    run_id = new_run_id()
    logs = project / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{run_id}.log"
    argv = [entry.python or sys.executable, "-m", "fleetctl", *entry.deploy_argv(run_id)]
    with open(log_path, "w", encoding="utf-8") as log:
        def say(line: str) -> None:
            text = redact(line.rstrip("\n"))
            log.write(text + "\n")
            log.flush()
            if echo is not None:
                echo(text)

        say(f"fleetctl scheduled run {run_id} of schedule {entry.name} ({entry.playbook}), "
            f"started {time.strftime('%Y-%m-%d %H:%M:%S %z')} in {project}")
        holder = f"run {run_id}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S %z')}"
        try:
            with entry_lock(project / ".fleetctl" / "schedules" / f"{entry.name}.lock", holder):
                say("$ fleetctl " + " ".join(argv[3:]))
                code = _deploy(argv, project, env, say)
                result = ScheduledRun(run_id, code, log_path)
                for line in (after_run(result) if after_run else []):
                    say(line)
                say(f"exit code {code}: {EXIT_MEANING.get(code, 'failed')}")  # always the log's last line
        except EntryBusy as busy:
            say(f"skipped: the previous run of schedule {entry.name} is still going ({busy.holder}); two runs of "
                "one entry never overlap")
            say(f"exit code {EXIT_LOCKED}: {EXIT_MEANING[EXIT_LOCKED]}")
            return ScheduledRun(run_id, EXIT_LOCKED, log_path, skipped=True)
    return result


def _deploy(argv: list[str], cwd: Path, env: dict[str, str], say: Callable[[str], None]) -> int:
    try:
        # Its own process group: a Ctrl-C at the terminal reaches it once, through `forward`, not twice.
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                                 start_new_session=os.name != "nt")
    except OSError as err:
        say(f"cannot start {argv[0]}: {err}")
        return EXIT_BAD_INPUT
    # A stop from the scheduler (systemd's SIGINT, a SIGTERM) reaches the deploy as Ctrl-C: in-flight hosts finish
    # or roll back and locks are released before it exits 130.
    forwarded: dict[signal.Signals, Any] = {}

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)

    # On Windows the child shares the console and gets a Ctrl-C itself; Task Scheduler ends a task by terminating it.
    for signum in (signal.SIGINT, signal.SIGTERM) if os.name != "nt" else ():
        try:
            forwarded[signum] = signal.signal(signum, forward)
        except ValueError:  # not the main thread (tests)
            break
    try:
        assert child.stdout is not None
        for line in child.stdout:
            say(line)
        return child.wait()
    finally:
        for sig, previous in forwarded.items():
            signal.signal(sig, previous)
