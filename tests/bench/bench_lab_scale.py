"""Scale benchmark of the lab itself and of the controller's connections: `lab up`/`lab down` at several sizes,
the lab's own CPU per WS-Man request, and the controller's memory with many pools open.

    .venv/bin/python tests/bench/bench_lab_scale.py [--sizes 200,500,1000] [--cpu-nodes 200] [--deploy-nodes 100]
                                 [--pools 1000] [--workers auto] [--base 127.0.60.1] [--trace] [--no-baseline]
    (run it inside /work/tools/netns-run on a shared machine)

1. **up/down**: `fleetctl lab up --nodes N --no-wine` and `fleetctl lab down` through the CLI, wall time, for
   each size.
2. **lab CPU per request**: a lab of `--cpu-nodes` nodes; a controller in its own process (this script with
   `--client`) connects to every node with the real `WinRMTransport` (TLS, NTLM, pool, module loader) and runs
   connect+lock, facts, state, artifact check, unlock, close on `--forks` threads. The lab's CPU (user+sys of the
   lab processes, from `lab status --json`) and the WS-Man request counters are read before and after: lab CPU
   per request and per host, next to the controller's own CPU per host (`resource.getrusage`) of the same run.
3. **lab CPU during a deploy**: a lab of `--deploy-nodes` nodes, the example service built for Linux; a controller
   process deploys version 1 (warm-up, not measured), then version 2 and a no-op redeploy (`run_deploy`, batches
   of 20 %): lab CPU per host and per request, controller CPU per host, for each.
   Phases 2 and 3 run twice: first on a lab that reads pipeline messages with psrpcore's deserializer
   (`FLEETCTL_LAB_CLIXML=psrpcore`, the lab before `fleetctl/lab/clixml.py`), then on the default lab, and print
   the ratio (`--no-baseline` skips the first).
4. **controller RSS at N pools**: a lab of `--pools` nodes; a controller process opens one pool per node (module
   loaded) and keeps them all open: VmRSS/VmHWM before and after, per pool; once trusting the lab CA only, once
   a bundle of ~140 public CAs plus the lab CA (what a real fleet's bundle looks like). `--trace` adds the top
   allocation sites (tracemalloc) of the pools, grouped by file (first run only).

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


def lab_up(lab: Path, nodes: int, base: str, workers: str | None, extra: list[str] | None = None,
           reader: str = "fast") -> float:
    began = time.monotonic()
    ENV["FLEETCTL_LAB_CLIXML"] = reader  # read by the lab's workers, which inherit the CLI's environment
    fleetctl("lab", "up", "--nodes", str(nodes), "--base", base, "--dir", str(lab), "--no-wine", "--json",
             *(["--workers", workers] if workers else []), *(extra or []))
    return time.monotonic() - began


def lab_down(lab: Path) -> float:
    began = time.monotonic()
    fleetctl("lab", "down", "--dir", str(lab))
    return time.monotonic() - began


def lab_snapshot(lab: Path) -> tuple[float, int]:
    """(the lab's own CPU seconds so far, WS-Man requests served so far)."""
    from fleetctl.lab.control import lab_status
    from fleetctl.lab.layout import LabLayout

    doc = lab_status(LabLayout.at(lab))
    requests = sum(n["counters"]["requests"] for n in doc["nodes"])
    cpu = doc.get("cpu")
    if cpu is not None:
        return float(cpu["seconds"]), requests
    pid = json.loads((lab / "state.json").read_text())["pid"]  # a lab from before the `cpu` section
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), requests


