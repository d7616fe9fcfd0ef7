"""Crontab editing is a pure function over the table's text: other lines are kept byte for byte, an entry is
updated in place, and remove gives back exactly what was there. The job line survives /bin/sh and cron's `%`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetctl.errors import ConfigError
from fleetctl.schedule.cron import (
    cron_days,
    cron_quote,
    entry_lines,
    parse_entries,
    with_entry,
    without_entry,
)
from fleetctl.schedule.entry import ScheduleEntry, parse_at, parse_days


def entry(name: str = "hello", project: str = "/srv/fleet", at: str = "02:00", days: str | None = None) -> ScheduleEntry:
    return ScheduleEntry(name=name, project=Path(project), playbook="p.yml", at=parse_at(at), days=parse_days(days),
                         python="/opt/fleetctl/.venv/bin/python")


@pytest.mark.parametrize("days,field", [("daily", "*"), ("mon-fri", "1-5"), ("sat,sun", "0,6"), ("sun", "0"),
                                        ("fri-mon", "0-1,5-6"), ("mon,wed,fri", "1,3,5")])
def test_weekday_field_counts_sunday_as_zero(days: str, field: str) -> None:
    assert cron_days(parse_days(days)) == field


def test_entry_lines() -> None:
    marker, job = entry_lines(entry(at="02:30", days="mon-fri"))
    assert marker == '# fleetctl-schedule {"name": "hello", "project": "/srv/fleet"}'
    assert job == "30 2 * * 1-5 cd /srv/fleet && exec /opt/fleetctl/.venv/bin/python -m fleetctl schedule run hello"


OWN = "# m h dom mon dow command\nMAILTO=ops@example.com\n*/5 * * * * /usr/local/bin/poll % 100\n"
lines = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c"
                                                "\x1c\x1d\x1e\x85\u2028\u2029"), max_size=40), max_size=8)


@settings(max_examples=200, deadline=None)
@given(lines, st.booleans())
def test_install_then_remove_gives_the_table_back_byte_for_byte(own: list[str], newline_at_end: bool) -> None:
    text = "\n".join(own) + ("\n" if newline_at_end and own else "")
    installed = with_entry(text, entry())
    assert [e.name for e in parse_entries(installed, "t") if e.name == "hello"] == ["hello"]
    removed, found = without_entry(installed, "hello")
    assert found
    # cron ignores a last line without a newline, so one is added before ours; everything else is as it was
    assert removed == (text if not text or text.endswith("\n") else text + "\n")


def test_install_of_an_existing_entry_updates_it_in_place() -> None:
    first = with_entry(OWN, entry(at="02:00"))
    second = with_entry(first + "0 4 * * * /bin/true after\n", entry(at="03:15"))
    assert second.startswith(OWN)
    assert second.count("schedule run hello") == 1 and "15 3 * * *" in second
    assert second.endswith("0 4 * * * /bin/true after\n")  # its place in the table is kept
    assert [e.when for e in parse_entries(second, "t")] == ["15 3 * * *"]


def test_only_fleetctls_own_entries_are_listed_or_removed() -> None:
    foreign = OWN + "# fleetctl-schedule not json\n0 1 * * * fleetctl schedule run other\n"
    table = with_entry(with_entry(foreign, entry("a")), entry("b"))
    assert [e.name for e in parse_entries(table, "t")] == ["a", "b"]
    after, found = without_entry(table, "other")
    assert not found and after == table
    after, found = without_entry(table, "a")
    assert found and after == with_entry(foreign, entry("b"))


def test_a_marker_whose_job_line_was_deleted_removes_only_itself() -> None:
    table = OWN + entry_lines(entry())[0] + "\n" + "0 9 * * * /bin/true keep me\n"
    after, found = without_entry(table, "hello")
    assert found and after == OWN + "0 9 * * * /bin/true keep me\n"


def as_cron_runs(command: str) -> str:
    """What cron hands /bin/sh (crontab(5)): an unescaped % ends the command, a backslash before % is dropped."""
    out, escaped = [], False
    for ch in command:
        if escaped:
            if ch != "%":
                out.append("\\")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            break
        else:
            out.append(ch)
    return "".join(out) + ("\\" if escaped else "")


@pytest.mark.parametrize("value", ["/srv/fleet", "/srv/my fleet", "/srv/100%", "/srv/'q'", '/srv/"dq"', "/srv/$HOME",
                                   "/srv/`id`", "/srv/a;b&c|d", "/srv/back\\slash", "/srv/%%x%", "/srv/ünï", ""])
def test_quoted_arguments_reach_the_program_unchanged(value: str) -> None:
    command = "printf '%s\\n' " + cron_quote(value)
    command = command.replace("'%s\\n'", "'\\%s\\n'")  # the test's own % is escaped the same way
    done = subprocess.run(["/bin/sh", "-c", as_cron_runs(command)], capture_output=True, text=True, check=True)
    assert done.stdout == value + "\n"


def test_a_line_break_cannot_go_into_a_crontab() -> None:
    with pytest.raises(ConfigError):
        entry_lines(entry(project="/srv/a\nb"))


def test_the_job_line_runs_schedule_run_in_the_project(tmp_path: Path) -> None:
    project = tmp_path / "my 100% project"
    project.mkdir()
    job = entry_lines(entry(project=str(project)))[1].split(" ", 5)[5]
    job = job.replace("/opt/fleetctl/.venv/bin/python -m fleetctl", f"{sys.executable} -c 'import os,sys; "
                      "print(os.getcwd(), sys.argv[1:])'")
    done = subprocess.run(["/bin/sh", "-c", as_cron_runs(job)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"{project} ['schedule', 'run', 'hello']"


def test_install_warns_when_no_cron_daemon_runs(tmp_path: Path) -> None:
    from fleetctl.schedule.cron import cron_daemon_running

    pidfile = tmp_path / "crond.pid"
    assert not cron_daemon_running(pidfile)
    pidfile.write_text("999999999\n")
    assert not cron_daemon_running(pidfile)  # a stale pid file
    pidfile.write_text(f"{os.getpid()}\n")
    assert cron_daemon_running(pidfile)
