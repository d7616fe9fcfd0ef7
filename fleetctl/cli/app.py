"""The `fleetctl` command: builds the typer app from the command modules and maps errors to exit codes."""

from __future__ import annotations

import importlib
import sys

import typer

from fleetctl import __version__
from fleetctl.config.redaction import redact
from fleetctl.errors import EXIT_INTERRUPTED, FleetError

# Each module has `register(app: typer.Typer) -> None`. The help lists only what is registered here.
# A module not written yet is skipped, so the help lists only commands that exist.
COMMAND_MODULES: tuple[str, ...] = (
    "init", "inventory", "plan", "build", "ping", "deploy", "rollback", "status", "history", "logs", "lab",
)

app = typer.Typer(
    name="fleetctl",
    help="Deploy services to fleets of Windows servers over WinRM, with canaries, health gates and rollback.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleetctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """fleetctl: deploy orchestrator for Windows fleets."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"fleetctl.cli.{_name}")
    except ModuleNotFoundError as _missing:
        if _missing.name != f"fleetctl.cli.{_name}":
            raise
        continue
    _module.register(app)


def report_error(err: FleetError) -> None:
    """The one place errors reach the user: one redacted line on stderr."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(redact(str(err)))}")


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, standalone_mode=False)
    except FleetError as err:
        report_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001 - click usage errors and the like
        import click

        if isinstance(err, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(2)
        raise
