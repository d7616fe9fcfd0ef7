"""`fleetctl schedule install|list|remove|run`: unattended deploys started by the controller's scheduler (cron,
a systemd timer, or Windows Task Scheduler), each run logged to `.fleetctl/logs/<run-id>.log`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from fleetctl.artifacts.manifest import check_version
from fleetctl.cli.options import (
    EnvironmentOpt,
    InventoryOpt,
    JsonOpt,
    LimitOpt,
    VarOpt,
    examples,
    inventory_paths,
)
from fleetctl.config.project import state_dir
from fleetctl.errors import ConfigError, FleetError
from fleetctl.schedule.backend import InstalledEntry, Scheduler
from fleetctl.schedule.entry import (
    ScheduleEntry,
    check_name,
    days_text,
    default_name,
    definitions,
    delete_definition,
    load_definition,
    parse_at,
    parse_days,
    refuse_stored_secrets,
    save_definition,
)
from fleetctl.schedule.run import ScheduledRun, read_env_file, run_entry
from fleetctl.schedule.schedulers import scheduler_for
from fleetctl.ui.console import print_json, safe, stdout, warn

SchedulerOpt = typer.Option("auto", "--scheduler", metavar="SCHEDULER", help="auto (Task Scheduler on Windows, a systemd timer where "
                            "systemd runs, else the user's crontab), cron, systemd or task-scheduler.")


def install(
    playbook: str = typer.Argument(..., metavar="PLAYBOOK", help="Playbook file, relative to this (the project) directory."),
    at: str = typer.Option(..., "--at", metavar="HH:MM", help="Time of day, HH:MM, 24-hour, the controller's local time."),
    days: str | None = typer.Option(None, "--days", metavar="DAYS", help="daily (default), weekdays, weekends, mon-fri, "
                                    "mon,wed,fri ..."),
    name: str | None = typer.Option(None, "--name", metavar="NAME", help="Entry name (default: from the playbook's file name)."),
    scheduler: str = SchedulerOpt,
    env_file: str | None = typer.Option(None, "--env-file", metavar="FILE", help="KEY=VALUE file the run gets as its environment "
                                        "(for env() in the inventory); only its path is stored."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be installed; install nothing."),
    inventory: list[str] | None = InventoryOpt,
    environment: str | None = EnvironmentOpt,  # applied by its callback (cli/options.py)
    limit: str | None = LimitOpt,
    canary: str | None = typer.Option(None, "--canary", metavar="N|N%", help="deploy --canary for each run."),
    batch: str | None = typer.Option(None, "--batch", metavar="N|N%", help="deploy --batch for each run."),
    max_failed: str | None = typer.Option(None, "--max-failed", metavar="N|N%", help="deploy --max-failed for each run."),
    forks: int | None = typer.Option(None, "--forks", metavar="N", help="deploy --forks for each run."),
    version: str | None = typer.Option(None, "--version", metavar="VERSION", help="deploy --version for each run (default: git "
                                       "describe of the committed tree)."),
    artifact: str | None = typer.Option(None, "--artifact", metavar="FILE", help="deploy --artifact for each run."),
    var: list[str] | None = VarOpt,
    if_changed: bool = typer.Option(False, "--if-changed", help="deploy --if-changed for each run: deploy only "
                                                                "the hosts whose target differs; a run with "
                                                                "nothing to deploy exits 0 and changes nothing."),
    json_out: bool = JsonOpt,
) -> None:
    """Install (or update) a scheduled unattended deploy of PLAYBOOK run from this directory."""
    project = Path.cwd().resolve()
    when = parse_at(at)
    weekdays = parse_days(days)
    entry_name = check_name(name) if name is not None else default_name(playbook)
    if not (project / playbook).is_file():
        raise ConfigError(f"no playbook file {playbook} in {project}", key="PLAYBOOK")
    extra_vars = list(var or ())
    refuse_stored_secrets(extra_vars)
    inventories = [str(p) for p in inventory_paths(inventory)]
    if env_file is not None and not (project / env_file).is_file():
        raise ConfigError(f"no such file in {project}", file=env_file, key="--env-file")
    if forks is not None and forks < 1:
        raise ConfigError(f"expected at least 1, got {forks}", key="--forks")
    if version is not None:
        check_version(version, key="--version")
    if artifact is not None and not (project / artifact).is_file():
        raise ConfigError(f"no such file in {project}", file=artifact, key="--artifact")
    args: list[str] = []
    for path in inventories:
        args += ["-i", path]
    if environment is not None:
        args += ["-E", environment]  # pinned: each run gets this environment's vars and rollout defaults too
    for option, value in (("--limit", limit), ("--canary", canary), ("--batch", batch),
                          ("--max-failed", max_failed), ("--forks", None if forks is None else str(forks)),
                          ("--version", version), ("--artifact", artifact)):
        if value is not None:
            args += [option, value]
    for item in extra_vars:
        args += ["--var", item]
    if if_changed:
        args.append("--if-changed")
    entry = ScheduleEntry(name=entry_name, project=project, playbook=playbook, at=when, days=weekdays,
                          deploy_args=tuple(args), env_file=env_file, python=sys.executable,
                          path=os.environ.get("PATH"))
    _check_deploy_options(entry, inventories, limit, extra_vars, canary, batch, max_failed, forks, version)
    backend = scheduler_for(scheduler)
    if dry_run:
        rendered = backend.render(entry)
        if json_out:
            print_json({"scheduler": backend.kind, "entry": entry.to_json(), "files": rendered})
            return
        for where, text in rendered.items():  # verbatim: a file's lines must not be wrapped to the terminal
            sys.stdout.write(safe(f"# {backend.kind}: {where}\n{text}"))
        return
    taken = [e for e in backend.installed() if e.name == entry.name and e.project != project]
    if taken:
        raise ConfigError(f"schedule {entry.name!r} is already installed for the project {taken[0].project}: "
                          "give another --name, or remove that entry from its project first", key="--name")
    previous = load_definition(project, entry.name)
    save_definition(entry)
    try:
        location = backend.install(entry)
    except BaseException:
        if previous is None:
            delete_definition(project, entry.name)
        else:
            save_definition(previous)
        raise
    verb = "updated" if previous is not None else "installed"
    notes = backend.warnings()
    if json_out:
        print_json({"scheduler": backend.kind, "installed": entry.name, "updated": previous is not None,
                    "location": location, "entry": entry.to_json(), "warnings": notes})
        return
    for note in notes:
        warn(note)
    stdout().print(Text(safe(f"{verb} schedule {entry.name}: fleetctl deploy {playbook} --unattended, "
                             f"{days_text(weekdays)} at {when} ({backend.kind}: {location}); logs in "
                             f".fleetctl/logs/, try it now with `fleetctl schedule run {entry.name}`")))


@contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_deploy_options(entry: ScheduleEntry, inventories: list[str], limit: str | None, extra_vars: list[str],
                          canary: str | None, batch: str | None, max_failed: str | None, forks: int | None,
                          version: str | None) -> None:
    """Load the playbook and inventory as the run will (with the env file's environment), so a bad option or
    file fails now, with exit 2, rather than at 02:00."""
    from fleetctl.rollout.runner import DeployOptions, load_fleet

    env = read_env_file(entry.project / entry.env_file) if entry.env_file else {}
    with _environment(env):
        load_fleet(DeployOptions(playbook=entry.playbook, inventories=inventories, limit=limit,
                                 extra_vars=tuple(extra_vars), canary=canary, batch=batch, max_failed=max_failed,
                                 forks=forks, version=version), {"version": version or "0.0.0"})


def list_entries(
    scheduler: str = SchedulerOpt,
    json_out: bool = JsonOpt,
) -> None:
    """fleetctl's scheduled deploys (and nothing else the scheduler holds), with each one's last run."""
    backend = scheduler_for(scheduler)
    rows = _rows(backend)
    if json_out:
        print_json({"scheduler": backend.kind, "entries": rows})
        return
    if not rows:
        stdout().print(Text(f"no fleetctl schedules in {backend.kind}"))
        return
    here = str(Path.cwd().resolve())
    # Entries of this directory only: the project column would repeat it on every line.
    elsewhere = any(row["project"] != here for row in rows)
    title = f"fleetctl schedules ({backend.kind})" + ("" if elsewhere else f", project {here}")
    table = Table(title=safe(title), title_justify="left")
    columns = ["name", "when", "playbook", "options", *(["project"] if elsewhere else []), "last run"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        last = row["last_run"]
        last_text = f"{last['id']} {last['status']}" if last else "-"
        cells = [row["name"], f"{row['days']} at {row['at']}" if row["at"] else row["when"], row["playbook"] or "?",
                 " ".join(row["deploy_args"]), *([row["project"]] if elsewhere else []), last_text]
        table.add_row(*(Text(safe(v)) for v in cells))
    stdout().print(table)


def _rows(backend: Scheduler) -> list[dict[str, Any]]:
    installed = backend.installed()
    here = Path.cwd().resolve()
    names = {e.name for e in installed}
    orphans = [d for d in definitions(here) if d.name not in names]
    rows = [_row(e, _definition_of(e), True) for e in installed]
    rows += [_row(InstalledEntry(d.name, d.project, "(not installed)", "-"), d, False) for d in orphans]
    return rows


def _definition_of(entry: InstalledEntry) -> ScheduleEntry | None:
    try:
        return load_definition(entry.project, entry.name)
    except ConfigError:
        return None


def _row(entry: InstalledEntry, definition: ScheduleEntry | None, installed: bool) -> dict[str, Any]:
    return {
        "name": entry.name, "project": str(entry.project), "installed": installed, "when": entry.when,
        "location": entry.location, "playbook": definition.playbook if definition else None,
        "at": str(definition.at) if definition else None, "days": days_text(definition.days) if definition else None,
        "deploy_args": list(definition.deploy_args) if definition else [],
        "last_run": _last_run(entry.project, entry.name),
    }


def _last_run(project: Path, name: str) -> dict[str, Any] | None:
    from fleetctl.state.journal import Journal

    db = state_dir(project) / "history.db"  # where the entry's deploys write it: the project root
    if not db.is_file():
        return None
    journal = Journal(db)
    try:
        for run in journal.runs(limit=500):
            if run.schedule == name:
                return {"id": run.run_id, "status": run.status, "exit_code": run.exit_code,
                        "started_at": run.to_json(with_hosts=False)["started_at"]}
    except ConfigError:
        return None
    finally:
        journal.close()
    return None


def remove(
    target: str = typer.Argument(..., metavar="NAME|PLAYBOOK", help="Entry name, or a playbook: all its entries."),
    scheduler: str = SchedulerOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Remove fleetctl's scheduled deploy NAME (or every entry of PLAYBOOK from this directory)."""
    backend = scheduler_for(scheduler)
    installed = {e.name: e for e in backend.installed()}
    here = Path.cwd().resolve()
    if _is_name(target) and (target in installed or load_definition(here, target) is not None):
        names = [target]
    else:
        wanted = (here / target).resolve()
        names = [d.name for d in definitions(here) if (here / d.playbook).resolve() == wanted]
        if not names:
            raise ConfigError(f"no fleetctl schedule named {target!r}, and no entry of this directory deploys a "
                              "playbook by that path (see `fleetctl schedule list`)", key="NAME|PLAYBOOK")
    removed = []
    for name in names:
        was_installed = backend.remove(name)
        project = installed[name].project if name in installed else here
        had_definition = delete_definition(project, name)
        if was_installed or had_definition:
            removed.append(name)
    if json_out:
        print_json({"scheduler": backend.kind, "removed": removed})
        return
    for name in removed:
        stdout().print(Text(safe(f"removed schedule {name} ({backend.kind})")))


def _is_name(text: str) -> bool:
    try:
        check_name(text)
    except ConfigError:
        return False
    return True


def run(
    name: str = typer.Argument(..., metavar="NAME", help="Entry name."),
    scheduler: str = SchedulerOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run entry NAME now, exactly as the scheduler does: unattended, under the entry's lock, logged."""
    check_name(name, key="NAME")
    entry = load_definition(Path.cwd().resolve(), name)
    if entry is None:
        # Started from elsewhere: the scheduler knows the entry's project.
        found = [e for e in scheduler_for(scheduler).installed() if e.name == name]
        entry = load_definition(found[0].project, name) if found else None
    if entry is None:
        raise ConfigError(f"no fleetctl schedule named {name!r} here or in the scheduler (see `fleetctl schedule "
                          "list`)", key="NAME")
    os.chdir(entry.project)
    echo = (lambda line: stdout().print(Text(line))) if sys.stdout.isatty() and not json_out else None
    result = run_entry(entry, echo=echo, after_run=after_scheduled_run)
    summary = f"scheduled run {result.run_id} of {name}: exit code {result.exit_code}; log: {result.log}"
    if json_out:
        print_json({"run_id": result.run_id, "schedule": name, "exit_code": result.exit_code,
                    "log": str(result.log), "skipped": result.skipped})
    if result.exit_code != 0:
        raise ScheduledRunFailed(summary, result.exit_code)
    if not json_out:
        stdout().print(Text(safe(summary)))


class ScheduledRunFailed(FleetError):
    """`schedule run` exits with the deploy's own exit code (SPEC 2), so a wrapper or CI job can act on it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def after_scheduled_run(run: ScheduledRun) -> list[str]:
    """The one call site for what a scheduled run leaves besides its log and history: the HTML and JUnit reports
    next to the log. Webhook notifications are sent by the deploy itself. Returns lines for the log; a report that
    cannot be written is said there and never changes the run's exit code."""
    from fleetctl.ui.run_report import write_reports_next_to

    try:
        files = write_reports_next_to(run.log, run.run_id)  # the journal the deploy wrote, in the project
    except ConfigError as err:
        # A run refused before it started (bad input, a dirty tree) has no history entry to report on; nor has a
        # --if-changed run that found every host already on the target.
        if run.exit_code == 0:
            return ["no run report: nothing was deployed (every targeted host already runs the target)"]
        return [f"no run report: {err}"]
    return [f"report: {path}" for path in (files.html, files.junit) if path is not None]


def register(app: typer.Typer) -> None:
    schedule = typer.Typer(help="Scheduled unattended deploys on this controller (cron, systemd timer, Windows "
                           "Task Scheduler).", no_args_is_help=True)
    schedule.command("install", epilog=examples(
        "fleetctl schedule install playbooks/hello/playbook.yml --at 02:00 --days mon-fri -i inventory/prod   # nightly",
        "fleetctl schedule install playbooks/hello/playbook.yml --at 03:30 --if-changed --dry-run   # show the entry",
    ))(install)
    schedule.command("list", epilog=examples(
        "fleetctl schedule list   # this controller's fleetctl entries and each one's last run",
        "fleetctl schedule list --json",
    ))(list_entries)
    schedule.command("remove", epilog=examples(
        "fleetctl schedule remove hello   # one entry, by name",
        "fleetctl schedule remove playbooks/hello/playbook.yml   # every entry of that playbook",
    ))(remove)
    schedule.command("run", epilog=examples(
        "fleetctl schedule run hello   # run the entry now, exactly as the scheduler would",
        "fleetctl schedule run hello --json",
    ))(run)
    app.add_typer(schedule, name="schedule")
