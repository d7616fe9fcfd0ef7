"""Rollout benchmark against the lab: deploy to N nodes in batches of 20%, the ratio of wall time to the critical
path (sum over batches of the slowest host's transfer + restart + health time), rollback time, no-op redeploy.

Run:  .venv/bin/python tests/bench/bench_rollout.py [--nodes 50] [--base 127.0.52.1]
The example service is built for Linux (ELF, runs natively in the lab); the stability window is 1 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import BatchStarted, Event, EventBus, HostFinished
from fleetctl.rollout.runner import (
    DeployOptions,
    prepare_deploy,
    prepare_rollback,
    run_deploy,
    run_rollback,
)
from tests.rollout.conftest import make_playbook

CRITICAL_STEPS = ("transfer", "stop", "switch", "start", "health")


def critical_path(batches: list[tuple[str, ...]], timings: dict[str, dict[str, float]]) -> float:
    return sum(max((sum(timings.get(h, {}).get(s, 0.0) for s in CRITICAL_STEPS) for h in hosts), default=0.0)
               for hosts in batches)


def measure(run: object) -> tuple[RunResult, float, list[tuple[str, ...]], dict[str, dict[str, float]]]:
    bus = EventBus()
    batches: list[tuple[str, ...]] = []
    timings: dict[str, dict[str, float]] = {}

    def collect(event: Event) -> None:
        if isinstance(event, BatchStarted):
            batches.append(event.hosts)
        elif isinstance(event, HostFinished):
            timings[event.result.host] = dict(event.result.timings)

    bus.subscribe(collect)
    started = time.monotonic()
    result = run(bus)  # type: ignore[operator]
    return result, time.monotonic() - started, batches, timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--base", default=os.environ.get("FLEETCTL_BENCH_ROLLOUT_BASE", "127.0.52.1"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    os.chdir(work)
    lab = work / "lab"
    fleetctl = [sys.executable, "-m", "fleetctl"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([*fleetctl, "lab", "up", "--nodes", str(args.nodes), "--base", args.base, "--dir", str(lab),
                    "--no-wine"], check=True, env=env, capture_output=True)
    try:
        playbook = make_playbook(work, "linux")
        inventory = lab / "inventory.yml"

        def opts(version: str) -> DeployOptions:
            return DeployOptions(playbook=playbook, inventories=[inventory], batch="20%", version=version)

        # warm-up: version 1 everywhere (first install creates the services)
        first = run_deploy(prepare_deploy(opts("1.0.0")), EventBus())
        assert first.exit_code == 0, first.message
        prepared = prepare_deploy(opts("2.0.0"))  # build outside the timed run
        result, wall, batches, timings = measure(lambda bus: run_deploy(prepared, bus))
        assert result.exit_code == 0, result.message
        path = critical_path(batches, timings)
        print(f"deploy {args.nodes} nodes, {len(batches)} batches: wall {wall:.2f} s, critical path {path:.2f} s, "
              f"ratio {wall / path:.3f}")
        rb_prepared = prepare_rollback(DeployOptions(playbook=playbook, inventories=[inventory], batch="20%"))
        rb, rb_wall, rb_batches, rb_timings = measure(lambda bus: run_rollback(rb_prepared, bus))
        assert rb.exit_code == 0, rb.message
        print(f"rollback {args.nodes} nodes: wall {rb_wall:.2f} s, critical path "
              f"{critical_path(rb_batches, rb_timings):.2f} s")
        noop_prepared = prepare_deploy(opts("1.0.0"))
        noop, noop_wall, _, _ = measure(lambda bus: run_deploy(noop_prepared, bus))
        assert noop.exit_code == 0 and {o.outcome for o in noop.outcomes.values()} == {"skipped"}
        print(f"no-op redeploy {args.nodes} nodes: wall {noop_wall:.2f} s")
    finally:
        subprocess.run([*fleetctl, "lab", "down", "--dir", str(lab)], check=False, env=env, capture_output=True)


if __name__ == "__main__":
    main()
