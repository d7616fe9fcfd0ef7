"""The systemd timer and service of an entry, checked by `systemd-analyze verify` (which needs no running
systemd), and read back as fleetctl's own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fleetctl.schedule.entry import ScheduleEntry, parse_at, parse_days
from fleetctl.schedule.systemd import SystemdScheduler, exec_quote, on_calendar, render_units

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")


def entry(project: Path, days: str | None = "mon-fri", at: str = "02:00") -> ScheduleEntry:
    return ScheduleEntry(name="hello", project=project, playbook="playbooks/hello.yml", at=parse_at(at),
                         days=parse_days(days), python=sys.executable)


def verify(folder: Path, units: dict[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in units.items():
        (folder / name).write_text(text)
    return subprocess.run(["systemd-analyze", "verify", *(str(folder / n) for n in units)], capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("days,expected", [(None, "*-*-* 02:00:00"), ("mon-fri", "Mon..Fri *-*-* 02:00:00"),
                                           ("sat,sun,wed", "Wed,Sat..Sun *-*-* 02:00:00")])
def test_on_calendar(days: str | None, expected: str, tmp_path: Path) -> None:
    assert on_calendar(entry(tmp_path, days)) == expected


@needs_analyze
@pytest.mark.parametrize("days", [None, "mon-fri", "sat,sun,wed"])
def test_generated_units_verify(days: str | None, tmp_path: Path) -> None:
    project = tmp_path / "a project with 100% spaces"
    project.mkdir()
    done = verify(tmp_path, render_units(entry(project, days)))
    assert done.returncode == 0, done.stderr
    assert "fleetctl" not in done.stderr, done.stderr  # no warning about our units either
    calendar = subprocess.run(["systemd-analyze", "calendar", on_calendar(entry(project, days))],
                              capture_output=True, text=True, timeout=30, check=False)
    assert calendar.returncode == 0 and "Next elapse" in calendar.stdout, calendar.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    units = render_units(entry(tmp_path))
    units = {n: t.replace(f"ExecStart={exec_quote(sys.executable)}", "ExecStart=relative/python") for n, t in
             units.items()}
    assert verify(tmp_path, units).returncode != 0  # the check above can fail


def test_exec_quote_keeps_specifiers_and_variables_literal() -> None:
    assert exec_quote("/usr/bin/python3") == "/usr/bin/python3"
    assert exec_quote("/srv/my app/python") == '"/srv/my app/python"'
    assert exec_quote("/srv/100%/$HOME") == "/srv/100%%/$$HOME"
    assert exec_quote('/srv/"q"\\x') == '"/srv/\\"q\\"\\\\x"'


def test_install_list_remove_touch_only_fleetctls_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []
    scheduler = SystemdScheduler(tmp_path, user=True, check_running=lambda: True)
    monkeypatch.setattr(scheduler, "_systemctl", lambda *args: calls.append(args))
    (tmp_path / "fleetctl-foreign.timer").write_text("[Timer]\nOnCalendar=daily\n")  # not marked: not ours
    where = scheduler.install(entry(tmp_path / "proj"))
    assert where.endswith("fleetctl-hello.timer")
    assert calls == [("daemon-reload",), ("enable", "--now", "fleetctl-hello.timer")]
    [listed] = scheduler.installed()
    assert (listed.name, listed.project, listed.when) == ("hello", tmp_path / "proj", "Mon..Fri *-*-* 02:00:00")
    assert not scheduler.remove("foreign") and (tmp_path / "fleetctl-foreign.timer").exists()
    assert scheduler.remove("hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleetctl-foreign.timer"]


def test_install_without_systemd_running_writes_nothing(tmp_path: Path) -> None:
    from fleetctl.errors import ConfigError

    scheduler = SystemdScheduler(tmp_path / "units", user=False, check_running=lambda: False)
    with pytest.raises(ConfigError, match="systemd is not running"):
        scheduler.install(entry(tmp_path))
    assert not (tmp_path / "units").exists()


def test_a_failed_enable_leaves_the_unit_directory_as_it_was(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.errors import ConfigError

    scheduler = SystemdScheduler(tmp_path, user=True, check_running=lambda: True)
    (tmp_path / "fleetctl-hello.service").write_text("[Unit]\nX-FleetctlSchedule=hello\nX-FleetctlProject=/old\n")

    def fail(*args: str) -> None:
        if args[0] == "enable":
            raise ConfigError("enable failed", key="--scheduler")

    monkeypatch.setattr(scheduler, "_systemctl", fail)
    with pytest.raises(ConfigError):
        scheduler.install(entry(tmp_path / "proj"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleetctl-hello.service"]
    assert "X-FleetctlProject=/old" in (tmp_path / "fleetctl-hello.service").read_text()
