"""Scale benchmark of the lab's protocol server: N nodes (default 200) x 2 listeners in one process.

Prints: certificate issuing and listener start-up time, RSS after start, idle CPU over a window, the time for one
pypsrp RunspacePool + command against every node (in parallel), RSS after that, and idle CPU again.

    .venv/bin/python tests/bench/bench_lab_scale.py [--nodes 200] [--base 127.0.11] [--idle 10] [--real]

`--real` serves `fleetctl.lab.node.LabNode` backends (sandboxes under a temp dir) instead of the minimal
in-script backend. Addresses are `<base>.1 ...` (override the base with FLEETCTL_TEST_ADDR_BASE or --base);
more than 250 nodes continue in the next /24 (`127.0.12.x`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fleetctl.lab.backend import LabUnsupported, NetworkFaults
from fleetctl.lab.certs import create_ca, issue_node_cert
from fleetctl.lab.wsman import LabServer, NodeServer

USER, PASSWORD = "fleet", "Bench:Pass-w0rd!"


class MinimalBackend:
    """Answers `Get-FleetFacts` with a small JSON document; nothing else."""

    def __init__(self, name: str, address: str) -> None:
        self.name, self.address = name, address

    def invoke(self, command: str, parameters: dict[str, Any], input_objects: list[Any]) -> list[Any]:
        if command == "Get-FleetFacts":
            return [json.dumps({"ok": True, "result": {"hostname": self.name}})]
        raise LabUnsupported(command)

    def run_script(self, script: str, arguments: list[Any], input_objects: list[Any]) -> list[Any]:
        raise LabUnsupported("no scripts in the benchmark backend")

    def network_faults(self) -> NetworkFaults:
        return NetworkFaults()

    def count_request(self, bytes_received: int) -> None:
        pass


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def idle_cpu_percent(window: float) -> float:
    start_cpu, start = cpu_seconds(), time.monotonic()
    time.sleep(window)
    return 100 * (cpu_seconds() - start_cpu) / (time.monotonic() - start)


def address_of(base: str, index: int) -> str:
    a, b, c = (int(x) for x in base.split("."))
    c += index // 250
    return f"{a}.{b}.{c}.{index % 250 + 1}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--base", default=os.environ.get("FLEETCTL_TEST_ADDR_BASE", "127.0.11"))
    parser.add_argument("--idle", type=float, default=10.0, help="idle CPU measuring window, seconds")
    parser.add_argument("--threads", type=int, default=20, help="client threads for the round of requests")
    parser.add_argument("--real", action="store_true", help="serve LabNode backends")
    args = parser.parse_args()

    from pypsrp.powershell import PowerShell, RunspacePool
    from pypsrp.wsman import WSMan

    work = Path(tempfile.mkdtemp(prefix="fleetctl-lab-bench-"))
    rss_before = rss_mb()
    started = time.monotonic()
    ca = create_ca(work / "tls")
    lab = LabServer()
    backends: list[Any] = []
    for i in range(args.nodes):
        address = address_of(args.base, i)
        name = f"BENCH{i + 1:03d}"
        if args.real:
            from fleetctl.lab.node import LabNode

            backend: Any = LabNode(name, address, work / "nodes" / name)
        else:
            backend = MinimalBackend(name, address)
        backends.append(backend)
        tls = issue_node_cert(ca, address, [name.lower()], work / "tls")
        lab.add(NodeServer(backend, address=address, credentials={USER: PASSWORD}, tls=tls))
    certs_done = time.monotonic()
    lab.start_background()
    up = time.monotonic()
    try:
        print(f"nodes: {args.nodes} ({'LabNode' if args.real else 'minimal'} backends), "
              f"listeners: {2 * args.nodes}, addresses {address_of(args.base, 0)} .. "
              f"{address_of(args.base, args.nodes - 1)}")
        print(f"setup: certificates + node objects {certs_done - started:.2f} s, "
              f"listeners started {up - certs_done:.2f} s")
        print(f"RSS: {rss_before:.1f} MB before, {rss_mb():.1f} MB with {args.nodes} nodes listening")
        print(f"idle CPU with {args.nodes} nodes: {idle_cpu_percent(args.idle):.2f} % of one core "
              f"over {args.idle:.0f} s")

        def one(i: int) -> float:
            t = time.monotonic()
            wsman = WSMan(address_of(args.base, i), username=USER, password=PASSWORD, auth="ntlm",
                          cert_validation=str(ca.cert))
            with RunspacePool(wsman) as pool:
                ps = PowerShell(pool)
                ps.add_cmdlet("Get-FleetFacts")
                out = ps.invoke()
                assert not ps.had_errors and json.loads(out[0])["ok"], out
            wsman.close()
            return time.monotonic() - t

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
            latencies = sorted(pool.map(one, range(args.nodes)))
        total = time.monotonic() - t0
        print(f"one pool open + command + close on every node, {args.threads} client threads: {total:.2f} s "
              f"({args.nodes / total:.1f} nodes/s; per node median {latencies[len(latencies) // 2] * 1000:.0f} "
              f"ms, p95 {latencies[int(len(latencies) * 0.95) - 1] * 1000:.0f} ms; client and server share "
              "the same cores)")
        print(f"RSS after the round: {rss_mb():.1f} MB (includes the pypsrp clients in this process)")
        print(f"idle CPU after the round: {idle_cpu_percent(args.idle):.2f} % of one core")
    finally:
        lab.stop_background()
        for backend in backends:
            close = getattr(backend, "close", None)
            if close is not None:
                close()
        from fleetctl.lab.auth import remove_store_dir

        remove_store_dir()


if __name__ == "__main__":
    main()
