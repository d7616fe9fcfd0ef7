"""The fault matrix of issue 15 against the lab (real WinRM/PSRP, real service processes): each row injects one
fault into a deploy or rollback of a small fleet and then checks the same four promises:

1. every host ends on a running, healthy release when one existed (after a re-run where the row says so);
2. no lock is left behind, or the run's output names it (and how to free it);
3. the report matches node state: a host reported on a release runs that release;
4. a rollback moved no host forward.

The table in docs/reliability.md lists the rows and their outcomes; keep them in step. Rows that wait out timeouts
(blackholes, the controller killed) are `slow`. The lab: FLEETCTL_TEST_MATRIX_BASE (default 127.0.55.1), 4 nodes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_for

from .conftest import FLEETCTL, HELLO, Lab, _env, _start_lab

pytestmark = pytest.mark.lab

BASE = "1.0.0"
NEW = "1.1.0"


def matrix_playbook(lab: Lab) -> Path:
    """The test playbook in inventory order (no spread), with short phase timeouts so silent hosts cost seconds."""
    text = lab.playbook.read_text()
    text = re.sub(r"\n  spread_by: \S+", "", text)
    text = text.replace("  max_failed: 0\n", "  max_failed: 0\n  timeouts:\n    connect: 6s\n    step: 6s\n"
                                             "    unlock: 3s\n")
    path = lab.directory / "hello-matrix.yml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_MATRIX_BASE", "127.0.55.1")
    for started in _start_lab(tmp_path_factory.mktemp("fault-matrix"), 4, base, "linux"):
        started.playbook = matrix_playbook(started)
        yield started


@dataclass
class Run:
    """A fleetctl command with --json in the background: stdout is the JSON document, stderr the progress."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    stdout: str = ""
    readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, lab: Lab, *args: str) -> Run:
        proc = subprocess.Popen([*FLEETCTL, *args, "--yes", "--json"], cwd=lab.directory, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env())
        run = cls(proc)
        run.readers = [threading.Thread(target=run._read_err, daemon=True),
                       threading.Thread(target=run._read_out, daemon=True)]
        for reader in run.readers:
            reader.start()
        return run

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, ""):
            self.lines.append(line)

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    def wait_line(self, pattern: str, timeout: float = 90) -> None:
        try:
            wait_for(lambda: any(pattern in line for line in self.lines), timeout, repr(pattern))
        except AssertionError as err:
            raise AssertionError(f"{err}; output so far:\n{self.output}") from None

    def finish(self, timeout: float = 240) -> tuple[int, dict[str, Any]]:
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        for reader in self.readers:
            reader.join(timeout=10)
        doc = json.loads(self.stdout) if self.stdout.strip() else {}
        return code, doc

    @property
    def output(self) -> str:
        return "".join(self.lines)


def deploy(lab: Lab, version: str, *args: str, window: str = "2s") -> Run:
    return Run.start(lab, "deploy", str(lab.playbook), "-i", str(lab.inventory), "--version", version,
                     "--var", f"window={window}", *args)


def rollback(lab: Lab, *args: str) -> Run:
    return Run.start(lab, "rollback", str(lab.playbook), "-i", str(lab.inventory), *args)


def node_states(lab: Lab) -> dict[str, Any]:
    from fleetctl.rollout.runner import DeployOptions, load_fleet

    fleet = load_fleet(DeployOptions(playbook=lab.playbook, inventories=[lab.inventory]), {"version": "0"})
    states = {}
    for host in lab.nodes:
        client = fleet.client_factory()(host)
        try:
            states[host] = client.get_fleet_state(app="hello", root="C:\\apps\\hello", service_name="hello")
        finally:
            client.close()
    return states


def version_of(state: Any, release: str | None) -> str | None:
    info = state.release(release)
    return info.version if info else None


def baseline(lab: Lab) -> dict[str, Any]:
    """Every node on BASE, healthy, unlocked, no faults (a lost row's leaked lock is taken over)."""
    lab.fault("*", "none")
    code, doc = deploy(lab, BASE, "--batch", "100%", "--force").finish()
    assert code == 0, doc
    return node_states(lab)


