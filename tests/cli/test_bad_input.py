"""Every bad input of issue 15 (items 7 and 12): exit 2 before any node is contacted, one line naming the file and
the key, no traceback. Each row changes one thing in a working project (tests/cli/project_support.py) whose hosts
are loopback listeners counting connections, and runs a command that would otherwise contact them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from project_support import Project, make_project

from fleetctl.cli.app import main

Edit = Callable[[Path], None]


def replace_in(name: str, old: str, new: str) -> Edit:
    def edit(root: Path) -> None:
        path = root / name
        text = path.read_text()
        assert old in text, f"{old!r} not in {name}"
        path.write_text(text.replace(old, new, 1))
    return edit


def append_to(name: str, text: str) -> Edit:
    def edit(root: Path) -> None:
        with open(root / name, "a", encoding="utf-8") as f:
            f.write(text)
    return edit


def write(name: str, text: str) -> Edit:
    def edit(root: Path) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return edit


def nested_playbook(root: Path) -> None:
    depth = 5000
    (root / "playbook.yml").write_text("name: app\nvars:\n  deep: " + "[" * depth + "]" * depth + "\n")


def deep_block_playbook(root: Path) -> None:
    lines = ["name: app", "vars:"] + ["  " * (i + 1) + f"k{i}:" for i in range(5000)] + ["  " * 5001 + "x"]
    (root / "playbook.yml").write_text("\n".join(lines) + "\n")


def same_port_for_web02(root: Path) -> None:
    path = root / "inventory" / "hosts.yml"
    text = path.read_text()
    ports = re.findall(r"fleet_port: (\d+)", text)
    path.write_text(text.replace(f"fleet_port: {ports[1]}", f"fleet_port: {ports[0]}"))


BOMB = "\n".join(
    ["all:", "  vars:", '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"    {c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
) + "\n"


@dataclass(frozen=True)
class Case:
    id: str
    edit: Edit | None
    file: str  # the file the message must name ("" when the input is a command-line option)
    key: str  # the key (or option) it must name
    argv: tuple[str, ...] = ("deploy", "playbook.yml", "--dry-run")


PB = "playbook.yml"
INV = "inventory/hosts.yml"

CASES = [
    # install.exe, install.root, install.files[].dest
    Case("exe-with-path", replace_in(PB, "exe: app.exe", "exe: bin\\app.exe"), PB, "install.exe"),
    Case("exe-with-dotdot", replace_in(PB, "exe: app.exe", "exe: ..\\..\\Windows\\app.exe"), PB, "install.exe"),
    Case("exe-not-exe", replace_in(PB, "exe: app.exe", "exe: app.bat"), PB, "install.exe"),
    Case("root-dotdot", replace_in(PB, "root: 'C:\\apps\\app'", "root: 'C:\\apps\\..\\Windows'"), PB,
         "install.root"),
    Case("root-quote", replace_in(PB, "root: 'C:\\apps\\app'", "root: 'C:\\apps\\a\"pp'"), PB, "install.root"),
    Case("root-reserved", replace_in(PB, "root: 'C:\\apps\\app'", "root: 'C:\\apps\\CON'"), PB, "install.root"),
    Case("dest-empty", replace_in(PB, "dest: app.json", "dest: ''"), PB, "install.files.0.dest"),
    Case("dest-ads", replace_in(PB, "dest: app.json", "dest: 'app.json:hidden'"), PB, "install.files.0.dest"),
    Case("dest-con", replace_in(PB, "dest: app.json", "dest: CON"), PB, "install.files.0.dest"),
    Case("dest-nul-ext", replace_in(PB, "dest: app.json", "dest: 'conf\\nul.json'"), PB, "install.files.0.dest"),
    Case("dest-com1", replace_in(PB, "dest: app.json", "dest: COM1.txt"), PB, "install.files.0.dest"),
    Case("dest-is-exe", replace_in(PB, "dest: app.json", "dest: APP.EXE"), PB, "install.files.0.dest"),
    Case("dest-trailing-dot", replace_in(PB, "dest: app.json", "dest: 'app.json.'"), PB, "install.files.0.dest"),
    Case("dest-dotdot", replace_in(PB, "dest: app.json", "dest: '..\\x.json'"), PB, "install.files.0.dest"),
    # service.environment
    Case("env-key-equals", replace_in(PB, "APP_ENV: production", "'A=B': production"), PB,
         "service.environment"),
    Case("env-key-empty", replace_in(PB, "APP_ENV: production", "'': production"), PB, "service.environment"),
    # NUL anywhere
    Case("nul-in-playbook", replace_in(PB, "APP_ENV: production", 'APP_ENV: "prod\\0uction"'), PB,
         "service.environment.APP_ENV"),
    Case("nul-in-argument", replace_in(PB, '"-listen"', '"-lis\\0ten"'), PB, "service.arguments.0"),
    Case("nul-in-inventory", replace_in(INV, "fleet_user: deploy", 'fleet_user: "dep\\0loy"'), INV, "fleet_user"),
    # health, durations, sizes
    Case("health-ftp", replace_in(PB, 'url: "http://', 'url: "ftp://'), PB, "health.url"),
    Case("health-file", replace_in(PB, 'url: "http://{{ ansible_host }}:{{ app_port }}/healthz"',
                                   'url: "file:///etc/passwd"'), PB, "health.url"),
    Case("health-no-host", replace_in(PB, 'url: "http://{{ ansible_host }}:{{ app_port }}/healthz"',
                                      'url: "http:///healthz"'), PB, "health.url"),
    Case("interval-huge", replace_in(PB, "interval: 0.5s", "interval: 1000000h"), PB, "health.interval"),
    Case("batch-negative", replace_in(PB, "batch: 1", "batch: -1"), PB, "rollout.batch"),
    Case("max-failed-negative", append_to(PB, "  max_failed: -2\n"), PB, "rollout.max_failed"),
    Case("lock-ttl-huge", append_to(PB, "  lock_ttl: 100000000h\n"), PB, "rollout.lock_ttl"),
    # YAML itself
    Case("playbook-5000-deep-flow", nested_playbook, PB, ""),
    Case("playbook-5000-deep-block", deep_block_playbook, PB, ""),
    Case("playbook-duplicate-key", replace_in(PB, "rollout:\n  batch: 1\n", "rollout:\n  batch: 1\n  batch: 2\n"),
         PB, "batch"),
    Case("inventory-duplicate-key", replace_in(INV, "fleet_user: deploy", "fleet_user: deploy\n        fleet_user: x"),
         INV, "fleet_user"),
    Case("group-vars-duplicate-key", write("inventory/group_vars/web.yml", "a: 1\nb: 2\na: 3\n"),
         "inventory/group_vars/web.yml", "a"),
    Case("fleet-yml-duplicate-key", write("fleet.yml", "inventory: [inventory]\ninventory: [other]\n"),
         "fleet.yml", "inventory"),
    Case("alias-bomb", write("inventory/bomb.yml", BOMB), "inventory/bomb.yml", "", ("inventory", "list")),
    Case("alias-bomb-json", write("inventory/bomb.yml", BOMB), "inventory/bomb.yml", "",
         ("inventory", "list", "--json")),
    # inventory: one address under two names, bidi in names
    Case("two-names-one-address", same_port_for_web02, INV, "web02"),
    Case("two-names-one-address-case", write("inventory/more.yml", "all:\n  hosts:\n    db01.example:\n"
                                             "    DB01.Example.:\n"), "inventory/more.yml", "DB01.Example."),
    Case("bidi-host-name", replace_in(INV, "web02:", "web\u202e20:"), INV, "web"),
    Case("bidi-host-name-ini", write("inventory/extra.ini", "[db]\ndb\u200f01 ansible_host=127.0.0.9\n"),
         "inventory/extra.ini", "db"),
    Case("control-in-group-name", replace_in(INV, "    web:", "    \"w\\x1beb\":"), INV + ":3", "w\\x1beb"),
    # command-line values
    Case("limit-empty", None, "", "--limit", ("deploy", "playbook.yml", "--dry-run", "--limit", "")),
    Case("limit-blank", None, "", "--limit", ("deploy", "playbook.yml", "--dry-run", "--limit", "  ")),
    Case("limit-empty-status", None, "", "--limit", ("status", "playbook.yml", "--limit", "")),
    Case("version-empty", None, "", "--version", ("deploy", "playbook.yml", "--dry-run", "--version", "")),
    Case("version-blank", None, "", "--version", ("deploy", "playbook.yml", "--dry-run", "--version", " ")),
    Case("version-with-slash", None, "", "--version", ("deploy", "playbook.yml", "--dry-run", "--version", "1/2")),
    Case("var-bad-name", None, "", "--var", ("deploy", "playbook.yml", "--dry-run", "--var", "1x=2")),
    Case("var-bad-json", None, "", "--var", ("deploy", "playbook.yml", "--dry-run", "--var", "x:=[unclosed")),
    Case("var-octal-json", None, "", "--var", ("deploy", "playbook.yml", "--dry-run", "--var", "x:=010")),
]


def _project_copy(template: Project, target: Path) -> Project:
    import shutil

    shutil.copytree(template.root, target, ignore=shutil.ignore_patterns("dist", ".fleetctl"))
    return Project(root=target, listeners=template.listeners)


@pytest.fixture(scope="module")
def base_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    project = make_project(tmp_path_factory.mktemp("base"))
    yield project
    project.close()


def _run(project: Project, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(project.root)
    try:
        main(list(argv))
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_unedited_project_contacts_the_nodes(base_project: Project, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: without an edit the same command reaches the listeners (so a 0 below means something)."""
    project = _project_copy(base_project, tmp_path / "p")
    before = project.connections
    code, _, err = _run(project, ("deploy", "playbook.yml", "--dry-run"), capsys, monkeypatch)
    assert code == 1, err
    assert project.connections > before


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_exits_2_naming_file_and_key_before_any_node(case: Case, base_project: Project, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project_copy(base_project, tmp_path / "p")
    if case.edit is not None:
        case.edit(project.root)
    before = project.connections
    code, out, err = _run(project, case.argv, capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err + out
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    line = lines[0]
    if case.file:
        assert re.search(re.escape(case.file) + r"(:\d+)?", line), line
    if case.key:
        assert case.key in line, line
    assert project.connections == before, "a node was contacted"
    assert len(out) < 10_000  # nothing was listed instead


@pytest.mark.parametrize("value", ["010", "0x1F", "1e3", "yes", "null", "~", "", "a\nb", " padded ", "[1, 2]",
                                   "{a: 1}", "12:30", "-", "'quoted'"])
def test_var_values_stay_strings_byte_for_byte(value: str) -> None:
    from fleetctl.config.playbook import parse_extra_vars

    assert parse_extra_vars([f"x={value}"]) == {"x": value}


@pytest.mark.parametrize("pair, expected", [
    ("n:=10", 10), ("n:=8080", 8080), ("b:=true", True), ("l:=[1, 2]", [1, 2]), ('m:={"a": 1}', {"a": 1}),
    ('s:="010"', "010"), ("f:=1.5", 1.5), ("z:=null", None), ("e:=", None),
])
def test_var_values_typed_explicitly_with_colon_equals(pair: str, expected: object) -> None:
    from fleetctl.config.playbook import parse_extra_vars

    key = pair.split(":=")[0]
    assert parse_extra_vars([pair]) == {key: expected}


@pytest.mark.parametrize("argv", [("inventory", "show", "web01"), ("deploy", "playbook.yml", "--dry-run"),
                                  ("status", "playbook.yml")])
def test_a_template_that_would_run_a_command_is_refused_and_runs_nothing(
        argv: tuple[str, ...], base_project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15, item 6: this inventory value ran `touch` as the controller's user during `inventory show`."""
    project = _project_copy(base_project, tmp_path / "p")
    marker = tmp_path / "MARKER"
    evil = "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
    replace_in(INV, "fleet_user: deploy", f'fleet_user: "{evil}"')(project.root)
    before = project.connections
    code, _, err = _run(project, argv, capsys, monkeypatch)
    assert code == 2, err
    assert "fleet_user" in err and "may not do" in err and "Traceback" not in err
    assert not marker.exists()
    assert project.connections == before
