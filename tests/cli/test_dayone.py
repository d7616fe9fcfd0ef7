"""The day-one commands through the CLI against a lab of three ELF nodes (marked lab): `releases` (kept, current,
previous, failed, grouped), multi-host `logs` (prefixed, --grep, -f with a line written after the start shown
exactly once, Ctrl-C), `restart` (gated; a failing gate halts, the release unchanged) and `exec`'s lab message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_status import REPO, fleetctl, linux_playbook
from tests.support import wait_for

LAB_BASE = os.environ.get("FLEETCTL_TEST_DAYONE_BASE", "127.0.67.1")
NODES = ("lab-node01", "lab-node02", "lab-node03")
pytestmark = pytest.mark.lab


class DayOneLab:
    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.inventory = cwd / "lab" / "inventory.yml"
        self.playbook = linux_playbook(cwd)

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return fleetctl(self.cwd, *args, timeout=timeout)

    def on(self, command: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """A playbook command on this lab: `fleetctl COMMAND PLAYBOOK -i INVENTORY ARGS...`."""
        return self.run(command, str(self.playbook), "-i", str(self.inventory), *args, timeout=timeout)

    def address(self, node: str) -> str:
        base = LAB_BASE.rsplit(".", 1)
        return f"{base[0]}.{int(base[1]) + NODES.index(node)}"

    def request(self, node: str, path: str) -> None:
        """A request the hello service logs (`... GET /path`), whatever it answers."""
        try:
            urllib.request.urlopen(f"http://{self.address(node)}:8080{path}", timeout=5).close()
        except urllib.error.HTTPError:
            pass

    def fault(self, node: str, fault: str) -> None:
        done = self.run("lab", "fault", "--dir", str(self.cwd / "lab"), node, fault)
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DayOneLab]:
    """Three ELF lab nodes: 1.0.0 everywhere, then 2.0.0 on lab-node01."""
    cwd = tmp_path_factory.mktemp("dayone")
    up = fleetctl(cwd, "lab", "up", "--nodes", "3", "--base", LAB_BASE, "--dir", str(cwd / "lab"), "--no-wine")
    assert up.returncode == 0, up.stderr
    try:
        lab = DayOneLab(cwd)
        for version, limit in (("1.0.0", []), ("2.0.0", ["-l", "lab-node01"])):
            deploy = lab.on("deploy", "--yes", "--json", "--version", version, *limit)
            assert deploy.returncode == 0, deploy.stderr
        yield lab
    finally:
        fleetctl(cwd, "lab", "down", "--dir", str(cwd / "lab"), timeout=120)


def test_releases_groups_hosts_and_marks_current_previous_and_failed(lab: DayOneLab) -> None:
    first = lab.on("releases", "--json")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["groups"] == [{"hosts": ["lab-node01"], "versions": ["1.0.0", "2.0.0"]},
                             {"hosts": ["lab-node02", "lab-node03"], "versions": ["1.0.0"]}]
    one = {r["version"]: r for r in doc["hosts"]["lab-node01"]["releases"]}
    assert one["2.0.0"]["current"] and not one["2.0.0"]["previous"] and one["1.0.0"]["previous"]
    assert one["1.0.0"]["installed_at"] and one["2.0.0"]["release"].startswith("2.0.0-")
    table = lab.on("releases")
    assert table.returncode == 0, table.stderr
    assert "2 group(s)" in table.stdout and "lab-node02, lab-node03 (2)" in table.stdout, table.stdout

    # A release that fails its gate on lab-node03 is rolled back there and stays kept, marked failed.
    failing = lab.on("deploy", "--yes", "--json", "--version", "3.0.0", "-l", "lab-node03",
                     "--var", "hello_mode=unhealthy")
    assert failing.returncode == 1, failing.stderr
    doc = json.loads(lab.on("releases", "--json").stdout)
    three = {r["version"]: r for r in doc["hosts"]["lab-node03"]["releases"]}
    assert three["1.0.0"]["current"] and "status 500" in (three["3.0.0"]["failed"] or ""), three
    assert not three["3.0.0"]["current"] and three["1.0.0"]["failed"] is None
    assert [g["hosts"] for g in doc["groups"]] == [["lab-node01"], ["lab-node02"], ["lab-node03"]]
    table = lab.on("releases")
    assert "3 group(s)" in table.stdout and "lab-node03: 3.0.0 failed" in table.stdout, table.stdout


def test_logs_across_hosts_prefix_each_line_and_grep_filters(lab: DayOneLab) -> None:
    lab.request("lab-node02", "/dayone-grep-marker")
    shown = lab.on("logs", "-l", "lab-node01:lab-node02", "-n", "5")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines and all(line.startswith(("lab-node01 | ", "lab-node02 | ")) for line in lines), lines
    assert {line.split(" | ")[0] for line in lines} == {"lab-node01", "lab-node02"}
    assert "\x1b[" not in shown.stdout  # piped: plain text, no colours

    grep = lab.on("logs", "-l", "all", "-n", "200", "--grep", r"dayone-grep-mark(er|ed)", "--json")
    assert grep.returncode == 0, grep.stderr
    hosts = json.loads(grep.stdout)["hosts"]
    assert [len(hosts[n]["lines"]) for n in NODES] == [0, 1, 0]
    assert hosts["lab-node02"]["lines"][0].endswith("GET /dayone-grep-marker")

    bad = lab.on("logs", "-l", "all", "--grep", "(unclosed")
    assert bad.returncode == 2 and "--grep" in bad.stderr and "not a valid regular expression" in bad.stderr
    one = lab.on("logs", "--host", "lab-node02", "-n", "1", "--json")  # --host keeps its one-host document
    assert one.returncode == 0 and list(json.loads(one.stdout)) == ["host", "path", "lines"]


def test_logs_follow_shows_a_new_line_once_prefixed_and_ctrl_c_ends_it(lab: DayOneLab) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    env.pop("FLEETCTL_HISTORY_DB", None)
    proc = subprocess.Popen([sys.executable, "-m", "fleetctl", "logs", str(lab.playbook), "-i", str(lab.inventory),
                             "-l", "all", "-f", "-n", "0", "--grep", "dayone-follow"], cwd=lab.cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, into=into: into.extend(iter(s.readline, "")), daemon=True)
               for s, into in ((proc.stdout, out), (proc.stderr, err))]
    for reader in readers:
        reader.start()
    try:
        wait_for(lambda: any("following 3 host(s)" in line for line in err), 60, "logs -f to start following")
        lab.request("lab-node01", "/dayone-follow-first")
        lab.request("lab-node03", "/dayone-follow-first")
        wait_for(lambda: sum("dayone-follow-first" in line for line in out) >= 2, 30, "the new lines")
        # A later line read by later polls: had a poll repeated the first lines, they would be here by now.
        lab.request("lab-node01", "/dayone-follow-second")
        wait_for(lambda: any("dayone-follow-second" in line for line in out), 30, "the second line")
        firsts = [line for line in out if "dayone-follow-first" in line]
        assert len(firsts) == 2, out
        assert sorted(line.split(" | ")[0].strip() for line in firsts) == ["lab-node01", "lab-node03"]
        assert all(line.startswith("lab-node0") and " | " in line for line in out)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(timeout=5)
    assert any("stopped following" in line for line in err), err
    assert not any("Traceback" in line for line in err), err


def _outcomes(doc: dict[str, Any]) -> dict[str, str]:
    return {h: v["outcome"] for h, v in doc["hosts"].items()}


def test_restart_is_gated_journalled_and_a_failing_gate_halts_with_the_release_unchanged(lab: DayOneLab) -> None:
    before = json.loads(lab.on("releases", "--json").stdout)["hosts"]
    ok = lab.on("restart", "--yes", "--json", "--batch", "1")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert _outcomes(doc) == dict.fromkeys(NODES, "restarted")
    assert doc["hosts"]["lab-node01"]["release"].startswith("2.0.0-")
    history = json.loads(lab.run("history", "--json", "-n", "1").stdout)["runs"][0]
    assert history["kind"] == "restart" and history["outcomes"] == {"restarted": 3}
    show = json.loads(lab.run("history", "show", "last", "--json").stdout)
    steps = show["hosts"]["lab-node02"]["timings"]
    assert {"stop", "start", "health"} <= set(steps), steps

    lab.fault("lab-node02", "health-failing")
    try:
        failed = lab.on("restart", "--yes", "--json", "--batch", "1")
        assert failed.returncode != 0, failed.stderr
        doc = json.loads(failed.stdout)
        assert _outcomes(doc) == {"lab-node01": "restarted", "lab-node02": "failed", "lab-node03": "not_started"}
        error = doc["hosts"]["lab-node02"]["error"]
        assert "nothing to roll back" in error and "unchanged" in error
        assert "some hosts were restarted, the others not; every host keeps its release" in doc["message"]
        assert "mixed releases" not in doc["message"]
        assert doc["hosts"]["lab-node02"]["release"] == before["lab-node02"]["releases"][-1]["release"]
    finally:
        lab.fault("lab-node02", "none")
    after = json.loads(lab.on("releases", "--json").stdout)["hosts"]
    assert after == before  # a restart changes no release, and marks none failed


def test_exec_in_the_lab_says_it_needs_real_windows(lab: DayOneLab) -> None:
    done = lab.run("exec", "-i", str(lab.inventory), "-l", "all", "--yes", "--", "Get-Service", "hello")
    assert done.returncode == 1
    assert "the lab does not run arbitrary PowerShell: exec needs real Windows hosts" in done.stderr
    assert "Traceback" not in done.stderr
    as_json = lab.run("exec", "-i", str(lab.inventory), "-l", "lab-node01", "--json", "--", "Get-Date")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["hosts"]["lab-node01"]["status"] == "unsupported"
    no_limit = lab.run("exec", "-i", str(lab.inventory), "--", "Get-Date")
    assert no_limit.returncode == 2 and "-l PATTERN" in no_limit.stderr
    unconfirmed = lab.run("exec", "-i", str(lab.inventory), "-l", "all", "--", "Get-Date")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr


def _services(lab: DayOneLab, node: str) -> dict[str, dict[str, Any]]:
    shown = lab.run("lab", "status", "--dir", str(lab.cwd / "lab"), "--json")
    assert shown.returncode == 0, shown.stderr
    nodes = json.loads(shown.stdout)["nodes"]
    found = nodes[node] if isinstance(nodes, dict) else next(n for n in nodes if n["name"] == node)
    return {s["name"]: s for s in found["services"]}


def test_restart_of_a_blue_green_host_restarts_its_live_colour_in_place(lab: DayOneLab) -> None:
    moved = lab.on("deploy", "--yes", "--json", "--strategy", "blue-green", "--version", "4.0.0", "-l", "lab-node03")
    assert moved.returncode == 0, moved.stderr
    before = _services(lab, "lab-node03")
    live = next(name for name in ("hello-blue", "hello-green") if before.get(name, {}).get("state") == "Running")
    kept = json.loads(lab.on("releases", "-l", "lab-node03", "--json").stdout)["hosts"]["lab-node03"]
    assert kept["live"] == live.rsplit("-", 1)[1]
    assert any(r["live"] and r["version"] == "4.0.0" for r in kept["releases"])

    done = lab.on("restart", "--yes", "--json", "-l", "lab-node03")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hosts"]["lab-node03"]["outcome"] == "restarted"
    after = _services(lab, "lab-node03")
    assert after[live]["state"] == "Running" and after[live]["pid"] != before[live]["pid"]
    assert after.get("hello", {}).get("state") != "Running"  # the plain service was not started again
    steps = json.loads(lab.run("history", "show", "last", "--json").stdout)["hosts"]["lab-node03"]["steps"]
    assert any(s["step"] == "stop" and live in (s["detail"] or "") for s in steps), steps