def check_promises(lab: Lab, doc: dict[str, Any], output: str, *, before: dict[str, Any] | None = None,
                   rollback_run: bool = False, leaked_ok: bool = False) -> dict[str, Any]:
    """The four promises of the matrix, against the nodes' own state (faults cleared first)."""
    lab.fault("*", "none")
    states = node_states(lab)
    for host, state in states.items():
        # 1. running and healthy
        assert state.service is not None and state.service.state == "Running", (host, state.service, output)
        health = lab.health(host)
        assert health is not None and health.get("version") == version_of(state, state.current), (host, health)
        # 2. no lock, or named in the output
        if state.lock is not None:
            assert leaked_ok and f"lock left on {host}" in output + json.dumps(doc), (host, state.lock, output)
        # 3. the report matches node state
        reported = doc.get("hosts", {}).get(host, {})
        if reported.get("outcome") in ("deployed", "skipped", "rolled_back") or (
                reported.get("outcome") in ("failed", "not_started") and reported.get("release")):
            assert reported["release"] == state.current, (host, reported, state.current)
        # 4. a rollback never moves a host forward
        if rollback_run and before is not None:
            old = before[host]
            assert state.releases and old.release(state.current) is not None, (host, state.current)
            order = [r.release for r in state.releases]
            assert order.index(state.current) <= order.index(old.current), (host, old.current, state.current)
    return states


# --- the rows -------------------------------------------------------------------------------------------------------

Row = Callable[[Lab], None]


def fault_before_the_run(kind: str) -> Row:
    def row(lab: Lab) -> None:
        baseline(lab)
        lab.fault("lab-node02", kind)
        started = time.monotonic()
        code, doc = deploy(lab, NEW).finish()
        took = time.monotonic() - started
        assert code == 1, doc  # the budget (0) is spent before any change: nothing was changed
        assert doc["hosts"]["lab-node02"]["outcome"] == "failed"
        assert {h: v["outcome"] for h, v in doc["hosts"].items() if h != "lab-node02"} == \
            {h: "not_started" for h in lab.nodes if h != "lab-node02"}
        assert took < 60, took  # a silent host costs one connect timeout (6 s here), not the transport's retries
        check_promises(lab, doc, json.dumps(doc))
    return row


def node_lost(kind: str, at_step: str) -> Row:
    """The node is cut off while its `at_step` runs: stop (with a slow stop, so the switch has not happened) or
    health (after its switch and start)."""
    def row(lab: Lab) -> None:
        baseline(lab)
        if at_step == "stop":
            lab.fault("lab-node02", "slow-stop:2s")
        # In the gate: a window long enough that the gate reads the node again after the fault is in place.
        run = deploy(lab, NEW, "--batch", "1", window="6s" if at_step == "health" else "2s")
        run.wait_line(f"lab-node02: {at_step}")
        lab.fault("lab-node02", kind)
        code, doc = run.finish()
        out = run.output
        assert code == 3, out  # never a clean halt (1): what node02 runs is unknown
        reported = doc["hosts"]["lab-node02"]
        assert reported["outcome"] == "unknown" and reported["release"] is None, reported
        assert "state unknown: lost after" in reported["error"], reported
        assert "lock left on lab-node02" in out and "fleetctl unlock" in out, out
        assert doc["hosts"]["lab-node01"]["outcome"] == "deployed"
        assert {doc["hosts"][h]["outcome"] for h in ("lab-node03", "lab-node04")} == {"not_started"}
        lab.fault("*", "none")
        # The re-run reconciles from node state; the leaked lock named above belongs to a run the history records as
        # finished, so its holder is provably gone and --force takes it (docs/rollouts.md#locks).
        code, again = deploy(lab, NEW, "--batch", "1", "--force").finish()
        assert code == 0, again
        assert again["hosts"]["lab-node01"]["outcome"] == "skipped"
        check_promises(lab, again, json.dumps(again))
        assert {version_of(s, s.current) for s in node_states(lab).values()} == {NEW}
    return row


def release_fails(mode: str, expect: str, *extra: str) -> Row:
    def row(lab: Lab) -> None:
        before = baseline(lab)
        code, doc = deploy(lab, NEW, "--limit", "lab-node01", "--var", f"hello_mode={mode}", *extra).finish()
        assert code == 1, doc
        reported = doc["hosts"]["lab-node01"]
        assert reported["outcome"] == "rolled_back" and expect in reported["error"], reported
        assert reported.get("failed_release", "").startswith(NEW)
        states = check_promises(lab, doc, json.dumps(doc))
        assert states["lab-node01"].current == before["lab-node01"].current
        failed = {r.release for r in states["lab-node01"].releases if r.gate_failed}
        assert reported["failed_release"] in failed  # the node remembers the verdict
    return row


def crash_after_start_with_the_shipped_window(lab: Lab) -> None:
    shipped = re.search(r"stability_window: (\S+)", (HELLO / "playbook.yml").read_text())
    assert shipped is not None
    release_fails("crash-after-5s", "stability window", "--var", f"window={shipped.group(1)}")(lab)


