"""`fleetctl restart --failed-only` / `--all` through the CLI against a lab of three ELF nodes (marked lab): the
final table keeps only the host whose gate failed and says how many were left out; `--all` and `--failed-only`
are in `--help`; the log's first line says what a restart does instead of a version."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.cli.test_dayone import DayOneLab
from tests.cli.test_status import fleetctl

LAB_BASE = os.environ.get("FLEETCTL_TEST_RESTART_ROWS_BASE", "127.0.71.1")
pytestmark = pytest.mark.lab


class _Lab(DayOneLab):
    def address(self, node: str) -> str:  # this module's own address range
        base = LAB_BASE.rsplit(".", 1)
        return f"{base[0]}.{int(base[1]) + int(node[-2:]) - 1}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Lab]:
    cwd = tmp_path_factory.mktemp("restartrows")
    up = fleetctl(cwd, "lab", "up", "--nodes", "3", "--base", LAB_BASE, "--dir", str(cwd / "lab"), "--no-wine")
    assert up.returncode == 0, up.stderr
    try:
        lab = _Lab(cwd)
        deploy = lab.on("deploy", "--yes", "--json", "--version", "1.0.0")
        assert deploy.returncode == 0, deploy.stderr
        yield lab
    finally:
        fleetctl(cwd, "lab", "down", "--dir", str(cwd / "lab"), timeout=120)


def test_restart_failed_only_keeps_the_failed_host_in_the_final_table(lab: _Lab) -> None:
    lab.fault("lab-node02", "health-failing")
    try:
        done = lab.on("restart", "--yes", "--batch", "1", "--max-failed", "1", "--failed-only")
    finally:
        lab.fault("lab-node02", "none")
    assert done.returncode == 1, done.stdout + done.stderr  # one failed, within the budget
    out = done.stdout
    start = next(line for line in out.splitlines() if " (hello) " in line)  # the log's run start line
    assert "restart of the running release, rolling, 3 hosts" in start and "?" not in start, out
    table = out[out.index("\nRun "):]
    assert re.search(r"^lab-node02\s+failed", table, re.MULTILINE), table
    assert not re.search(r"^lab-node0[13]\s", table, re.MULTILINE), table
    assert "2 without a problem left out (--failed-only)" in table


def test_restart_all_lists_every_host(lab: _Lab) -> None:
    done = lab.on("restart", "--yes", "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout[done.stdout.index("\nRun "):]
    assert all(re.search(rf"^lab-node0{i}\s+restarted", table, re.MULTILINE) for i in (1, 2, 3)), table
    help_text = fleetctl(lab.cwd, "restart", "--help").stdout
    assert "--all" in help_text and "--failed-only" in help_text
