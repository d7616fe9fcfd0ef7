"""`fleetctl history`: past deploys and rollbacks from the journal; `history show RUN_ID` for one run's hosts."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from fleetctl.cli.options import JsonOpt
from fleetctl.errors import ConfigError
from fleetctl.state.journal import PATH_ENV, Journal, default_path
from fleetctl.ui.console import print_json, safe, stdout
from fleetctl.ui.history import hosts_table, run_header, runs_table

DbOpt = typer.Option(None, "--db", help=f"History database. Default: ${PATH_ENV}, else .fleetctl/history.db.")

WordsArg = typer.Argument(None, metavar="[PLAYBOOK] | show RUN_ID",
                          help="Only runs of PLAYBOOK (path or service name); or `show RUN_ID` for one run's hosts.")


def history(
    words: list[str] | None = WordsArg,
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=100000, help="How many runs, newest first."),
    db: Path | None = DbOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Past deploys and rollbacks, newest first: who, when, what, outcome. `history show RUN_ID`: per host."""
    words = list(words or [])
    # `show` is a word, not a click sub-command: a group with an optional PLAYBOOK argument would read
    # `show` as a playbook name. (A playbook literally named "show" can be given as ./show.)
    if words[:1] == ["show"]:
        if len(words) != 2:
            raise ConfigError("expected exactly one run id: fleetctl history show RUN_ID", key="RUN_ID")
        show_run(words[1], db, json_out)
        return
    if len(words) > 1:
        raise ConfigError(f"expected at most one playbook, got {len(words)}: {' '.join(words)}", key="PLAYBOOK")
    playbook = words[0] if words else None
    journal = Journal(db or default_path())
    try:
        runs = journal.runs(playbook=playbook, limit=limit)
    finally:
        journal.close()
    if json_out:
        print_json({"runs": [r.to_json(with_hosts=False) for r in runs]})
        return
    if not runs:
        what = f" for {playbook}" if playbook else ""
        stdout().print(Text(safe(f"no runs recorded{what} in {journal.path}")))
        return
    stdout().print(runs_table(runs))


def show_run(run_id: str, db: Path | None, json_out: bool) -> None:
    """One run in detail: every host's outcome, release, timings and error."""
    journal = Journal(db or default_path())
    try:
        run = journal.run(run_id)
    finally:
        journal.close()
    if json_out:
        print_json(run.to_json())
        return
    console = stdout()
    console.print(run_header(run))
    console.print(hosts_table(run))












def register(app: typer.Typer) -> None:
    app.command("history")(history)
