"""`fleetctl lab up|down|status|fault`: a local simulated Windows fleet (see docs/lab.md)."""

from __future__ import annotations

import os
from typing import Any

import typer
from rich.markup import escape

from fleetctl.cli.options import examples
from fleetctl.errors import FleetError
from fleetctl.lab.control import lab_down, lab_fault, lab_status, lab_up
from fleetctl.lab.layout import (
    DEFAULT_BASE,
    HTTP_PORT,
    HTTPS_PORT,
    LabLayout,
    forget_lab_dir,
    remember_lab_dir,
)
from fleetctl.ui.console import print_json, safe, stderr, stdout
from fleetctl.ui.lab import lab_nodes_table

TABLE_NODES = 40  # beyond this many nodes `lab status` lists only the notable ones (fits a screen)

DirOpt = typer.Option(None, "--dir", metavar="DIR", help="Lab state directory. Default: $FLEETCTL_LAB_DIR, else the "
                      "--dir of this project's last `lab up` (until `lab down`), else .fleetctl/lab at the project "
                      "root.", show_default=False)
JsonOpt = typer.Option(False, "--json", help="Print one JSON document instead of a table.")
NodeArg = typer.Argument(..., metavar="NODE|N%|*", help="Node name (lab-node03 or node03), N% of the nodes, or '*'.")
FaultsArg = typer.Argument(..., metavar="FAULT...", help="Faults: unreachable, blackhole, latency:200ms, auth-failure, crash-on-start, "
                           "crash-after:5s, slow-stop:10s, health-failing, disk-full, clock-skew:+5m; "
                           "no-NAME clears one, none clears all.")


def up(
    nodes: int = typer.Option(3, "--nodes", "-n", metavar="N", help="How many simulated nodes."),
    faults: str | None = typer.Option(
        None, "--faults", metavar="NODE=FAULT,...", help="Faults, e.g. 'node03=crash-on-start,10%=unreachable,node05=latency:200ms'."),
    base: str | None = typer.Option(
        None, "--base", metavar="ADDRESS", help=f"First node address. Default: $FLEETCTL_LAB_BASE, else {DEFAULT_BASE}.",
        show_default=False),
    directory: str | None = DirOpt,
    no_wine: bool = typer.Option(False, "--no-wine", help="Do not prepare Wine (only Linux services will run)."),
    workers: str = typer.Option(
        "auto", "--workers", metavar="N|auto", help="Lab worker processes serving the nodes: a number, or 'auto' (one per 100 nodes, "
        "at most one per core)."),
    idle_timeout: str | None = typer.Option(
        None, "--idle-timeout", metavar="DURATION", help="WinRM shell idle timeout of every node, e.g. 30s, 5m (default 2h, as Windows' "
        "IdleTimeout 7200000 ms).", show_default=False),
    json_out: bool = JsonOpt,
) -> None:
    """Start the lab in the background; returns when every node answers, and writes its inventory."""
    layout = chosen_lab(directory)
    chosen_base = base or os.environ.get("FLEETCTL_LAB_BASE") or DEFAULT_BASE
    with stderr().status(f"starting {nodes} lab node(s)..."):
        status = lab_up(layout, nodes=nodes, base=chosen_base, faults=faults, wine=not no_wine, workers=workers,
                        idle_timeout=idle_timeout)
    if layout.origin == "--dir":
        remember_lab_dir(layout)  # `lab status`, `lab down`, `lab fault` of this project find it without --dir
    if json_out:
        print_json(_status_json(status))
        return
    names = [n["name"] for n in status["nodes"]]
    out = stdout()
    out.print(f"lab up: {len(names)} node(s) ({escape(names[0])} .. {escape(names[-1])}) from "
              f"{escape(status['nodes'][0]['address'])}")
    faulted = [f"{n['name']}={'+'.join(n['faults'])}" for n in status["nodes"] if n.get("faults")]
    if faulted:
        out.print("faults: " + escape(safe(", ".join(faulted[:20]))) + (" ..." if len(faulted) > 20 else ""))
    out.print(f"lab dir: {escape(str(layout.dir))}")
    out.print(f"inventory: {escape(status['inventory'])}")
    out.print(f"CA: {escape(status['ca'])}")
    out.print(f"try: fleetctl ping -i {escape(status['inventory'])}")


