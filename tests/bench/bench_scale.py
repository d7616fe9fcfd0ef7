"""Scale benchmark of the controller against the lab: deploy, no-op redeploy and rollback at 100, 500 and 1,000
lab nodes; for each, wall time, critical path, their ratio, the controller's CPU per host, its peak RSS and the
lab's CPU.

    /work/tools/netns-run .venv/bin/python tests/bench/bench_scale.py [--sizes 100,500,1000] [--batch 20%]
        [--forks 50] [--base 127.0.70.1] [--transfer auto] [--profile DIR] [--json FILE]

Per size: `lab up --nodes N --no-wine` (the example service built for Linux, so every node runs a real service
process), then a controller in its own process (this script with `--client`), so that its CPU (`getrusage`, user
+ sys of all its threads) and peak RSS (VmHWM, reset through /proc/self/clear_refs before each phase) are its own
and not the lab's. The controller deploys 1.0.0 (first install: services created; reported, not the goal), then
measures, in order:
- **deploy** of 2.0.0 (a new release on every host),
- **no-op** redeploy of 2.0.0 (every host already current: `skipped`),
- **rollback** to 1.0.0.
Each phase's `prepare_*` (inventory, per-host rendering, artifact reuse) runs before the timed `run_*` and is
reported separately as "prepare CPU/host"; the artifact builds happen before any timed phase. The lab's CPU
(supervisor + workers, `lab status --json` → `cpu`) is read around each phase.

Wall time is `run_deploy`/`run_rollback` from call to return; the critical path is the sum over batches of the
slowest host's transfer + stop + switch + start + health (as in bench_rollout.py). With `--forks` smaller than a
batch, hosts of a batch wait for a thread, which the critical path does not count: the ratio then says so.

`--baseline-sizes 100` (the default) also runs those sizes, first, with another revision's lab and controller
(`--baseline-rev`, default `main`: its source from `git archive`, run with this environment), each on a fresh
lab, and prints the before/after ratio of the same run.

`--subscribers all` runs the phases with the journal, the live view (to /dev/null) and the JSON report subscribed,
as `fleetctl deploy` does; the default (`none`) measures the engine and the transport alone.

`--profile DIR` runs the controller under `py-spy record` (`pip install py-spy`), one collapsed-stack file per
size (`DIR/controller-N.txt`, py-spy's `--format raw`: one line per stack with its sample count; feed it to
flamegraph.pl or read the top frames).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[2]
# The code measured: this checkout, or (a baseline run's controller and lab) another revision's source tree.
REPO = Path(os.environ.get("FLEETCTL_BENCH_REPO") or HERE)
sys.path.insert(0, str(REPO))
FLEETCTL = [sys.executable, "-m", "fleetctl"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
PHASES = ("first install", "deploy", "no-op", "rollback")


def fleetctl(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*FLEETCTL, *args], capture_output=True, text=True, env=env or ENV, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"fleetctl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


# ---- the controller process ---------------------------------------------------------------------------------
def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS
    except OSError:
        pass


def baseline_tree(rev: str, work: Path) -> Path:
    """The source of revision `rev` of this repository (`git archive`), to run the baseline's lab and controller."""
    out = work / f"baseline-{rev.replace('/', '_')}"
    if not out.exists():
        out.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(HERE), "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def measure_engine(run: Any) -> tuple[Any, Any]:
    """The run with a bus whose only subscriber records step timings (no journal, live view or report): the
    engine and the transport alone, which is what the per-host goals are about."""
    from fleetctl.rollout.events import EventBus
    from tests.bench.bench_rollout import Run

    bus = EventBus()
    record = Run()
    bus.subscribe(record.collect)
    record.started = time.monotonic()
    try:
        result = run(bus)
    finally:
        bus.close()
    record.ended = time.monotonic()
    record.wall = record.ended - record.started
    return result, record


