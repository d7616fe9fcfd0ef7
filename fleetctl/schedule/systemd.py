"""Schedule entries as a systemd timer plus a oneshot service: `fleetctl-<name>.timer` / `.service`.

As root they are system units in /etc/systemd/system; otherwise user units in ~/.config/systemd/user (which run
only while the user's manager runs: `loginctl enable-linger USER` for a nightly job). The units carry
`X-FleetctlSchedule=` and `X-FleetctlProject=` (systemd ignores `X-` keys), and only units with both are listed or
removed. The service stops a run with SIGINT, which fleetctl treats as Ctrl-C: in-flight hosts finish or roll
back and locks are released.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from fleetctl.errors import ConfigError
from fleetctl.schedule.backend import InstalledEntry, SchedulerKind, reject_newlines, run_argv
from fleetctl.schedule.entry import ScheduleEntry

UNIT_PREFIX = "fleetctl-"
_SYSTEMD_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# How long a run may take before systemd stops it, and how long the SIGINT wind-down may take after that.
RUN_TIMEOUT = "12h"
STOP_TIMEOUT = "15min"


def unit_value(value: str) -> str:
    """A value for a unit-file setting that is not a command line: `%` starts a specifier (systemd.unit(5))."""
    return reject_newlines(value, "a systemd unit value").replace("%", "%%")


def exec_quote(argument: str) -> str:
    """One argument of `ExecStart=`: double-quoted with C-style escapes when needed, `%` and `$` doubled so
    neither a specifier nor a variable is expanded (systemd.service(5), "Command lines")."""
    reject_newlines(argument, "a systemd command-line argument")
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if escaped and not any(ch in escaped for ch in " \t\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def on_calendar(entry: ScheduleEntry) -> str:
    days = ""
    if len(entry.days) < 7:
        runs: list[tuple[int, int]] = []
        for d in entry.days:
            if runs and runs[-1][1] == d - 1:
                runs[-1] = (runs[-1][0], d)
            else:
                runs.append((d, d))
        days = ",".join(_SYSTEMD_DAYS[a] if a == b else f"{_SYSTEMD_DAYS[a]}..{_SYSTEMD_DAYS[b]}"
                        for a, b in runs) + " "
    return f"{days}*-*-* {entry.at.hour:02d}:{entry.at.minute:02d}:00"


def render_units(entry: ScheduleEntry) -> dict[str, str]:
    """The two unit files of an entry, by file name."""
    project = unit_value(str(entry.project))
    name = entry.name
    marks = f"X-FleetctlSchedule={name}\nX-FleetctlProject={project}\n"
    description = unit_value(f"fleetctl scheduled deploy {name} ({entry.playbook})")
    service = (
        "[Unit]\n"
        f"Description={description}\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        f"{marks}"
        "\n[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={project}\n"
        f"ExecStart={' '.join(exec_quote(a) for a in run_argv(entry))}\n"
        "KillSignal=SIGINT\n"
        "KillMode=mixed\n"
        f"TimeoutStartSec={RUN_TIMEOUT}\n"
        f"TimeoutStopSec={STOP_TIMEOUT}\n"
    )
    timer = (
        "[Unit]\n"
        f"Description={description} timer\n"
        f"{marks}"
        "\n[Timer]\n"
        f"OnCalendar={on_calendar(entry)}\n"
        # A run missed while the controller was off is not made up at boot: a deploy at an unplanned hour
        # surprises more than a skipped night.
        "Persistent=false\n"
        f"Unit={UNIT_PREFIX}{name}.service\n"
        "\n[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{UNIT_PREFIX}{name}.service": service, f"{UNIT_PREFIX}{name}.timer": timer}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _marks(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("X-FleetctlSchedule", "X-FleetctlProject", "OnCalendar"):
            found[key.strip()] = value.strip().replace("%%", "%")
    return found


class SystemdScheduler:
    kind: SchedulerKind = "systemd"

    def __init__(self, unit_dir: Path | None = None, *, user: bool | None = None,
                 check_running: Callable[[], bool] = lambda: Path("/run/systemd/system").is_dir()) -> None:
        self.user = (os.geteuid() != 0) if user is None else user
        default = (Path.home() / ".config/systemd/user") if self.user else Path("/etc/systemd/system")
        self.unit_dir = unit_dir or default
        self.check_running = check_running

    def _systemctl(self, *args: str) -> None:
        systemctl = shutil.which("systemctl")
        if systemctl is None:
            raise ConfigError("no `systemctl` on this controller; pick another scheduler with --scheduler",
                              key="--scheduler")
        argv = [systemctl, *(["--user"] if self.user else []), *args]
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            raise ConfigError(f"`{' '.join(argv[1:])}` failed: {done.stderr.strip() or done.returncode}",
                              key="--scheduler")

    def render(self, entry: ScheduleEntry) -> dict[str, str]:
        return {str(self.unit_dir / name): text for name, text in render_units(entry).items()}

    def install(self, entry: ScheduleEntry) -> str:
        if not self.check_running():
            raise ConfigError("systemd is not running on this controller (no /run/systemd/system): use --scheduler "
                              "cron, or --dry-run to see the units", key="--scheduler")
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        units = render_units(entry)
        before = {name: (self.unit_dir / name).read_text(encoding="utf-8") if (self.unit_dir / name).is_file()
                  else None for name in units}
        try:
            for name, text in units.items():
                _write(self.unit_dir / name, text)
            self._systemctl("daemon-reload")
            self._systemctl("enable", "--now", f"{UNIT_PREFIX}{entry.name}.timer")
        except BaseException:
            for name, old in before.items():  # leave the unit directory as it was
                if old is None:
                    (self.unit_dir / name).unlink(missing_ok=True)
                else:
                    _write(self.unit_dir / name, old)
            raise
        return str(self.unit_dir / f"{UNIT_PREFIX}{entry.name}.timer")

    def remove(self, name: str) -> bool:
        timer = self.unit_dir / f"{UNIT_PREFIX}{name}.timer"
        service = self.unit_dir / f"{UNIT_PREFIX}{name}.service"
        ours = [p for p in (timer, service) if p.is_file() and "X-FleetctlSchedule" in
                _marks(p.read_text(encoding="utf-8", errors="replace"))]
        if not ours:
            return False
        if timer in ours:
            self._systemctl("disable", "--now", timer.name)
        for path in ours:
            path.unlink()
        self._systemctl("daemon-reload")
        return True

    def warnings(self) -> list[str]:
        if not self.user:
            return []
        user = getpass.getuser()
        if Path("/var/lib/systemd/linger", user).exists():
            return []
        return [(f"user timers run only while {user}'s systemd manager runs (while logged in): for a nightly run, "
                f"loginctl enable-linger {user}")]

    def installed(self) -> list[InstalledEntry]:
        if not self.unit_dir.is_dir():
            return []
        found = []
        for path in sorted(self.unit_dir.glob(f"{UNIT_PREFIX}*.timer")):
            marks = _marks(path.read_text(encoding="utf-8", errors="replace"))
            if "X-FleetctlSchedule" in marks and "X-FleetctlProject" in marks:
                found.append(InstalledEntry(name=marks["X-FleetctlSchedule"],
                                            project=Path(marks["X-FleetctlProject"]),
                                            when=marks.get("OnCalendar", "?"), location=str(path)))
        return found
