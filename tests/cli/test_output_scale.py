"""Output at scale through the CLI (issue 17 item 2): `plan` of a 500-host inventory fits one screen (40 lines at
120 columns) and `--all` lists every batch; against a lab, "rollout in progress" while a real deploy holds the
locks, grouped errors with an authentication fault on every node (ping, status, deploy), `--failed-only` and
`--all`, and piped output that is never folded at 80 columns. A 500-node lab `status` is marked slow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from project_support import PLAYBOOK, linux_playbook  # tests/cli is on sys.path (no __init__.py)

REPO = Path(__file__).resolve().parents[2]
LAB_BASE = os.environ.get("FLEETCTL_TEST_OUTPUT_BASE", "127.0.72.1")
BIG_LAB_BASE = os.environ.get("FLEETCTL_TEST_OUTPUT_BIG_BASE", "127.0.74.1")  # 500 nodes: 127.0.74.1-127.0.75.245
SCREEN = {"COLUMNS": "120", "LINES": "40"}
TERMINAL = {**SCREEN, "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}  # rich renders as for a 120x40 terminal


def fleetctl(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240,
             merged: bool = False) -> subprocess.CompletedProcess[str]:
    """Run fleetctl; `merged`: stderr into the same pipe as stdout (a CI log, `2>&1`)."""
    full = {k: v for k, v in os.environ.items() if k not in ("FLEETCTL_INVENTORY", "FLEETCTL_HISTORY_DB",
                                                             "TTY_COMPATIBLE", "FORCE_COLOR")}
    full.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **SCREEN, **(env or {})})
    return subprocess.run([sys.executable, "-m", "fleetctl", *args], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True, check=False,
                          timeout=timeout, env=full)


# --- plan: no node is contacted ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project_500(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan500")
    (root / "playbook.yml").write_text(PLAYBOOK)  # rollout.batch 1: a plan of 500 batches
    (root / "templates").mkdir()
    (root / "templates" / "app.json.j2").write_text("{}\n")
    (root / "inventory.yml").write_text("all:\n  hosts:\n    web[001:500].corp.example:\n"
                                        "  vars:\n    fleet_user: deploy\n    ansible_host: \"{{ inventory_hostname }}\"\n")
    return root


def test_plan_of_500_hosts_fits_one_screen_and_all_lists_every_batch(project_500: Path) -> None:
    plan = ["plan", "playbook.yml", "-i", "inventory.yml"]
    default = fleetctl(project_500, *plan, "--canary", "5", "--batch", "10%", env=TERMINAL)
    assert default.returncode == 0, default.stderr
    lines = default.stdout.rstrip("\n").splitlines()
    assert len(lines) <= 40, default.stdout
    assert "web[001:005].corp.example" in default.stdout  # the canaries as a range, zero padding kept
    assert "web[006:055].corp.example" in default.stdout

    one_by_one = fleetctl(project_500, *plan, env=TERMINAL)  # batch 1: 500 batches
    lines = one_by_one.stdout.rstrip("\n").splitlines()
    assert len(lines) <= 40, one_by_one.stdout
    # The first and last batches one by one; the 482 in between in one row.
    assert re.search(r"13–494 .*482 batches.*1 each.*web\[013:494\]\.corp\.example", one_by_one.stdout), \
        one_by_one.stdout
    every = fleetctl(project_500, *plan, "--all", env=TERMINAL)
    assert sum(1 for line in every.stdout.splitlines() if ".corp.example" in line) == 500
    # Machines get everything, unchanged: every batch and host in --json.
    doc = json.loads(fleetctl(project_500, *plan, "--json").stdout)
    assert len(doc["batches"]) == 500 and doc["batches"][0]["hosts"] == ["web001.corp.example"]


def test_piped_plan_is_plain_lines_not_cut_at_80_columns(project_500: Path) -> None:
    piped = fleetctl(project_500, "plan", "playbook.yml", "-i", "inventory.yml", "--batch", "50%",
                     env={"COLUMNS": "80"})
    assert piped.returncode == 0, piped.stderr
    rows = [line for line in piped.stdout.splitlines() if ".corp.example" in line]
    assert [row.split()[-1] for row in rows] == ["web[001:250].corp.example", "web[251:500].corp.example"]
    assert not any(ch in piped.stdout for ch in "│┃━─")


# --- against a lab --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    cwd = tmp_path_factory.mktemp("outputlab")
    up = fleetctl(cwd, "lab", "up", "--nodes", "4", "--base", LAB_BASE, "--dir", str(cwd / "lab"), "--no-wine")
    assert up.returncode == 0, up.stderr
    try:
        yield cwd, ["-i", str(cwd / "lab" / "inventory.yml")]
    finally:
        fleetctl(cwd, "lab", "down", "--dir", str(cwd / "lab"), timeout=120)


@pytest.mark.lab
def test_status_says_rollout_in_progress_while_a_deploy_holds_the_locks(lab: tuple[Path, list[str]]) -> None:
    cwd, inv = lab
    playbook = str(linux_playbook(cwd, batch=1))
    first = fleetctl(cwd, "deploy", playbook, *inv, "--yes", "--json", "--version", "1.0.0")
    assert first.returncode == 0, first.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("FLEETCTL_INVENTORY", "FLEETCTL_HISTORY_DB")}
    env.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
    # One host per batch, each gate holding it 4 s: the run holds every lock while it moves them one by one.
    deploy = subprocess.Popen([sys.executable, "-m", "fleetctl", "deploy", playbook, *inv, "--yes", "--version",
                               "2.0.0", "-e", "window=4s"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        seen = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and deploy.poll() is None:
            status = fleetctl(cwd, "status", playbook, *inv)
            if "rolling out" in status.stdout:
                seen = status.stdout
                break
        assert seen, "status never showed a host rolling out during the deploy"
        run_id = re.search(r"rollout in progress \(run (\S+), by (\S+), since ([-0-9 :]+Z)\): (.*)", seen)
        assert run_id, seen
        assert re.search(r"\d rolling out to 2\.0\.0", run_id.group(4)) and "waiting" in run_id.group(4)
        assert "DRIFT" not in seen  # the hosts the run moved are rolling out, not drifting
        assert re.search(r"lab-node01 .*2\.0\.0.*rolling out", seen), seen
    finally:
        out, _ = deploy.communicate(timeout=180)
    assert deploy.returncode == 0, out
    assert run_id.group(1) in out  # the run status named is the deploy that was running
    after = fleetctl(cwd, "status", playbook, *inv)
    assert "rollout in progress" not in after.stdout and "rolling out" not in after.stdout
    assert "releases: 4 on 2.0.0" in after.stdout


@pytest.mark.lab
def test_an_auth_fault_on_every_node_is_one_grouped_error(lab: tuple[Path, list[str]]) -> None:
    cwd, inv = lab
    playbook = str(linux_playbook(cwd, batch=1))
    # Healthy hosts to start from (skipped if the test above left them on 2.0.0), so --failed-only has some to omit.
    ready = fleetctl(cwd, "deploy", playbook, *inv, "--yes", "--json", "--version", "2.0.0")
    assert ready.returncode == 0, ready.stderr
    nodes = [f"lab-node0{i}" for i in range(1, 5)]
    for node in nodes:
        assert fleetctl(cwd, "lab", "fault", "--dir", str(cwd / "lab"), node, "auth-failure").returncode == 0
    try:
        ping = fleetctl(cwd, "ping", *inv)  # piped: plain lines, so the row reads as one line
        assert ping.returncode == 1
        assert ping.stdout.count("authentication failed for user 'fleet'") == 1, ping.stdout
        assert re.search(r"lab-node\[01:04\] +4 FAILED +authentication failed for user 'fleet' with \S+ at "
                         r"<address>:5986", ping.stdout), ping.stdout
        assert "lab-node[01:04]" in ping.stderr  # the error line names the hosts compactly too

        status = fleetctl(cwd, "status", playbook, *inv)
        assert status.returncode == 1
        assert "4 hosts: authentication failed for user 'fleet'" in status.stdout
        assert "(lab-node[01:04])" in status.stdout and status.stdout.count("authentication failed") == 1

        deploy = fleetctl(cwd, "deploy", playbook, *inv, "--yes", "--version", "3.0.0")
        assert deploy.returncode == 1
        table = deploy.stdout[deploy.stdout.rindex("Run "):]
        assert table.count("authentication failed for user 'fleet'") == 1, table
        assert re.search(r"lab-node\S*\[\S+\]\s+\d failed", table), table
        # One summary line: said once on stdout, and on stderr only because stderr goes elsewhere here...
        assert deploy.stdout.count("no host was left on the new release") == 1, deploy.stdout
        assert deploy.stderr.count("no host was left on the new release") == 1, deploy.stderr
        # ...while in one log (`2>&1`) it is not repeated as an `error:` line.
        log = fleetctl(cwd, "deploy", playbook, *inv, "--yes", "--version", "3.0.0", merged=True)
        assert log.returncode == 1 and log.stdout.count("no host was left on the new release") == 1, log.stdout
        assert "error:" not in log.stdout
    finally:
        for node in nodes:
            fleetctl(cwd, "lab", "fault", "--dir", str(cwd / "lab"), node, "none")

    # --failed-only and --all once only some nodes fail.
    fleetctl(cwd, "lab", "fault", "--dir", str(cwd / "lab"), "lab-node03", "auth-failure")
    try:
        failed = fleetctl(cwd, "ping", *inv, "--failed-only")
        rows = [line for line in failed.stdout.splitlines() if line.startswith("lab-node")]
        assert [row.split()[:2] for row in rows] == [["lab-node03", "FAILED"]], failed.stdout
        assert "3 without a problem left out (--failed-only)" in failed.stdout
        every = fleetctl(cwd, "ping", *inv, "--all")
        assert [line.split()[0] for line in every.stdout.splitlines() if line.startswith("lab-node")] == \
            ["lab-node03", "lab-node01", "lab-node02", "lab-node04"]  # failed first, then inventory order
        status = fleetctl(cwd, "status", playbook, *inv, "--failed-only")
        rows = [line for line in status.stdout.splitlines() if line.startswith("lab-node") and ": " not in line]
        assert [row.split()[0] for row in rows] == ["lab-node03"], status.stdout
        assert "lab-node03: authentication failed for user 'fleet'" in status.stdout
        # Piped: the note is one line longer than 80 columns, not folded.
        note = next(line for line in status.stdout.splitlines() if line.startswith("lab-node03: "))
        assert len(note) > 80 and note.rstrip().endswith("fleet_auth"), status.stdout
    finally:
        fleetctl(cwd, "lab", "fault", "--dir", str(cwd / "lab"), "lab-node03", "none")


# --- 500 lab nodes (slow) -------------------------------------------------------------------------------------


@pytest.mark.lab
@pytest.mark.slow
def test_status_of_a_500_node_lab_fits_one_screen(tmp_path: Path) -> None:
    up = fleetctl(tmp_path, "lab", "up", "--nodes", "500", "--base", BIG_LAB_BASE, "--dir", str(tmp_path / "lab"),
                  "--no-wine", "--faults", ",".join(f"lab-node{n}=auth-failure" for n in range(450, 500)))
    assert up.returncode == 0, up.stderr
    try:
        playbook = str(linux_playbook(tmp_path))
        status = fleetctl(tmp_path, "status", playbook, "-i", str(tmp_path / "lab" / "inventory.yml"), "-f", "100",
                          env=TERMINAL, timeout=600)
        lines = status.stdout.rstrip("\n").splitlines()
        assert status.returncode == 1 and len(lines) <= 40, status.stdout
        assert "Status of hello: 450/500 host(s) answered" in status.stdout
        assert "50 hosts: authentication failed for user 'fleet'" in status.stdout
        assert "(lab-node[450:499])" in status.stdout
    finally:
        fleetctl(tmp_path, "lab", "down", "--dir", str(tmp_path / "lab"), timeout=300)


def test_the_error_line_is_added_only_where_stderr_goes_elsewhere(tmp_path: Path) -> None:
    from fleetctl.cli.deploy import same_destination

    read, write = os.pipe()
    with open(write, "w") as pipe, open(tmp_path / "out.log", "w") as log, open(tmp_path / "err.log", "w") as err:
        again = open(os.dup(write), "w")  # noqa: SIM115 - `2>&1`: a second descriptor of the same pipe
        try:
            assert same_destination(pipe, again)
            assert not same_destination(pipe, log) and not same_destination(log, err)
            assert not same_destination(object(), pipe)  # no file descriptor: never "the same"
        finally:
            again.close()
    os.close(read)
