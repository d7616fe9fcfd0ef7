"""`service.hosting: nssm` end to end against the lab: a plain console program (no SCM code) deployed through the real
CLI with the bundled nssm.exe, healthy, its output in shared\\logs, and a rollback that restores the NSSM parameters
of the release it returns to. nssm.exe crosses the network once per node (through the artifact cache)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetctl.artifacts.wrapper import NSSM_SHA256, bundled_nssm_path
from tests.support import wait_for

from .conftest import Lab, _start_lab

pytestmark = pytest.mark.lab

CONSOLE_SRC = Path(__file__).resolve().parent / "console"

PLAYBOOK = r"""
name: console
vars:
  greeting: one
  rotate: 1048576
artifact:
  build:
    go:
      dir: SRC
      goos: linux
install:
  root: 'C:\apps\console'
  exe: console.exe
service:
  name: console
  hosting: nssm
  arguments: [--listen, "{{ ansible_host }}:8181", --greeting, "{{ greeting }}"]
  environment:
    CONSOLE_ENV: "with spaces & \"quotes\""
  stop_timeout: 5s
  nssm:
    rotate_bytes: "{{ rotate }}"
    restart_delay: 200ms
firewall:
  - name: console-http
    port: 8181
scheduled_tasks:
  - name: console-nightly
    execute: 'C:\apps\console\current\console.exe'
    arguments: [--greeting, nightly]
    at: "03:00"
health:
  url: "http://{{ ansible_host }}:8181/"
  expect_json:
    greeting: "{{ greeting }}"
  interval: 0.25s
  retries: 20
  stability_window: 1s
rollout:
  batch: 100%
