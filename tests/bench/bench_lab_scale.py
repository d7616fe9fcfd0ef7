"""Scale benchmark of the lab itself and of the controller's connections: `lab up`/`lab down` at several sizes,
the lab's own CPU per WS-Man request, and the controller's memory with many pools open.

    .venv/bin/python tests/bench/bench_lab_scale.py [--sizes 200,500,1000] [--cpu-nodes 200] [--pools 1000]
                                                    [--workers auto] [--base 127.0.60.1] [--trace]
    (run it inside /work/tools/netns-run on a shared machine)

1. **up/down**: `fleetctl lab up --nodes N --no-wine` and `fleetctl lab down` through the CLI, wall time, for
   each size.
2. **lab CPU per request**: a lab of `--cpu-nodes` nodes; a controller in its own process (this script with
   `--client`) connects to every node with the real `WinRMTransport` (TLS, NTLM, pool, module loader) and runs
   connect+lock, facts, state, artifact check, unlock, close on `--forks` threads. The lab's CPU (user+sys of the
   lab processes, from `lab status --json`) and the WS-Man request counters are read before and after: lab CPU
   per request and per host, next to the controller's own CPU per host (`resource.getrusage`) of the same run.
3. **controller RSS at N pools**: a lab of `--pools` nodes; a controller process opens one pool per node (module
   loaded) and keeps them all open: VmRSS/VmHWM before and after, per pool. `--trace` adds the top allocation
   sites (tracemalloc) of the pools, grouped by file.

The lab's CPU comes from the `cpu` section of `lab status --json`; for an older lab without it, from
/proc/<lab pid>/stat (a single-process lab).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
FLEETCTL = [sys.executable, "-m", "fleetctl"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def fleetctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*FLEETCTL, *args], capture_output=True, text=True, env=ENV, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"fleetctl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def lab_up(lab: Path, nodes: int, base: str, workers: str | None, extra: list[str] | None = None) -> float:
    began = time.monotonic()
    fleetctl("lab", "up", "--nodes", str(nodes), "--base", base, "--dir", str(lab), "--no-wine", "--json",
             *(["--workers", workers] if workers else []), *(extra or []))
    return time.monotonic() - began


def lab_down(lab: Path) -> float:
    began = time.monotonic()
    fleetctl("lab", "down", "--dir", str(lab))
    return time.monotonic() - began


def lab_snapshot(lab: Path) -> tuple[float, int]:
    """(the lab's own CPU seconds so far, WS-Man requests served so far)."""
    doc = json.loads(fleetctl("lab", "status", "--dir", str(lab), "--json").stdout)
    requests = sum(n["counters"]["requests"] for n in doc["nodes"])
    cpu = doc.get("cpu")
    if cpu is not None:
        return float(cpu["seconds"]), requests
    pid = json.loads((lab / "state.json").read_text())["pid"]  # a lab from before the `cpu` section
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), requests


