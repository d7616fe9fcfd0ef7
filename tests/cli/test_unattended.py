"""`deploy --unattended` refuses what nobody could answer for: --force, and a git tree with uncommitted changes
(unless --version says what it is). These refusals come before any host is contacted (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLAYBOOK = """\
name: hello
artifact:
  collect:
    path: bin/hello.exe
install:
  root: 'C:\\apps\\hello'
service:
  name: hello
"""

# Port 1 on loopback: nothing listens, so a run that gets past the checks fails fast at connect.
INVENTORY = """\
all:
  hosts:
    n1:
      fleet_host: 127.0.0.1
      fleet_port: 1
      fleet_scheme: http
      fleet_auth: ntlm
      fleet_user: admin
      fleet_password: not-a-real-one
"""


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True,
                   capture_output=True, timeout=30)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "hello.exe").write_bytes(Path("/bin/true").read_bytes())  # an executable (ELF) will do
    (tmp_path / "hello.yml").write_text(PLAYBOOK)
    (tmp_path / "hosts.yml").write_text(INVENTORY)
    (tmp_path / ".gitignore").write_text(".fleetctl/\ndist/\n")
    git("init", "-q", cwd=tmp_path)
    git("add", ".", cwd=tmp_path)
    git("commit", "-qm", "init", cwd=tmp_path)
    return tmp_path


def deploy(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetctl", "deploy", "hello.yml", "-i", "hosts.yml", *args],
                          cwd=project, capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(project)})


def test_unattended_never_forces(project: Path) -> None:
    proc = deploy(project, "--unattended", "--force", "--version", "1.0.0")
    assert proc.returncode == 2 and "key '--force'" in proc.stderr and "never takes over a lock" in proc.stderr


def test_schedule_options_need_unattended(project: Path) -> None:
    proc = deploy(project, "--schedule", "nightly", "--yes")
    assert proc.returncode == 2 and "--unattended" in proc.stderr
    proc = deploy(project, "--unattended", "--run-id", "../../etc", "--version", "1")
    assert proc.returncode == 2 and "key '--run-id'" in proc.stderr


def test_a_dirty_tree_is_refused_unless_version_is_given(project: Path) -> None:
    (project / "hello.yml").write_text(PLAYBOOK + "description: edited, not committed\n")
    proc = deploy(project, "--unattended")
    assert proc.returncode == 2, proc.stderr
    assert "uncommitted changes (hello.yml)" in proc.stderr and "--version" in proc.stderr
    assert not (project / "dist").exists()  # refused before anything was built or collected
    proc = deploy(project, "--unattended", "--version", "1.0.0-hotfix")
    assert proc.returncode == 1, proc.stderr  # past the check: the (unreachable) host fails at connect
    assert "uncommitted" not in proc.stderr and "could not be reached" in proc.stdout + proc.stderr


def test_a_clean_tree_with_untracked_files_runs_unprompted(project: Path) -> None:
    (project / "notes.txt").write_text("untracked files do not make the tree dirty (git describe agrees)")
    proc = deploy(project, "--unattended")
    assert proc.returncode == 1, proc.stderr  # no prompt without a terminal, no --yes needed
    assert "confirmation" not in proc.stderr and "could not be reached" in proc.stdout + proc.stderr
    history = subprocess.run([sys.executable, "-m", "fleetctl", "history", "--json"], cwd=project, check=True,
                             capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert '"trigger": "manual"' in history.stdout  # unattended by hand is not a scheduled run
