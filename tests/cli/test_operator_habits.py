"""Habits operators bring from Ansible and Kamal, through the CLI: `-e @vars.yml`, `-f N` on every command that
reaches hosts, `history show last`, `--json` on inventory show/graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fleetctl.cli.app import main
from fleetctl.config.playbook import parse_extra_vars
from fleetctl.errors import ConfigError
from fleetctl.rollout.events import EventBus, HostOutcome, RunFinished, RunStarted
from fleetctl.state.journal import Journal

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_PLAYBOOK = REPO / "playbooks" / "hello" / "playbook.yml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_extra_vars_from_a_file_typed_and_overridable(tmp_path: Path) -> None:
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("port: 8080\nname: web\ntags: [a, b]\n")
    assert parse_extra_vars([f"@{vars_file}"]) == {"port": 8080, "name": "web", "tags": ["a", "b"]}
    # Later options win, as in Ansible: a file then a KEY=VALUE, or the other way round.
    assert parse_extra_vars([f"@{vars_file}", "port=9090"])["port"] == "9090"
    assert parse_extra_vars(["port=9090", f"@{vars_file}"])["port"] == 8080


@pytest.mark.parametrize("content, fragment", [
    ("- a\n- b\n", "expected a mapping"),
    ("1bad: x\n", "expected a variable name"),
    ("a: 1\na: 2\n", "duplicate key"),
])
def test_bad_vars_file_names_file_and_key(tmp_path: Path, content: str, fragment: str) -> None:
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(content)
    with pytest.raises(ConfigError) as err:
        parse_extra_vars([f"@{vars_file}"])
    assert fragment in str(err.value) and "vars.yml" in str(err.value)


def test_vars_file_through_the_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A variable the playbook needs comes from `-e @vars.yml`; a missing file is exit 2 naming it."""
    target = tmp_path / "hello"
    shutil.copytree(EXAMPLE_PLAYBOOK.parent, target, ignore=shutil.ignore_patterns("src"))
    playbook = target / "playbook.yml"
    playbook.write_text(playbook.read_text().replace("spread_by: datacenter", "spread_by: \"{{ spread_key }}\""))
    inv = target / "hosts.ini"
    inv.write_text("[web]\nw1 datacenter=east\nw2 datacenter=west\n")
    code, _, err = run(capsys, "plan", str(playbook), "-i", str(inv))
    assert code == 2 and "spread_key" in err
    (target / "vars.yml").write_text("spread_key: datacenter\n")
    code, out, err = run(capsys, "plan", str(playbook), "-i", str(inv), "-e", f"@{target / 'vars.yml'}", "--json")
    assert code == 0, err
    assert json.loads(out)["hosts"] == 2
    code, _, err = run(capsys, "plan", str(playbook), "-i", str(inv), "-e", f"@{target / 'nope.yml'}")
    assert code == 2 and "nope.yml" in err and "not found" in err


@pytest.mark.parametrize("command", ["deploy", "rollback", "remove", "status", "ping"])
def test_forks_short_option_on_every_command_that_reaches_hosts(capsys: pytest.CaptureFixture[str],
                                                                 command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "-f" in out and "--forks" in out
    # -f takes a count; zero is refused before anything is read.
    args = [command] if command == "ping" else [command, str(EXAMPLE_PLAYBOOK)]
    code, _, err = run(capsys, *args, "-f", "0")
    assert code == 2 and "--forks" in err


def _journal_with_two_runs(path: Path) -> None:
    journal = Journal(path)
    bus = EventBus()
    journal.subscribe(bus)
    for run_id, host in (("20260101T000000Z-aaaaaa", "w1"), ("20260102T000000Z-bbbbbb", "w2")):
        bus.emit(RunStarted(run_id, "deploy", "playbooks/web.yml", "web", "1.0", "1.0-x", "rolling", "alice@ci",
                            ((host,),), False))
        bus.emit(RunFinished(run_id, 0, {host: HostOutcome(host, "deployed", "1.0-x")}))
    journal.close()


def test_history_show_last_and_n(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    code, _, err = run(capsys, "history", "show", "last", "--db", str(db))
    assert code == 2 and "no run recorded" in err
    _journal_with_two_runs(db)
    code, out, err = run(capsys, "history", "show", "last", "--db", str(db), "--json")
    assert code == 0, err
    assert json.loads(out)["id"].endswith("bbbbbb")
    code, out, _ = run(capsys, "history", "-n", "1", "--db", str(db), "--json")
    assert [r["id"][-6:] for r in json.loads(out)["runs"]] == ["bbbbbb"]


def test_inventory_show_and_graph_json(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    web:\n      hosts:\n        w1:\n          ansible_host: 127.0.0.5\n"
                   "          ansible_password: s3cret-value\n    db:\n      children:\n        pg:\n"
                   "          hosts:\n            d1:\n")
    code, out, err = run(capsys, "inventory", "show", "w1", "-i", str(inv), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["host"] == "w1" and doc["address"] == "127.0.0.5" and "web" in doc["groups"]
    assert doc["vars"]["ansible_password"] == "********" and "s3cret-value" not in out
    code, out, err = run(capsys, "inventory", "graph", "-i", str(inv), "--json")
    assert code == 0, err
    tree = json.loads(out)
    groups = {c["group"]: c for c in tree["children"]}
    assert groups["web"]["hosts"] == ["w1"]
    assert groups["db"]["children"][0] == {"group": "pg", "children": [], "hosts": ["d1"]}