def crash_loop_during_the_canary_bake(lab: Lab) -> None:
    # The window (0.5 s) ends before the first crash (2 s): only the watch until the bake ends catches it.
    baseline(lab)
    text = lab.playbook.read_text().replace("canary_bake: 0s", "canary_bake: \"{{ bake | default('0s') }}\"")
    lab.playbook.write_text(text)
    try:
        code, doc = deploy(lab, NEW, "--canary", "1", "--var", "hello_mode=crash-after-2s", "--var", "window=0.5s",
                           "--var", "bake=5s").finish()
    finally:
        lab.playbook.write_text(text.replace("canary_bake: \"{{ bake | default('0s') }}\"", "canary_bake: 0s"))
    assert code == 1, doc
    reported = doc["hosts"]["lab-node01"]
    assert reported["outcome"] == "rolled_back" and "after its health gate" in reported["error"], reported
    assert {doc["hosts"][h]["outcome"] for h in lab.nodes[1:]} == {"not_started"}
    check_promises(lab, doc, json.dumps(doc))


def slow_stop(lab: Lab) -> None:
    baseline(lab)
    lab.fault("lab-node01", "slow-stop:3s")
    code, doc = deploy(lab, NEW, "--limit", "lab-node01").finish()
    assert code == 0, doc
    assert doc["hosts"]["lab-node01"]["outcome"] == "deployed"
    check_promises(lab, doc, json.dumps(doc))


def disk_full(lab: Lab) -> None:
    before = baseline(lab)
    lab.fault("lab-node01", "disk-full")
    code, doc = deploy(lab, "1.2.0", "--limit", "lab-node01").finish()
    assert code == 1, doc
    reported = doc["hosts"]["lab-node01"]
    assert reported["outcome"] == "failed" and "DISK_FULL" in reported["error"], reported
    states = check_promises(lab, doc, json.dumps(doc))
    assert states["lab-node01"].current == before["lab-node01"].current


def lock_contention(lab: Lab) -> None:
    from fleetctl.rollout.runner import DeployOptions, load_fleet

    before = baseline(lab)
    fleet = load_fleet(DeployOptions(playbook=lab.playbook, inventories=[lab.inventory], limit="lab-node03"),
                       {"version": "0"})
    client = fleet.client_factory()("lab-node03")
    try:
        client.lock_fleet_app(app="hello", owner="ghost@elsewhere", deploy_id="ghost-run", ttl_seconds=600)
        run = deploy(lab, NEW)
        code, doc = run.finish()
        assert code == 4 and "ghost@elsewhere" in run.output, run.output
        assert {v["outcome"] for h, v in doc["hosts"].items() if h != "lab-node03"} == {"not_started"}
    finally:
        client.unlock_fleet_app(app="hello", deploy_id="ghost-run")
        client.close()
    states = check_promises(lab, doc, run.output)
    assert {h: s.current for h, s in states.items()} == {h: s.current for h, s in before.items()}


def halted_mixed_then_plain_rollback(lab: Lab) -> None:
    """Issue 15 item 1: node01, node02 on 3.0.0; node03 failed its gate on 3.0.0 and was rolled back to 2.0.0;
    node04 never started (2.0.0). A plain rollback ends the fleet on 2.0.0: nobody forward, nobody to 1.0.0."""
    baseline(lab)
    code, doc = deploy(lab, "2.0.0", "--batch", "100%").finish()
    assert code == 0, doc
    bad03 = lab.directory / "bad-node03.yml"
    bad03.write_text("all:\n  hosts:\n    lab-node03:\n      hello_mode: unhealthy\n")
    run = Run.start(lab, "deploy", str(lab.playbook), "-i", str(lab.inventory), "-i", str(bad03), "--version",
                    "3.0.0", "--var", "window=2s", "--batch", "1")
    code, doc = run.finish()
    assert code == 3, run.output
    assert {h: v["outcome"] for h, v in doc["hosts"].items()} == {
        "lab-node01": "deployed", "lab-node02": "deployed", "lab-node03": "rolled_back", "lab-node04": "not_started"}
    before = check_promises(lab, doc, run.output)
    assert [version_of(before[h], before[h].current) for h in lab.nodes] == ["3.0.0", "3.0.0", "2.0.0", "2.0.0"]

    dry = rollback(lab, "--dry-run")
    code, plan = dry.finish()
    assert code == 0, dry.output
    assert plan["dry_run"] is True and plan["version"] == "2.0.0"
    assert {h: c["action"] for h, c in plan["hosts"].items()} == {
        "lab-node01": "switch", "lab-node02": "switch", "lab-node03": "stay", "lab-node04": "stay"}
    assert node_states(lab)["lab-node01"].current == before["lab-node01"].current  # the dry run changed nothing

    to_failed = rollback(lab, "--to", "3.0.0")
    code, _ = to_failed.finish()
    assert code == 2 and "failed its health gate" in to_failed.output and "--force" in to_failed.output

    run = rollback(lab, "--batch", "50%")
    code, doc = run.finish()
    assert code == 0, run.output
    assert {h: v["outcome"] for h, v in doc["hosts"].items()} == {
        "lab-node01": "rolled_back", "lab-node02": "rolled_back", "lab-node03": "skipped", "lab-node04": "skipped"}
    after = check_promises(lab, doc, run.output, before=before, rollback_run=True)
    assert {version_of(s, s.current) for s in after.values()} == {"2.0.0"}


