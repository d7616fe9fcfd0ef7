"""The Task Scheduler definition a Windows controller registers (schtasks /Create /XML): schema 1.2 elements in
the Task Scheduler namespace, the trigger for the entry's days and time, and an action whose command line gives
`schedule run NAME` back to the program unchanged."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from fleetctl.protocol.cmdline import split_command_line
from fleetctl.schedule.entry import ScheduleEntry, parse_at, parse_days
from fleetctl.schedule.task_scheduler import NAMESPACE, parse_task_xml, render_task_xml

NS = {"t": NAMESPACE}


def entry(days: str | None = "mon-fri", project: str = "C:\\fleet\\my project") -> ScheduleEntry:
    return ScheduleEntry(name="hello", project=Path(project), playbook="playbooks\\hello.yml", at=parse_at("02:30"),
                         days=parse_days(days), python="C:\\Program Files\\Python312\\python.exe")


def parsed(xml: str) -> ET.Element:
    assert xml.startswith('<?xml version="1.0" encoding="UTF-16"?>')
    return ET.fromstring(xml.encode("utf-16"))  # as schtasks reads the file: UTF-16 with a BOM


def test_weekly_trigger_and_action() -> None:
    root = parsed(render_task_xml(entry(), user="CORP\\deploy"))
    assert root.tag == f"{{{NAMESPACE}}}Task" and root.get("version") == "1.2"
    assert [c.tag.split("}")[1] for c in root] == ["RegistrationInfo", "Triggers", "Principals", "Settings", "Actions"]
    trigger = root.find("t:Triggers/t:CalendarTrigger", NS)
    assert trigger is not None
    assert trigger.findtext("t:StartBoundary", namespaces=NS) == "2000-01-01T02:30:00"
    days = [d.tag.split("}")[1] for d in trigger.findall("t:ScheduleByWeek/t:DaysOfWeek/*", NS)]
    assert days == ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
    assert trigger.findtext("t:ScheduleByWeek/t:WeeksInterval", namespaces=NS) == "1"
    assert root.findtext("t:Principals/t:Principal/t:UserId", namespaces=NS) == "CORP\\deploy"
    assert root.findtext("t:Principals/t:Principal/t:LogonType", namespaces=NS) == "S4U"
    assert root.findtext("t:Settings/t:MultipleInstancesPolicy", namespaces=NS) == "IgnoreNew"
    exe = root.find("t:Actions/t:Exec", NS)
    assert exe is not None
    assert exe.findtext("t:Command", namespaces=NS) == "C:\\Program Files\\Python312\\python.exe"
    assert exe.findtext("t:WorkingDirectory", namespaces=NS) == "C:\\fleet\\my project"
    arguments = exe.findtext("t:Arguments", namespaces=NS) or ""
    assert split_command_line(arguments) == ["-m", "fleetctl", "schedule", "run", "hello"]


def test_daily_trigger() -> None:
    root = parsed(render_task_xml(entry(days=None), user="u"))
    assert root.findtext("t:Triggers/t:CalendarTrigger/t:ScheduleByDay/t:DaysInterval", namespaces=NS) == "1"
    assert root.find("t:Triggers/t:CalendarTrigger/t:ScheduleByWeek", NS) is None


@pytest.mark.parametrize("project", ["C:\\a & b <c> \"d\"", "D:\\100%\\x"])
def test_values_are_escaped_and_read_back_as_fleetctls_own(project: str) -> None:
    xml = render_task_xml(entry(project=project), user="u")
    root = parsed(xml)
    assert root.findtext("t:Actions/t:Exec/t:WorkingDirectory", namespaces=NS) == project
    found = parse_task_xml(xml, "\\fleetctl\\schedules\\hello")
    assert found is not None and found.name == "hello" and str(found.project) == project
    assert found.when == "Mon,Tue,Wed,Thu,Fri at 02:30"


def test_a_task_not_made_by_fleetctl_is_not_ours() -> None:
    xml = render_task_xml(entry(), user="u").replace("<Source>fleetctl</Source>", "<Source>someone</Source>")
    assert parse_task_xml(xml, "x") is None
    assert parse_task_xml("<not xml", "x") is None
