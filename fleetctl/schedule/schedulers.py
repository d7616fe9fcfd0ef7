"""Which system scheduler a controller uses: Task Scheduler on Windows, systemd timers where systemd is the init
system, else the user's crontab; `--scheduler` picks one explicitly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from fleetctl.errors import ConfigError
from fleetctl.schedule.backend import SCHEDULER_KINDS, Scheduler, SchedulerKind


def systemd_running() -> bool:
    """sd_booted(3): systemd is the init system when /run/systemd/system exists."""
    return Path("/run/systemd/system").is_dir()


def detect() -> SchedulerKind:
    if os.name == "nt":
        return "task-scheduler"
    if systemd_running() and shutil.which("systemctl"):
        return "systemd"
    return "cron"


def scheduler_for(kind: str) -> Scheduler:
    """`auto` picks this controller's scheduler: Task Scheduler on Windows, systemd timers where systemd runs,
    else the user's crontab."""
    if kind == "auto":
        kind = detect()
    if kind == "cron":
        from fleetctl.schedule.cron import CronScheduler

        return CronScheduler()
    if kind == "systemd":
        from fleetctl.schedule.systemd import SystemdScheduler

        return SystemdScheduler()
    if kind == "task-scheduler":
        from fleetctl.schedule.task_scheduler import TaskScheduler

        return TaskScheduler()
    raise ConfigError(f"expected one of auto, {', '.join(SCHEDULER_KINDS)}, got {kind!r}", key="--scheduler")