def down(directory: str | None = DirOpt, json_out: bool = JsonOpt) -> None:
    """Stop the lab: every node, service and listener it started."""
    layout = chosen_lab(directory)
    result = lab_down(layout)
    forget_lab_dir(layout)
    if json_out:
        print_json(result)
    elif not result["stopped"]:
        stdout().print(f"no lab was running in {escape(str(layout.dir))}")
    else:
        stdout().print(f"lab down: {result['nodes']} node(s) stopped in {escape(str(layout.dir))}"
                       + (" (forced)" if result["forced"] else ""))
    if result["leftover_listeners"]:
        raise FleetError(f"listeners still open after lab down: {', '.join(result['leftover_listeners'][:5])}")


def status(directory: str | None = DirOpt, json_out: bool = JsonOpt,
           show_all: bool = typer.Option(False, "--all", help=f"List every node even in a lab of more than "
                                         f"{TABLE_NODES} nodes (otherwise only those with faults or a service "
                                         "that is not running).")) -> None:
    """List the lab's nodes: address, ports, services and their state, counters and faults; the lab's CPU."""
    layout = chosen_lab(directory)
    doc = lab_status(layout)
    if json_out:
        print_json(_status_json(doc))
        return
    nodes = doc["nodes"]
    shown = nodes if show_all or len(nodes) <= TABLE_NODES else [n for n in nodes if _notable(n)][:TABLE_NODES]
    if shown:
        stdout().print(lab_nodes_table(shown, f"lab {safe(layout.dir)} (WinRM ports {HTTP_PORT}/{HTTPS_PORT})"))
    hidden = len(nodes) - len(shown)
    requests = sum(n["counters"]["requests"] for n in nodes)
    shells = sum(n.get("shells", {}).get("open", 0) for n in nodes)
    expired = sum(n.get("shells", {}).get("expired", 0) for n in nodes)
    summary = f"{len(nodes)} node(s), {requests} WS-Man requests, {shells} open shell(s), {expired} expired"
    if hidden:
        summary += f"; {hidden} node(s) not listed (--all lists them)"
    stdout().print(summary)
    cpu = doc.get("cpu")
    if cpu:
        workers = sum(1 for p in cpu["processes"] if p["role"] == "worker")
        stdout().print(f"lab CPU: {cpu['seconds']:.1f} s ({workers} worker process(es) + supervisor); services "
                       f"{cpu['services_seconds']:.1f} s")
    stdout().print(f"inventory: {escape(doc['inventory'])}   CA: {escape(doc['ca'])}")


def fault(
    node: str = NodeArg,
    faults: list[str] = FaultsArg,
    directory: str | None = DirOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Inject or clear faults on running lab nodes."""
    result = lab_fault(chosen_lab(directory), node, "+".join(faults))
    if json_out:
        print_json({"nodes": result["nodes"]})
        return
    for name, active in result["nodes"].items():
        stdout().print(f"{escape(name)}: {escape(', '.join(active) or 'no faults')}")


def chosen_lab(directory: str | None) -> LabLayout:
    """The lab this command works on; when it is not the one named by --dir, say which one and why (on stderr,
    so --json stays one document)."""
    layout = LabLayout.at(directory)
    if layout.origin == "remembered":
        stderr().print(f"using the lab in {escape(str(layout.dir))} (remembered from `fleetctl lab up --dir`)",
                       highlight=False)
    elif layout.origin == "$FLEETCTL_LAB_DIR":
        stderr().print(f"using the lab in {escape(str(layout.dir))} ($FLEETCTL_LAB_DIR)", highlight=False)
    return layout


def _notable(node: dict[str, Any]) -> bool:
    return bool(node.get("faults")) or any(s.get("state") != "Running" for s in node.get("services", []))


def _status_json(doc: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": doc["nodes"], "ca": doc["ca"], "inventory": doc["inventory"], "cpu": doc.get("cpu")}


def register(app: typer.Typer) -> None:
    lab = typer.Typer(help="A local simulated Windows fleet: real WinRM, real service processes (Wine).",
                      no_args_is_help=True)
    lab.command("up", epilog=examples(
        "fleetctl lab up --nodes 5",
        "fleetctl lab up --nodes 20 --faults 'node03=crash-on-start,10%=unreachable'",
    ))(up)
    lab.command("down", epilog=examples(
        "fleetctl lab down",
        "fleetctl lab down --dir /tmp/mylab",
    ))(down)
    lab.command("status", epilog=examples(
        "fleetctl lab status",
        "fleetctl lab status --all --json",
    ))(status)
    lab.command("fault", epilog=examples(
        "fleetctl lab fault node03 crash-on-start    # the next start of node03's service crashes",
        "fleetctl lab fault '10%' unreachable        # a tenth of the nodes stop answering",
        "fleetctl lab fault '*' none                 # clear every fault",
    ))(fault)
    app.add_typer(lab, name="lab")
