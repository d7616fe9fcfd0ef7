"""Schedule entries: --at/--days parsing (bad values are exit-2 errors naming the option), names, definitions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleetctl.errors import ConfigError
from fleetctl.schedule.entry import (
    ScheduleEntry,
    TimeOfDay,
    days_text,
    default_name,
    definitions,
    delete_definition,
    load_definition,
    parse_at,
    parse_days,
    refuse_stored_secrets,
    save_definition,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text,expected", [("02:00", (2, 0)), ("2:05", (2, 5)), ("23:59", (23, 59)),
                                           (" 00:00 ", (0, 0))])
def test_at_accepts_24_hour_times(text: str, expected: tuple[int, int]) -> None:
    assert parse_at(text) == TimeOfDay(*expected)


@pytest.mark.parametrize("text", ["24:00", "02:60", "2am", "0200", "02:00:00", "", "-1:00", "02:5"])
def test_at_refuses_anything_else(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_at(text)
    assert caught.value.key == "--at" and "HH:MM" in str(caught.value)


@pytest.mark.parametrize("text,expected", [
    (None, (0, 1, 2, 3, 4, 5, 6)), ("daily", (0, 1, 2, 3, 4, 5, 6)), ("mon-fri", (0, 1, 2, 3, 4)),
    ("weekdays", (0, 1, 2, 3, 4)), ("sat,sun", (5, 6)), ("weekends", (5, 6)), ("Mon,Wed,Fri", (0, 2, 4)),
    ("fri-mon", (0, 4, 5, 6)), ("tuesday", (1,)), ("mon-wed,sat", (0, 1, 2, 5)), ("sun", (6,)),
])
def test_days(text: str | None, expected: tuple[int, ...]) -> None:
    assert parse_days(text) == expected


@pytest.mark.parametrize("text", ["mon-fry", "monday-", "1-5", "mo", "every day", "mon--fri", "mon-tue-wed"])
def test_bad_days_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_days(text)
    assert caught.value.key == "--days" and repr(text) in str(caught.value)


@pytest.mark.parametrize("days,text", [((0, 1, 2, 3, 4, 5, 6), "daily"), ((0, 1, 2, 3, 4), "mon-fri"),
                                       ((5, 6), "sat,sun"), ((0, 2, 4), "mon,wed,fri"), ((0, 1, 2, 5), "mon-wed,sat")])
def test_days_text_reads_back(days: tuple[int, ...], text: str) -> None:
    assert days_text(days) == text
    assert parse_days(text) == days


def test_default_name_skips_generic_file_names(tmp_path: Path) -> None:
    (tmp_path / "playbooks" / "orders-api").mkdir(parents=True)
    (tmp_path / "playbooks" / "orders-api" / "playbook.yml").write_text("")
    assert default_name(str(tmp_path / "playbooks/orders-api/playbook.yml")) == "orders-api"
    assert default_name("playbooks/billing.yml") == "billing"
    assert default_name("weird name!.yml") == "weird-name"


def test_a_secret_looking_var_is_never_stored() -> None:
    refuse_stored_secrets(["window=2s", "hello_mode=ok"])
    with pytest.raises(ConfigError) as caught:
        refuse_stored_secrets(["db_password=hunter22"])
    assert caught.value.key == "--var" and "hunter22" not in str(caught.value)


def test_definitions_round_trip(tmp_path: Path) -> None:
    entry = ScheduleEntry(name="hello", project=tmp_path, playbook="p.yml", at=parse_at("02:30"),
                          days=parse_days("mon-fri"), deploy_args=("-i", "inv", "--canary", "1"),
                          env_file="secrets.env", python=sys.executable, path="/usr/local/go/bin:/usr/bin")
    save_definition(entry)
    assert load_definition(tmp_path, "hello") == entry
    assert [d.name for d in definitions(tmp_path)] == ["hello"]
    assert entry.deploy_argv("RUN") == ["deploy", "p.yml", "-i", "inv", "--canary", "1", "--unattended",
                                        "--schedule", "hello", "--run-id", "RUN"]
    assert delete_definition(tmp_path, "hello") and load_definition(tmp_path, "hello") is None


def test_a_damaged_definition_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / ".fleetctl" / "schedules"
    folder.mkdir(parents=True)
    (folder / "x.json").write_text(json.dumps({"format": 1, "name": "x"}))
    with pytest.raises(ConfigError) as caught:
        load_definition(tmp_path, "x")
    assert "x.json" in str(caught.value)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetctl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_install_refuses_bad_at_and_days_with_exit_2_and_installs_nothing(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text("name: x\n")
    for args in (["--at", "25:00"], ["--at", "02:00", "--days", "mon-fry"]):
        proc = run_cli("schedule", "install", "p.yml", *args, "--scheduler", "cron", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert ("--at" if "25:00" in args else "--days") in proc.stderr
    assert not (tmp_path / ".fleetctl").exists()
