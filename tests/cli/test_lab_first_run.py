"""First runs against the lab, through the CLI: `lab up --dir` is remembered by later lab commands (and gives the
inventory when none is configured); a command aimed at a stopped lab says so before contacting any host; a wrong
password stops being tried after `fleet_max_auth_failures` hosts (the lab counts every refused logon); and the
run's history is at the project root, found from a subdirectory, filtered by environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.project_support import REPO, tiny_pe

pytestmark = pytest.mark.lab

PLAYBOOK = """\
name: app
artifact:
  version: 1.0.0
  collect: {path: app.exe}
install:
  root: 'C:\\apps\\app'
service:
  name: app
rollout:
  batch: 1
"""


@dataclass
class LabProject:
    root: Path
    lab: Path

    def fleetctl(self, *args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("FLEETCTL_LAB_DIR", "FLEETCTL_INVENTORY", "FLEETCTL_ENVIRONMENT", "FLEETCTL_HISTORY_DB")}
        env.update(PYTHONPATH=str(REPO), COLUMNS="200")
        return subprocess.run([sys.executable, "-m", "fleetctl", *args], cwd=cwd or self.root, capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)

    def counters(self) -> dict[str, dict[str, int]]:
        done = self.fleetctl("lab", "status", "--json")
        assert done.returncode == 0, done.stderr
        return {n["name"]: n["counters"] for n in json.loads(done.stdout)["nodes"]}


def make_lab_project(tmp_path: Path, fleet_yml: str) -> LabProject:
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    (root / "fleet.yml").write_text(fleet_yml)
    (root / "playbook.yml").write_text(PLAYBOOK)
    (root / "app.exe").write_bytes(tiny_pe())
    return LabProject(root=root, lab=tmp_path / "lab")


@pytest.fixture
def remembered(tmp_path: Path) -> Iterator[LabProject]:
    project = make_lab_project(tmp_path, "allow_absolute_paths: [" + str(tmp_path) + "]\n")
    yield project
    project.fleetctl("lab", "down", "--dir", str(project.lab))


def test_lab_dir_is_remembered_and_a_stopped_lab_is_named(remembered: LabProject) -> None:
    project = remembered
    up = project.fleetctl("lab", "up", "--nodes", "2", "--no-wine", "--base", "127.0.23.1", "--dir", str(project.lab))
    assert up.returncode == 0, up.stderr
    assert f"lab dir: {project.lab}" in up.stdout
    assert (project.root / ".fleetctl" / "lab-dir").read_text().strip() == str(project.lab)

    # No --dir: the remembered lab, said on stderr, from the root or a subdirectory of the project.
    status = project.fleetctl("lab", "status", "--json", cwd=project.root / "sub")
    assert status.returncode == 0, status.stderr
    assert f"using the lab in {project.lab} (remembered" in status.stderr
    assert json.loads(status.stdout)["inventory"] == str(project.lab / "inventory.yml")
    # No inventory configured anywhere: the lab's, named.
    ping = project.fleetctl("ping", "--json")
    assert ping.returncode == 0, ping.stderr
    assert f"inventory: {project.lab / 'inventory.yml'} (the lab's" in ping.stderr
    assert sorted(json.loads(ping.stdout)["hosts"]) == ["lab-node01", "lab-node02"]

    down = project.fleetctl("lab", "down")
    assert down.returncode == 0, down.stderr
    assert f"stopped in {project.lab}" in down.stdout
    assert not (project.root / ".fleetctl" / "lab-dir").exists()

    # The lab is down: one line naming it and how to start it, exit 2, before any host is tried.
    expected = f"the lab in {project.lab} is not running (fleetctl lab up --dir {project.lab})"
    inventory = str(project.lab / "inventory.yml")
    for command in (["ping", "-i", inventory], ["status", "playbook.yml", "-i", inventory],
                    ["deploy", "playbook.yml", "-i", inventory, "--yes"]):
        done = project.fleetctl(*command)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert expected in " ".join(done.stderr.split()), (command, done.stderr)
        assert "refused" not in done.stderr and "refused" not in done.stdout
    # A plan contacts no host: it does not care whether the lab runs.
    plan = project.fleetctl("plan", "playbook.yml", "-i", inventory, "--json")
    assert plan.returncode == 0, plan.stderr


NODES = 12
FORKS = 4
BUDGET = 3  # fleet_max_auth_failures' default


@pytest.fixture
def wrong_password(tmp_path: Path) -> Iterator[LabProject]:
    fleet_yml = (f"allow_absolute_paths: [{tmp_path}]\n"
                 "environments:\n"
                 "  wrong: {inventory: wrong.yml, rollout: {canary: 1, batch: 100%, max_failed: 100%}}\n"
                 "  right: {}\n")
    project = make_lab_project(tmp_path, fleet_yml)
    up = project.fleetctl("lab", "up", "--nodes", str(NODES), "--no-wine", "--base", "127.0.24.1", "--dir",
                          str(project.lab))
    assert up.returncode == 0, up.stderr
    # The lab's own inventory with a wrong password (its `# fleetctl lab:` line stays: the lab is running).
    text = (project.lab / "inventory.yml").read_text()
    lines = [("        fleet_password: not-the-lab-password" if "fleet_password:" in line else line)
             for line in text.splitlines()]
    (project.root / "wrong.yml").write_text("\n".join(lines) + "\n")
    yield project
    project.fleetctl("lab", "down", "--dir", str(project.lab))


def _refused(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, int]:
    return {n: after[n]["logons_refused"] - before[n]["logons_refused"] for n in after
            if after[n]["logons_refused"] > before[n]["logons_refused"]}


def test_wrong_password_is_tried_on_a_few_hosts_only(wrong_password: LabProject) -> None:
    project = wrong_password
    start = project.counters()

    ping = project.fleetctl("ping", "-i", "wrong.yml", "-f", str(FORKS), "--json")
    assert ping.returncode == 1
    hosts = json.loads(ping.stdout)["hosts"]
    not_tried = [h for h, r in hosts.items() if "not tried: 3 hosts failed authentication" in (r["error"] or "")]
    failed_auth = [h for h, r in hosts.items() if "authentication failed" in (r["error"] or "")]
    assert len(failed_auth) + len(not_tried) == NODES
    assert BUDGET <= len(failed_auth) <= BUDGET + FORKS - 1  # at most the hosts already connecting
    assert "(account lockout policy" in hosts[not_tried[0]]["error"]
    after_ping = project.counters()
    refused = _refused(start, after_ping)
    assert BUDGET <= len(refused) <= BUDGET + FORKS - 1, refused
    assert sum(refused.values()) <= BUDGET + FORKS - 1, refused
    assert "not-the-lab-password" not in ping.stdout + ping.stderr

    # deploy, in the environment whose inventory has the wrong password: it locks every host first.
    deploy = project.fleetctl("deploy", "playbook.yml", "-E", "wrong", "-f", str(FORKS), "--yes", "--json")
    assert deploy.returncode != 0
    assert "not tried: 3 hosts failed authentication" in deploy.stdout
    refused = _refused(after_ping, project.counters())
    assert BUDGET <= len(refused) <= BUDGET + FORKS - 1, refused
    assert sum(refused.values()) <= BUDGET + FORKS - 1, refused

    # The right password is untouched by the budget (another command, and it authenticates).
    ping = project.fleetctl("ping", "-E", "right", "-i", str(project.lab / "inventory.yml"), "--json")
    assert ping.returncode == 0, ping.stderr

    # The deploy's history is at the project root: found from a subdirectory, and by its environment.
    assert (project.root / ".fleetctl" / "history.db").is_file()
    history = project.fleetctl("history", "--json", cwd=project.root / "sub")
    assert history.returncode == 0, history.stderr
    runs = json.loads(history.stdout)["runs"]
    assert len(runs) == 1 and runs[0]["inputs"]["environment"] == "wrong"
    assert json.loads(project.fleetctl("history", "-E", "wrong", "--json", cwd=project.root / "sub").stdout)["runs"]
    assert json.loads(project.fleetctl("history", "-E", "right", "--json").stdout)["runs"] == []
