"""The interface every system scheduler implements (cron, systemd timers, Windows Task Scheduler), what an
installed entry looks like when read back, and which scheduler a controller uses.

An entry is marked as fleetctl's own in the scheduler itself (a marker comment in the crontab, `X-Fleetctl*` keys
in systemd units, the `\\fleetctl\\` task folder and `Source` on Windows), so `list` and `remove` never touch
anything else. What it runs is always the same: `<python> -m fleetctl schedule run NAME` in the project directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from fleetctl.errors import ConfigError
from fleetctl.schedule.entry import ScheduleEntry

SchedulerKind = Literal["cron", "systemd", "task-scheduler"]
SCHEDULER_KINDS: tuple[str, ...] = ("cron", "systemd", "task-scheduler")


@dataclass(frozen=True)
class InstalledEntry:
    """An entry as the scheduler holds it: enough to find its definition (project) and to say when it fires."""

    name: str
    project: Path
    when: str  # in the scheduler's own words: `0 2 * * 1-5`, `Mon..Fri *-*-* 02:00:00`, ...
    location: str  # where it lives: `crontab of root`, a unit file, a task path


class Scheduler(Protocol):
    kind: SchedulerKind

    def render(self, entry: ScheduleEntry) -> dict[str, str]:
        """What install would write, by file or place name (for `--dry-run` and tests)."""

    def install(self, entry: ScheduleEntry) -> str:
        """Add or update the entry; returns where it now lives."""

    def remove(self, name: str) -> bool:
        """Remove fleetctl's entry NAME; False when there was none."""

    def installed(self) -> list[InstalledEntry]:
        """fleetctl's entries, and nothing else the scheduler holds."""

    def warnings(self) -> list[str]:
        """Why an installed entry might not fire on this controller (the daemon is not running, ...)."""


def run_argv(entry: ScheduleEntry) -> list[str]:
    """What the scheduler starts, in `entry.project`."""
    return [entry.python or sys.executable, "-m", "fleetctl", "schedule", "run", entry.name]


def reject_newlines(value: str, what: str) -> str:
    """A scheduler entry is line-oriented: a path with a line break in it cannot be written safely."""
    if any(ch in value for ch in "\r\n\0"):
        raise ConfigError(f"{what} contains a line break or NUL and cannot be put in a scheduler entry: {value!r}",
                          key=what)
    return value
