"""Lab fixtures for rollout end-to-end tests: a lab started through the real CLI in a temp directory, and the
example playbook adapted for tests (Linux ELF build for speed, or the real Windows exe under Wine).

Addresses are configurable: FLEETCTL_TEST_ROLLOUT_BASE (ELF lab, default 127.0.50.1),
FLEETCTL_TEST_ROLLOUT_WINE_BASE (Wine lab, default 127.0.51.1) and FLEETCTL_TEST_ROLLOUT_IDLE_BASE (ELF lab with a
1 s shell idle timeout, default 127.0.53.1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FLEETCTL = [sys.executable, "-m", "fleetctl"]
HELLO = REPO / "playbooks" / "hello"


def make_playbook(directory: Path, goos: str) -> Path:
    """The example playbook with test knobs: `window` (stability window), `bake` (canary bake), `lock_ttl`, fewer
    retries, the given goos."""
    text = (HELLO / "playbook.yml").read_text()
    text = text.replace("goos: windows", f"goos: {goos}")
    text = text.replace("dir: src", f"dir: {HELLO / 'src'}")
    # The templates are copied, not named by absolute path: a playbook reads only under its project (issue 15).
    shutil.copytree(HELLO / "templates", directory / "templates", dirs_exist_ok=True)
    text = re.sub(r"stability_window: \S+", "stability_window: \"{{ window | default('1s') }}\"", text)
    text = re.sub(r"retries: \d+", "retries: 20", text)
    text = re.sub(r"interval: \S+", "interval: 0.25s", text)
    text = text.replace("  canary_bake: 0s\n", "  canary_bake: \"{{ bake | default('0s') }}\"\n"
                                              "  lock_ttl: \"{{ lock_ttl | default('30m') }}\"\n")
    path = directory / f"hello-{goos}.yml"
    path.write_text(text)
    return path


@dataclass
class Lab:
    directory: Path  # the cwd of every command (dist/ and .fleetctl/ land here)
    lab_dir: Path
    inventory: Path
    playbook: Path
    nodes: list[str]
    addresses: dict[str, str]

    def fleetctl(self, *args: str, check: bool = False, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*FLEETCTL, *args], check=False, cwd=self.directory, capture_output=True, text=True,
                              timeout=timeout, env=_env())
        if check and proc.returncode != 0:
            raise AssertionError(f"fleetctl {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def deploy(self, *args: str, timeout: float = 240) -> tuple[int, dict[str, Any], str]:
        """`fleetctl deploy --yes --json`; returns exit code, the JSON document and stderr."""
        proc = self.fleetctl("deploy", str(self.playbook), "-i", str(self.inventory), "--yes", "--json", *args,
                             timeout=timeout)
        try:
            doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except ValueError:
            raise AssertionError(f"not JSON on stdout:\n{proc.stdout}\n{proc.stderr}") from None
        return proc.returncode, doc, proc.stderr

    def status(self) -> dict[str, Any]:
        out = self.fleetctl("lab", "status", "--dir", str(self.lab_dir), "--json", check=True).stdout
        return {n["name"]: n for n in json.loads(out)["nodes"]}

    def health(self, node: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://{self.addresses[node]}:8080/healthz", timeout=3) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def fault(self, node: str, *faults: str) -> None:
        self.fleetctl("lab", "fault", "--dir", str(self.lab_dir), node, *faults, check=True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive as they happen (tests wait for them)
    env.pop("FLEETCTL_INVENTORY", None)
    return env


def _start_lab(directory: Path, nodes: int, base: str, goos: str, *extra: str) -> Iterator[Lab]:
    lab_dir = directory / "lab"
    args = ["lab", "up", "--nodes", str(nodes), "--base", base, "--dir", str(lab_dir), *extra]
    if goos != "windows":
        args.append("--no-wine")
    proc = subprocess.run([*FLEETCTL, *args], check=False, cwd=directory, capture_output=True, text=True, timeout=300,
                          env=_env())
    if proc.returncode != 0:
        pytest.fail(f"lab up failed: {proc.stdout}\n{proc.stderr}")
    try:
        names = [f"lab-node{i:02d}" for i in range(1, nodes + 1)]
        first = [int(p) for p in base.split(".")]
        addresses = {n: ".".join(map(str, first[:3] + [first[3] + i])) for i, n in enumerate(names)}
        yield Lab(directory, lab_dir, lab_dir / "inventory.yml", make_playbook(directory, goos), names, addresses)
    finally:
        subprocess.run([*FLEETCTL, "lab", "down", "--dir", str(lab_dir)], check=False, cwd=directory, capture_output=True,
                       timeout=120, env=_env())


@pytest.fixture(scope="session")
def elf_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Ten lab nodes running the example service as a Linux ELF (fast)."""
    base = os.environ.get("FLEETCTL_TEST_ROLLOUT_BASE", "127.0.50.1")
    yield from _start_lab(tmp_path_factory.mktemp("rollout-elf"), 10, base, "linux")


@pytest.fixture(scope="session")
def idle_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Four ELF nodes whose WinRM shells expire after 1 s idle (`lab up --idle-timeout 1s`)."""
    base = os.environ.get("FLEETCTL_TEST_ROLLOUT_IDLE_BASE", "127.0.53.1")
    yield from _start_lab(tmp_path_factory.mktemp("rollout-idle"), 4, base, "linux", "--idle-timeout", "1s")


@pytest.fixture(scope="session")
def wine_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two lab nodes running the real Windows exe under Wine."""
    base = os.environ.get("FLEETCTL_TEST_ROLLOUT_WINE_BASE", "127.0.51.1")
    yield from _start_lab(tmp_path_factory.mktemp("rollout-wine"), 2, base, "windows")


