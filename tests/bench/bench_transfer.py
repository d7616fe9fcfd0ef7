"""Transfer benchmark: a ~24 MB Go Windows exe moved to one lab node by fleetctl push, fleetctl pull and pypsrp's
`Client.copy` (same run, same node), then to N nodes in parallel. Prints a markdown table for docs/benchmarks.md.

    .venv/bin/python tests/bench/bench_transfer.py [--nodes 50] [--base 127.0.34.1] [--skip-fleet-copy]

The exe is `cmd/compile` of the local Go toolchain cross-built for windows/amd64 (stdlib only, works offline);
the variants differ only by 16 trailing bytes (PE overlay), so every method moves fresh bytes to the same node.
Pull is measured over HTTPS (the default: per-deploy CA pinned by the node) and over plain HTTP, for the TLS cost.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from fleetctl.artifacts.pull_server import PullServer
from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.inventory import load_inventory
from fleetctl.config.templating import render_vars
from fleetctl.lab.control import lab_down, lab_up
from fleetctl.lab.layout import LabLayout
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import run_parallel
from fleetctl.node.transfer import ensure_artifact, prepare_artifact
from fleetctl.transport.winrm import WinRMTransport

CACHE = Path(os.environ.get("FLEETCTL_BENCH_CACHE", "/tmp/fleetctl-bench"))


def build_exe() -> Path:
    exe = CACHE / "compile.exe"
    if not exe.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, CGO_ENABLED="0", GOOS="windows", GOARCH="amd64", GOPROXY="off")
        subprocess.run(["go", "build", "-trimpath", "-o", str(exe), "cmd/compile"], check=True, env=env,
                       cwd=CACHE)
    return exe


def variant(exe: Path, tag: str, directory: Path) -> tuple[Path, str]:
    data = exe.read_bytes() + hashlib.sha256(tag.encode()).digest()[:16]
    path = directory / f"app-{tag}.exe"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def push(settings: ConnectionSettings, path: Path, sha: str) -> None:
    client = NodeClient(WinRMTransport(settings))
    try:
        assert ensure_artifact(client, path, sha, "push").method == "push"
    finally:
        client.close()


def pull(settings: ConnectionSettings, path: Path, sha: str, server: PullServer) -> None:
    client = NodeClient(WinRMTransport(settings))
    try:
        assert ensure_artifact(client, path, sha, "auto", pull_server=server).method == "pull"
    finally:
        client.close()


def skip(settings: ConnectionSettings, path: Path, sha: str) -> None:
    client = NodeClient(WinRMTransport(settings))
    try:
        assert ensure_artifact(client, path, sha, "push").method == "skipped"
    finally:
        client.close()


def client_copy(settings: ConnectionSettings, path: Path, tag: str) -> None:
    from pypsrp.client import Client

    client = Client(settings.address, port=settings.port, username=settings.user, password=settings.password,
                    ssl=True, cert_validation=settings.ca_bundle or True, auth=settings.auth, no_proxy=True)
    client.copy(str(path), f"C:\\bench\\{tag}.exe")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--base", default="127.0.34.1")
    parser.add_argument("--rounds", type=int, default=3, help="single-node rounds (median reported)")
    parser.add_argument("--skip-fleet-copy", action="store_true", help="skip Client.copy to N nodes (slowest)")
    args = parser.parse_args()

    exe = build_exe()
    work = Path(tempfile.mkdtemp(prefix="fleetctl-bench-"))
    layout = LabLayout.at(work / "lab")
    rows: list[tuple[str, str]] = []
    try:
        t_up = timed(lambda: lab_up(layout, nodes=args.nodes, base=args.base, wine=False))
        print(f"lab of {args.nodes} nodes up in {t_up:.1f}s", file=sys.stderr)
        hosts = load_inventory([layout.dir / "inventory.yml"]).select("all")
        nodes = [ConnectionSettings.from_hostvars(h.name, render_vars(dict(h.vars), source="lab")) for h in hosts]
        one = nodes[0]
        size = exe.stat().st_size
        (p_push, s_push), (p_fleet, s_fleet), (p_fpull, s_fpull) = (
            variant(exe, t, work) for t in ("push", "fleet-push", "fleet-pull"))

        # Same node, interleaved rounds, median: the machine is shared, so single timings are noisy.
        samples: dict[str, list[float]] = {k: [] for k in ("copy", "push_cold", "push_warm", "pull", "pull_http",
                                                           "skip", "gzip")}
        pull_address = args.base.rsplit(".", 1)[0] + ".250"
        # The default server is HTTPS (per-deploy CA); the plain-HTTP one measures what TLS costs.
        with PullServer(pull_address) as server, PullServer(pull_address, plain_http=True) as plain:
            for r in range(args.rounds):
                p_cold, s_cold = variant(exe, f"cold{r}", work)
                p_warm, s_warm = variant(exe, f"warm{r}", work)
                p_pull, s_pull = variant(exe, f"pull{r}", work)
                p_http, s_http = variant(exe, f"http{r}", work)
                samples["copy"].append(timed(partial(client_copy, one, exe, f"copy{r}")))
                # cold: reading + hashing + gzip of the artifact included (once per deploy, shared by all hosts)
                samples["push_cold"].append(timed(partial(push, one, p_cold, s_cold)))
                samples["gzip"].append(timed(lambda p=p_warm, h=s_warm: prepare_artifact(p, h).payload))
                samples["push_warm"].append(timed(partial(push, one, p_warm, s_warm)))
                samples["skip"].append(timed(partial(skip, one, p_warm, s_warm)))
                prepare_artifact(p_pull, s_pull)
                samples["pull"].append(timed(partial(pull, one, p_pull, s_pull, server)))
                prepare_artifact(p_http, s_http)
                samples["pull_http"].append(timed(partial(pull, one, p_http, s_http, plain)))
                for path in (p_cold, p_warm, p_pull, p_http):
                    path.unlink()
        m = {k: statistics.median(v) for k, v in samples.items()}
        prepared = prepare_artifact(p_push, s_push)
        t_copy, t_push_cold, t_push_warm, t_pull, t_pull_http, t_skip, t_gzip = (
            m["copy"], m["push_cold"], m["push_warm"], m["pull"], m["pull_http"], m["skip"], m["gzip"])
        rows += [
            ("artifact", (f"{size / 1e6:.1f} MB, gzip level 6 -> {len(prepared.payload) / 1e6:.1f} MB "
                          f"({len(prepared.payload) / size:.0%}), compress once: {t_gzip:.2f} s")),
            ("pypsrp Client.copy, 1 node (new pool per call, as pypsrp does)", f"{t_copy:.2f} s"),
            ("fleetctl push, 1 node (incl. connect + gzip)", f"{t_push_cold:.2f} s  ({t_copy / t_push_cold:.1f}x)"),
            ("fleetctl push, 1 node (gzip cached)", f"{t_push_warm:.2f} s  ({t_copy / t_push_warm:.1f}x)"),
            ("fleetctl pull over HTTPS, 1 node (default `auto`)", f"{t_pull:.2f} s  ({t_copy / t_pull:.1f}x)"),
            ("fleetctl pull over plain HTTP, 1 node", f"{t_pull_http:.2f} s  ({t_copy / t_pull_http:.1f}x)"),
            ("fleetctl skip (already there), 1 node", f"{t_skip:.2f} s"),
            ("(medians of rounds)", f"{args.rounds}; raw samples: " + "; ".join(
                f"{k} " + "/".join(f"{x:.2f}" for x in v) for k, v in samples.items())),
        ]
        for name, value in rows:
            print(f"{name}: {value}", file=sys.stderr)

        n = len(nodes)

        def fleet(fn: Callable[[ConnectionSettings], None]) -> float:
            started = time.perf_counter()
            outcomes = run_parallel([s.host_name for s in nodes], lambda h: fn(next(s for s in nodes
                                                                                      if s.host_name == h)),
                                    forks=50)
            failed = [o.error for o in outcomes.values() if not o.ok]
            if failed:
                raise SystemExit(f"{len(failed)} failed: {failed[0]}")
            return time.perf_counter() - started

        assert prepare_artifact(p_fleet, s_fleet).payload  # compressed before the clock starts, like push_warm
        t_fleet_push = fleet(lambda s: push(s, p_fleet, s_fleet))
        rows.append((f"fleetctl push, {n} nodes in parallel",
                     f"{t_fleet_push:.1f} s ({t_fleet_push / n:.2f} s/node)"))
        print(rows[-1], file=sys.stderr)
        with PullServer(pull_address) as server:
            t_fleet_pull = fleet(lambda s: pull(s, p_fpull, s_fpull, server))
        rows.append((f"fleetctl pull over HTTPS, {n} nodes in parallel",
                     f"{t_fleet_pull:.1f} s ({t_fleet_pull / n:.2f} s/node)"))
        print(rows[-1], file=sys.stderr)
        p_fhttp, s_fhttp = variant(exe, "fleet-http", work)
        prepare_artifact(p_fhttp, s_fhttp)
        with PullServer(pull_address, plain_http=True) as plain:
            t_fleet_http = fleet(lambda s: pull(s, p_fhttp, s_fhttp, plain))
        rows.append((f"fleetctl pull over plain HTTP, {n} nodes in parallel",
                     f"{t_fleet_http:.1f} s ({t_fleet_http / n:.2f} s/node)"))
        print(rows[-1], file=sys.stderr)
        if not args.skip_fleet_copy:
            t_fleet_copy = fleet(lambda s: client_copy(s, exe, "fleet-copy"))
            rows.append((f"pypsrp Client.copy, {n} nodes (50 threads)",
                         (f"{t_fleet_copy:.1f} s ({t_fleet_copy / n:.2f} s/node); pull is "
                          f"{t_fleet_copy / t_fleet_pull:.1f}x, push {t_fleet_copy / t_fleet_push:.1f}x faster")))
            print(rows[-1], file=sys.stderr)
    finally:
        lab_down(layout)
        shutil.rmtree(work, ignore_errors=True)

    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    threading.stack_size(1024 * 1024)
    sys.exit(main())