def sigint(times: int) -> Row:
    def row(lab: Lab) -> None:
        baseline(lab)
        # Twice: the new release is unhealthy, so the first host is in its gate when both presses land.
        host = "lab-node01" if times == 2 else "lab-node02"
        run = deploy(lab, NEW, "--batch", "1", *(("--var", "hello_mode=unhealthy") if times == 2 else ()))
        run.wait_line(f"{host}: health")
        for _ in range(times):
            run.proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
        code, doc = run.finish()
        assert code == 130, run.output
        reported = doc["hosts"][host]
        if times == 2:
            # Issue 15 item 8: it was rolled back and runs; it is not "failed ... rollback failed: aborted".
            assert reported["outcome"] == "rolled_back" and "rollback failed" not in reported["error"], reported
        else:
            assert reported["outcome"] in ("deployed", "rolled_back"), reported
        check_promises(lab, doc, run.output)
    return row


def sigkill_then_rerun(lab: Lab) -> None:
    baseline(lab)
    run = deploy(lab, NEW, "--batch", "1")
    run.wait_line("lab-node02: health")
    run.proc.kill()  # SIGKILL: no unlock, no report
    run.finish()
    code, doc = deploy(lab, NEW, "--batch", "1").finish()
    assert code == 4, doc  # the dead run's locks are still held
    rerun = deploy(lab, NEW, "--batch", "1", "--force")
    code, doc = rerun.finish()
    assert code == 0, rerun.output
    assert doc["hosts"]["lab-node01"]["outcome"] == "skipped"
    check_promises(lab, doc, rerun.output)
    assert {version_of(s, s.current) for s in node_states(lab).values()} == {NEW}


# The default suite runs one row per kind of fault; the same fault through another door, and every row that
# waits out a timeout, runs with the slow ones (`-m slow`).
ROWS: dict[str, Row] = {
    "down before the switch: auth failure": fault_before_the_run("auth-failure"),
    "down during the switch: unreachable": node_lost("unreachable", "stop"),
    "down after the switch: auth failure": node_lost("auth-failure", "health"),
    "crash on start": release_fails("bogus", "exited while starting"),
    "crash after 5 s, example's stability window": crash_after_start_with_the_shipped_window,
    "disk full": disk_full,
    "lock contention": lock_contention,
    "halted mixed-release deploy, then plain rollback": halted_mixed_then_plain_rollback,
    "SIGINT twice": sigint(2),
}
SLOW_ROWS: dict[str, Row] = {
    "down before the switch: unreachable": fault_before_the_run("unreachable"),
    "down before the switch: blackhole": fault_before_the_run("blackhole"),
    "down during the switch: auth failure": node_lost("auth-failure", "stop"),
    "down during the switch: blackhole": node_lost("blackhole", "stop"),
    "down after the switch: unreachable": node_lost("unreachable", "health"),
    "down after the switch: blackhole": node_lost("blackhole", "health"),
    "crash loop caught during the canary bake": crash_loop_during_the_canary_bake,
    "slow stop": slow_stop,
    "SIGINT once": sigint(1),
    "SIGKILL of the controller, then a re-run": sigkill_then_rerun,
}


@pytest.mark.parametrize("row", list(ROWS))
def test_fault_matrix(lab: Lab, row: str) -> None:
    ROWS[row](lab)


@pytest.mark.slow
@pytest.mark.parametrize("row", list(SLOW_ROWS))
def test_fault_matrix_slow(lab: Lab, row: str) -> None:
    SLOW_ROWS[row](lab)
