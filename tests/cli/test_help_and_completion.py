"""Every command's `--help`: each option that takes a value names what (FILE, PATTERN, N|N%, KEY=VALUE), flags
show none, and an example or two close it. Shell completion: scripts for bash, zsh and fish, and a bash
completion run as bash runs it (COMP_WORDS / COMP_CWORD through the generated function)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.core import TyperArgument, TyperOption

from fleetctl.cli.app import build_command, main, register_commands

REPO = Path(__file__).resolve().parents[2]
# typer's names for a type, shown when an option has no metavar of its own
TYPE_NAMES = re.compile(r"<(str|int|float|path|bool|list\[str\]|int range|float range)>")


def _commands() -> list[tuple[tuple[str, ...], Any]]:
    register_commands()
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, path + (name,))
        else:
            found.append((path, command))

    walk(build_command(), ())
    return found


COMMANDS = [path for path, _ in _commands()]


def test_every_command_is_walked() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"init", "plan", "build", "ping", "deploy", "rollback", "remove", "status", "history", "logs",
            "inventory list", "inventory show", "inventory graph", "lab up", "lab down", "lab status",
            "lab fault"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_help_names_what_each_option_takes_and_shows_examples(path: tuple[str, ...],
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    command = dict(_commands())[path]
    for param in command.params:
        if isinstance(param, TyperOption):
            if param.is_flag or param.count:  # a counted flag (-v, -vv) takes no value either
                assert param.metavar == "", f"{path} {param.opts}: a flag shows no metavar"
            else:
                assert param.metavar and param.metavar == param.metavar.upper().replace("AUTO", "auto"), \
                    f"{path} {param.opts}: expected a metavar saying what it takes, got {param.metavar!r}"
        elif isinstance(param, TyperArgument):
            assert param.metavar and param.metavar.split()[0].isupper(), f"{path} {param.name}: no metavar"
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main([*path, "--help"])
    except SystemExit as done:
        assert not done.code
    out = capsys.readouterr().out
    options_panel = out.split("Options")[1].split("Examples:")[0]
    assert not TYPE_NAMES.search(options_panel), options_panel
    examples = out.split("Examples:")[1]
    assert f"fleetctl {' '.join(path)}" in examples, out


def _fleetctl_on_path(tmp_path: Path) -> dict[str, str]:
    """A `fleetctl` executable on PATH, as an installed one would be: the completion scripts call it by name."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    launcher = bindir / "fleetctl"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} -m fleetctl \"$@\"\n")
    launcher.chmod(0o755)
    return dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO))


def test_show_completion_in_bash_and_a_bash_completion_run(tmp_path: Path) -> None:
    env = _fleetctl_on_path(tmp_path)
    # bash is the shell that runs fleetctl here, so --show-completion detects it (it looks at the parent
    # processes). The `; true` keeps bash alive as the parent: `bash -c CMD` with a single command execs it, and
    # the detection then found whatever ran the tests (it failed when that was no shell).
    script = subprocess.run(["bash", "-c", "fleetctl --show-completion; true"], env=env, capture_output=True, text=True,
                            timeout=60, check=True).stdout
    assert "complete -o default -F _fleetctl_completion fleetctl" in script
    (tmp_path / "fleetctl.bash").write_text(script)

    def complete(*words: str) -> list[str]:
        # As bash calls a completion function: COMP_WORDS holds the line, COMP_CWORD the word being completed.
        quoted = " ".join(f"'{w}'" for w in words)
        line = (f"source {tmp_path / 'fleetctl.bash'}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
                "_fleetctl_completion fleetctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
        done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60, check=True)
        return [w for w in done.stdout.splitlines() if w]

    assert complete("fleetctl", "dep") == ["deploy"]
    assert set(complete("fleetctl", "lab", "")) == {"up", "down", "status", "fault"}
    assert "--canary" in complete("fleetctl", "deploy", "--ca")
    assert {"--forks", "--force"} <= set(complete("fleetctl", "deploy", "--f"))
    assert complete("fleetctl", "inventory", "gr") == ["graph"]


@pytest.mark.parametrize("shell, marker", [("zsh", "compdef _fleetctl_completion fleetctl"),
                                           ("fish", "complete --command fleetctl")])
def test_zsh_and_fish_scripts_and_their_protocol(tmp_path: Path, shell: str, marker: str) -> None:
    env = _fleetctl_on_path(tmp_path)
    script = subprocess.run(["fleetctl"], env=dict(env, _FLEETCTL_COMPLETE=f"source_{shell}"), capture_output=True,
                            text=True, timeout=60, check=True).stdout
    assert marker in script
    # What the script asks fleetctl at a <TAB>, as zsh / fish pass the command line.
    extra = {"_TYPER_COMPLETE_FISH_ACTION": "get-args"} if shell == "fish" else {}
    answer = subprocess.run(["fleetctl"], env=dict(env, _FLEETCTL_COMPLETE=f"complete_{shell}",
                                                  _TYPER_COMPLETE_ARGS="fleetctl roll", **extra),
                            capture_output=True, text=True, timeout=60, check=True).stdout
    assert "rollback" in answer
