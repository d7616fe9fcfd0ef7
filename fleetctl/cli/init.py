"""`fleetctl init`: scaffold fleet.yml, an inventory and the example playbook in a directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from fleetctl.cli.options import examples
from fleetctl.errors import ConfigError
from fleetctl.ui.console import stdout

FLEET_YML = """\
# fleetctl project settings. Commands run in this directory (or below it) use them as defaults.
inventory:
  - inventory
# Environments, chosen with -E NAME (docs/environments.md): each its own inventory, variables and rollout
# defaults; -i, -e, --canary and --batch on the command line still win.
# environments:
#   staging: {inventory: inventory/staging, vars: {log_level: debug}, rollout: {canary: 1, batch: 50%}}
#   prod:    {inventory: inventory/prod.yml, vars_files: [vars/prod.yml], rollout: {canary: 10%, batch: 20%}}
# default_environment: staging
"""

HOSTS_YML = """\
# Ansible-style inventory (fleetctl reads Ansible inventories unchanged; see docs/inventory.md).
all:
  children:
    web:
      hosts:
        web[01:04].example.internal:
      vars:
        datacenter: main
"""

GROUP_VARS_ALL = """\
# Connection settings for every host. Keep passwords out of git: env() and file() read them at run time,
# and values that come from them are redacted in every output.
fleet_transport: winrm
fleet_scheme: https
fleet_port: 5986
fleet_auth: negotiate
fleet_user: 'EXAMPLE\\svc-deploy'
fleet_password: "{{ env('FLEET_PASSWORD') }}"
"""


GITIGNORE_LINES = (".fleetctl/", "dist/", ".venv/")  # run state and history, built artifacts, a local virtualenv


def example_source() -> Path:
    """The example service shipped with fleetctl (playbook, templates and Go source)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "scaffold" / "hello", here.parent / "playbooks" / "hello"):
        if (candidate / "playbook.yml").is_file():
            return candidate
    raise ConfigError("the example playbook is not installed with this copy of fleetctl", key="init")


def scaffold(directory: Path, *, force: bool = False) -> list[Path]:
    """Write the scaffold into `directory`; refuses to overwrite existing files unless `force`."""
    files = {
        directory / "fleet.yml": FLEET_YML,
        directory / "inventory" / "hosts.yml": HOSTS_YML,
        directory / "inventory" / "group_vars" / "all.yml": GROUP_VARS_ALL,
    }
    example = example_source()
    target_example = directory / "playbooks" / "hello"
    existing = [p for p in files if p.exists()]
    if target_example.exists():
        existing.append(target_example)
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise ConfigError(f"already exists: {names} (use --force to overwrite)", key="init")
    written: list[Path] = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    if add_gitignore_lines(directory / ".gitignore"):
        written.append(directory / ".gitignore")
    ignore = shutil.ignore_patterns("dist", "*.exe", "__pycache__")
    shutil.copytree(example, target_example, dirs_exist_ok=True, ignore=ignore)
    written.append(target_example)
    return written


def add_gitignore_lines(path: Path) -> bool:
    """Add what fleetctl writes in a project (.fleetctl/, dist/, .venv/) to its .gitignore, keeping what is there.
    Returns whether the file changed."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    present = {line.strip() for line in existing.splitlines()}
    missing = [line for line in GITIGNORE_LINES if line not in present and line.rstrip("/") not in present]
    if not missing:
        return False
    prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
    header = "# fleetctl: run state and history, built artifacts, local virtualenv\n"
    path.write_text(prefix + header + "".join(f"{line}\n" for line in missing), encoding="utf-8")
    return True


def init(
    directory: Path = typer.Argument(Path("."), metavar="DIR", help="Where to create the project (default: here)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing files."),
) -> None:
    """Create fleet.yml, inventory/ and playbooks/hello (a working example) in DIRECTORY."""
    written = scaffold(directory, force=force)
    console = stdout()
    for path in written:
        console.print(f"[green]created[/] {path}")
    console.print(
        "\nVersions: a deploy or build stamps [bold]--version V[/] when given, else the playbook's "
        "artifact.version, else `git describe --tags --always --dirty`. Outside a git repository, give one of "
        "the first two (or run [bold]git init[/] and tag a commit).",
        highlight=False,
    )
    console.print(
        "\nNext: [bold]fleetctl inventory list[/], [bold]fleetctl plan playbooks/hello/playbook.yml[/], "
        "or try it on a simulated fleet: [bold]fleetctl lab up --nodes 4[/]"
    )


def register(app: typer.Typer) -> None:
    app.command("init", epilog=examples(
        "fleetctl init                 # fleet.yml, inventory/ and playbooks/hello/ here",
        "fleetctl init myproject       # the same in ./myproject",
    ))(init)
