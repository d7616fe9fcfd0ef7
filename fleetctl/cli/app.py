"""The `fleetctl` command: builds the typer app from the command modules and maps errors to exit codes."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from fleetctl import __version__
from fleetctl.errors import EXIT_INTERRUPTED, FleetError

# Each module has `register(app: typer.Typer) -> None`. The help lists only what is registered here.
# A module not written yet is skipped, so the help lists only commands that exist.
COMMAND_MODULES: tuple[str, ...] = (
    "init", "inventory", "plan", "build", "ping", "deploy", "rollback", "remove", "status", "history", "logs",
    "lock", "unlock", "schedule", "lab", "releases", "restart", "exec",
)

app = typer.Typer(
    name="fleetctl",
    help="Deploy services to fleets of Windows servers over WinRM, with canaries, health gates and rollback.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    epilog="Examples:\n"
           "  fleetctl init && fleetctl lab up --nodes 3\n"
           "  fleetctl deploy playbooks/hello/playbook.yml -i .fleetctl/lab/inventory.yml --canary 1\n"
           "  fleetctl COMMAND --help      # each command's options and examples",
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


PROG_NAME = "fleetctl"  # also names the completion variable, _FLEETCTL_COMPLETE, whatever argv[0] was
_registered: set[str] = set()


def register_commands(only: str | None = None) -> None:
    """Import command modules and add their commands. With `only`, just that one: importing every command
    pulls in pypsrp, paramiko and the lab, which costs ~0.5 s on each invocation."""
    for name in COMMAND_MODULES if only is None else (only,):
        if name in _registered:
            continue
        _registered.add(name)
        try:
            module = importlib.import_module(f"fleetctl.cli.{name}")
        except ModuleNotFoundError as missing:
            if missing.name != f"fleetctl.cli.{name}":
                raise
            continue
        module.register(app)


def build_command() -> Any:
    """The click command behind `app`, with flags shown without a type: `--yes` takes no value, so its help
    line says none (typer would print `<bool>`), while every option that takes one names what (FILE, N|N%)."""
    command = typer.main.get_command(app)
    stack = [command]
    while stack:
        current = stack.pop()
        stack.extend(getattr(current, "commands", {}).values())
        options = [*current.params, current.get_help_option(_help_context(current))]
        for param in options:
            # A counted flag (-v, -vv) takes no value either.
            takes_none = getattr(param, "is_flag", False) or getattr(param, "count", False)
            if param is not None and takes_none and param.metavar is None:
                param.metavar = ""
    return command


def _help_context(command: Any) -> Any:
    from typer._click.core import Context

    return Context(command, info_name=PROG_NAME)


def _requested_command(argv: list[str]) -> str | None:
    for arg in argv:
        if arg.startswith("-"):
            return None  # a global option (e.g. --help) comes first: show everything
        return arg if arg in COMMAND_MODULES else None
    return None


def report_error(err: FleetError) -> None:
    """The one place errors reach the user: one redacted line on stderr."""
    from rich.console import Console
    from rich.markup import escape

    from fleetctl.ui.console import safe

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(safe(str(err)))}")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    register_commands(_requested_command(args))
    try:
        returned = build_command()(args=args, prog_name=PROG_NAME, standalone_mode=False)
        # Without standalone mode click hands a command's typer.Exit(code) back as the return value.
        if isinstance(returned, int) and not isinstance(returned, bool) and returned:
            sys.exit(returned)
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
    except Exception as err:
        # typer >= 0.29 vendors its own click; recognise its exceptions by shape, not by import path.
        if type(err).__name__ == "Abort":
            print("aborted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        show = getattr(err, "show", None)
        if callable(show) and isinstance(getattr(err, "exit_code", None), int):
            show()
            sys.exit(2)
        raise
