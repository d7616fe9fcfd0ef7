"""A real cron daemon fires `fleetctl schedule install`'s entry, which runs an unattended deploy against the lab.

Debian's cron has no option for another crontab directory, so the test gives it private ones: cron runs in its own
mount namespace (`unshare --mount`) where a temp dir is bind-mounted over /var/spool/cron/crontabs, an empty file
over /etc/crontab, an empty dir over /etc/cron.d and a tmpfs over /run (its pid file). Every `crontab` call of the
test enters that namespace with `nsenter`, so the machine's own crontabs are never read or written. Needs root
(mount namespaces), `cron`, `unshare` and `nsenter`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.notify.receiver import Receiver, receiver
from tests.support import wait_for

from .conftest import FLEETCTL, Lab, _env, _start_lab

pytestmark = [pytest.mark.lab, pytest.mark.cron]

SPOOL = "/var/spool/cron/crontabs"


@dataclass
class PrivateCron:
    pid: int
    spool: Path

    def enter(self, *argv: str, cwd: Path, env: dict[str, str] | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        # --wd: entering a mount namespace resets the working directory to its root.
        proc = subprocess.run(["nsenter", "--target", str(self.pid), "--mount", f"--wd={cwd}", "--", *argv], cwd=cwd,
                              capture_output=True, text=True, timeout=120, env=env or _env(), check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def crontab_text(self, cwd: Path) -> str:
        proc = self.enter("crontab", "-l", cwd=cwd, check=False)
        return proc.stdout if proc.returncode == 0 else ""


@pytest.fixture
def private_cron(tmp_path: Path) -> Iterator[PrivateCron]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("cron", "unshare", "nsenter", "crontab")):
        pytest.skip("needs root, cron, unshare and nsenter (scripts/bootstrap installs cron)")
    spool = tmp_path / "crontabs"
    spool.mkdir()
    os.chmod(spool, 0o1730)
    etc_crontab = tmp_path / "etc-crontab"
    etc_crontab.write_text("")
    crond = tmp_path / "cron.d"
    crond.mkdir()
    script = (f"mount --bind {spool} {SPOOL} && mount --bind {etc_crontab} /etc/crontab && "
              f"mount --bind {crond} /etc/cron.d && mount -t tmpfs tmpfs /run && exec cron -f -L 15")
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Ready when cron's own mount namespace shows the private spool (and cron is still running).
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"cron exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
            try:
                return os.readlink(f"/proc/{proc.pid}/exe").endswith("/cron")
            except OSError:
                return False
        wait_for(ready, 10, "cron to start in its mount namespace")
        yield PrivateCron(proc.pid, spool)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cron_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_ROLLOUT_CRON_BASE", "127.0.55.1")
    yield from _start_lab(tmp_path_factory.mktemp("rollout-cron"), 2, base, "linux")


def _next_minute() -> tuple[str, float]:
    """A time of day cron will fire at soon, and when (epoch seconds). Cron reads a changed crontab at the next
    minute boundary, so an entry for the very next minute needs a few seconds' margin."""
    now = time.time()
    fire = (int(now // 60) + 1) * 60
    if fire - now < 8:
        fire += 60
    return time.strftime("%H:%M", time.localtime(fire)), fire


def test_cron_fires_an_unattended_deploy_and_remove_restores_the_crontab(private_cron: PrivateCron,
                                                                         cron_lab: Lab) -> None:
    with receiver() as hook:
        _cron_fires(private_cron, cron_lab, hook)


SECRET_HEADER = "Bearer nightly-s3cret-token"


def _cron_fires(private_cron: PrivateCron, cron_lab: Lab, hook: Receiver) -> None:
    lab = cron_lab
    project = lab.directory
    playbook = lab.playbook.with_name("hello-nightly.yml")  # the lab's playbook, telling a webhook how it went
    playbook.write_text(lab.playbook.read_text() + "\nnotify:\n  webhooks:\n    - " + json.dumps(
        {"url": hook.url, "headers": {"Authorization": SECRET_HEADER}}) + "\n")
    # The user's own crontab, which fleetctl must leave alone.
    own = "# my own jobs\nMAILTO=\"\"\n17 3 * * * /bin/true nightly-backup\n"
    real = Path(SPOOL, "root")
    real_before = real.read_bytes() if real.exists() else None
    subprocess.run(["nsenter", "--target", str(private_cron.pid), "--mount", "--", "crontab", "-"], input=own,
                   text=True, check=True, timeout=30)
    before = private_cron.crontab_text(project)
    assert before == own
    assert (private_cron.spool / "root").is_file()  # written to the private spool

    first = private_cron.enter(*FLEETCTL, "schedule", "install", str(playbook), "--at", "03:33", "--days", "sat",
                               "--name", "hello-nightly", "--scheduler", "cron", "-i", str(lab.inventory), "--version",
                               "1.9.0", cwd=project)
    assert "installed schedule hello-nightly" in first.stdout and "33 3 * * 6" in private_cron.crontab_text(project)
    at, fire = _next_minute()
    installed = private_cron.enter(*FLEETCTL, "schedule", "install", str(playbook), "--at", at, "--name",
                                   "hello-nightly", "--scheduler", "cron", "-i", str(lab.inventory), "--version",
                                   "2.0.0", "--batch", "1", cwd=project)
    assert "updated schedule hello-nightly" in installed.stdout  # the same name: updated in place
    assert "no cron daemon" not in installed.stderr  # it sees the test's cron (its pid file)
    table = private_cron.crontab_text(project)
    assert table.startswith(own) and table.count("schedule run hello-nightly") == 1 and "33 3" not in table
    other = project / "another-project"
    other.mkdir()
    clash = private_cron.enter(*FLEETCTL, "schedule", "install", str(playbook), "--at", "04:00", "--name",
                               "hello-nightly", "--scheduler", "cron", "-i", str(lab.inventory), "--version", "9.9.9",
                               cwd=other, check=False)
    assert clash.returncode == 2 and "already installed for the project" in clash.stderr, clash.stderr
    assert private_cron.crontab_text(project) == table  # nothing changed
    listed = json.loads(private_cron.enter(*FLEETCTL, "schedule", "list", "--scheduler", "cron", "--json",
                                           cwd=project).stdout)
    assert [e["name"] for e in listed["entries"]] == ["hello-nightly"]  # the user's own job is not fleetctl's
    assert listed["entries"][0]["at"] == at and listed["entries"][0]["last_run"] is None

    logs = project / ".fleetctl" / "logs"

    def finished_log() -> Path | None:
        for log in sorted(logs.glob("*.log")) if logs.is_dir() else []:
            if any(line.startswith("exit code ") for line in log.read_text().splitlines()):
                return log  # schedule run's own last line: the deploy, the reports and the log are done
        return None

    try:
        wait_for(lambda: finished_log() is not None, max(0.0, fire - time.time()) + 150,
                 "cron to fire the entry and the unattended deploy to finish")
    except AssertionError:
        # What cron would have run, run by hand the way cron does (its output would have gone to mail).
        job = table.splitlines()[-1].split(" ", 5)[5]
        by_hand = private_cron.enter("env", "-i", "HOME=/root", "PATH=/usr/bin:/bin", "/bin/sh", "-c", job,
                                     cwd=project, check=False)
        logs_now = {p.name: p.read_text()[-2000:] for p in logs.glob("*")} if logs.is_dir() else {}
        raise AssertionError(f"cron did not run the entry:\n{table}\nby hand: {by_hand.returncode}\n"
                             f"{by_hand.stdout}\n{by_hand.stderr}\nlogs: {logs_now}") from None
    log = finished_log()
    assert log is not None
    text = log.read_text()
    assert text.rstrip().endswith("exit code 0: succeeded"), text
    assert time.time() >= fire - 1  # fired by cron at its minute, not by anything else
    run_id = log.stem
    html, junit = log.with_name(f"{run_id}.html"), log.with_name(f"{run_id}.junit.xml")
    assert html.is_file() and junit.is_file(), text  # the run's reports, next to its log
    assert f"report: {html}" in text and "<svg" in html.read_text() and "<testsuite" in junit.read_text()

    hook.wait_for(2)
    start, success = hook.bodies()
    assert (start["event"], success["event"]) == ("start", "success")
    assert success["run_id"] == run_id and success["version"] == "2.0.0"
    received = json.dumps(hook.bodies())
    assert SECRET_HEADER not in received and "nightly-s3cret" not in received and hook.url not in received
    assert "nightly-s3cret" not in text and hook.url not in text
    history = json.loads(subprocess.run([*FLEETCTL, "history", "show", run_id, "--json"], cwd=project,
                                        capture_output=True, text=True, check=True, env=_env()).stdout)
    assert history["id"] == run_id and history["status"] == "succeeded"
    assert history["trigger"] == "scheduled" and history["schedule"] == "hello-nightly"
    assert history["version"] == "2.0.0" and history["inputs"]["unattended"] is True
    assert history["inputs"]["artifact_sha256"]
    assert set(history["hosts"]) == set(lab.nodes)
    for node in lab.nodes:
        assert (lab.health(node) or {}).get("version") == "2.0.0"
    listed = json.loads(private_cron.enter(*FLEETCTL, "schedule", "list", "--scheduler", "cron", "--json",
                                           cwd=project).stdout)
    assert listed["entries"][0]["last_run"]["id"] == run_id

    private_cron.enter(*FLEETCTL, "schedule", "remove", "hello-nightly", "--scheduler", "cron", cwd=project)
    assert private_cron.crontab_text(project) == before
    assert (real.read_bytes() if real.exists() else None) == real_before  # the machine's crontab: untouched
    assert not (project / ".fleetctl" / "schedules" / "hello-nightly.json").exists()


def _save_entry(lab: Lab, name: str, *deploy_args: str, playbook: Path | None = None) -> None:
    from fleetctl.schedule.entry import ScheduleEntry, parse_at, parse_days, save_definition

    save_definition(ScheduleEntry(name=name, project=lab.directory, playbook=str(playbook or lab.playbook),
                                  at=parse_at("02:00"),
                                  days=parse_days(None), deploy_args=("-i", str(lab.inventory), *deploy_args),
                                  python=FLEETCTL[0], path=os.environ.get("PATH")))


def test_a_scheduled_run_never_takes_over_a_node_lock(cron_lab: Lab) -> None:
    from fleetctl.rollout.runner import DeployOptions, load_fleet

    lab = cron_lab
    _save_entry(lab, "locked-night", "--version", "2.1.0")
    fleet = load_fleet(DeployOptions(playbook=lab.playbook, inventories=[lab.inventory], limit="lab-node02"),
                       {"version": "0"})
    client = fleet.client_factory()("lab-node02")
    try:
        client.lock_fleet_app(app="hello", owner="alice@laptop", deploy_id="manual-run", ttl_seconds=600)
        proc = lab.fleetctl("schedule", "run", "locked-night")
        assert proc.returncode == 4, proc.stdout + proc.stderr
        run_id = proc.stderr.split("scheduled run ")[1].split(" ")[0]
        log = (lab.directory / ".fleetctl" / "logs" / f"{run_id}.log").read_text()
        assert "lab-node02 is locked by alice@laptop (deploy manual-run" in log
        assert "never takes over a lock" in log and "--force" not in log.split("$ fleetctl", 1)[1]
        shown = json.loads(lab.fleetctl("history", "show", run_id, "--json", check=True).stdout)
        assert (shown["status"], shown["trigger"], shown["schedule"]) == ("locked", "scheduled", "locked-night")
        assert all(h["outcome"] == "not_started" for h in shown["hosts"].values())
        for node in lab.nodes:
            assert (lab.health(node) or {}).get("version") != "2.1.0"  # nothing changed anywhere
    finally:
        client.unlock_fleet_app(app="hello", deploy_id="manual-run")
        client.close()


def test_a_run_that_finds_its_entry_still_running_is_skipped(cron_lab: Lab) -> None:
    import fcntl

    lab = cron_lab
    _save_entry(lab, "busy-night", "--version", "2.2.0")
    lock = lab.directory / ".fleetctl" / "schedules" / "busy-night.lock"
    with open(lock, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a run still going holds it
        held.write("run 20260101T020000Z-abcdef, pid 1, since 02:00")
        held.flush()
        proc = lab.fleetctl("schedule", "run", "busy-night", "--json")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["skipped"] is True and doc["exit_code"] == 4 and doc["schedule"] == "busy-night"
    run_id = doc["run_id"]
    log = (lab.directory / ".fleetctl" / "logs" / f"{run_id}.log").read_text()
    assert "still going (run 20260101T020000Z-abcdef" in log
    history = json.loads(lab.fleetctl("history", "--json", check=True).stdout)
    assert run_id not in {r["id"] for r in history["runs"]}  # no deploy was started


def test_stopping_a_scheduled_run_interrupts_the_deploy_cleanly(cron_lab: Lab) -> None:
    """systemd stops the service with SIGINT, a plain `kill` sends SIGTERM: either reaches the deploy as Ctrl-C, so
    in-flight hosts finish or roll back and the locks are released."""
    import signal

    lab = cron_lab
    code, _, err = lab.deploy("--version", "2.2.5", "--var", "window=1s")  # every node runs a release
    assert code == 0, err
    _save_entry(lab, "stopped-night", "--version", "2.3.0", "--batch", "1", "--var", "window=4s")
    logs = lab.directory / ".fleetctl" / "logs"
    before = set(logs.glob("*.log")) if logs.is_dir() else set()
    proc = subprocess.Popen([*FLEETCTL, "schedule", "run", "stopped-night"], cwd=lab.directory, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def in_health_gate() -> bool:
            new = set(logs.glob("*.log")) - before if logs.is_dir() else set()
            return any(": health" in p.read_text() for p in new)
        wait_for(in_health_gate, 120, "the scheduled deploy to reach a health gate")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    [log] = set(logs.glob("*.log")) - before
    assert log.read_text().rstrip().endswith("exit code 130: interrupted")
    shown = json.loads(lab.fleetctl("history", "show", log.stem, "--json", check=True).stdout)
    assert shown["status"] == "interrupted" and shown["trigger"] == "scheduled"
    for node in lab.nodes:
        assert lab.health(node) is not None, node  # no host left without a running release
    code, _, err = lab.deploy("--version", "2.3.0", "--var", "window=1s")
    assert code == 0, err  # the interrupted run released its locks


def test_a_change_freeze_blocks_a_scheduled_run_which_notifies(cron_lab: Lab) -> None:
    """Issue 14: a frozen fleet (`fleetctl lock`) stops a scheduled run before any change (exit 4); the log and the
    history name the freeze and its reason, and the playbook's webhook hears that the run failed."""
    lab = cron_lab
    with receiver() as hook:
        playbook = lab.playbook.with_name("hello-frozen.yml")
        playbook.write_text(lab.playbook.read_text() + "\nnotify:\n  webhooks:\n    - " + json.dumps(
            {"url": hook.url}) + "\n")
        _save_entry(lab, "frozen-night", "--version", "2.4.0", playbook=playbook)
        before = {node: (lab.health(node) or {}).get("version") for node in lab.nodes}
        lab.fleetctl("lock", str(playbook), "-i", str(lab.inventory), "--reason", "quarter-end freeze", check=True)
        try:
            proc = lab.fleetctl("schedule", "run", "frozen-night", "--json")
            assert proc.returncode == 4, proc.stdout + proc.stderr
            run_id = json.loads(proc.stdout)["run_id"]
            log = (lab.directory / ".fleetctl" / "logs" / f"{run_id}.log").read_text()
            assert "quarter-end freeze" in log and "fleetctl unlock" in log, log
            assert log.rstrip().endswith("exit code 4: locked (another run, or a change freeze); nothing changed"), log
            shown = json.loads(lab.fleetctl("history", "show", run_id, "--json", check=True).stdout)
            assert (shown["status"], shown["trigger"], shown["schedule"]) == ("locked", "scheduled", "frozen-night")
            assert all(h["outcome"] == "not_started" for h in shown["hosts"].values())
            wait_for(lambda: any(b.get("event") == "failure" for b in hook.bodies()), 20, "the failure webhook")
            [failure] = [b for b in hook.bodies() if b.get("event") == "failure"]
            assert failure["run_id"] == run_id and failure["exit_code"] == 4, failure
            assert "quarter-end freeze" in json.dumps(failure)
        finally:
            lab.fleetctl("unlock", str(playbook), "-i", str(lab.inventory), check=True)
        assert {node: (lab.health(node) or {}).get("version") for node in lab.nodes} == before  # nothing changed


def test_a_scheduled_if_changed_run_with_nothing_to_deploy_logs_it_and_exits_0(cron_lab: Lab) -> None:
    lab = cron_lab
    planned = json.loads(lab.fleetctl("schedule", "install", str(lab.playbook), "--at", "02:00", "--name",
                                      "same-night", "--scheduler", "cron", "--dry-run", "--json", "-i",
                                      str(lab.inventory), "--version", "2.5.0", "--if-changed", check=True).stdout)
    args = planned["entry"]["deploy_args"]
    assert args[-1] == "--if-changed"  # `schedule install --if-changed` becomes the entry's deploy option
    _save_entry(lab, "same-night", *args[2:])  # without the -i _save_entry adds
    first = lab.fleetctl("schedule", "run", "same-night", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    for node in lab.nodes:
        assert (lab.health(node) or {}).get("version") == "2.5.0"
    again = lab.fleetctl("schedule", "run", "same-night", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    run_id = json.loads(again.stdout)["run_id"]
    log = (lab.directory / ".fleetctl" / "logs" / f"{run_id}.log").read_text()
    assert "already runs 2.5.0: nothing to deploy, no lock taken" in log, log
    assert "no run report: nothing was deployed" in log, log
    assert log.rstrip().endswith("exit code 0: succeeded"), log
    history = json.loads(lab.fleetctl("history", "--json", check=True).stdout)
    assert run_id not in {r["id"] for r in history["runs"]}  # no deploy ran, so none is recorded
