"""Schedule entries in the user's crontab (Debian's `cron`), read and written with the `crontab` command.

Each entry is two lines: a marker comment that names it and its project, and the job line right below it.
Only such pairs are ever changed; every other line of the crontab is kept byte for byte, so installing and then
removing an entry gives back the crontab as it was. Editing is a pure function over the crontab's text
(`with_entry`, `without_entry`, `parse_entries`); `CronScheduler` only reads and writes it.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from fleetctl.errors import ConfigError
from fleetctl.schedule.backend import InstalledEntry, SchedulerKind, reject_newlines, run_argv
from fleetctl.schedule.entry import ScheduleEntry

MARKER = "# fleetctl-schedule "
_MARKER_LINE = re.compile(r"^# fleetctl-schedule (\{.*\})\s*$")


def cron_quote(argument: str) -> str:
    """One argument as it must appear in a crontab command: POSIX-shell quoted (cron runs the command with
    /bin/sh), and every `%` escaped, since cron turns an unescaped `%` into a newline (crontab(5))."""
    reject_newlines(argument, "a crontab argument")
    return shlex.quote(argument).replace("%", "\\%")


def cron_days(days: tuple[int, ...]) -> str:
    """Weekday field: cron counts Sunday as 0; fleetctl's indexes start at Monday = 0."""
    if len(days) == 7:
        return "*"
    numbers = sorted((d + 1) % 7 for d in days)
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def cron_when(entry: ScheduleEntry) -> str:
    return f"{entry.at.minute} {entry.at.hour} * * {cron_days(entry.days)}"


def entry_lines(entry: ScheduleEntry) -> list[str]:
    """The marker and the job line of one entry."""
    project = reject_newlines(str(entry.project), "project directory")
    marker = MARKER + json.dumps({"name": entry.name, "project": project}, ensure_ascii=True)
    command = " ".join(cron_quote(a) for a in run_argv(entry))
    return [marker, f"{cron_when(entry)} cd {cron_quote(project)} && exec {command}"]


def _blocks(text: str) -> list[tuple[int, dict[str, str]]]:
    """(line index of the marker, its data) for each fleetctl entry in a crontab."""
    found = []
    for index, line in enumerate(text.splitlines()):
        match = _MARKER_LINE.match(line)
        if match:
            try:
                data = json.loads(match[1])
            except ValueError:
                continue
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                found.append((index, data))
    return found


def _owned_job_line(lines: list[str], marker_index: int, name: str) -> bool:
    """Whether the line after a marker is the job it marks (a person may have deleted the job but kept the
    marker; then only the marker is ours)."""
    nxt = marker_index + 1
    return nxt < len(lines) and f" schedule run {name}" in lines[nxt] and not lines[nxt].startswith("#")


def without_entry(text: str, name: str) -> tuple[str, bool]:
    """The crontab without fleetctl's entry NAME (every other byte kept), and whether it was there."""
    lines = text.splitlines(keepends=True)
    plain = [line.rstrip("\r\n") for line in lines]
    drop: set[int] = set()
    for index, data in _blocks(text):
        if data["name"] == name:
            drop.add(index)
            if _owned_job_line(plain, index, name):
                drop.add(index + 1)
    if not drop:
        return text, False
    return "".join(line for i, line in enumerate(lines) if i not in drop), True


def with_entry(text: str, entry: ScheduleEntry) -> str:
    """The crontab with ENTRY added, or updated in place if fleetctl already has an entry of that name."""
    lines = text.splitlines(keepends=True)
    plain = [line.rstrip("\r\n") for line in lines]
    new = [line + "\n" for line in entry_lines(entry)]
    for index, data in _blocks(text):
        if data["name"] == entry.name:
            end = index + 2 if _owned_job_line(plain, index, entry.name) else index + 1
            rest, _ = without_entry("".join(lines[end:]), entry.name)  # drop any duplicate further down
            return "".join(lines[:index]) + "".join(new) + rest
    if text and not text.endswith("\n"):
        text += "\n"  # cron ignores a last line without a newline; ours must not join it
    return text + "".join(new)


def parse_entries(text: str, location: str) -> list[InstalledEntry]:
    plain = text.splitlines()
    found = []
    for index, data in _blocks(text):
        name = data["name"]
        when = " ".join(plain[index + 1].split()[:5]) if _owned_job_line(plain, index, name) else "(job line missing)"
        found.append(InstalledEntry(name=name, project=Path(str(data.get("project", ""))), when=when,
                                    location=location))
    return found


class CronScheduler:
    """The current user's crontab, through `crontab -l` and `crontab -` (so cron notices every change)."""

    kind: SchedulerKind = "cron"

    def __init__(self, crontab: str = "crontab") -> None:
        self.crontab = crontab

    @property
    def location(self) -> str:
        return f"crontab of {getpass.getuser()}"

    def _command(self) -> str:
        found = shutil.which(self.crontab)
        if found is None:
            raise ConfigError("no `crontab` command on this controller: install cron (Debian: apt-get install "
                              "cron), or pick another scheduler with --scheduler", key="--scheduler")
        return found

    def read(self) -> str:
        done = subprocess.run([self._command(), "-l"], capture_output=True, text=True, check=False, timeout=30)
        if done.returncode == 0:
            return done.stdout
        if "no crontab for" in done.stderr:
            return ""
        raise ConfigError(f"`crontab -l` failed: {done.stderr.strip() or done.returncode}", key="crontab")

    def write(self, text: str) -> None:
        if not text.strip():
            # Nothing but what fleetctl added was there: leave no crontab at all, as before.
            done = subprocess.run([self._command(), "-r"], capture_output=True, text=True, check=False, timeout=30)
            if done.returncode == 0 or "no crontab for" in done.stderr:
                return
        else:
            done = subprocess.run([self._command(), "-"], input=text, capture_output=True, text=True, check=False,
                                  timeout=30)
            if done.returncode == 0:
                return
        raise ConfigError(f"`crontab` refused the new table: {done.stderr.strip() or done.returncode}",
                          key="crontab")

    def render(self, entry: ScheduleEntry) -> dict[str, str]:
        return {self.location: "\n".join(entry_lines(entry)) + "\n"}

    def install(self, entry: ScheduleEntry) -> str:
        self.write(with_entry(self.read(), entry))
        return self.location

    def remove(self, name: str) -> bool:
        text, found = without_entry(self.read(), name)
        if found:
            self.write(text)
        return found

    def installed(self) -> list[InstalledEntry]:
        return parse_entries(self.read(), self.location)

    def warnings(self) -> list[str]:
        if cron_daemon_running():
            return []
        return [("no cron daemon is running on this controller (no live pid in /run/crond.pid): the entry fires only "
                "once cron runs (Debian: service cron start, or systemctl enable --now cron)")]


def cron_daemon_running(pidfile: Path = Path("/run/crond.pid")) -> bool:
    """Debian's cron keeps its pid in /run/crond.pid while it runs."""
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True
