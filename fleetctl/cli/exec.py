"""`fleetctl exec -l PATTERN -- COMMAND...`: run an ad-hoc PowerShell command on real Windows hosts, the
operator's own script by design (node/adhoc.py, docs/windows.md); each host's output prefixed by its host, its exit
status on stderr. The lab says plainly that it needs real Windows (the lab node's typed UNSUPPORTED answer).

Exit codes: 0 when the command exited 0 on every host; 1 when it exited non-zero, could not run, or a host is a
lab node; 2 for bad input; 130 when the confirmation is declined.
"""

from __future__ import annotations

import typer

from fleetctl.cli.deploy import YesOpt, confirm
from fleetctl.cli.options import InventoryOpt, JsonOpt, LimitOpt, VerboseOpt, examples
from fleetctl.cli.ping import load_connection_settings
from fleetctl.errors import ConfigError, RolloutFailed
from fleetctl.node.adhoc import run_exec
from fleetctl.node.fleet import DEFAULT_FORKS, HostClients
from fleetctl.ui.console import print_json, safe, stderr, stdout, warn_insecure
from fleetctl.ui.logs import HostPrefixes, exec_summary, print_exec_result

PREVIEW_CHARS = 200  # of the command shown in the confirmation question


def exec_command(
    command: list[str] = typer.Argument(..., metavar="COMMAND", help="PowerShell to run, after `--` (the "
                                                                           "words are joined with spaces, as ssh "
                                                                           "does)."),
    limit: str | None = LimitOpt,
    inventory: list[str] | None = InventoryOpt,
    forks: int = typer.Option(DEFAULT_FORKS, "--forks", "-f", min=1, metavar="N", help="Hosts at once."),
    yes: bool = YesOpt,
    json_out: bool = JsonOpt,
    verbose: int = VerboseOpt,
) -> None:
    """Run an ad-hoc PowerShell COMMAND on the -l hosts (real Windows only), each host's output prefixed."""
    if limit is None:
        raise ConfigError("exec runs on the hosts you name: give -l PATTERN (-l all for every host)", key="--limit")
    script = " ".join(command).strip()
    if not script:
        raise ConfigError("expected a PowerShell command after --, got nothing", key="COMMAND")
    settings = load_connection_settings(inventory, limit)
    warn_insecure(settings.values())
    hosts = list(settings)
    if len(hosts) > 1:
        preview = script if len(script) <= PREVIEW_CHARS else script[:PREVIEW_CHARS] + "..."
        confirm(yes, f"Run `{safe(preview)}` on {len(hosts)} host(s)?")
    people = stderr() if json_out else stdout()
    prefixes = HostPrefixes(hosts)
    with HostClients(settings, forks=forks) as fleet:
        results = run_exec(hosts, fleet.client, script, forks=forks, on_done=None if json_out else lambda r:
                           print_exec_result(people, stderr(), prefixes, r))
    failed = [h for h, r in results.items() if r.status != "ok"]
    if json_out:
        print_json({"command": script, "exit_code": 1 if failed else 0,
                    "hosts": {h: r.to_json() for h, r in results.items()}})
    else:
        for line in exec_summary(results):
            stderr().print(line, soft_wrap=True)
    if failed:
        if all(results[h].status == "unsupported" for h in failed):
            raise RolloutFailed("the lab does not run arbitrary PowerShell: exec needs real Windows hosts "
                                f"({len(failed)} lab host(s) refused it; nothing ran there)")
        raise RolloutFailed(f"{len(failed)} of {len(results)} host(s) did not exit 0: "
                            f"{', '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}")


def register(app: typer.Typer) -> None:
    app.command("exec", epilog=examples(
        "fleetctl exec -l web-01 -- Get-Service hello",
        "fleetctl exec -l 'web-*' --yes -- 'Get-ChildItem C:\\apps\\hello\\releases | Select-Object Name'",
    ))(exec_command)
