"""`fleetctl plan` reports undefined variables as docs/playbook.md promises: every template a deploy would render on
each targeted host (playbook values and install.files templates), each undefined variable listed once with its
file, line, key and hosts; exit 2; a secret from the environment is not needed for that."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.cli.app import main

PLAYBOOK = """\
name: app
vars:
  app_port: 8080
artifact:
  version: 1.0.0
  collect: {path: app.exe}
install:
  root: 'C:\\apps\\{{ app_dir }}'
  files:
    - {src: app.json.j2, dest: app.json}
service:
  name: app
  arguments: ["-listen", ":{{ app_prt }}", "{{ colour }}"]
  environment:
    TOKEN: "{{ env('PLAN_TEST_TOKEN_NOT_SET') }}"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "fleet.yml").write_text("inventory: hosts.ini\n")
    (tmp_path / "playbook.yml").write_text(PLAYBOOK)
    (tmp_path / "app.json.j2").write_text('{"port": {{ app_port }}, "region": "{{ region }}"}\n')
    (tmp_path / "hosts.ini").write_text("[web]\nw1 colour=blue\nw2 colour=green\nw3\nw4\nw5 region=eu\n")
    monkeypatch.delenv("PLAN_TEST_TOKEN_NOT_SET", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = 0
    try:
        main(["plan", "playbook.yml", *args])
    except SystemExit as done:
        code = int(done.code or 0)
    return code, capsys.readouterr().err.splitlines()


def test_every_undefined_variable_is_listed_with_host_file_and_key(capsys: pytest.CaptureFixture[str],
                                                                   project: Path) -> None:
    code, lines = plan(capsys)
    assert code == 2
    assert lines[0] == "error: 4 undefined variable(s) in what a deploy would render:"
    body = "\n".join(lines[1:])
    assert ("playbook.yml:8: key 'install.root' on w1, w2, w3 and 2 more: 'app_dir' is undefined (did you mean "
            "'app_port'?)") in body
    assert "playbook.yml:13: key 'service.arguments.1' on w1, w2, w3 and 2 more: 'app_prt' is undefined" in body
    assert "key 'service.arguments.2' on w3, w4, w5: 'colour' is undefined" in body  # only where it is missing
    assert f"{project / 'app.json.j2'}: key 'install.files.0' on w1, w2, w3 and 1 more: 'region' is undefined" in body
    assert "PLAN_TEST_TOKEN_NOT_SET" not in body  # a secret a plan never uses is not asked for


def test_defined_everywhere_plans(capsys: pytest.CaptureFixture[str], project: Path) -> None:
    code, lines = plan(capsys, "-e", "app_dir=app", "-e", "app_prt=1", "-e", "colour=red", "-e", "region=us",
                       "--json")
    assert code == 0, lines
    # --limit narrows what is checked too: w5 alone has a region and, with -e, the rest.
    code, lines = plan(capsys, "-l", "w5", "-e", "app_dir=app", "-e", "app_prt=1", "-e", "colour=red", "--json")
    assert code == 0, lines
