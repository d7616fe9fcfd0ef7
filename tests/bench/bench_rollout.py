"""Rollout benchmark against the lab: deploy to N nodes in batches of 20%, the ratio of wall time to the critical
path (sum over batches of the slowest host's transfer + restart + health time), rollback time, no-op redeploy,
and the controller's own CPU per host for each.

Run:  /work/tools/netns-run .venv/bin/python tests/bench/bench_rollout.py [--nodes 100] [--base 127.0.52.1]
      [--runs 3]
The example service is built for Linux (ELF, runs natively in the lab; no Wine); the stability window is 1 s.
Each run deploys a new version, rolls it back and redeploys the current one (no-op); the medians are printed at
the end, and every run prints where the wall time went (lock phase, per batch: batch wall vs its slowest host's
critical part, the gaps between batches, the unlock phase).

The bus carries the subscribers `fleetctl deploy` wires (the history journal in a temporary file, the live view
on a terminal console that writes to /dev/null, the `--json` report), so their cost is part of the figures.
Controller CPU is `resource.getrusage(RUSAGE_SELF)` (user + system, every thread of this process; the lab runs in
child processes and is not counted) around `run_deploy`/`run_rollback`; the build is outside it. "emit wait" is
the time host threads spent inside `EventBus.emit` (delivering to subscribers, or waiting for the bus).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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

DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - the live view's screen for the whole benchmark

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
        self.cpu = 0.0  # controller CPU seconds (user + system, all threads) during the run
        self.emit_wait = 0.0  # seconds host threads spent in EventBus.emit

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


class TimedBus(EventBus):
    """The real bus, plus the time host threads spend inside `emit`."""

    def __init__(self) -> None:
        super().__init__()
        self.host_wait = 0.0
        self._wait_lock = threading.Lock()

    def emit(self, event: Event) -> None:
        started = time.perf_counter()
        super().emit(event)
        if threading.current_thread().name.startswith("fleetctl-host"):
            spent = time.perf_counter() - started
            with self._wait_lock:
                self.host_wait += spent


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(run: object, history: Path) -> tuple[RunResult, Run]:
    from rich.console import Console

    from fleetctl.state.journal import Journal
    from fleetctl.ui.live import LiveView
    from fleetctl.ui.report import JsonReport

    bus = TimedBus()
    record = Run()
    bus.subscribe(record.collect)
    view = LiveView(Console(file=DEVNULL, force_terminal=True, width=160, highlight=False))
    view.subscribe(bus)
    journal = Journal(history)
    journal.subscribe(bus)
    JsonReport().subscribe(bus)
    cpu = cpu_seconds()
    record.started = time.monotonic()
    try:
        result = run(bus)  # type: ignore[operator]
    finally:
        view.close()
        journal.close()
    record.ended = time.monotonic()
    record.cpu = cpu_seconds() - cpu
    record.wall = record.ended - record.started
    record.emit_wait = bus.host_wait
    return result, record


def why(result: RunResult) -> str:
    """The run's message and the first failed hosts' reasons."""
    failed = [f"{h}: {o.error}" for h, o in result.outcomes.items() if o.outcome in ("failed", "rolled_back")]
    return "; ".join([result.message, *failed[:5]])


def cpu_line(run: Run, nodes: int) -> str:
    return (f"controller CPU {run.cpu:.2f} s ({run.cpu / nodes * 1000:.0f} ms/host), "
            f"emit wait {run.emit_wait / nodes * 1000:.1f} ms/host")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=100)
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

        history = work / "history.db"

        def opts(version: str) -> DeployOptions:
            return DeployOptions(playbook=playbook, inventories=[inventory], batch="20%", version=version)

        # warm-up: version 1 everywhere (first install creates the services)
        first = run_deploy(prepare_deploy(opts("1.0.0")), EventBus())
        assert first.exit_code == 0, why(first)
        figures: dict[str, list[Run]] = {"deploy": [], "rollback": [], "no-op": []}
        for round_ in range(1, args.runs + 1):
            prepared = prepare_deploy(opts(f"2.0.{round_}"))  # build outside the timed run
            result, run = measure(partial(run_deploy, prepared), history)
            assert result.exit_code == 0, why(result)
            figures["deploy"].append(run)
            print(f"run {round_}: deploy {args.nodes} nodes, {len(run.batches)} batches: wall {run.wall:.2f} s, "
                  f"critical path {run.critical:.2f} s, ratio {run.wall / run.critical:.3f}, "
                  f"{cpu_line(run, args.nodes)}")
            print(run.breakdown())
            rb_prepared = prepare_rollback(DeployOptions(playbook=playbook, inventories=[inventory], batch="20%"))
            rb, rb_run = measure(partial(run_rollback, rb_prepared), history)
            assert rb.exit_code == 0, why(rb)
            figures["rollback"].append(rb_run)
            print(f"run {round_}: rollback: wall {rb_run.wall:.2f} s, critical path {rb_run.critical:.2f} s, "
                  f"ratio {rb_run.wall / rb_run.critical:.3f}, {cpu_line(rb_run, args.nodes)}")
            print(rb_run.breakdown())
            noop_prepared = prepare_deploy(opts("1.0.0"))
            noop, noop_run = measure(partial(run_deploy, noop_prepared), history)
            assert noop.exit_code == 0 and {o.outcome for o in noop.outcomes.values()} == {"skipped"}
            figures["no-op"].append(noop_run)
            print(f"run {round_}: no-op redeploy: wall {noop_run.wall:.2f} s, {cpu_line(noop_run, args.nodes)}")
        print(f"medians of {args.runs} run(s), {args.nodes} nodes:")
        for name, runs in figures.items():
            wall = statistics.median(r.wall for r in runs)
            cpu = statistics.median(r.cpu for r in runs) / args.nodes * 1000
            emit = statistics.median(r.emit_wait for r in runs) / args.nodes * 1000
            line = f"  {name}: wall {wall:.2f} s, controller CPU {cpu:.0f} ms/host, emit wait {emit:.1f} ms/host"
            if name != "no-op":
                crit = statistics.median(r.critical for r in runs)
                ratio = statistics.median(r.wall / r.critical for r in runs)
                line += f", critical path {crit:.2f} s, ratio {ratio:.3f}"
            print(line)
    finally:
        subprocess.run([*fleetctl, "lab", "down", "--dir", str(lab)], check=False, env=env, capture_output=True)
        os.chdir(REPO)
        shutil.rmtree(work, ignore_errors=True)  # 100 nodes' sandboxes and the builds: several GB


if __name__ == "__main__":
    main()
