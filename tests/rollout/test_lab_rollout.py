"""Deploy and rollback end to end against the lab (real WinRM/PSRP, real service processes)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import threading
from typing import Any

import pytest

from tests.support import wait_for

from .conftest import FLEETCTL, Lab, _env

pytestmark = pytest.mark.lab


def outcomes(doc: dict[str, Any]) -> dict[str, str]:
    return {h: v["outcome"] for h, v in doc["hosts"].items()}


def finished_in_plan_order(lab: Lab) -> bool:
    """The journal's finish times of the newest deploy: every host of a batch finished before any host of a
    later batch (the engine starts a batch only when the previous one passed its gates)."""
    db = sqlite3.connect(lab.directory / ".fleetctl" / "history.db")
    try:
        run_id, batches = db.execute("SELECT id, batches FROM runs WHERE kind = 'deploy' "
                                     "ORDER BY started_at DESC LIMIT 1").fetchone()
        finished = dict(db.execute("SELECT host, finished_at FROM hosts WHERE run_id = ?", (run_id,)).fetchall())
    finally:
        db.close()
    plan = json.loads(batches)
    assert sorted(h for batch in plan for h in batch) == sorted(finished)
    return all(max(finished[h] for h in earlier) < min(finished[h] for h in later)
               for earlier, later in itertools.pairwise(plan))


def stored(lab: Lab) -> dict[str, int]:
    return {n: s["counters"]["artifact_bytes_stored"] for n, s in lab.status().items()}


@pytest.mark.wine
def test_broken_canary_on_windows_exe_halts_and_rolls_back(wine_lab: Lab) -> None:
    lab = wine_lab
    code, doc, err = lab.deploy("--version", "1.0.0")
    assert code == 0, err
    assert all((lab.health(n) or {}).get("version") == "1.0.0" for n in lab.nodes)
    before = doc["hosts"]["lab-node01"]["release"]
    code, doc, err = lab.deploy("--version", "1.1.0", "--canary", "1", "--var", "hello_mode=unhealthy")
    assert code == 1, err
    assert outcomes(doc) == {"lab-node01": "rolled_back", "lab-node02": "not_started"}
    assert "status 500" in doc["hosts"]["lab-node01"]["error"]
    assert doc["hosts"]["lab-node01"]["release"] == before
    assert (lab.health("lab-node01") or {}).get("mode") == "ok"
    assert (lab.health("lab-node01") or {}).get("version") == "1.0.0"
    assert (lab.health("lab-node02") or {}).get("version") == "1.0.0"
    # The example is built with a current Go and x/sys: it runs because the lab's prefix provides ProcessPrng
    # (the shim where Wine lacks it), which never reaches a node.
    assert not [p for p in (lab.lab_dir / "nodes").rglob("*") if p.name.lower() == "bcryptprimitives.dll"]


def test_canary_rolling_then_rollback_moves_no_bytes(elf_lab: Lab) -> None:
    lab = elf_lab
    code, doc, err = lab.deploy("--version", "1.0.0", "--canary", "1", "--batch", "30%")
    assert code == 0, err
    assert set(outcomes(doc).values()) == {"deployed"}
    # --dry-run: asks every host, says what would change, changes nothing
    before_dry = stored(lab)
    code, dry, err = lab.deploy("--version", "2.0.0", "--dry-run")
    assert code == 0, err
    assert dry["dry_run"] is True and set(dry["hosts"]) == set(lab.nodes)
    for host, preview in dry["hosts"].items():
        assert preview["error"] is None and preview["current"] == doc["hosts"][host]["release"]
        assert any(c.startswith("transfer artifact") for c in preview["changes"]), preview
        assert f"switch {preview['current']} -> {preview['target']}" in preview["changes"]
    assert stored(lab) == before_dry
    assert all((lab.health(n) or {}).get("version") == "1.0.0" for n in lab.nodes)
    code, doc, err = lab.deploy("--version", "2.0.0", "--canary", "1", "--batch", "30%")
    assert code == 0, err
    assert all((lab.health(n) or {}).get("version") == "2.0.0" for n in lab.nodes)
    assert finished_in_plan_order(lab)
    before = stored(lab)
    proc = lab.fleetctl("rollback", str(lab.playbook), "-i", str(lab.inventory), "--yes", "--json", "--batch", "50%")
    assert proc.returncode == 0, proc.stderr
    assert set(outcomes(json.loads(proc.stdout)).values()) == {"rolled_back"}
    assert stored(lab) == before  # zero artifact bytes moved
    assert all((lab.health(n) or {}).get("version") == "1.0.0" for n in lab.nodes)
    code, doc, err = lab.deploy("--version", "1.0.0")  # no-op redeploy
    assert code == 0 and set(outcomes(doc).values()) == {"skipped"}, err


def test_crash_after_start_is_caught_by_the_stability_window(elf_lab: Lab) -> None:
    lab = elf_lab
    code, doc, err = lab.deploy("--version", "1.0.0", "--limit", "lab-node01")
    assert code == 0, err
    code, doc, err = lab.deploy("--version", "1.3.0", "--limit", "lab-node01", "--var", "hello_mode=crash-after-5s",
                                "--var", "window=7s")
    assert code == 1, err
    assert outcomes(doc) == {"lab-node01": "rolled_back"}
    assert "stability window" in doc["hosts"]["lab-node01"]["error"]
    assert (lab.health("lab-node01") or {}).get("version") == "1.0.0"


class Background:
    """A deploy running in the background whose plain progress lines can be waited for."""

    def __init__(self, lab: Lab, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*FLEETCTL, "deploy", str(lab.playbook), "-i", str(lab.inventory), "--yes", *args],
            cwd=lab.directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.append(line)

    def wait_line(self, text: str, timeout: float = 60) -> None:
        try:
            wait_for(lambda: any(text in line for line in self.lines), timeout, repr(text))
        except AssertionError as err:
            raise AssertionError(f"{err}; output so far:\n{self.output}") from None

    def finish(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._reader.join(timeout=5)

    @property
    def output(self) -> str:
        return "".join(self.lines)


def test_unreachable_node_within_and_over_budget(elf_lab: Lab) -> None:
    lab = elf_lab
    lab.deploy("--version", "1.0.0")
    try:
        lab.fault("lab-node05", "unreachable")
        code, doc, err = lab.deploy("--version", "1.4.0", "--batch", "50%", "--max-failed", "1")
        assert code == 1, err
        assert outcomes(doc)["lab-node05"] == "failed"
        assert sum(1 for o in outcomes(doc).values() if o == "deployed") == 9
        lab.fault("lab-node05", "none")
        # budget 0, node06 cut off while batch 1 (nodes 2-4) is in its health gates
        run = Background(lab, "--version", "1.5.0", "--canary", "1", "--batch", "3", "--var", "window=2s")
        run.wait_line("lab-node02: health")
        lab.fault("lab-node06", "unreachable")
        assert run.finish() == 3, run.output
        status = {n: (lab.health(n) or {}).get("version") for n in lab.nodes}
        assert [status[n] for n in ("lab-node01", "lab-node02", "lab-node04")] == ["1.5.0"] * 3
        assert status["lab-node10"] == "1.4.0"  # not started: halted before its batch
        assert "lab-node06: FAILED" in run.output
        lab.fault("lab-node06", "none")
        # node06 could not be unlocked while cut off: its stale lock names the halted run; --force takes over
        code, _, err = lab.deploy("--version", "1.5.0", "--var", "window=2s", "--batch", "50%")
        assert code == 4 and "lab-node06 is locked by" in err, err
        code, doc, err = lab.deploy("--version", "1.5.0", "--var", "window=2s", "--batch", "50%", "--force")
        assert code == 0, err
        assert outcomes(doc)["lab-node01"] == "skipped" and outcomes(doc)["lab-node10"] == "deployed"
    finally:
        lab.fault("*", "none")


def test_concurrent_deploy_is_refused_and_sigint_then_rerun_completes(elf_lab: Lab) -> None:
    lab = elf_lab
    lab.deploy("--version", "1.0.0")
    first = Background(lab, "--version", "1.6.0", "--canary", "1", "--batch", "3", "--var", "window=4s")
    try:
        first.wait_line("lab-node02: health")  # mid-batch: the second batch is in its health gates
        code, doc, err = lab.deploy("--version", "1.7.0")
        assert code == 4, err
        assert "is locked by" in err and "deploy 2" in err
        first.proc.send_signal(signal.SIGINT)
    finally:
        code = first.finish()
    assert code == 130, first.output
    for node in lab.nodes:
        assert lab.health(node) is not None, node  # no host left without a running release
    code, doc, err = lab.deploy("--version", "1.6.0", "--var", "window=4s", "--batch", "50%")
    assert code == 0, err  # the interrupted run released its locks
    result = outcomes(doc)
    assert result["lab-node01"] == "skipped" and result["lab-node02"] == "skipped"
    assert result["lab-node10"] == "deployed"


def test_force_refuses_a_live_lock_and_an_expired_one_is_taken(elf_lab: Lab) -> None:
    from fleetctl.rollout.runner import DeployOptions, load_fleet

    lab = elf_lab
    fleet = load_fleet(DeployOptions(playbook=lab.playbook, inventories=[lab.inventory], limit="lab-node03"),
                       {"version": "0"})
    client = fleet.client_factory()("lab-node03")
    try:
        client.lock_fleet_app(app="hello", owner="ghost@elsewhere", deploy_id="ghost-run", ttl_seconds=600,
                              process="elsewhere/boot/1/4242/77")
        code, _, err = lab.deploy("--version", "1.0.0", "--limit", "lab-node03")
        assert code == 4 and "ghost@elsewhere" in err and "ghost-run" in err and "--force" not in err, err
        code, _, err = lab.deploy("--version", "1.0.0", "--limit", "lab-node03", "--force")
        assert code == 4 and "--force refused" in err, err
        assert client.get_fleet_state(app="hello", root="C:\\apps\\hello").lock.deploy_id == "ghost-run"  # type: ignore[union-attr]
        client.lock_fleet_app(app="hello", owner="ghost@elsewhere", deploy_id="ghost-run", ttl_seconds=1)
        wait_for(lambda: client.get_fleet_state(app="hello", root="C:\\apps\\hello").lock.expired,  # type: ignore[union-attr]
                 10, "the ghost's lock to expire")
        code, _, err = lab.deploy("--version", "1.0.0", "--limit", "lab-node03")
        assert code == 0, err  # an expired lock is taken without --force
    finally:
        with contextlib.suppress(Exception):
            client.unlock_fleet_app(app="hello", deploy_id="ghost-run")
        client.close()


def test_a_run_longer_than_its_lock_ttl_is_not_run_over(elf_lab: Lab) -> None:
    # A 2 s lock TTL and a 60 s canary bake: without renewal every lock would expire within the bake. The bake is
    # long so that the second commands (each a few seconds of start-up on a loaded machine) run inside it; the first
    # run is then interrupted, which releases its locks.
    from fleetctl.rollout.runner import DeployOptions, load_fleet

    lab = elf_lab
    lab.deploy("--version", "1.0.0")
    fleet = load_fleet(DeployOptions(playbook=lab.playbook, inventories=[lab.inventory], limit="lab-node10"),
                       {"version": "0"})
    client = fleet.client_factory()("lab-node10")
    first = Background(lab, "--version", "1.8.0", "--canary", "1", "--var", "bake=60s", "--var", "lock_ttl=2s")
    try:
        first.wait_line("baking")

        def renewed_past_its_ttl() -> bool:
            lock = client.get_fleet_state(app="hello", root="C:\\apps\\hello").lock
            return bool(lock and lock.renewed_at and lock.acquired_at and not lock.expired
                        and (lock.renewed_at - lock.acquired_at).total_seconds() > 2.5)

        wait_for(renewed_past_its_ttl, 20, "the first run to renew its lock past the TTL it started with")
        code, _, err = lab.deploy("--version", "1.9.0", "--var", "lock_ttl=2s")
        assert code == 4 and "is locked by" in err and "--force" not in err, err
        code, _, err = lab.deploy("--version", "1.9.0", "--var", "lock_ttl=2s", "--force")
        assert code == 4 and "--force refused" in err, err
        assert first.proc.poll() is None, first.output  # still baking: the refusals happened inside its run
        first.proc.send_signal(signal.SIGINT)
    finally:
        code = first.finish()
        client.close()
    assert code == 130, first.output
    versions = {n: (lab.health(n) or {}).get("version") for n in lab.nodes}
    assert versions["lab-node01"] == "1.8.0" and all(versions[n] == "1.0.0" for n in lab.nodes[1:]), versions
    ops = {n: s["operations"] for n, s in lab.status().items()}
    assert all(o.get("Update-FleetAppLock", 0) >= 3 for o in ops.values()), ops
    code, _, err = lab.deploy("--version", "1.0.0", "--limit", "lab-node01")  # the interrupted run unlocked
    assert code == 0, err


def test_auto_pulls_and_a_node_cut_off_from_the_controller_falls_back_to_push(
        elf_lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.artifacts.pull_server import PullServer
    from fleetctl.rollout.events import EventBus
    from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy

    lab = elf_lab

    def deploy(version: str) -> dict[str, str | None]:
        opts = DeployOptions(playbook=lab.playbook, inventories=[lab.inventory], limit="lab-node01:lab-node02",
                             version=version, dist_dir=lab.directory / "dist", extra_vars=("window=0s",))
        result = run_deploy(prepare_deploy(opts), EventBus())
        assert result.exit_code == 0, result.message
        return {h: o.transfer for h, o in result.outcomes.items()}

    assert deploy("3.1.0") == {"lab-node01": "pull", "lab-node02": "pull"}
    # The server runs, but the address it advertises is one no node can reach: every pull fails, every host pushes.
    unreachable = os.environ.get("FLEETCTL_TEST_ROLLOUT_UNREACHABLE", "127.0.59.254")
    monkeypatch.setattr("fleetctl.rollout.deploy.pull_server_for",
                        lambda addresses: PullServer("127.0.0.1", advertise=unreachable))
    before = stored(lab)
    assert deploy("3.2.0") == {"lab-node01": "push", "lab-node02": "push"}
    after = stored(lab)
    assert after["lab-node01"] > before["lab-node01"] and after["lab-node03"] == before["lab-node03"]
    assert (lab.health("lab-node01") or {}).get("version") == "3.2.0"


def test_a_rollout_outlives_the_pools_idle_timeout(idle_lab: Lab) -> None:
    # Every host is connected and locked before the first batch; with one host per batch and a 2 s stability
    # window, the later batches start seconds after the hosts' shells expired (1 s idle timeout), and every
    # host's pool is idle again while the others deploy, before the final unlock.
    lab = idle_lab
    code, doc, err = lab.deploy("--version", "1.0.0", "--batch", "1", "--var", "window=2s")
    assert code == 0, err
    assert set(outcomes(doc).values()) == {"deployed"} and all(v["error"] is None for v in doc["hosts"].values())
    assert finished_in_plan_order(lab)
    assert all((lab.health(n) or {}).get("version") == "1.0.0" for n in lab.nodes)
    shells = {n: s["shells"] for n, s in lab.status().items()}
    assert all(s["expired"] >= 1 for s in shells.values()), shells  # the timeout really struck every host
    # and the app locks were released through the new pools
    code, doc, err = lab.deploy("--version", "1.0.1", "--batch", "2")
    assert code == 0, err


def test_a_change_freeze_through_the_cli(elf_lab: Lab) -> None:
    lab = elf_lab
    lab.deploy("--version", "1.0.0")
    frozen = lab.fleetctl("lock", str(lab.playbook), "-i", str(lab.inventory), "--reason", "quarter close",
                          "--ttl", "1h")
    assert frozen.returncode == 0, frozen.stderr
    assert "10 host(s) frozen" in frozen.stdout and "quarter close" in frozen.stdout
    try:
        for command in (("deploy", "--version", "1.1.0"), ("deploy", "--version", "1.1.0", "--force"),
                        ("rollback",)):
            refused = lab.fleetctl(command[0], str(lab.playbook), "-i", str(lab.inventory), "--yes", *command[1:])
            assert refused.returncode == 4, (command, refused.stderr)
            assert "is frozen by" in refused.stderr and "quarter close" in refused.stderr, refused.stderr
        shown = lab.fleetctl("lock", str(lab.playbook), "-i", str(lab.inventory), "--status", "--json")
        assert shown.returncode == 0, shown.stderr
        states = json.loads(shown.stdout)["hosts"]
        assert {h["state"] for h in states.values()} == {"frozen"}
        assert {h["lock"]["reason"] for h in states.values()} == {"quarter close"}
        assert all((lab.health(n) or {}).get("version") == "1.0.0" for n in lab.nodes)
    finally:
        lifted = lab.fleetctl("unlock", str(lab.playbook), "-i", str(lab.inventory))
    assert lifted.returncode == 0 and "10 host(s) unfrozen" in lifted.stdout, lifted.stderr
    code, _, err = lab.deploy("--version", "1.1.0", "--limit", "lab-node01")
    assert code == 0, err


def test_if_changed_touches_nothing_when_every_host_runs_the_target_and_deploys_only_those_that_differ(
        elf_lab: Lab) -> None:
    lab = elf_lab
    code, _, err = lab.deploy("--version", "1.0.0")
    assert code == 0, err
    before = {n: dict(s["operations"]) for n, s in lab.status().items()}
    code, doc, err = lab.deploy("--version", "1.0.0", "--if-changed")
    assert code == 0, err
    assert doc["changed"] == [] and "already runs 1.0.0" in doc["message"] and "no lock taken" in doc["message"]
    after = {n: dict(s["operations"]) for n, s in lab.status().items()}
    for node in lab.nodes:
        grown = {op: after[node].get(op, 0) - before[node].get(op, 0) for op in after[node]}
        assert {op: n for op, n in grown.items() if n} == {"Get-FleetState": 1}, (node, grown)  # one read, no lock
    # One host moves off the target: only that host is deployed (locked, changed); the others are only read.
    code, _, err = lab.deploy("--version", "1.0.1", "--limit", "lab-node07")
    assert code == 0, err
    before = {n: dict(s["operations"]) for n, s in lab.status().items()}
    code, doc, err = lab.deploy("--version", "1.0.0", "--if-changed")
    assert code == 0, err
    assert "1 of 10 host(s) differ" in err
    assert {h: v["outcome"] for h, v in doc["hosts"].items()} == {"lab-node07": "deployed"}
    after = {n: dict(s["operations"]) for n, s in lab.status().items()}
    for node in lab.nodes:
        grown = {op for op in after[node] if after[node][op] != before[node].get(op, 0)}
        if node == "lab-node07":
            assert {"Lock-FleetApp", "Switch-FleetRelease", "Unlock-FleetApp"} <= grown, grown
        else:
            assert grown == {"Get-FleetState"}, (node, grown)
    assert all((lab.health(n) or {}).get("version") == "1.0.0" for n in lab.nodes)


def test_a_killed_controllers_locks_are_provably_gone_and_force_takes_them(elf_lab: Lab) -> None:
    lab = elf_lab
    code, _, err = lab.deploy("--version", "1.0.0")
    assert code == 0, err
    run = Background(lab, "--version", "1.2.0", "--canary", "1", "--var", "bake=60s")
    try:
        run.wait_line("baking")
        run.proc.send_signal(signal.SIGKILL)  # no cleanup at all: every lock stays, the journal says running
    finally:
        run.finish()
    code, _, err = lab.deploy("--version", "1.2.0")
    assert code == 4, err
    assert "no longer running" in err and "pass --force" in err, err
    code, doc, err = lab.deploy("--version", "1.2.0", "--force")
    assert code == 0, err
    assert outcomes(doc)["lab-node01"] == "skipped"  # the canary the killed run finished
    assert all((lab.health(n) or {}).get("version") == "1.2.0" for n in lab.nodes)
