"""Webhooks and run reports around real deploys against the lab: a receiver that works, one that is down, one
slower than the timeout and one answering 500; the deploy's outcome never changes and each failure is reported;
nothing secret reaches the receiver, the output or the history; the run's HTML and JUnit reports."""

from __future__ import annotations

import json
import os
import sqlite3
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.notify.receiver import closed_port_url, receiver

from .conftest import Lab, _start_lab

pytestmark = pytest.mark.lab

SECRET_HEADER = "Bearer n0t1fy-t0ken-42"


@pytest.fixture(scope="module")
def notify_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Three ELF nodes of their own (deploys here change versions other lab tests do not expect)."""
    base = os.environ.get("FLEETCTL_TEST_NOTIFY_BASE", "127.0.57.1")
    yield from _start_lab(tmp_path_factory.mktemp("rollout-notify"), 3, base, "linux")


def with_webhooks(lab: Lab, name: str, hooks: list[dict[str, object]]) -> Path:
    """The lab's playbook plus a notify section."""
    path = lab.playbook.with_name(name)
    text = lab.playbook.read_text() + "\nnotify:\n  webhooks:\n"
    for hook in hooks:
        text += "    - " + json.dumps(hook) + "\n"
    path.write_text(text)
    return path


def deploy(lab: Lab, playbook: Path, *args: str) -> tuple[int, dict[str, Any], str, str, float]:
    started = time.monotonic()
    proc = lab.fleetctl("deploy", str(playbook), "-i", str(lab.inventory), "--yes", "--json", *args)
    took = time.monotonic() - started
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, doc, proc.stdout, proc.stderr, took


def history_bytes(lab: Lab) -> bytes:
    db = lab.directory / ".fleetctl" / "history.db"
    # The WAL holds recent writes; read both.
    return b"".join(p.read_bytes() for p in db.parent.glob("history.db*"))


def test_webhooks_down_slow_and_500_never_change_the_outcome(notify_lab: Lab) -> None:
    lab = notify_lab
    down = closed_port_url()
    with receiver() as ok, receiver(delay=30) as slow, receiver(status=500) as broken:
        playbook = with_webhooks(lab, "hello-notify.yml", [
            {"url": ok.url, "headers": {"Authorization": SECRET_HEADER}},
            {"url": down, "timeout": "2s"},
            {"url": slow.url, "timeout": "2s", "attempts": 1},
            {"url": broken.url, "format": "slack", "timeout": "3s"},
        ])
        code, doc, stdout, stderr, took = deploy(lab, playbook, "--version", "5.0.0")
        assert code == 0, stderr
        assert {h["outcome"] for h in doc["hosts"].values()} == {"deployed"}
        ok.wait_for(2)
        start, success = ok.bodies()
        assert ok.requests[0].headers["Authorization"] == SECRET_HEADER
        assert len(broken.requests) >= 2  # retried
        assert len(slow.requests) == 2  # start and success, one attempt each
    assert start["event"] == "start" and success["event"] == "success"
    assert success["run_id"] == doc["deploy_id"] and success["counts"] == {"deployed": 3}
    assert success["version"] == "5.0.0" and success["service"] == "hello"
    notes = doc["notifications"]
    assert isinstance(notes, list)
    delivered = {(n["webhook"], n["event"]): n["delivered"] for n in notes}
    assert delivered == {(0, "start"): True, (0, "success"): True, (1, "start"): False, (1, "success"): False,
                         (2, "start"): False, (2, "success"): False, (3, "start"): False, (3, "success"): False}
    for index, fmt in ((1, "json"), (2, "json"), (3, "slack")):
        assert f"notify.webhooks[{index}] ({fmt}): 'success' notification not delivered" in stderr, stderr
    assert "HTTP 500" in stderr and "cannot connect" in stderr
    # The run waited at most about one timeout for its notifications (the slow receiver would take 30 s).
    assert max(n["seconds"] for n in notes) < 3.5
    assert took < 60
    # The history keeps how each notification went; `history show` says so.
    shown_run = lab.fleetctl("history", "show", str(doc["deploy_id"]), "--json", check=True).stdout
    kept = {(n["webhook"], n["event"]): n["delivered"] for n in json.loads(shown_run)["notifications"]}
    assert kept == delivered
    shown = stdout + stderr + shown_run
    for secret in (ok.url, down, slow.url, broken.url, "T0K3N", SECRET_HEADER, "n0t1fy-t0ken-42"):
        assert secret not in shown, secret
        assert secret.encode() not in history_bytes(lab), secret


def test_a_halted_canary_notifies_with_the_failed_host_and_reason(notify_lab: Lab) -> None:
    lab = notify_lab
    code, _, err = lab.deploy("--version", "5.0.1")  # a release to roll back to, whatever ran before
    assert code == 0, err
    with receiver() as rec:
        playbook = with_webhooks(lab, "hello-halt.yml", [{"url": rec.url, "events": ["halted", "failure"],
                                                          "format": "json"}])
        code, _, _, stderr, _ = deploy(lab, playbook, "--version", "5.1.0", "--canary", "1",
                                         "--var", "hello_mode=unhealthy")
        assert code == 1, stderr
        rec.wait_for(1)
        [body] = rec.bodies()
    assert body["event"] == "halted" and body["exit_code"] == 1
    [failed] = body["failed_hosts"]
    assert failed["host"] == "lab-node01" and failed["outcome"] == "rolled_back"
    assert "status 500" in failed["reason"]
    assert body["counts"] == {"rolled_back": 1, "not_started": 2}


def test_the_run_report_of_a_real_deploy(notify_lab: Lab, tmp_path: Path) -> None:
    lab = notify_lab
    code, doc, err = lab.deploy("--version", "5.2.0", "--batch", "2")
    assert code == 0, err
    html, junit = tmp_path / "run.html", tmp_path / "run.xml"
    out = lab.fleetctl("history", "show", "last", "--html", str(html), "--junit", str(junit))
    assert out.returncode == 0, out.stderr
    page = html.read_text()
    if os.environ.get("FLEETCTL_KEEP_REPORT"):  # to look at it yourself
        Path(os.environ["FLEETCTL_KEEP_REPORT"]).write_text(page)
    # Every step each host ran is one bar, as the journal recorded it.
    db = sqlite3.connect(lab.directory / ".fleetctl" / "history.db")
    try:
        spans = {h: json.loads(s) for h, s in db.execute("SELECT host, spans FROM hosts WHERE run_id = ?",
                                                         (doc["deploy_id"],))}
    finally:
        db.close()
    steps = [s[0] for host in spans.values() for s in host]
    assert page.count('<rect class="step') == len(steps)
    for host in spans.values():
        names = [s[0] for s in host]
        for wanted in ("lock", "transfer", "install", "stop", "switch", "start", "health", "unlock"):
            assert wanted in names, (wanted, names)
    assert page.count('class="window"') == 2  # two batches ran
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("tests") == "4"