def client(lab: Path, batch: str, forks: int, transfer: str, max_failed: str | None = None,
           subscribers: str = "none") -> dict[str, Any]:
    from fleetctl.rollout.runner import (
        DeployOptions,
        prepare_deploy,
        prepare_rollback,
        run_deploy,
        run_rollback,
    )
    from tests.bench.bench_lab_scale import lab_snapshot
    from tests.bench.bench_rollout import measure
    from tests.rollout.conftest import make_playbook

    work = lab.parent
    os.chdir(work)
    playbook = make_playbook(work, "linux")
    if transfer != "auto":
        playbook.write_text(playbook.read_text().replace("transfer: auto", f"transfer: {transfer}"))
    inventory = lab / "inventory.yml"
    extra = ("window=1s",)

    def options(version: str | None) -> DeployOptions:
        return DeployOptions(playbook=playbook, inventories=[inventory], batch=batch, forks=forks, version=version,
                             extra_vars=extra, max_failed=max_failed)

    for version in ("1.0.0", "2.0.0"):  # build both before anything is timed (go build is a child process)
        prepare_deploy(options(version))
    out: dict[str, Any] = {"rss_start_mb": _status_mb("VmRSS")}
    for phase in PHASES:
        version = {"first install": "1.0.0", "deploy": "2.0.0", "no-op": "2.0.0"}.get(phase)
        cpu0 = _cpu()
        prepared: Any = prepare_deploy(options(version)) if version else prepare_rollback(options(None))
        prepare_cpu = _cpu() - cpu0
        hosts = len(prepared.plan.hosts)
        runner = run_deploy if version else run_rollback
        _reset_peak_rss()
        lab0, req0 = lab_snapshot(lab)
        cpu0 = _cpu()
        if subscribers == "all":
            result, run = measure(partial(runner, prepared), work / f"history-{phase.replace(' ', '-')}.db")
        else:
            result, run = measure_engine(partial(runner, prepared))
        cpu = _cpu() - cpu0
        lab1, req1 = lab_snapshot(lab)
        counts: dict[str, int] = {}
        for outcome in result.outcomes.values():
            counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
        out[phase] = {
            "hosts": hosts, "exit_code": result.exit_code, "outcomes": counts, "batches": len(run.batches),
            "wall": run.wall, "critical": run.critical, "controller_cpu": cpu, "prepare_cpu": prepare_cpu,
            "peak_rss_mb": _status_mb("VmHWM"), "lab_cpu": lab1 - lab0, "lab_requests": req1 - req0,
            "breakdown": run.breakdown(),
        }
        bad = ("failed", "unknown") if phase == "rollback" else ("failed", "unknown", "rolled_back")  # a rollback's
        failed = {h: o.error for h, o in result.outcomes.items() if o.outcome in bad}  # rolled_back is its success
        if failed:
            out[phase]["failed"] = dict(list(failed.items())[:5])
        if result.exit_code != 0:
            out[phase]["message"] = result.message
            break
    return out


