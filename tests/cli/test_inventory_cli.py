"""`fleetctl inventory list|show|graph`: rendering, JSON document, --limit, default ./inventory/, redaction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetctl.cli.app import main
from fleetctl.config.redaction import forget_secrets


@pytest.fixture(autouse=True)
def _clean_secrets() -> Any:
    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory whose ./inventory/ is the default inventory."""
    inv = tmp_path / "inventory"
    inv.mkdir()
    (inv / "hosts.yml").write_text("""\
all:
  vars:
    ansible_user: deploy
    ansible_password: "{{ env('FLEET_CLI_TEST_PW') }}"
    base_port: 5985
  children:
    web:
      hosts:
        web[1:3].corp:
          ansible_port: "{{ base_port + 1 }}"
    db:
      hosts:
        db1.corp:
          ansible_host: 10.0.0.9
          db_secret: literal-db-s3cret
""")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLEET_CLI_TEST_PW", "env-pw-value-123")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as done:
        code = int(done.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_json_uses_default_inventory_and_masks_secrets(project: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inventory", "list", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"hostvars", "groups"}
    assert doc["groups"] == {"all": ["db1.corp", "web1.corp", "web2.corp", "web3.corp"], "ungrouped": [],
                             "web": ["web1.corp", "web2.corp", "web3.corp"], "db": ["db1.corp"]}
    assert doc["hostvars"]["web2.corp"]["ansible_port"] == "{{ base_port + 1 }}"  # raw, as ansible-inventory
    assert doc["hostvars"]["db1.corp"]["ansible_password"] == "********"  # secret-named keys are masked
    assert "literal-db-s3cret" not in out


def test_list_json_with_limit(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inventory", "list", "--json", "--limit", "web:!web2.corp")
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(doc["hostvars"]) == ["web1.corp", "web3.corp"]
    assert doc["groups"]["web"] == ["web1.corp", "web3.corp"] and doc["groups"]["db"] == []


def test_list_table(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inventory", "list", "-i", "inventory", "--limit", "db")
    assert code == 0
    assert "1 hosts" in out and "db1.corp" in out and "10.0.0.9" in out and "web1.corp" not in out


def test_show_renders_templates_and_masks_env_secret(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inventory", "show", "web1.corp")
    assert code == 0, err
    assert "5986" in out and "deploy" in out and "all, web" in out
    assert "env-pw-value-123" not in out and "********" in out


def test_show_raw_keeps_templates(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inventory", "show", "web1.corp", "--raw")
    assert code == 0 and "{{ base_port + 1 }}" in out


def test_graph(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inventory", "graph")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "@all"
    assert any("@web" in line for line in lines) and any("web3.corp" in line for line in lines)
    assert out.index("@web") < out.index("web1.corp") < out.index("@db") < out.index("db1.corp")
