"""`fleetctl plan` and `fleetctl init` through the real CLI entry point, including every bad-input case:
exit 2, one line naming the file (and key), no traceback, nothing changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fleetctl.cli.app import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_PLAYBOOK = REPO / "playbooks" / "hello" / "playbook.yml"
EXAMPLE_INVENTORY = REPO / "inventory" / "example"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def run_ok(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    try:
        main(list(argv))
    except SystemExit as done:
        assert not done.code, capsys.readouterr().err
    return capsys.readouterr().out


def assert_bad_input(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def playbook_copy(tmp_path: Path) -> Path:
    """A copy of the example playbook directory to break in different ways."""
    target = tmp_path / "hello"
    shutil.copytree(EXAMPLE_PLAYBOOK.parent, target, ignore=shutil.ignore_patterns("src"))
    return target / "playbook.yml"


def test_plan_json_is_exactly_the_documented_document(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_ok(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(EXAMPLE_INVENTORY), "--canary", "10%",
                 "--batch", "25%", "--json")
    doc = json.loads(out)
    assert set(doc) == {"hosts", "batches", "host_steps"}
    assert doc["host_steps"] == ["stop", "switch release", "start", "health gate"]
    assert doc["hosts"] == 20
    assert doc["batches"][0] == {"index": 0, "canary": True, "hosts": doc["batches"][0]["hosts"]}
    assert len(doc["batches"][0]["hosts"]) == 2  # 10% of 20
    assert [len(b["hosts"]) for b in doc["batches"][1:]] == [5, 5, 5, 3]
    every = [h for b in doc["batches"] for h in b["hosts"]]
    assert sorted(every) == sorted(set(every)) and len(every) == 20
    for b in doc["batches"]:
        east = sum(1 for h in b["hosts"] if "east" in h)
        assert abs(east - len(b["hosts"]) / 2) <= 1  # spread_by: datacenter


def test_plan_limit_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_ok(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(EXAMPLE_INVENTORY), "--limit", "dc_west",
                 "--batch", "3", "--json")
    doc = json.loads(out)
    assert doc["hosts"] == 10 and all("west" in h for b in doc["batches"] for h in b["hosts"])
    table = run_ok(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(EXAMPLE_INVENTORY), "--canary", "1")
    assert "canary" in table and "web-west-01.corp.example" in table
    assert "web-east-[01,02].corp.example" in table  # members as host ranges, zero padding kept
    blue_green = json.loads(run_ok(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(EXAMPLE_INVENTORY),
                                   "--strategy", "blue-green", "--json"))["host_steps"]
    assert blue_green[1:4] == ["start the idle colour", "gate it on its own port",
                               "switch port 8080 to it (the node's port proxy)"]


def test_extra_vars_override_playbook_defaults(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web]\nw1\nw2\nw3\nw4\n")
    out = run_ok(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(inv), "--var", "unused=1", "--json")
    assert json.loads(out)["hosts"] == 4


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (("keep_releases: 5", "keep_release: 5"), ["playbook.yml:", "install.keep_release", "unknown key"]),
        (("retries: 40", "retries: many"), ["playbook.yml:", "health.retries", "integer"]),
        (("batch: 25%", "batch: 120%"), ["playbook.yml:", "rollout.batch", "at most 100%"]),
        (("batch: 25%", "batch: 0"), ["playbook.yml:", "rollout.batch", "at least 1"]),
        (("name: hello\n", "name: [hello\n"), ["playbook.yml:", "YAML syntax error"]),
        (("  hello_port: 8080\n", "  hello_port: 8080\n  hello_port: 8081\n"), ["playbook.yml:", "duplicate key"]),
        (("stop_timeout: 20s", "stop_timeout: soon"), ["playbook.yml:", "service.stop_timeout", "duration"]),
        (("start_type: auto", "start_type: sometimes"), ["playbook.yml:", "service.start_type"]),
        (("    go:\n", "    gopher:\n"), ["playbook.yml:", "artifact.build.gopher", "unknown key"]),
        (("root: \"{{ hello_root }}\"", "root: relative\\\\path"), ["playbook.yml", "install.root", "absolute"]),
    ],
    ids=["unknown-key", "wrong-type", "percent-over-100", "zero-batch", "yaml-syntax", "duplicate-key",
         "bad-duration", "bad-enum", "nested-unknown-key", "relative-root"],
)
def test_bad_playbooks(capsys: pytest.CaptureFixture[str], playbook_copy: Path, edit: tuple[str, str],
                       fragments: list[str]) -> None:
    text = playbook_copy.read_text()
    assert edit[0] in text
    playbook_copy.write_text(text.replace(edit[0], edit[1], 1))
    inv = playbook_copy.parent / "hosts.ini"
    inv.write_text("[web]\nw1\n")
    code, _, err = run(capsys, "plan", str(playbook_copy), "-i", str(inv))
    assert_bad_input(code, err, *fragments)


def test_undefined_variable_names_file_and_key(capsys: pytest.CaptureFixture[str], playbook_copy: Path) -> None:
    text = playbook_copy.read_text().replace("spread_by: datacenter", "spread_by: \"{{ nowhere }}\"")
    playbook_copy.write_text(text)
    inv = playbook_copy.parent / "hosts.ini"
    inv.write_text("[web]\nw1\n")
    code, _, err = run(capsys, "plan", str(playbook_copy), "-i", str(inv))
    assert_bad_input(code, err, "playbook.yml", "rollout.spread_by", "nowhere")


def test_missing_playbook_and_missing_inventory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "plan", str(tmp_path / "nope.yml"), "-i", str(EXAMPLE_INVENTORY))
    assert_bad_input(code, err, "nope.yml", "not found")
    code, _, err = run(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(tmp_path / "noinv.yml"))
    assert_bad_input(code, err, "noinv.yml")


@pytest.mark.parametrize("option, value, fragment", [
    ("--canary", "120%", "at most 100%"), ("--canary", "0", "at least 1"), ("--batch", "0%", "at least 1"),
    ("--batch", "lots", "host count"), ("--max-failed", "-1", "host count"),
])
def test_bad_cli_sizes(capsys: pytest.CaptureFixture[str], option: str, value: str, fragment: str) -> None:
    code, _, err = run(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(EXAMPLE_INVENTORY), option, value)
    assert_bad_input(code, err, option, fragment)


def test_limit_matching_no_host(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(EXAMPLE_INVENTORY), "--limit", "nosuch*")
    assert_bad_input(code, err, "nosuch")


def test_bad_extra_var(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", str(EXAMPLE_PLAYBOOK), "-i", str(EXAMPLE_INVENTORY), "--var", "1x")
    assert_bad_input(code, err, "--var", "KEY=VALUE")


def test_init_scaffolds_a_project_that_plans(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    run_ok(capsys, "init", str(tmp_path))
    assert (tmp_path / "fleet.yml").is_file()
    assert (tmp_path / "playbooks" / "hello" / "src" / "main.go").is_file()
    monkeypatch.chdir(tmp_path)
    doc = json.loads(run_ok(capsys, "plan", "playbooks/hello/playbook.yml", "--json", "--canary", "1"))
    assert doc["hosts"] == 4 and doc["batches"][0]["canary"]
    code, _, err = run(capsys, "init", str(tmp_path))
    assert_bad_input(code, err, "already exists", "--force")
