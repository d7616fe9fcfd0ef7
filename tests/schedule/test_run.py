"""One firing of an entry: the controller-side lock (two runs of one entry never overlap), the log named after the
run id, the deploy's own exit code, the environment file and the PATH the entry was installed with."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fleetctl.errors import ConfigError
from fleetctl.schedule.entry import ScheduleEntry, parse_at, parse_days
from fleetctl.schedule.run import EntryBusy, entry_lock, read_env_file, run_entry

FAKE_FLEETCTL = """\
import os, sys, time
# argv: -m fleetctl deploy ...
print("args", " ".join(sys.argv[3:]))
print("cwd", os.getcwd())
print("PATH", os.environ.get("PATH"))
print("FROM_ENV_FILE", os.environ.get("FROM_ENV_FILE"))
sys.stdout.flush()
if os.environ.get("FAKE_SLEEP"):
    time.sleep(float(os.environ["FAKE_SLEEP"]))
sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
"""


def fake_entry(tmp_path: Path, **kw: object) -> ScheduleEntry:
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!{sys.executable}\n" + textwrap.dedent(FAKE_FLEETCTL))
    fake.chmod(0o755)
    defaults: dict[str, object] = {"name": "hello", "project": tmp_path, "playbook": "p.yml", "at": parse_at("02:00"),
                                       "days": parse_days(None), "deploy_args": ("-i", "inv"), "python": str(fake)}
    defaults.update(kw)
    return ScheduleEntry(**defaults)  # type: ignore[arg-type]


def test_the_run_logs_everything_under_its_id_and_exits_as_the_deploy(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run.env").write_text("# secrets for the nightly run\nexport FROM_ENV_FILE='s3cr3t-value'\n\n"
                                      "FAKE_EXIT=3\n")
    result = run_entry(fake_entry(tmp_path, env_file="run.env", path="/opt/go/bin:/usr/bin:/bin"))
    assert result.exit_code == 3 and not result.skipped
    assert result.log == tmp_path / ".fleetctl" / "logs" / f"{result.run_id}.log"
    log = result.log.read_text()
    assert f"args deploy p.yml -i inv --unattended --schedule hello --run-id {result.run_id}" in log
    assert f"cwd {tmp_path}" in log and "PATH /opt/go/bin:/usr/bin:/bin" in log
    assert "FROM_ENV_FILE ********" in log and "s3cr3t-value" not in log  # env-file values count as secrets
    assert log.rstrip().endswith("exit code 3: halted with hosts on mixed versions")


def test_two_runs_of_one_entry_never_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.schedule.entry import save_definition

    entry = fake_entry(tmp_path)
    save_definition(entry)
    monkeypatch.setenv("FAKE_SLEEP", "3")
    first = subprocess.Popen([sys.executable, "-c", ("import sys; from pathlib import Path; "
                              "from fleetctl.schedule.entry import load_definition; "
                              "from fleetctl.schedule.run import run_entry; "
                              f"sys.exit(run_entry(load_definition(Path({str(tmp_path)!r}), 'hello')).exit_code)")],
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        lock = tmp_path / ".fleetctl" / "schedules" / "hello.lock"
        deadline = time.monotonic() + 20
        while not (lock.exists() and lock.read_text().startswith("run ")):
            assert time.monotonic() < deadline and first.poll() is None, "the first run never took the lock"
            time.sleep(0.05)
        monkeypatch.setenv("FAKE_SLEEP", "0")
        second = run_entry(entry)
        assert second.skipped and second.exit_code == 4
        text = second.log.read_text()
        assert "skipped: the previous run of schedule hello is still going (run " in text
        assert "args deploy" not in text  # nothing was started
    finally:
        assert first.wait(timeout=30) == 0
    third = run_entry(entry)  # the lock went with the process that held it
    assert third.exit_code == 0 and not third.skipped


def test_entry_lock_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with entry_lock(path, "run A"):
        # flock locks belong to the open file description: a second open in this process is refused too
        with pytest.raises(EntryBusy) as caught, entry_lock(path, "run B"):
            pass
        assert caught.value.holder == "run A"
    with entry_lock(path, "run C"):
        assert path.read_text() == "run C"


def test_env_file_format(tmp_path: Path) -> None:
    path = tmp_path / "e.env"
    path.write_text('A=1\nexport B="two words"\n# c\n\nC=\nD=x=y\n')
    assert read_env_file(path) == {"A": "1", "B": "two words", "C": "", "D": "x=y"}
    path.write_text("A=1\nnot a line\n")
    with pytest.raises(ConfigError) as caught:
        read_env_file(path)
    assert caught.value.line == 2 and caught.value.key == "--env-file"