def controller(lab: Path, mode: str, forks: int, trace: bool, system_cas: bool = False) -> dict[str, Any]:
    """Run the controller side in a child process; it prints one JSON line of figures."""
    cmd = [sys.executable, __file__, "--client", mode, "--lab", str(lab), "--forks", str(forks)]
    cmd += (["--trace"] if trace else []) + (["--system-cas"] if system_cas else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV,
                          check=False, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"controller ({mode}) failed: {proc.stderr.strip()[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ---- the controller process ---------------------------------------------------------------------------------
def _settings(lab: Path, system_cas: bool = False) -> list[Any]:
    import yaml

    from fleetctl.config.connection import ConnectionSettings

    inventory = yaml.safe_load((lab / "inventory.yml").read_text())["all"]["children"]["lab"]
    variables = dict(inventory["vars"])
    variables["fleet_password"] = (lab / "credentials").read_text()
    if system_cas:
        # What a real fleet trusts: a bundle of public CAs plus the company's own (here: certifi + the lab CA).
        import certifi

        bundle = lab / "bundle-with-public-cas.pem"
        bundle.write_text(Path(certifi.where()).read_text() + (lab / "ca.pem").read_text())
        variables["fleet_ca_bundle"] = str(bundle)
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


def client_deploy(lab: Path) -> dict[str, Any]:
    """Deploy 1.0.0 (warm-up), then 2.0.0 and a no-op redeploy, each with the lab's CPU and requests around it."""
    from fleetctl.rollout.events import EventBus
    from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy
    from tests.rollout.conftest import make_playbook

    os.chdir(lab.parent)
    playbook = make_playbook(lab.parent, "linux")
    hosts = len(_settings(lab))

    def options(version: str) -> Any:
        return DeployOptions(playbook=playbook, inventories=[lab / "inventory.yml"], batch="20%", version=version)

    first = run_deploy(prepare_deploy(options("1.0.0")), EventBus())
    assert first.exit_code == 0, first.message
    out: dict[str, Any] = {"hosts": hosts}
    for name, version in (("deploy", "2.0.0"), ("no-op", "2.0.0")):
        prepared = prepare_deploy(options(version))  # builds outside the measured window
        lab0, req0 = lab_snapshot(lab)
        cpu0, wall0 = _cpu(), time.monotonic()
        result = run_deploy(prepared, EventBus())
        cpu1, wall1 = _cpu(), time.monotonic()
        lab1, req1 = lab_snapshot(lab)
        assert result.exit_code == 0, result.message
        out[name] = {"wall": wall1 - wall0, "controller_cpu": cpu1 - cpu0, "lab_cpu": lab1 - lab0,
                     "requests": req1 - req0}
    return out


def client_pools(lab: Path, forks: int, trace: bool, system_cas: bool) -> dict[str, Any]:
    import gc
    import tracemalloc

    from fleetctl.node.client import NodeClient
    from fleetctl.node.fleet import run_parallel
    from fleetctl.transport.winrm import WinRMTransport

    settings = _settings(lab, system_cas)
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
    parser.add_argument("--deploy-nodes", type=int, default=100, help="lab size for the deploy rows (0 skips them)")
    parser.add_argument("--pools", type=int, default=1000, help="pools for the controller RSS row (0 skips it)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the psrpcore-reader baseline runs")
    parser.add_argument("--forks", type=int, default=50)
    parser.add_argument("--workers", default=None, help="`lab up --workers` (default: the lab's default)")
    parser.add_argument("--base", default=os.environ.get("FLEETCTL_BENCH_LAB_BASE", "127.0.60.1"))
    parser.add_argument("--trace", action="store_true", help="tracemalloc the pools (slower)")
    parser.add_argument("--system-cas", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=["requests", "deploy", "pools"], help=argparse.SUPPRESS)
    parser.add_argument("--lab", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.client:
        lab = Path(args.lab)
        if args.client == "requests":
            doc = client_requests(lab, args.forks)
        elif args.client == "deploy":
            doc = client_deploy(lab)
        else:
            doc = client_pools(lab, args.forks, args.trace, args.system_cas)
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

    readers = ["fast"] if args.no_baseline else ["psrpcore", "fast"]
    if args.cpu_nodes:
        per_request: dict[str, float] = {}
        for reader in readers:
            lab_up(lab, args.cpu_nodes, args.base, args.workers, reader=reader)
            try:
                cpu0, req0 = lab_snapshot(lab)
                result = controller(lab, "requests", args.forks, False)
                cpu1, req1 = lab_snapshot(lab)
            finally:
                lab_down(lab)
            hosts, requests = result["hosts"], req1 - req0
            lab_cpu = cpu1 - cpu0
            per_request[reader] = lab_cpu / max(1, requests)
            print(f"requests, lab reading pipelines with {reader}: {hosts} hosts x (connect+lock, facts, state, "
                  f"artifact, unlock, close), forks {args.forks}: wall {result['wall']:.2f} s, {requests} WS-Man "
                  f"requests ({requests / hosts:.1f}/host), errors {result['error_count']} {result['errors'][:1]}")
            print(f"  lab CPU {lab_cpu:.2f} s: {1000 * per_request[reader]:.2f} ms/request, "
                  f"{1000 * lab_cpu / hosts:.1f} ms/host; controller CPU {result['cpu']:.2f} s: "
                  f"{1000 * result['cpu'] / hosts:.1f} ms/host; lab/controller {lab_cpu / result['cpu']:.2f}")
        if len(per_request) == 2:
            print(f"  lab CPU per request, psrpcore reader / fast reader: "
                  f"{per_request['psrpcore'] / per_request['fast']:.2f}x")

    if args.deploy_nodes:
        deploys: dict[str, dict[str, Any]] = {}
        for reader in readers:
            lab_up(lab, args.deploy_nodes, args.base, args.workers, reader=reader)
            try:
                deploys[reader] = result = controller(lab, "deploy", args.forks, False)
            finally:
                lab_down(lab)
            hosts = result["hosts"]
            for name in ("deploy", "no-op"):
                r = result[name]
                print(f"{name} of {hosts} nodes, lab reading pipelines with {reader}: wall {r['wall']:.2f} s, "
                      f"{r['requests'] / hosts:.1f} requests/host; lab CPU {1000 * r['lab_cpu'] / hosts:.1f} ms/host "
                      f"({1000 * r['lab_cpu'] / max(1, r['requests']):.2f} ms/request); controller CPU "
                      f"{1000 * r['controller_cpu'] / hosts:.1f} ms/host")
        if len(deploys) == 2:
            for name in ("deploy", "no-op"):
                before, after = deploys["psrpcore"][name], deploys["fast"][name]
                print(f"  {name}: lab CPU per request, psrpcore reader / fast reader: "
                      f"{(before['lab_cpu'] / before['requests']) / (after['lab_cpu'] / after['requests']):.2f}x")

    if args.pools:
        lab_up(lab, args.pools, args.base, args.workers)
        try:
            for system_cas in (False, True):
                result = controller(lab, "pools", args.forks, args.trace and not system_cas, system_cas)
                trust = "lab CA + ~140 public CAs (certifi)" if system_cas else "the lab CA only"
                print(f"controller with {result['pools']} open pools (module loaded), CA bundle: {trust}; opened "
                      f"in {result['open_s']:.1f} s (forks {args.forks}): RSS {result['rss_before_mb']:.0f} MB -> "
                      f"{result['rss_after_mb']:.0f} MB (peak {result['hwm_mb']:.0f} MB), "
                      f"{result['per_pool_kb']:.0f} KiB per pool; errors {result['error_count']} "
                      f"{result['errors'][:1]}")
                for line in result["top"]:
                    print("  " + line)
        finally:
            lab_down(lab)


if __name__ == "__main__":
    main()
