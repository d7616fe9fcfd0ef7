"""`fleetctl history`: past deploys and rollbacks from the journal; `history show RUN_ID|last` for one run's hosts,
with `--html FILE` (a self-contained page with the run's timeline) and `--junit FILE` (for CI)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from fleetctl.cli.options import JsonOpt, examples
from fleetctl.errors import ConfigError
from fleetctl.state.journal import PATH_ENV, Journal, default_path
from fleetctl.ui.console import print_json, safe, stderr, stdout
from fleetctl.ui.history import hosts_table, run_header, runs_table
from fleetctl.ui.run_report import write_run_reports

DbOpt = typer.Option(None, "--db", metavar="FILE", help=f"History database. Default: ${PATH_ENV}, else .fleetctl/history.db.")

WordsArg = typer.Argument(None, metavar="PLAYBOOK | show RUN_ID|last",
                          help="Only runs of PLAYBOOK (path or service name); or `show RUN_ID` (or `show last`, the "
                               "newest run) for one run's hosts.")
HtmlOpt = typer.Option(None, "--html", metavar="FILE", help="With `show`: write the run as one self-contained HTML page (summary, "
                                            "per-host timeline, hosts) to FILE.")
JunitOpt = typer.Option(None, "--junit", metavar="FILE", help="With `show`: write the run as JUnit XML (one test case per host) to "
                                              "FILE, for CI.")


def history(
    words: list[str] | None = WordsArg,
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=100000, metavar="N",
                              help="How many runs, newest first."),
    db: Path | None = DbOpt,
    environment: str | None = typer.Option(None, "-E", "--environment", metavar="NAME",
                                           help="Only runs in this fleet.yml environment (deploy -E NAME)."),
    html: Path | None = HtmlOpt,
    junit: Path | None = JunitOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Past deploys and rollbacks, newest first: who, when, what, outcome. `history show RUN_ID|last`: per host."""
    words = list(words or [])
    # `show` is a word, not a click sub-command: a group with an optional PLAYBOOK argument would read
    # `show` as a playbook name. (A playbook literally named "show" can be given as ./show.)
    if words[:1] == ["show"]:
        if len(words) != 2:
            raise ConfigError("expected exactly one run id (or `last`): fleetctl history show RUN_ID|last",
                              key="RUN_ID")
        show_run(words[1], db, json_out, html=html, junit=junit)
        return
    if html is not None or junit is not None:
        raise ConfigError("--html and --junit write one run's report: fleetctl history show RUN_ID|last --html FILE",
                          key="--html" if html is not None else "--junit")
    if len(words) > 1:
        raise ConfigError(f"expected at most one playbook, got {len(words)}: {' '.join(words)}", key="PLAYBOOK")
    playbook = words[0] if words else None
    journal = Journal(db or default_path())
    try:
        runs = journal.runs(playbook=playbook, limit=limit, environment=environment)
    finally:
        journal.close()
    if json_out:
        print_json({"runs": [r.to_json(with_hosts=False) for r in runs]})
        return
    if not runs:
        what = (f" for {playbook}" if playbook else "") + (f" in environment {environment}" if environment else "")
        stdout().print(Text(safe(f"no runs recorded{what} in {journal.path}")))
        return
    stdout().print(runs_table(runs, environment=environment))


def show_run(run_id: str, db: Path | None, json_out: bool, *, html: Path | None = None,
             junit: Path | None = None) -> None:
    """One run in detail: every host's outcome, release, timings and error; `last` is the newest run. With
    `html`/`junit`, the reports are written first (a path that cannot be written is exit 2)."""
    journal = Journal(db or default_path())
    try:
        run = journal.last_run() if run_id == "last" else journal.run(run_id)
    finally:
        journal.close()
    written = write_run_reports(run, html=html, junit=junit) if html is not None or junit is not None else None
    if json_out:
        print_json(run.to_json())
    else:
        console = stdout()
        console.print(run_header(run))
        console.print(hosts_table(run))
        for n in run.notifications:
            state = "delivered" if n.get("delivered") else f"NOT delivered: {n.get('error')}"
            console.print(Text(safe(f"notify.webhooks[{n.get('webhook')}] ({n.get('format')}) "
                                    f"'{n.get('event')}': {state}")))
    if written is not None:
        # On stderr with --json, so stdout stays one JSON document.
        people = stderr() if json_out else stdout()
        for what, path in (("HTML report", written.html), ("JUnit report", written.junit)):
            if path is not None:
                people.print(Text(safe(f"wrote {what} {path}")))












def register(app: typer.Typer) -> None:
    app.command("history", epilog=examples(
        "fleetctl history -n 5                  # the last five runs",
        "fleetctl history show last             # every host of the newest run",
        "fleetctl history playbooks/hello/playbook.yml --json",
    ))(history)
