"""The live view on a real terminal during a real lab deploy (issue 17 item 1), driven through tmux: a 120x40 pane
runs `fleetctl deploy` of an unhealthy release (the example's `hello_mode=unhealthy`) to three ELF lab nodes, one
host per batch, and the pane is captured at fixed moments: the health gate's try line, the queued hosts with their
batch, the first and second Ctrl-C's notices (timed from sending C-c), the finished batch's line in the
scrollback; then `plan` and `history show` number the batches from 1 too.

Integration test: needs tmux and the lab (ELF nodes at FLEETCTL_TEST_LIVE_BASE, default 127.0.58.1).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rollout.conftest import FLEETCTL, REPO, Lab, _start_lab
from tests.support import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")]


@pytest.fixture(scope="module")
def live_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_LIVE_BASE", "127.0.58.1")
    yield from _start_lab(tmp_path_factory.mktemp("live-tmux"), 3, base, "linux")


class Pane:
    """One tmux server of our own (its own socket) with one 120x40 pane running a command."""

    def __init__(self, socket: str, command: str, cwd: Path) -> None:
        self.socket = socket
        self._tmux("new-session", "-d", "-x", "120", "-y", "40", "-s", "live", "-c", str(cwd), command)
        self._tmux("set-option", "-t", "live", "history-limit", "5000")

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout

    def screen(self) -> str:
        """What the pane shows now (40 rows), wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-t", "live")

    def everything(self) -> str:
        """The scrollback and the screen."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "live")

    def showing(self, pattern: str, everything: bool = False) -> str | None:
        """The capture when it matches `pattern` (a regex), else None: for `wait_for`."""
        text = self.everything() if everything else self.screen()
        return text if re.search(pattern, text) else None

    def ctrl_c(self) -> float:
        self._tmux("send-keys", "-t", "live", "C-c")
        return time.monotonic()

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True, timeout=10)


def slow_gates(lab: Lab) -> Path:
    """The lab playbook with gates that outlast the test's captures (an unhealthy release keeps trying)."""
    path = lab.directory / "hello-slow-gates.yml"
    path.write_text(re.sub(r"retries: \d+", "retries: 400", lab.playbook.read_text()))
    return path


def test_live_view_in_a_terminal_explains_gates_queue_and_ctrl_c(live_lab: Lab) -> None:
    lab = live_lab
    code, _, err = lab.deploy("--version", "1.0.0", "--batch", "1", "--var", "window=0s")
    assert code == 0, err  # every host has a release to go back to
    playbook = slow_gates(lab)
    env = {"PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    command = " ".join([
        "env", *(f"{k}={shlex.quote(v)}" for k, v in env.items()), *map(shlex.quote, FLEETCTL), "deploy",
        shlex.quote(str(playbook)), "-i", shlex.quote(str(lab.inventory)), "--yes", "--batch", "1",
        "--version", "2.0.0", "--var", "hello_mode=unhealthy", "--var", "window=0s",
    ]) + "; echo FLEETCTL-EXIT=$?; sleep 300"
    pane = Pane(f"fleetctl-live-{os.getpid()}", command, lab.directory)
    try:
        # A gate that keeps failing says which try it is at and what the service answered.
        screen = wait_for(lambda: pane.showing(r"health\s+try \d+/400: 500"), 180, "the health gate's try line")
        # Meanwhile the next batch's host is staged (its transfer shows with its batch), then waits for its turn.
        screen = wait_for(lambda: pane.showing(r"(?s)health\s+try.*lab-node02\s+queued \(batch 2\)\s+staged"), 60,
                          "the next batch's host staged and queued")
        lines = screen.splitlines()
        assert len(lines) <= 40
        assert "batch 1/3: 1 hosts" in screen, screen
        assert re.search(r"lab-node02\s+queued \(batch 2\)", screen), screen
        assert re.search(r"lab-node03\s+queued \(batch 3\)", screen), screen
        assert not re.search(r"lab-node0[23]\s+lock", screen), screen

        sent = pane.ctrl_c()
        wait_for(lambda: "Ctrl-C: no new hosts start" in pane.screen(), 5, "the first Ctrl-C's notice",
                 interval=0.01)
        first = time.monotonic() - sent
        assert first < 0.5, f"the first Ctrl-C was told after {first:.2f} s"
        screen = " ".join(pane.screen().split())  # rich wraps the long notice itself
        assert "batches 2–3 will not start; finishing 1 host in flight, 1 in a health gate, then releasing the " \
               "locks; Ctrl-C again to stop waiting for health gates" in screen, screen

        sent = pane.ctrl_c()
        wait_for(lambda: "Ctrl-C again: not waiting for health gates" in pane.screen(), 5,
                 "the second Ctrl-C's notice", interval=0.01)
        second = time.monotonic() - sent
        assert second < 0.5, f"the second Ctrl-C was told after {second:.2f} s"

        everything = wait_for(lambda: pane.showing("FLEETCTL-EXIT=", everything=True), 120, "the deploy to end")
        assert "FLEETCTL-EXIT=130" in everything, everything
        # The finished batch left its line in the scrollback; the gate's failure was the abort.
        assert re.search(r"batch 1/3: 0 deployed, 1 failed \(1 rolled back\) in \d+\.\d s", everything), everything
        print(f"Ctrl-C notices after {first * 1000:.0f} ms and {second * 1000:.0f} ms")
    finally:
        pane.close()

    # The same numbering in `plan` and `history show` (piped here: plain lines, a row per line, no borders).
    plan = lab.fleetctl("plan", str(playbook), "-i", str(lab.inventory), "--batch", "1", check=True).stdout
    rows = [line for line in plan.splitlines() if re.match(r"\s*\d+\s+(rolling|canary)\s", line)]
    assert [int(r.split()[0]) for r in rows] == [1, 2, 3], plan
    shown = lab.fleetctl("history", "show", "last", check=True).stdout
    found = re.finditer(r"^\s*(\d+)\s+(lab-node\d+)\s", shown, re.MULTILINE)
    batch_of = {m.group(2): int(m.group(1)) for m in found}
    assert batch_of == {"lab-node01": 1, "lab-node02": 2, "lab-node03": 3}, shown
