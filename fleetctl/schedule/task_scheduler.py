"""Schedule entries on a Windows controller: one Task Scheduler task per entry, `\\fleetctl\\schedules\\<name>`,
registered from generated task XML with `schtasks.exe /Create /XML FILE /F` (which updates an existing task).

The XML (Task Scheduler schema 1.2, Windows 7 / Server 2008 R2 and later) runs the controller's python with
`-m fleetctl schedule run NAME` in the project directory, as the user who installed it, whether or not that user
is logged on (S4U: no password is stored; fleetctl authenticates to the nodes with the inventory's credentials).
It is marked with `Source` = `fleetctl` and a JSON `Documentation` holding the name and project; a second start
while a run is going is ignored (`IgnoreNew`), on top of `schedule run`'s own lock.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from xml.etree import ElementTree as ET

from fleetctl.errors import ConfigError
from fleetctl.protocol.cmdline import join_command_line
from fleetctl.schedule.backend import InstalledEntry, SchedulerKind, reject_newlines, run_argv
from fleetctl.schedule.entry import ScheduleEntry

NAMESPACE = "http://schemas.microsoft.com/windows/2004/02/mit/task"
TASK_FOLDER = "\\fleetctl\\schedules\\"
SOURCE = "fleetctl"
_WINDOWS_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
EXECUTION_TIME_LIMIT = "PT12H"


def task_path(name: str) -> str:
    return TASK_FOLDER + name


def current_user() -> str:
    domain = os.environ.get("USERDOMAIN")
    user = os.environ.get("USERNAME") or getpass.getuser()
    return f"{domain}\\{user}" if domain else user


def render_task_xml(entry: ScheduleEntry, *, user: str | None = None) -> str:
    """The task definition. Values are XML-escaped by ElementTree; the action's arguments are one Windows
    command line from the one quoting function (no cmd.exe is involved)."""
    project = reject_newlines(str(entry.project), "project directory")
    ET.register_namespace("", NAMESPACE)

    def sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
        element = ET.SubElement(parent, f"{{{NAMESPACE}}}{tag}")
        if text is not None:
            element.text = text
        return element

    task = ET.Element(f"{{{NAMESPACE}}}Task", {"version": "1.2"})
    info = sub(task, "RegistrationInfo")
    sub(info, "Source", SOURCE)
    sub(info, "Description", f"fleetctl scheduled deploy {entry.name} ({entry.playbook})")
    sub(info, "Documentation", json.dumps({"name": entry.name, "project": project}))
    sub(info, "URI", task_path(entry.name))

    triggers = sub(task, "Triggers")
    calendar = sub(triggers, "CalendarTrigger")
    # A StartBoundary in the past starts the schedule at once; the date part only anchors the time of day.
    sub(calendar, "StartBoundary", f"2000-01-01T{entry.at.hour:02d}:{entry.at.minute:02d}:00")
    sub(calendar, "Enabled", "true")
    if len(entry.days) == 7:
        sub(sub(calendar, "ScheduleByDay"), "DaysInterval", "1")
    else:
        weekly = sub(calendar, "ScheduleByWeek")
        days = sub(weekly, "DaysOfWeek")
        for day in entry.days:
            sub(days, _WINDOWS_DAYS[day])
        sub(weekly, "WeeksInterval", "1")

    principal = sub(sub(task, "Principals"), "Principal", None)
    principal.set("id", "Author")
    sub(principal, "UserId", user or current_user())
    sub(principal, "LogonType", "S4U")
    sub(principal, "RunLevel", "LeastPrivilege")

    settings = sub(task, "Settings")
    sub(settings, "MultipleInstancesPolicy", "IgnoreNew")
    sub(settings, "DisallowStartIfOnBatteries", "false")
    sub(settings, "StopIfGoingOnBatteries", "false")
    sub(settings, "AllowHardTerminate", "true")
    sub(settings, "StartWhenAvailable", "false")
    sub(settings, "RunOnlyIfNetworkAvailable", "false")
    sub(settings, "AllowStartOnDemand", "true")
    sub(settings, "Enabled", "true")
    sub(settings, "Hidden", "false")
    sub(settings, "ExecutionTimeLimit", EXECUTION_TIME_LIMIT)

    actions = sub(task, "Actions")
    actions.set("Context", "Author")
    exe = sub(actions, "Exec")
    argv = run_argv(entry)
    sub(exe, "Command", argv[0])
    sub(exe, "Arguments", join_command_line(argv[1:]))
    sub(exe, "WorkingDirectory", project)
    ET.indent(task)
    return '<?xml version="1.0" encoding="UTF-16"?>\n' + ET.tostring(task, encoding="unicode") + "\n"


def parse_task_xml(text: str, location: str) -> InstalledEntry | None:
    """fleetctl's entry in a task's XML, or None when the task is not one of ours."""
    try:
        root = ET.fromstring(text.encode("utf-16") if text.startswith("<?xml") and "UTF-16" in text[:60]
                             else text)
    except ET.ParseError:
        return None
    ns = {"t": NAMESPACE}
    if root.findtext("t:RegistrationInfo/t:Source", namespaces=ns) != SOURCE:
        return None
    try:
        marks = json.loads(root.findtext("t:RegistrationInfo/t:Documentation", default="", namespaces=ns))
    except ValueError:
        return None
    start = root.findtext("t:Triggers/t:CalendarTrigger/t:StartBoundary", default="", namespaces=ns)
    days = [d.tag.split("}")[1][:3] for d in root.findall(
        "t:Triggers/t:CalendarTrigger/t:ScheduleByWeek/t:DaysOfWeek/*", ns)]
    when = f"{','.join(days) or 'daily'} at {start[11:16]}"
    return InstalledEntry(name=str(marks.get("name")), project=Path(str(marks.get("project"))), when=when,
                          location=location)


class TaskScheduler:
    kind: SchedulerKind = "task-scheduler"

    def _schtasks(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = shutil.which("schtasks") or shutil.which("schtasks.exe")
        if exe is None:
            raise ConfigError("Task Scheduler (schtasks.exe) is only on Windows; on this controller use "
                              "--scheduler cron or systemd, or --dry-run to see the task XML", key="--scheduler")
        done = subprocess.run([exe, *args], capture_output=True, text=True, check=False, timeout=60)
        if check and done.returncode != 0:
            raise ConfigError(f"schtasks {args[0]} failed: {(done.stderr or done.stdout).strip()}", key="--scheduler")
        return done

    def render(self, entry: ScheduleEntry) -> dict[str, str]:
        return {task_path(entry.name): render_task_xml(entry)}

    def install(self, entry: ScheduleEntry) -> str:
        xml = render_task_xml(entry)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{entry.name}.xml"
            path.write_text(xml, encoding="utf-16")  # with a BOM, as schtasks /XML expects for UTF-16
            self._schtasks("/Create", "/TN", task_path(entry.name), "/XML", str(path), "/F")
        return task_path(entry.name)

    def _xml(self, path: str) -> str | None:
        done = self._schtasks("/Query", "/TN", path, "/XML", check=False)
        return done.stdout if done.returncode == 0 else None

    def remove(self, name: str) -> bool:
        xml = self._xml(task_path(name))
        if xml is None or parse_task_xml(xml, task_path(name)) is None:
            return False
        self._schtasks("/Delete", "/TN", task_path(name), "/F")
        return True

    def warnings(self) -> list[str]:
        return []

    def installed(self) -> list[InstalledEntry]:
        done = self._schtasks("/Query", "/FO", "CSV", "/NH", check=False)
        found = []
        for line in done.stdout.splitlines():
            path = line.split(",", 1)[0].strip('"')
            if path.startswith(TASK_FOLDER):
                xml = self._xml(path)
                entry = parse_task_xml(xml, path) if xml else None
                if entry is not None:
                    found.append(entry)
        return found