def controller(lab: Path, mode: str, forks: int, trace: bool) -> None:
    """Run the controller side in a child process; it prints one JSON line of figures."""
    cmd = [sys.executable, __file__, "--client", mode, "--lab", str(lab), "--forks", str(forks)]
    proc = subprocess.run(cmd + (["--trace"] if trace else []), capture_output=True, text=True, env=ENV,
                          check=False, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"controller ({mode}) failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ---- the controller process ---------------------------------------------------------------------------------
def _settings(lab: Path) -> list[Any]:
    import yaml

    from fleetctl.config.connection import ConnectionSettings

    inventory = yaml.safe_load((lab / "inventory.yml").read_text())["all"]["children"]["lab"]
    variables = dict(inventory["vars"])
    variables["fleet_password"] = (lab / "credentials").read_text()
    return [ConnectionSettings.from_hostvars(name, {**variables, **hostvars})
            for name, hostvars in inventory["hosts"].items()]


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_requests(lab: Path, forks: int) -> dict[str, Any]:
    from fleetctl.node.client import NodeClient
    from fleetctl.transport.winrm import WinRMTransport

    settings = _settings(lab)
    sha = "0" * 64

    def one(s: Any) -> None:
        client = NodeClient(WinRMTransport(s))
        try:
            client.connect_and_lock(app="bench", owner="bench", deploy_id="bench-1", ttl_seconds=600)
            client.get_fleet_facts()
            client.get_fleet_state(app="bench", root="C:\\apps\\bench")
            client.test_fleet_artifact(sha256=sha)
            client.unlock_fleet_app(app="bench", deploy_id="bench-1")
        finally:
            client.close()

    cpu0, wall0 = _cpu(), time.monotonic()
    by_name = {s.host_name: s for s in settings}
    from fleetctl.node.fleet import run_parallel

    outcomes = run_parallel(list(by_name), lambda h: one(by_name[h]), forks=forks)
    errors = [o.error for o in outcomes.values() if o.error]
    return {"hosts": len(settings), "errors": errors[:5], "error_count": len(errors),
            "cpu": _cpu() - cpu0, "wall": time.monotonic() - wall0}


def client_pools(lab: Path, forks: int, trace: bool) -> dict[str, Any]:
    import gc
    import tracemalloc

    from fleetctl.node.client import NodeClient
    from fleetctl.node.fleet import run_parallel
    from fleetctl.transport.winrm import WinRMTransport

    settings = _settings(lab)
    by_name = {s.host_name: s for s in settings}
    clients: dict[str, NodeClient] = {}
    lock = threading.Lock()

    def one(host: str) -> None:
        client = NodeClient(WinRMTransport(by_name[host]))
        client.connect()
        with lock:
            clients[host] = client

    # Warm up imports and one connection so the baseline holds the code, not the first pool.
    one(settings[0].host_name)
    gc.collect()
    rss0 = _status_kb("VmRSS")
    if trace:
        tracemalloc.start(8)
    began = time.monotonic()
    outcomes = run_parallel(list(by_name)[1:], one, forks=forks)
    opened_s = time.monotonic() - began
    gc.collect()
    rss1, hwm = _status_kb("VmRSS"), _status_kb("VmHWM")
    top: list[str] = []
    if trace:
        snapshot = tracemalloc.take_snapshot()
        for stat in snapshot.statistics("filename")[:12]:
            top.append(f"{stat.size / 1024:9.0f} KiB {stat.count:8d} blocks  {stat.traceback[0].filename}")
        tracemalloc.stop()
    errors = [o.error for o in outcomes.values() if o.error]
    pools = len(clients)
    result = {"pools": pools, "errors": errors[:5], "error_count": len(errors), "rss_before_mb": rss0 / 1024,
              "rss_after_mb": rss1 / 1024, "hwm_mb": hwm / 1024, "open_s": opened_s,
              "per_pool_kb": (rss1 - rss0) / max(1, pools - 1), "top": top}
    run_parallel(list(clients), lambda h: clients[h].close(), forks=forks)
    return result


# ---- the benchmark ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,500,1000", help="lab sizes for the up/down rows ('' skips them)")
    parser.add_argument("--cpu-nodes", type=int, default=200, help="lab size for CPU per request (0 skips it)")
    parser.add_argument("--pools", type=int, default=1000, help="pools for the controller RSS row (0 skips it)")
    parser.add_argument("--forks", type=int, default=50)
    parser.add_argument("--workers", default=None, help="`lab up --workers` (default: the lab's default)")
    parser.add_argument("--base", default=os.environ.get("FLEETCTL_BENCH_LAB_BASE", "127.0.60.1"))
    parser.add_argument("--trace", action="store_true", help="tracemalloc the pools (slower)")
    parser.add_argument("--client", choices=["requests", "pools"], help=argparse.SUPPRESS)
    parser.add_argument("--lab", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.client:
        lab = Path(args.lab)
        doc = client_requests(lab, args.forks) if args.client == "requests" else \
            client_pools(lab, args.forks, args.trace)
        print(json.dumps(doc))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-lab-scale-"))
    lab = work / "lab"
    print(f"machine: {os.cpu_count()} cores; lab workers: {args.workers or 'default'}; base {args.base}")
    for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
        up = lab_up(lab, size, args.base, args.workers)
        try:
            nodes = len(json.loads(fleetctl("lab", "status", "--dir", str(lab), "--json").stdout)["nodes"])
        finally:
            down = lab_down(lab)
        print(f"lab of {size} nodes ({nodes} in status): up {up:.2f} s, down {down:.2f} s")

    if args.cpu_nodes:
        lab_up(lab, args.cpu_nodes, args.base, args.workers)
        try:
            cpu0, req0 = lab_snapshot(lab)
            result = controller(lab, "requests", args.forks, False)
            cpu1, req1 = lab_snapshot(lab)
        finally:
            lab_down(lab)
        hosts, requests = result["hosts"], req1 - req0
        print(f"requests: {hosts} hosts x (connect+lock, facts, state, artifact, unlock, close), forks "
              f"{args.forks}: wall {result['wall']:.2f} s, {requests} WS-Man requests ({requests / hosts:.1f}/host), "
              f"errors {result['error_count']} {result['errors'][:1]}")
        lab_cpu = cpu1 - cpu0
        print(f"  lab CPU {lab_cpu:.2f} s: {1000 * lab_cpu / max(1, requests):.2f} ms/request, "
              f"{1000 * lab_cpu / hosts:.1f} ms/host; controller CPU {result['cpu']:.2f} s: "
              f"{1000 * result['cpu'] / hosts:.1f} ms/host; lab/controller {lab_cpu / result['cpu']:.2f}")

    if args.pools:
        lab_up(lab, args.pools, args.base, args.workers)
        try:
            result = controller(lab, "pools", args.forks, args.trace)
        finally:
            lab_down(lab)
        print(f"controller with {result['pools']} open pools (module loaded), opened in {result['open_s']:.1f} s "
              f"(forks {args.forks}): RSS {result['rss_before_mb']:.0f} MB -> {result['rss_after_mb']:.0f} MB "
              f"(peak {result['hwm_mb']:.0f} MB), {result['per_pool_kb']:.0f} KiB per pool; errors "
              f"{result['error_count']} {result['errors'][:1]}")
        for line in result["top"]:
            print("  " + line)


if __name__ == "__main__":
    main()
