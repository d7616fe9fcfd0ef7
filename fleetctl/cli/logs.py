"""`fleetctl logs`: the last lines of the service log on each targeted host, each line prefixed by its host; with
-f, every line written after, until Ctrl-C (status/logs.py reads with a cursor on the nodes: `Read-FleetLog`).
With --events, the service's recent Application-log events (`Get-FleetEvents`) instead.

Exit codes: 0, or 130 when Ctrl-C ends -f; 1 when some host could not be read (the others are still shown); 2 for
bad input (a bad --grep regex among it, before any host is asked).
"""

from __future__ import annotations

import json
import sys

import typer

from fleetctl.cli.options import (
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VarOpt,
    VerboseOpt,
    examples,
    inventory_paths,
)
from fleetctl.errors import EXIT_INTERRUPTED, ConfigError, RolloutFailed
from fleetctl.node.fleet import HostClients, run_parallel
from fleetctl.rollout.interruption import Interruption, sigint_handler
from fleetctl.status.collect import StatusRequest, load_status_request
from fleetctl.status.logs import HostLines, HostNotice, LogEvent, LogFollower, LogTarget, compile_grep
from fleetctl.ui.console import print_json, safe, stderr, stdout, warn_insecure
from fleetctl.ui.logs import HostPrefixes, LogPrinter, print_events


