"""What a schedule entry is (name, project, playbook, time of day, weekdays, deploy options) and where its
definition lives: `.fleetctl/schedules/<name>.json` in the project directory. Parsing `--at` and `--days` is here
too; every bad value is a ConfigError naming the option and what was expected.

The system scheduler (cron, systemd, Task Scheduler) only knows "at this time, in this directory, run
`fleetctl schedule run NAME`"; everything else is read from the definition when the entry fires.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetctl.config.redaction import is_secret_name
from fleetctl.errors import ConfigError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index 0 = Monday, as Python's weekday()
_DAY_ALIASES = {"daily": tuple(range(7)), "*": tuple(range(7)), "weekdays": tuple(range(5)),
                "weekends": (5, 6)}
SCHEDULES_DIR = Path(".fleetctl") / "schedules"
LOGS_DIR = Path(".fleetctl") / "logs"
# Playbook file names that say nothing; the entry is then named after the playbook's directory.
_GENERIC_STEMS = {"playbook", "main", "site", "deploy", "service"}
DEFINITION_VERSION = 1


@dataclass(frozen=True)
class TimeOfDay:
    hour: int
    minute: int

    def __str__(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"


def parse_at(text: str) -> TimeOfDay:
    """`--at HH:MM`, 24-hour, the controller's local time."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text or "")
    if match:
        hour, minute = int(match[1]), int(match[2])
        if hour < 24 and minute < 60:
            return TimeOfDay(hour, minute)
    raise ConfigError(f"expected a time of day as HH:MM (24-hour, e.g. 02:00 or 23:30), got {text!r}", key="--at")


def parse_days(text: str | None) -> tuple[int, ...]:
    """`--days`: `daily` (default), `weekdays`, `weekends`, names (`mon,wed,fri`) and ranges (`mon-fri`,
    `fri-mon` wraps over the weekend). Returns sorted weekday indexes, Monday = 0."""
    if text is None or not text.strip():
        return tuple(range(7))
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        if part in _DAY_ALIASES:
            days.update(_DAY_ALIASES[part])
            continue
        ends = part.split("-")
        if len(ends) in (1, 2) and all(_day(e) is not None for e in ends):
            first, last = _day(ends[0]), _day(ends[-1])
            assert first is not None and last is not None
            day = first
            days.add(day)
            while day != last:
                day = (day + 1) % 7
                days.add(day)
            continue
        raise ConfigError(
            f"expected days such as mon-fri, sat,sun, mon,wed,fri, weekdays, weekends or daily "
            f"(day names: {', '.join(DAY_NAMES)}), got {text!r}", key="--days")
    return tuple(sorted(days))


_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_WORDS = {**{n: i for i, n in enumerate(DAY_NAMES)}, **{n: i for i, n in enumerate(_FULL_DAYS)},
              "tues": 1, "thur": 3, "thurs": 3}


def _day(text: str) -> int | None:
    return _DAY_WORDS.get(text)


def days_text(days: tuple[int, ...]) -> str:
    """The days the way a person writes them: `daily`, `mon-fri`, `mon,wed,fri`."""
    if len(days) == 7:
        return "daily"
    runs: list[tuple[int, int]] = []
    for day in days:
        if runs and runs[-1][1] == day - 1:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    parts = [DAY_NAMES[a] if a == b else (f"{DAY_NAMES[a]},{DAY_NAMES[b]}" if b == a + 1 else
                                          f"{DAY_NAMES[a]}-{DAY_NAMES[b]}") for a, b in runs]
    return ",".join(parts)


def check_name(name: str, *, key: str = "--name") -> str:
    if not NAME_PATTERN.match(name or ""):
        raise ConfigError("expected a schedule name of letters, digits, '.', '_' and '-' (at most 64, starting "
                          f"with a letter or digit), got {name!r}", key=key)
    return name