"""


@pytest.fixture(scope="module")
def nssm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not bundled_nssm_path().is_file():
        pytest.fail(f"{bundled_nssm_path()} is missing: scripts/bootstrap fetches it")
    base = os.environ.get("FLEETCTL_TEST_ROLLOUT_NSSM_BASE", "127.0.52.1")
    directory = tmp_path_factory.mktemp("rollout-nssm")
    for lab in _start_lab(directory, 2, base, "linux"):
        playbook = directory / "console.yml"
        playbook.write_text(textwrap.dedent(PLAYBOOK).replace("SRC", str(CONSOLE_SRC)))
        lab.playbook = playbook
        yield lab


def nssm_of(lab: Lab, node: str) -> dict[str, Any]:
    (service,) = [s for s in lab.status()[node]["services"] if s["name"] == "console"]
    assert service["hosting"] == "nssm"
    return dict(service["nssm"])


def test_a_console_program_deploys_under_nssm_and_rolls_back_with_its_parameters(nssm_lab: Lab) -> None:
    lab = nssm_lab
    code, doc, err = lab.deploy("--version", "1.0.0")
    assert code == 0, err
    assert {h["outcome"] for h in doc["hosts"].values()} == {"deployed"}
    first = nssm_of(lab, "lab-node01")
    assert first["Application"] == "C:\\apps\\console\\current\\console.exe"
    assert first["AppDirectory"] == "C:\\apps\\console\\current"
    assert first["AppParameters"] == f"--listen {lab.addresses['lab-node01']}:8181 --greeting one"
    assert first["AppEnvironmentExtra"] == ['CONSOLE_ENV=with spaces & "quotes"']
    assert first["AppStdout"] == first["AppStderr"] == "C:\\apps\\console\\shared\\logs\\console.log"
    assert (first["AppRotateBytes"], first["AppRestartDelay"], first["AppStopMethodConsole"]) == (1048576, 200, 5000)
    node_c = lab.lab_dir / "nodes" / "lab-node01" / "C"
    tool = node_c / "ProgramData" / "fleetctl" / "tools" / NSSM_SHA256 / "nssm.exe"
    assert tool.read_bytes() == bundled_nssm_path().read_bytes()
    log = node_c / "apps" / "console" / "shared" / "logs" / "console.log"
    wait_for(lambda: log.is_file() and 'started greeting=one env=with spaces & "quotes"' in log.read_text(), 5,
             "the program's stdout in shared\\logs")
    logs = lab.fleetctl("logs", str(lab.playbook), "-i", str(lab.inventory), "--host", "lab-node01", "--json",
                        check=True)
    assert any("console 1.0.0 started greeting=one" in line for line in json.loads(logs.stdout)["lines"])
    events = lab.fleetctl("logs", str(lab.playbook), "-i", str(lab.inventory), "--host", "lab-node01", "--events",
                          "--json", check=True)
    shown = json.loads(events.stdout)
    assert shown["source"] == "console" and shown["events"] == [] and "Linux executables write none" in shown["note"]
    stored_once = {n: s["counters"]["artifact_bytes_stored"] for n, s in lab.status().items()}

    code, doc, err = lab.deploy("--version", "1.1.0", "--var", "greeting=two", "--var", "rotate=2097152")
    assert code == 0, err
    second = nssm_of(lab, "lab-node01")
    assert "--greeting two" in second["AppParameters"] and second["AppRotateBytes"] == 2097152
    # Only the new build moved: nssm.exe was already in each node's cache.
    artifact = (lab.directory / "dist" / "console-1.1.0-linux-amd64").stat().st_size
    for node, status in lab.status().items():
        grown = status["counters"]["artifact_bytes_stored"] - stored_once[node]
        assert grown == artifact, (node, grown, artifact)

    proc = lab.fleetctl("rollback", str(lab.playbook), "-i", str(lab.inventory), "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert nssm_of(lab, "lab-node01") == first
    assert nssm_of(lab, "lab-node02")["AppParameters"].endswith("--greeting one")


def test_a_missing_nssm_exe_is_refused_before_anything_changes(nssm_lab: Lab, tmp_path: Path) -> None:
    lab = nssm_lab
    broken = tmp_path / "broken.yml"
    broken.write_text(lab.playbook.read_text().replace("    restart_delay: 200ms\n",
                                                       "    restart_delay: 200ms\n    exe: no-such-nssm.exe\n"))
    proc = lab.fleetctl("deploy", str(broken), "-i", str(lab.inventory), "--yes", "--version", "9.9.9")
    assert proc.returncode == 2, proc.stderr
    assert "service.hosting" in proc.stderr and "nssm.exe" in proc.stderr and "no-such-nssm.exe" in proc.stderr


def test_remove_retires_the_service_and_keeps_files_unless_purged(nssm_lab: Lab) -> None:
    lab = nssm_lab
    code, _, err = lab.deploy("--version", "2.0.0")
    assert code == 0, err
    status = lab.status()["lab-node01"]
    assert "console-http" in status["firewall_rules"] and "console-nightly" in status["scheduled_tasks"]
    base = [str(lab.playbook), "-i", str(lab.inventory), "--json"]

    dry = lab.fleetctl("remove", *base, "--dry-run", check=True)
    steps = json.loads(dry.stdout)["hosts"]["lab-node01"]["changes"]
    assert steps[0] == "remove scheduled task console-nightly (if present)"
    assert "stop (Running) and delete service console" in steps and steps[-1].startswith("keep releases")
    assert any(s["name"] == "console" for s in lab.status()["lab-node01"]["services"])  # nothing changed

    proc = lab.fleetctl("remove", *base, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert {h["outcome"] for h in json.loads(proc.stdout)["hosts"].values()} == {"removed"}
    for node, status in lab.status().items():
        assert not any(s["name"] == "console" for s in status["services"]), node
        assert "console-http" not in status["firewall_rules"] and "console-nightly" not in status["scheduled_tasks"]
    app = lab.lab_dir / "nodes" / "lab-node01" / "C" / "apps" / "console"
    assert not os.path.lexists(app / "current") and any((app / "releases").iterdir())
    assert (app / "shared" / "logs" / "console.log").is_file()
    with pytest.raises(OSError):  # nothing answers on the service's port any more
        socket.create_connection((lab.addresses["lab-node01"], 8181), timeout=2).close()

    again = lab.fleetctl("remove", *base, "--yes")
    assert {h["outcome"] for h in json.loads(again.stdout)["hosts"].values()} == {"skipped"}
    purged = lab.fleetctl("remove", *base, "--yes", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not app.exists()
    assert not (lab.lab_dir / "nodes" / "lab-node01" / "C" / "ProgramData" / "fleetctl" / "apps" / "console").exists()
    db = sqlite3.connect(lab.directory / ".fleetctl" / "history.db")
    try:
        kinds = [k for (k,) in db.execute("SELECT kind FROM runs ORDER BY started_at")]
    finally:
        db.close()
    assert kinds[-3:] == ["remove", "remove", "remove"]