def logs(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file."),
    limit: str | None = LimitOpt,
    host: str | None = typer.Option(None, "--host", metavar="HOST", help="One inventory host (the same as -l HOST "
                                                                          "naming exactly one host)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing lines as they are written, from every "
                                                              "targeted host, until Ctrl-C."),
    grep: str | None = typer.Option(None, "--grep", metavar="REGEX", help="Only lines matching this Python regular "
                                                                          "expression (applied on the controller)."),
    tail: int = typer.Option(100, "--tail", "-n", min=0, max=100000, metavar="N",
                             help="How many lines from the end (0 with -f: only new lines)."),
    path: str | None = typer.Option(None, "--path", metavar="FILE", help="Log file relative to the install root "
                                                            "(default: the newest file under shared\\logs)."),
    events: bool = typer.Option(False, "--events", help="The service's recent Windows Application-log events "
                                                         "instead (the last --tail, newest first)."),
    forks: int | None = typer.Option(None, "--forks", min=1, metavar="N",
                                     help="Hosts asked at once (default: rollout.forks, 50)."),
    inventory: list[str] | None = InventoryOpt,
    var: list[str] | None = VarOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Print the last --tail lines of PLAYBOOK's service log on each targeted host, prefixed by host; -f follows."""
    pattern = compile_grep(grep)  # before anything is read or contacted
    if host is not None and limit is not None:
        raise ConfigError("--host and --limit do not go together (--host HOST is -l with exactly one host)",
                          key="--host")
    if events and (path or follow or grep is not None):
        raise ConfigError("--events shows Application-log events: it does not go with --path, --follow or --grep",
                          key="--events")
    request = load_status_request(playbook, inventory_paths(inventory), limit=limit, extra_vars=var, forks=forks)
    if host is not None:
        request = _only(request, host)
    warn_insecure(request.connections.values())
    names = [t.host for t in request.targets]
    prefixes = HostPrefixes(names, shown=host is None)
    with HostClients(request.connections, forks=request.forks) as fleet:
        if events:
            _show_events(request, fleet, prefixes, tail, json_out, one=host)
            return
        follower = LogFollower([LogTarget(t.host, t.app, t.root, path) for t in request.targets], fleet.client,
                               grep=pattern, forks=request.forks)
        tails = follower.tail(tail)
        if host is not None and not follow:
            # --host keeps its own one-host answer and errors (an unknown log is bad input, exit 2).
            only = tails[host]
            if only.error is not None:
                if only.error.startswith("no log found"):
                    raise ConfigError(f"{host}: {only.error}", key="--path" if path else "--host")
                raise RolloutFailed(f"{host}: {only.error}")
        printer = LogPrinter(stdout(), stderr(), prefixes)
        if json_out and not follow:
            if host is not None:
                print_json({"host": host, "path": tails[host].path, "lines": list(tails[host].lines)})
            else:
                print_json({"hosts": {h: t.to_json() for h, t in tails.items()}})
        elif json_out:
            for t in tails.values():
                if t.error is not None:
                    _json_line(HostNotice(t.host, t.error, error=True))
                elif t.lines:
                    _json_line(HostLines(t.host, t.path or "", t.lines))
        else:
            printer.print_tails(tails.values(), tail, grep)
        if follow:
            _follow(follower, printer, json_out, len(names))
        failed = [h for h, t in tails.items() if t.error is not None]
        if failed:
            shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
            raise RolloutFailed(f"{len(failed)} of {len(tails)} host(s) could not be read: {shown}")


def _only(request: StatusRequest, host: str) -> StatusRequest:
    """--host: the one named host, which must be one of the playbook's (exit 2 naming --host otherwise)."""
    target = next((t for t in request.targets if t.host == host), None)
    if target is None:
        known = ", ".join(t.host for t in request.targets[:10])
        raise ConfigError(f"'{host}' is not one of the playbook's hosts ({known}"
                          f"{', ...' if len(request.targets) > 10 else ''})", key="--host")
    return StatusRequest(request.name, (target,), {host: request.connections[host]}, 1)


def _follow(follower: LogFollower, printer: LogPrinter, json_out: bool, hosts: int) -> None:
    """Poll until Ctrl-C, which ends following at the end of the current poll: exit 130, as every command's."""
    interruption = Interruption()
    stderr().print(f"following {hosts} host(s); Ctrl-C to stop", style="dim", highlight=False)
    with sigint_handler(interruption):
        follower.follow(_json_line if json_out else printer.event, interruption.requested)
    stderr().print(f"stopped following {hosts} host(s)", style="dim", highlight=False)
    raise typer.Exit(EXIT_INTERRUPTED)


def _json_line(event: LogEvent) -> None:
    """-f --json: one JSON object per line, as lines arrive (a stream cannot be one document)."""
    if isinstance(event, HostLines):
        for line in event.lines:
            sys.stdout.write(json.dumps({"host": event.host, "path": event.path, "line": safe(line)}) + "\n")
    else:
        sys.stdout.write(json.dumps({"host": event.host, "notice": safe(event.message), "error": event.error}) + "\n")
    sys.stdout.flush()


def _show_events(request: StatusRequest, fleet: HostClients, prefixes: HostPrefixes, tail: int, json_out: bool,
                 *, one: str | None) -> None:
    sources = {t.host: t.service_name for t in request.targets}
    outcomes = run_parallel(list(sources), lambda h: fleet.client(h).get_fleet_events(source=sources[h], max=tail),
                            forks=request.forks)
    raised = outcomes[one].exception if one is not None else None
    if raised is not None:
        raise raised  # one host by --host: its error is the command's, as before
    if json_out:
        docs = {h: {"source": sources[h], "note": o.value.note if o.value else None, "error": o.error,
                    "events": [{"time": e.time.isoformat() if e.time else None, "level": e.level, "id": e.id,
                                "message": e.message} for e in (o.value.events if o.value else ())]}
                for h, o in outcomes.items()}
        print_json({"host": one, **docs[one]} if one is not None else {"hosts": docs})
    else:
        printer = LogPrinter(stdout(), stderr(), prefixes)
        for h, o in outcomes.items():
            if o.value is None:
                printer.notice(HostNotice(h, o.error or "unknown error", error=True))
            else:
                print_events(printer.out, printer.notes, prefixes, h, sources[h], o.value)
    failed = [h for h, o in outcomes.items() if o.value is None]
    if failed:
        raise RolloutFailed(f"{len(failed)} of {len(outcomes)} host(s) could not be read: {', '.join(failed[:5])}")


def register(app: typer.Typer) -> None:
    app.command("logs", epilog=examples(
        "fleetctl logs playbooks/hello/playbook.yml -l web -n 50           # the last 50 lines of every web host",
        "fleetctl logs playbooks/hello/playbook.yml -l 'web0*' -f --grep 'ERROR|panic'",
        "fleetctl logs playbooks/hello/playbook.yml --host web-01 --events --json",
    ))(logs)
