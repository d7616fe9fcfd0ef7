"""`deploy --if-changed` benchmark against the lab: the no-op check (read each node's state, compare with the
target, no lock) against a full no-op deploy of the same nodes (lock all, read state per host, skip, unlock), in
the same run. Both open fresh connections (NTLM over HTTPS) to every node, as a command does.

Run:  .venv/bin/python tests/bench/bench_if_changed.py [--nodes 200] [--base 127.0.54.1] [--runs 3]
(inside /work/tools/netns-run on a shared machine). The example service is built for Linux (ELF, runs natively
in the lab). The artifact is produced once per measurement, outside the timed part (its reuse by build-input hash
is in docs/benchmarks.md, Build); the full commands are timed too, through the CLI, once each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import run_parallel
from fleetctl.rollout.events import EventBus
from fleetctl.rollout.if_changed import compare_with_fleet
from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy
from tests.rollout.conftest import make_playbook


def open_and_close(factory: Callable[[str], NodeClient], host: str) -> None:
    client = factory(host)
    try:
        client.connect()
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base", default=os.environ.get("FLEETCTL_BENCH_IF_CHANGED_BASE", "127.0.54.1"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-if-changed-"))
    os.chdir(work)
    lab = work / "lab"
    fleetctl = [sys.executable, "-m", "fleetctl"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    subprocess.run([*fleetctl, "lab", "up", "--nodes", str(args.nodes), "--base", args.base, "--dir", str(lab),
                    "--no-wine"], check=True, env=env, capture_output=True)
    print(f"lab up, {args.nodes} nodes: {time.monotonic() - started:.1f} s")
    try:
        playbook = make_playbook(work, "linux")
        inventory = lab / "inventory.yml"
        opts = DeployOptions(playbook=playbook, inventories=[inventory], batch="25%", version="1.0.0",
                             extra_vars=("window=0s",))
        started = time.monotonic()
        first = run_deploy(prepare_deploy(opts), EventBus())
        assert first.exit_code == 0, first.message
        print(f"first deploy (installs the services): {time.monotonic() - started:.1f} s")
        walls: dict[str, list[float]] = {"connect": [], "check": [], "deploy": []}
        cpus: dict[str, list[float]] = {"connect": [], "check": [], "deploy": []}

        def connect_all() -> None:
            # The floor every command pays: open a pool and load the module on every node.
            fleet = prepare_deploy(opts).fleet
            factory = fleet.client_factory()
            outcomes = run_parallel(list(fleet.plan.hosts), partial(open_and_close, factory), forks=fleet.forks)
            assert all(o.ok for o in outcomes.values())

        def check_all() -> None:
            assert compare_with_fleet(prepared["check"]).unchanged

        def deploy_all() -> None:
            noop = run_deploy(prepared["deploy"], EventBus())
            assert noop.exit_code == 0 and {o.outcome for o in noop.outcomes.values()} == {"skipped"}

        steps = {"connect": connect_all, "check": check_all, "deploy": deploy_all}
        names = list(steps)
        for round_ in range(1, args.runs + 1):
            prepared = {"check": prepare_deploy(opts), "deploy": prepare_deploy(opts)}  # artifact outside the timing
            order = names[round_ % 3:] + names[:round_ % 3]  # rotate, so load drifts hit each one alike
            for name in order:
                wall, cpu = time.monotonic(), time.process_time()
                steps[name]()
                walls[name].append(time.monotonic() - wall)
                cpus[name].append(time.process_time() - cpu)
            print(f"round {round_} ({', '.join(order)}): " + ", ".join(
                f"{n} {walls[n][-1]:.2f} s wall / {cpus[n][-1]:.2f} s controller CPU" for n in names))
        cli: dict[str, float] = {}
        for name, extra in (("deploy --if-changed", ["--if-changed"]), ("deploy (no-op)", [])):
            started = time.monotonic()
            subprocess.run([*fleetctl, "deploy", str(playbook), "-i", str(inventory), "--version", "1.0.0", "--yes",
                            "--json", "--batch", "25%", "--var", "window=0s", *extra], check=True, env=env,
                           capture_output=True)
            cli[name] = time.monotonic() - started
        med = {n: statistics.median(v) for n, v in walls.items()}
        cpu_med = {n: statistics.median(v) for n, v in cpus.items()}
        print(f"medians of {args.runs} round(s), {args.nodes} nodes (wall / controller CPU):")
        for n, label in (("connect", "connect only (the floor)"), ("check", "no-op check (--if-changed)"),
                         ("deploy", "full no-op deploy")):
            print(f"  {label}: {med[n]:.2f} s / {cpu_med[n]:.2f} s ({med[n] / args.nodes * 1000:.1f} ms/node wall)")
        print(f"  full no-op deploy / no-op check: {med['deploy'] / med['check']:.2f}x wall, "
              f"{cpu_med['deploy'] / cpu_med['check']:.2f}x controller CPU; the check is "
              f"{med['check'] / med['connect']:.2f}x the connect-only floor")
        print("CLI, whole command (start-up, artifact reuse, output): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in cli.items()))
    finally:
        subprocess.run([*fleetctl, "lab", "down", "--dir", str(lab)], check=False, env=env, capture_output=True)
        os.chdir(REPO)
        shutil.rmtree(work, ignore_errors=True)  # 200 nodes' sandboxes and artifact caches: ~2.3 GB


if __name__ == "__main__":
    main()
