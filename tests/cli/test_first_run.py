"""The first minutes with fleetctl, through the CLI: `init` writes a .gitignore and says where versions come from;
declining the deploy confirmation stops with "aborted", a non-zero exit and no node contacted."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.project_support import REPO, make_project


def fleetctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "fleetctl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env, check=False)


def test_init_writes_gitignore_and_explains_versions(tmp_path: Path) -> None:
    done = fleetctl(tmp_path, "init", "project")
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "project" / ".gitignore").read_text().splitlines()
    assert {".fleetctl/", "dist/", ".venv/"} <= set(lines)
    assert "--version" in done.stdout and "artifact.version" in done.stdout and "git" in done.stdout
    # An existing .gitignore keeps its lines and gains only what it lacks.
    other = tmp_path / "other"
    other.mkdir()
    (other / ".gitignore").write_text("*.log\ndist\n")
    assert fleetctl(tmp_path, "init", "other").returncode == 0
    kept = (other / ".gitignore").read_text().splitlines()
    assert kept[:2] == ["*.log", "dist"] and ".fleetctl/" in kept and ".venv/" in kept and "dist/" not in kept


def _answer_prompt(cwd: Path, args: list[str], answer: bytes, timeout: float = 90) -> tuple[int, str]:
    """Run fleetctl on a terminal (a pty), type `answer` once it asks, and return its exit code and screen."""
    controller, terminal = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200", TERM="dumb")
    proc = subprocess.Popen([sys.executable, "-m", "fleetctl", *args], cwd=cwd, stdin=terminal, stdout=terminal,
                            stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    screen = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                screen += chunk
            if not answered and b"[y/N]" in screen:
                os.write(controller, answer)
                answered = True
            if proc.poll() is not None and not ready:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    return code, screen.decode("utf-8", errors="replace")


def test_declining_the_confirmation_aborts(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    try:
        code, screen = _answer_prompt(project.root, ["deploy", str(project.playbook)], b"n\n")
        assert "Deploy 1.0.0 to 2 host(s)?" in screen, screen
        assert code == 130, screen
        assert "aborted" in screen
        assert project.connections == 0  # nothing was contacted, let alone changed
    finally:
        project.close()


def test_did_you_mean_for_keys_hosts_patterns_and_variables(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(REPO / "playbooks" / "hello", tmp_path / "hello", ignore=shutil.ignore_patterns("src"))
    playbook = tmp_path / "hello" / "playbook.yml"
    original = playbook.read_text()
    (tmp_path / "hosts.ini").write_text("[web]\nweb-east-01 datacenter=east\nweb-west-01 datacenter=west\n")
    plan = ["plan", str(playbook), "-i", str(tmp_path / "hosts.ini")]

    playbook.write_text(original.replace("keep_releases: 5", "keep_release: 5"))
    done = fleetctl(tmp_path, *plan)
    assert done.returncode == 2 and "install.keep_release" in done.stderr
    assert "did you mean 'keep_releases'?" in done.stderr
    playbook.write_text(original.replace("retries: 40", "retires: 40"))
    assert "did you mean 'retries'?" in fleetctl(tmp_path, *plan).stderr

    playbook.write_text(original.replace("spread_by: datacenter", "spread_by: \"{{ hello_prt }}\""))
    done = fleetctl(tmp_path, *plan)
    assert done.returncode == 2 and "'hello_prt' is undefined (did you mean 'hello_port'?)" in done.stderr

    playbook.write_text(original)
    done = fleetctl(tmp_path, *plan, "-l", "web-east-1")
    assert done.returncode == 2 and "did you mean 'web-east-01'?" in done.stderr
    assert "did you mean 'web'?" in fleetctl(tmp_path, *plan, "-l", "wbe").stderr
    done = fleetctl(tmp_path, "inventory", "show", "web-west01", "-i", str(tmp_path / "hosts.ini"))
    assert done.returncode == 2 and "did you mean 'web-west-01'?" in done.stderr
    # Nothing close: no guess.
    assert "did you mean" not in fleetctl(tmp_path, *plan, "-l", "zzzzqqq").stderr
