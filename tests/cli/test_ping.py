"""`fleetctl ping` end to end against a 20-node lab (two nodes faulted): table, exact --json shape, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

NET = os.environ.get("FLEETCTL_TEST_PING_NET", "127.0.33")
NODES = 20


@pytest.fixture(scope="module")
def lab_inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from fleetctl.lab.control import lab_down, lab_up
    from fleetctl.lab.layout import LabLayout

    layout = LabLayout.at(tmp_path_factory.mktemp("pinglab"))
    lab_up(layout, nodes=NODES, base=f"{NET}.1", wine=False,
           faults="lab-node07=unreachable,lab-node13=auth-failure")
    try:
        yield layout.dir / "inventory.yml"
    finally:
        lab_down(layout)


def fleetctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "fleetctl", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.lab
def test_ping_json_over_20_nodes(lab_inventory: Path) -> None:
    started = time.monotonic()
    run = fleetctl("ping", "-i", str(lab_inventory), "--json")
    elapsed = time.monotonic() - started
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert list(doc) == ["hosts"] and len(doc["hosts"]) == NODES
    for name, entry in doc["hosts"].items():
        assert set(entry) == {"ok", "error", "facts", "rtt_ms"}, name
        if name in ("lab-node07", "lab-node13"):
            assert entry["ok"] is False and entry["facts"] is None and entry["rtt_ms"] is None
        else:
            assert entry["ok"] is True and entry["error"] is None, entry
            assert entry["facts"]["lab"] is True and entry["facts"]["ps_version"]
            assert isinstance(entry["rtt_ms"], (int, float)) and entry["rtt_ms"] > 0
            assert abs(entry["facts"]["clock_skew_ms"]) < 5000
    assert "connection refused" in doc["hosts"]["lab-node07"]["error"]
    assert "authentication failed for user 'fleet'" in doc["hosts"]["lab-node13"]["error"]
    assert "2 of 20 host(s)" in run.stderr
    password = (lab_inventory.parent / "credentials").read_text().strip()
    assert password not in run.stdout + run.stderr
    assert elapsed < 60


@pytest.mark.lab
def test_ping_table_with_limit(lab_inventory: Path) -> None:
    run = fleetctl("ping", "-i", str(lab_inventory), "--limit", "lab-node0[1-3]")
    assert run.returncode == 0, run.stderr
    for name in ("lab-node01", "lab-node02", "lab-node03"):
        assert name in run.stdout
    assert "lab-node04" not in run.stdout and "3/3 host(s) OK" in run.stdout
    assert "Windows Server" in run.stdout


@pytest.mark.lab
def test_ping_unmatched_limit_is_bad_input(lab_inventory: Path) -> None:
    run = fleetctl("ping", "-i", str(lab_inventory), "--limit", "nosuchhost")
    assert run.returncode == 2 and "nosuchhost" in run.stderr
