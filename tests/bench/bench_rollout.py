"""Rollout benchmark against the lab: deploy to N nodes in batches of 20%, the ratio of wall time to the critical
path (sum over batches of the slowest host's transfer + restart + health time), rollback time, no-op redeploy.

Run:  .venv/bin/python tests/bench/bench_rollout.py [--nodes 50] [--base 127.0.52.1] [--runs 3]
The example service is built for Linux (ELF, runs natively in the lab); the stability window is 1 s. Each run
deploys a new version, rolls it back and redeploys the current one (no-op); the medians are printed at the end,
and every run prints where the wall time went (lock phase, per batch: batch wall vs its slowest host's critical
part, the gaps between batches, the unlock phase).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fleetctl.rollout.engine import RunResult
from fleetctl.rollout.events import BatchFinished, BatchStarted, Event, EventBus, HostFinished, RunStarted
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


class Run:
    """One timed run: its result, wall time, batches, per-host timings and event times (for the breakdown)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, ...]] = []
        self.timings: dict[str, dict[str, float]] = {}
        self.marks: list[tuple[str, float]] = []  # ("start" | "batch+" | "batch-", monotonic time)
        self.wall = 0.0
        self.started = 0.0
        self.ended = 0.0

    def collect(self, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, RunStarted):
            self.marks.append(("start", now))
        elif isinstance(event, BatchStarted):
            self.batches.append(event.hosts)
            self.marks.append(("batch+", now))
        elif isinstance(event, BatchFinished):
            self.marks.append(("batch-", now))
        elif isinstance(event, HostFinished):
            self.timings[event.result.host] = dict(event.result.timings)

    @property
    def critical(self) -> float:
        return critical_path(self.batches, self.timings)

    def breakdown(self) -> str:
        """Where the wall time went: lock phase, each batch (wall vs slowest critical part), gaps, unlock phase."""
        starts = [t for k, t in self.marks if k == "batch+"]
        ends = [t for k, t in self.marks if k == "batch-"]
        if not starts:
            return f"    no batch ran; wall {self.wall:.2f} s"
        lines = [f"    before batch 1 (connect + lock all): {starts[0] - self.started:.2f} s"]
        for i, (hosts, begin, end) in enumerate(zip(self.batches, starts, ends, strict=False)):
            crit = {h: sum(self.timings.get(h, {}).get(s, 0.0) for s in CRITICAL_STEPS) for h in hosts}
            slowest = max(crit, key=crit.__getitem__)
            other = {k: round(v, 2) for k, v in self.timings.get(slowest, {}).items()
                     if k not in CRITICAL_STEPS and v >= 0.01}
            gap = starts[i + 1] - end if i + 1 < len(starts) else 0.0
            lines.append(f"    batch {i}: wall {end - begin:.2f} s, slowest critical {crit[slowest]:.2f} s "
                         f"({slowest}; its other steps {other}), gap to next {gap:.2f} s")
        lines.append(f"    after the last batch (unlock, close): {self.ended - ends[-1]:.2f} s")
        return "\n".join(lines)


def measure(run: object) -> tuple[RunResult, Run]:
    bus = EventBus()
    record = Run()
    bus.subscribe(record.collect)
    record.started = time.monotonic()
    result = run(bus)  # type: ignore[operator]
    record.ended = time.monotonic()
    record.wall = record.ended - record.started
    return result, record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
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
        figures: dict[str, list[tuple[float, float]]] = {"deploy": [], "rollback": [], "no-op": []}
        for round_ in range(1, args.runs + 1):
            prepared = prepare_deploy(opts(f"2.0.{round_}"))  # build outside the timed run
            result, run = measure(partial(run_deploy, prepared))
            assert result.exit_code == 0, result.message
            figures["deploy"].append((run.wall, run.critical))
            print(f"run {round_}: deploy {args.nodes} nodes, {len(run.batches)} batches: wall {run.wall:.2f} s, "
                  f"critical path {run.critical:.2f} s, ratio {run.wall / run.critical:.3f}")
            print(run.breakdown())
            rb_prepared = prepare_rollback(DeployOptions(playbook=playbook, inventories=[inventory], batch="20%"))
            rb, rb_run = measure(partial(run_rollback, rb_prepared))
            assert rb.exit_code == 0, rb.message
            figures["rollback"].append((rb_run.wall, rb_run.critical))
            print(f"run {round_}: rollback: wall {rb_run.wall:.2f} s, critical path {rb_run.critical:.2f} s, "
                  f"ratio {rb_run.wall / rb_run.critical:.3f}")
            print(rb_run.breakdown())
            noop_prepared = prepare_deploy(opts("1.0.0"))
            noop, noop_run = measure(partial(run_deploy, noop_prepared))
            assert noop.exit_code == 0 and {o.outcome for o in noop.outcomes.values()} == {"skipped"}
            figures["no-op"].append((noop_run.wall, 0.0))
            print(f"run {round_}: no-op redeploy: wall {noop_run.wall:.2f} s")
        print(f"medians of {args.runs} run(s), {args.nodes} nodes:")
        for name, rows in figures.items():
            wall = statistics.median(w for w, _ in rows)
            if name == "no-op":
                print(f"  {name}: wall {wall:.2f} s")
                continue
            crit = statistics.median(c for _, c in rows)
            ratio = statistics.median(w / c for w, c in rows)
            print(f"  {name}: wall {wall:.2f} s, critical path {crit:.2f} s, ratio {ratio:.3f}")
    finally:
        subprocess.run([*fleetctl, "lab", "down", "--dir", str(lab)], check=False, env=env, capture_output=True)


if __name__ == "__main__":
    main()