def default_name(playbook: str) -> str:
    """An entry's name when `--name` is not given: the playbook file's stem, or its directory's name when the
    file is called something generic (`playbooks/hello/playbook.yml` → `hello`)."""
    path = Path(playbook)
    stem = path.stem
    if stem.lower() in _GENERIC_STEMS and path.resolve().parent.name:
        stem = path.resolve().parent.name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "deploy"
    return check_name(cleaned[:64], key="PLAYBOOK")


@dataclass(frozen=True)
class ScheduleEntry:
    """One scheduled unattended deploy. `deploy_args` are deploy's own options, exactly as `schedule run` passes
    them (`-i INV`, `--canary 1`, ...); paths in them are as given, relative to `project`."""

    name: str
    project: Path
    playbook: str
    at: TimeOfDay
    days: tuple[int, ...]
    deploy_args: tuple[str, ...] = ()
    env_file: str | None = None
    python: str = ""  # the interpreter that runs `-m fleetctl` when the entry fires
    # PATH as `schedule install` saw it: cron and systemd start jobs with a bare /usr/bin:/bin, where neither Go
    # nor the tools a build command needs may be found.
    path: str | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def definition_path(self) -> Path:
        return definition_path(self.project, self.name)

    def deploy_argv(self, run_id: str) -> list[str]:
        """The `fleetctl deploy ...` arguments of one scheduled run."""
        return ["deploy", self.playbook, *self.deploy_args, "--unattended", "--schedule", self.name,
                "--run-id", run_id]

    def to_json(self) -> dict[str, Any]:
        return {"format": DEFINITION_VERSION, "name": self.name, "project": str(self.project),
                "playbook": self.playbook, "at": str(self.at), "days": days_text(self.days),
                "deploy_args": list(self.deploy_args), "env_file": self.env_file, "python": self.python,
                "path": self.path, "created_at": self.created_at}

    @classmethod
    def from_json(cls, doc: Any, *, source: Path) -> ScheduleEntry:
        try:
            if doc.get("format") != DEFINITION_VERSION:
                raise ConfigError(f"unknown schedule definition format {doc.get('format')!r}; expected "
                                  f"{DEFINITION_VERSION}", file=source, key="format")
            args = doc.get("deploy_args") or []
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise ConfigError("expected a list of strings", file=source, key="deploy_args")
            return cls(name=check_name(str(doc["name"]), key="name"), project=Path(str(doc["project"])),
                       playbook=str(doc["playbook"]), at=parse_at(str(doc["at"])), days=parse_days(str(doc["days"])),
                       deploy_args=tuple(args), env_file=doc.get("env_file") or None,
                       python=str(doc.get("python") or ""), path=doc.get("path") or None, created_at=float(doc.get("created_at") or 0))
        except (KeyError, AttributeError, TypeError, ValueError) as err:
            raise ConfigError(f"not a fleetctl schedule definition ({err})", file=source) from None


def definition_path(project: Path, name: str) -> Path:
    return project / SCHEDULES_DIR / f"{name}.json"


def save_definition(entry: ScheduleEntry) -> Path:
    path = entry.definition_path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entry.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_definition(project: Path, name: str) -> ScheduleEntry | None:
    path = definition_path(project, name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"cannot read the schedule definition: {err.strerror or err}", file=path) from None
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"not JSON: {err}", file=path) from None
    return ScheduleEntry.from_json(doc, source=path)


def delete_definition(project: Path, name: str) -> bool:
    try:
        definition_path(project, name).unlink()
    except FileNotFoundError:
        return False
    return True


def definitions(project: Path) -> list[ScheduleEntry]:
    folder = project / SCHEDULES_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        entry = load_definition(project, path.stem)
        if entry is not None:
            found.append(entry)
    return found


def refuse_stored_secrets(extra_vars: list[str]) -> None:
    """A schedule's definition is a plain file: a `--var` whose name says secret would be stored in it."""
    for item in extra_vars:
        name = item.split("=", 1)[0].strip()
        if is_secret_name(name):
            raise ConfigError(f"--var {name}=... looks like a secret and would be stored in the schedule's "
                              "definition in clear: read it with env() or file() in the inventory, and give the "
                              "scheduled run its environment with --env-file", key="--var")