# ---- the benchmark ------------------------------------------------------------------------------------------
def run_size(nodes: int, args: argparse.Namespace, work: Path, baseline: bool = False) -> dict[str, Any]:
    lab = work / f"lab-{nodes}{'-baseline' if baseline else ''}"
    env = ENV
    if baseline:
        tree = baseline_tree(args.baseline_rev, work)
        env = {**ENV, "PYTHONPATH": str(tree), "FLEETCTL_BENCH_REPO": str(tree)}
    began = time.monotonic()
    fleetctl("lab", "up", "--nodes", str(nodes), "--base", args.base, "--dir", str(lab), "--no-wine", "--json",
             env=env)
    up = time.monotonic() - began
    try:
        cmd = [sys.executable, __file__, "--client", "--lab", str(lab), "--batch", args.batch,
               "--forks", str(args.forks), "--transfer", args.transfer,
               *(["--max-failed", args.max_failed] if args.max_failed else []), "--subscribers", args.subscribers]
        if args.profile:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            out_dir = Path(args.profile).resolve()
            out_dir.mkdir(parents=True, exist_ok=True)
            cmd = [spy, "record", "--rate", "100", "--gil", "--format", "raw",
                   "-o", str(out_dir / f"controller-{nodes}{'-baseline' if baseline else ''}.txt"), "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=7200)
        if proc.returncode != 0:
            raise SystemExit(f"controller failed at {nodes} nodes: {proc.stderr.strip()[-3000:]}")
        # py-spy prints its own lines after the controller's one JSON line
        figures = dict(json.loads(next(line for line in reversed(proc.stdout.splitlines()) if line.startswith("{"))))
    finally:
        fleetctl("lab", "down", "--dir", str(lab), env=env)
    figures["lab_up_s"] = up
    return figures


def report(nodes: int, figures: dict[str, Any], what: str = "") -> None:
    print(f"\n{nodes} nodes{what} (lab up {figures['lab_up_s']:.1f} s; controller RSS at start "
          f"{figures['rss_start_mb']:.0f} MB)")
    print(f"  {'phase':<14}{'wall s':>8}{'crit s':>8}{'ratio':>7}{'ctl CPU ms/host':>17}{'prep ms/host':>14}"
          f"{'peak RSS MB':>13}{'lab CPU ms/host':>17}{'lab/ctl':>9}  outcomes")
    for phase in PHASES:
        f = figures.get(phase)
        if f is None:
            continue
        hosts = max(1, f["hosts"])
        ratio = f"{f['wall'] / f['critical']:.2f}" if f["critical"] > 0 else "-"
        crit = f"{f['critical']:.2f}" if f["critical"] > 0 else "-"
        print(f"  {phase:<14}{f['wall']:>8.2f}{crit:>8}{ratio:>7}{1000 * f['controller_cpu'] / hosts:>17.1f}"
              f"{1000 * f['prepare_cpu'] / hosts:>14.1f}{f['peak_rss_mb']:>13.0f}{1000 * f['lab_cpu'] / hosts:>17.1f}"
              f"{f['lab_cpu'] / max(1e-9, f['controller_cpu']):>9.2f}  {f['outcomes']}")
        if f.get("message"):
            print(f"    failed: {f['message']}")
        for host, error in (f.get("failed") or {}).items():
            print(f"    {host}: {error}")
    for phase in PHASES:
        if phase in figures and figures[phase]["critical"] > 0:
            print(f"  where the {phase} wall time went:\n{figures[phase]['breakdown']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--batch", default="20%")
    parser.add_argument("--forks", type=int, default=50)
    parser.add_argument("--max-failed", default=None, help="failure budget of each phase (default 0: a failed host "
                        "ends the size's run)")
    parser.add_argument("--transfer", default="auto", choices=("auto", "push", "pull"))
    parser.add_argument("--base", default=os.environ.get("FLEETCTL_BENCH_SCALE_BASE", "127.0.70.1"))
    parser.add_argument("--profile", default=None, help="directory for py-spy recordings of the controller")
    parser.add_argument("--json", default=None, help="write every figure to this file too")
    parser.add_argument("--baseline-sizes", default="100",
                        help="sizes also run with --baseline-rev's lab and controller, on a fresh lab ('' for none)")
    parser.add_argument("--subscribers", default="none", choices=("none", "all"),
                        help="none: the engine and transport alone; all: with the journal, the live view (to "
                        "/dev/null) and the JSON report, as `fleetctl deploy` runs")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baseline-rev", default="main",
                        help="the revision the baseline sizes run (its lab and its controller), default main")
    parser.add_argument("--lab", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client(Path(args.lab), args.batch, args.forks, args.transfer, args.max_failed,
                                args.subscribers)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; batch {args.batch}, forks {args.forks}, "
          f"transfer {args.transfer}; base {args.base}")
    results: dict[str, Any] = {}
    baseline_sizes = {int(s) for s in args.baseline_sizes.split(",") if s.strip()}
    for size in (int(s) for s in args.sizes.split(",") if s.strip()):
        if size in baseline_sizes:
            results[f"{size}-baseline"] = before = run_size(size, args, work, baseline=True)
            report(size, before, f", baseline: {args.baseline_rev}'s lab and controller")
        results[str(size)] = after = run_size(size, args, work)
        report(size, after)
        if size in baseline_sizes:
            print("  controller CPU per host, before -> after (same run):")
            for phase in PHASES:
                if phase in before and phase in after:
                    b = before[phase]["controller_cpu"] / max(1, before[phase]["hosts"])
                    a = after[phase]["controller_cpu"] / max(1, after[phase]["hosts"])
                    rb = before[phase]["lab_requests"] / max(1, before[phase]["hosts"])
                    ra = after[phase]["lab_requests"] / max(1, after[phase]["hosts"])
                    print(f"    {phase:<14}{1000 * b:7.1f} -> {1000 * a:6.1f} ms ({b / max(a, 1e-9):.2f}x); WS-Man "
                          f"requests/host {rb:.1f} -> {ra:.1f}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
