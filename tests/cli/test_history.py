"""`fleetctl history` over a journal written by synthetic events: list, filter, show, JSON, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetctl.rollout.events import (
    EventBus,
    HostFinished,
    HostOutcome,
    HostStepStarted,
    RunFinished,
    RunStarted,
)
from fleetctl.state.journal import Journal

REPO = Path(__file__).resolve().parents[2]


def fleetctl(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    full.pop("FLEETCTL_HISTORY_DB", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "fleetctl", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=60, env=full)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory whose .fleetctl/history.db holds two finished runs and one still running."""
    journal = Journal(tmp_path / ".fleetctl" / "history.db")
    bus = EventBus()
    journal.subscribe(bus)
    bus.emit(RunStarted("20260101T000000Z-aaaaaa", "deploy", "playbooks/web.yml", "web", "1.0", "1.0-x", "rolling",
                        "alice@ci", (("w1",), ("w2", "w3")), True))
    bus.emit(HostFinished(HostOutcome("w1", "deployed", "1.0-x", None, {"transfer": 2.0, "health": 4.5})))
    bus.emit(HostFinished(HostOutcome("w2", "failed", None, "health: status [500]", {"health": 9.0})))
    bus.emit(RunFinished("20260101T000000Z-aaaaaa", 1, {
        "w1": HostOutcome("w1", "deployed", "1.0-x"), "w2": HostOutcome("w2", "rolled_back", "0.9-x", "health: status [500]"),
        "w3": HostOutcome("w3", "not_started")}, "1 host rolled back"))
    bus.emit(RunStarted("20260102T000000Z-bbbbbb", "rollback", "playbooks/api.yml", "api", None, None, "rolling",
                        "bob@laptop", (("a1",),), False))
    bus.emit(RunFinished("20260102T000000Z-bbbbbb", 0, {"a1": HostOutcome("a1", "deployed", "0.9-y")}))
    bus.emit(RunStarted("20260103T000000Z-cccccc", "deploy", "playbooks/web.yml", "web", "1.1", None, "rolling",
                        "alice@ci", (("w1", "w2"),), False))
    bus.emit(HostStepStarted("w1", "transfer"))
    journal.close()
    return tmp_path


def test_list_newest_first_with_outcomes(project: Path) -> None:
    out = fleetctl(project, "history")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    order = [i for i, line in enumerate(lines) for rid in ("cccccc", "bbbbbb", "aaaaaa") if rid in line]
    assert len(order) == 3 and order == sorted(order)
    text = out.stdout
    assert "failed (1)" in text and "succeeded (0)" in text
    assert "1 deployed, 1 rolled_back, 1 not_started" in text
    assert "alice@ci" in text and "rollback api" in text


def test_json_and_filter_by_playbook(project: Path) -> None:
    out = fleetctl(project, "history", "playbooks/web.yml", "--json")
    runs = json.loads(out.stdout)["runs"]
    assert [r["id"][-6:] for r in runs] == ["cccccc", "aaaaaa"]
    # This test process wrote the still-running run and is alive: it is running, not interrupted.
    assert runs[0]["status"] == "running" and runs[0]["exit_code"] is None
    assert runs[1]["outcomes"] == {"deployed": 1, "rolled_back": 1, "not_started": 1}
    assert "hosts" not in runs[1]
    by_service = json.loads(fleetctl(project, "history", "api", "--json", "--limit", "5").stdout)["runs"]
    assert [r["kind"] for r in by_service] == ["rollback"]
    limited = json.loads(fleetctl(project, "history", "--json", "-n", "1").stdout)["runs"]
    assert len(limited) == 1


def test_show_one_run_per_host(project: Path) -> None:
    out = fleetctl(project, "history", "show", "20260101T")
    assert out.returncode == 0, out.stderr
    assert "health: status [500]" in out.stdout  # brackets shown as text, not read as markup
    assert "exit code 1" in out.stdout and "1 host rolled back" in out.stdout
    doc = json.loads(fleetctl(project, "history", "show", "20260101T000000Z-aaaaaa", "--json").stdout)
    assert doc["hosts"]["w1"]["timings"] == {"transfer": 2.0, "health": 4.5}
    assert doc["hosts"]["w2"]["outcome"] == "rolled_back" and doc["hosts"]["w3"]["outcome"] == "not_started"


def test_bad_input_exits_2_with_one_clear_line(project: Path) -> None:
    missing = fleetctl(project, "history", "show", "zzz")
    assert missing.returncode == 2 and "no run with id 'zzz'" in missing.stderr
    ambiguous = fleetctl(project, "history", "show", "2026")
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr
    no_id = fleetctl(project, "history", "show")
    assert no_id.returncode == 2 and "RUN_ID" in no_id.stderr


def test_db_option_env_and_empty_history(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    empty = fleetctl(elsewhere, "history")
    assert empty.returncode == 0 and "no runs recorded" in empty.stdout
    assert not (elsewhere / ".fleetctl").exists()  # reading creates nothing
    db = str(project / ".fleetctl" / "history.db")
    assert len(json.loads(fleetctl(elsewhere, "history", "--db", db, "--json").stdout)["runs"]) == 3
    via_env = fleetctl(elsewhere, "history", "--json", env={"FLEETCTL_HISTORY_DB": db})
    assert len(json.loads(via_env.stdout)["runs"]) == 3


def test_show_last_writes_html_and_junit(project: Path) -> None:
    out = fleetctl(project, "history", "show", "last", "--html", "run.html", "--junit", "run.xml")
    assert out.returncode == 0, out.stderr
    assert "20260103T000000Z-cccccc" in out.stdout  # the newest run
    assert "wrote HTML report run.html" in out.stdout and "wrote JUnit report run.xml" in out.stdout
    page = (project / "run.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "20260103T000000Z-cccccc" in page
    assert "<testsuites" in (project / "run.xml").read_text()
    # --json keeps stdout one document; the paths go to stderr
    out = fleetctl(project, "history", "show", "20260101", "--json", "--junit", "first.xml")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["id"] == "20260101T000000Z-aaaaaa"
    assert "first.xml" in out.stderr and (project / "first.xml").is_file()


def test_report_options_bad_input(project: Path, tmp_path: Path) -> None:
    out = fleetctl(project, "history", "--html", "x.html")
    assert out.returncode == 2 and "history show RUN_ID|last --html FILE" in out.stderr
    out = fleetctl(project, "history", "show", "last", "--html", "no/such/dir/x.html")
    assert out.returncode == 2 and "does not exist" in out.stderr
    assert not list(project.glob("**/x.html"))
    empty = tmp_path / "empty"
    empty.mkdir()
    out = fleetctl(empty, "history", "show", "last", "--html", "x.html")
    assert out.returncode == 2 and "no run recorded yet" in out.stderr
    assert not (empty / "x.html").exists()
