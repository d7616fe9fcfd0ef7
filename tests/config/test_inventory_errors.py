"""Every kind of bad inventory input ends in exit code 2 with one line naming the file, and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetctl.cli.app import main
from fleetctl.config.redaction import forget_secrets


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    err = capsys.readouterr().err
    return int(exit_info.value.code or 0), err


def assert_bad_input(code: int, err: str, file_name: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert file_name in err, err
    for fragment in fragments:
        assert fragment in err, err


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# (file name, content, fragments the message must contain: line, key, expectation)
BAD_INVENTORIES = {
    "yaml_syntax": ("hosts.yml", "all:\n  hosts:\n    web1: [unclosed\n", ["hosts.yml:4", "YAML syntax error"]),
    "unknown_group_key": ("hosts.yml", "web:\n  host:\n    web1:\n", ["hosts.yml:2", "web.host", "unknown key"]),
    "hosts_is_a_list": ("hosts.yml", "web:\n  hosts: [web1, web2]\n", ["web.hosts", "expected a mapping"]),
    "group_is_a_list": ("hosts.yml", "web:\n  - web1\n", ["key 'web'", "expected a group"]),
    "host_vars_not_mapping": ("hosts.yml", "web:\n  hosts:\n    web1: 3\n", ["web.hosts.web1", "mapping"]),
    "integer_host_name": ("hosts.yml", "web:\n  hosts:\n    12:\n", ["hosts.yml:3", "quote it"]),
    "top_level_list": ("hosts.yml", "- web1\n", ["expected a mapping of group names"]),
    "empty_yaml": ("hosts.yml", "", ["empty"]),
    "plugin_config": ("hosts.yml", "plugin: aws_ec2\n", ["plugin", "not supported"]),
    "vault_value": ("hosts.yml", "web:\n  vars:\n    pw: !vault |\n      $ANSIBLE_VAULT;1.1\n", ["hosts.yml:3", "Vault"]),
    "range_not_numbers": ("hosts.yml", "web:\n  hosts:\n    web[1:x]:\n", ["web.hosts.web[1:x]", "numbers"]),
    "range_backwards": ("hosts.ini", "[web]\nweb[9:1]\n", ["hosts.ini:2", "begin <= end"]),
    "range_widths": ("hosts.ini", "[web]\nweb[01:100]\n", ["hosts.ini:2", "same number of digits"]),
    "range_step_zero": ("hosts.ini", "[web]\nweb[1:9:0]\n", ["hosts.ini:2", "positive integer"]),
    "range_no_end": ("hosts.ini", "[web]\nweb[1:]\n", ["hosts.ini:2", "end value"]),
    "ini_unknown_section": ("hosts.ini", "[web:host]\nweb1\n", ["hosts.ini:1", "unknown type"]),
    "ini_bad_section": ("hosts.ini", "[web servers]\nweb1\n", ["hosts.ini:1", "no spaces"]),
    "ini_var_without_equals": ("hosts.ini", "[web]\nweb1\n[web:vars]\nhttp_port 80\n", ["hosts.ini:4", "key=value"]),
    "ini_host_var_without_equals": ("hosts.ini", "[web]\nweb1 port\n", ["hosts.ini:2", "key=value"]),
    "ini_undefined_child": ("hosts.ini", "[prod:children]\nweb\n", ["hosts.ini:2", "'web'", "not defined"]),
    "ini_vars_undefined_group": ("hosts.ini", "[web:vars]\na=1\n", ["hosts.ini:1", "not defined"]),
    "ini_unclosed_quote": ("hosts.ini", "[web]\nweb1 a=\"open\n", ["hosts.ini:2", "cannot parse"]),
    "ini_yaml_marker": ("hosts.ini", "---\n", ["hosts.ini:1", "YAML"]),
    "ini_trailing_colon": ("hosts.ini", "[web]\nweb1:\n", ["hosts.ini:2", "port"]),
    "children_loop": ("hosts.ini", "[a:children]\nb\n[b:children]\na\n", ["hosts.ini", "loop"]),
    "bad_priority": ("hosts.ini", "[web]\nw1\n[web:vars]\nansible_group_priority=high\n",
                     ["hosts.ini:4", "ansible_group_priority", "integer"]),
    "toml": ("hosts.toml", "[web]\n", ["TOML"]),
    "script": ("hosts.sh", "#!/bin/sh\necho '{}'\n", ["scripts are not supported"]),
}


@pytest.mark.parametrize("name", sorted(BAD_INVENTORIES))
def test_bad_inventory_is_exit_2_naming_the_file(name: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    file_name, content, fragments = BAD_INVENTORIES[name]
    path = write(tmp_path / file_name, content)
    code, err = run(capsys, "inventory", "list", "-i", str(path))
    assert_bad_input(code, err, file_name, *fragments)


def test_missing_inventory_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "inventory", "list", "-i", str(tmp_path / "nope.yml"))
    assert_bad_input(code, err, "nope.yml", "not found")


def test_no_inventory_and_no_default_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETCTL_INVENTORY", raising=False)
    code, err = run(capsys, "inventory", "list")
    assert_bad_input(code, err, "inventory", "-i")


@pytest.mark.parametrize("vars_file, content, fragments", [
    ("group_vars/web.yml", "- a\n- b\n", ["expected a mapping"]),
    ("group_vars/web.yml", "a: [1\n", ["web.yml:2", "YAML syntax error"]),
    ("host_vars/web1.json", "{\"a\": [}", ["web1.json:1", "YAML syntax error"]),
    ("group_vars/all/10-main.yml", "1: one\n", ["10-main.yml", "variable name"]),
])
def test_bad_vars_file(vars_file: str, content: str, fragments: list[str], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    inv = write(tmp_path / "hosts.ini", "[web]\nweb1\n")
    write(tmp_path / vars_file, content)
    code, err = run(capsys, "inventory", "list", "-i", str(inv))
    assert_bad_input(code, err, Path(vars_file).name, *fragments)


def test_undefined_template_variable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write(tmp_path / "hosts.yml", "web:\n  hosts:\n    web1:\n      url: 'http://{{ nope }}/'\n")
    code, err = run(capsys, "inventory", "show", "web1", "-i", str(inv))
    assert_bad_input(code, err, "hosts.yml", "key 'url'", "'nope' is undefined")


def test_template_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write(tmp_path / "hosts.yml", "web:\n  hosts:\n    web1:\n      url: '{{ nope '\n")
    code, err = run(capsys, "inventory", "show", "web1", "-i", str(inv))
    assert_bad_input(code, err, "hosts.yml", "key 'url'", "syntax")


def test_unknown_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = write(tmp_path / "hosts.ini", "[web]\nweb1\n")
    code, err = run(capsys, "inventory", "show", "web9", "-i", str(inv))
    assert_bad_input(code, err, "hosts.ini", "web9", "not in the inventory")


@pytest.mark.parametrize("pattern, fragment", [
    ("nosuch", "'nosuch'"),
    ("web:nosuch", "'nosuch'"),
    ("web:!typo", "'typo'"),
    ("web:&db", "matches no host"),
    ("~[unclosed", "regular expression"),
    ("web[5]", "out of range"),
])
def test_pattern_matching_nothing(pattern: str, fragment: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    inv = write(tmp_path / "hosts.ini", "[web]\nweb1\nweb2\n[db]\ndb1\n")
    code, err = run(capsys, "inventory", "list", "-i", str(inv), "--limit", pattern)
    assert code == 2 and "Traceback" not in err and fragment in err, err
    if "regular expression" not in fragment and "out of range" not in fragment:
        assert "hosts.ini" in err


def test_secret_never_in_error_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forget_secrets()
    inv = write(tmp_path / "hosts.yml", "web:\n  hosts:\n    web1:\n      admin_password: Hunter2-Secret\n")
    code, err = run(capsys, "inventory", "list", "-i", str(inv), "--limit", "Hunter2-Secret")
    assert code == 2 and "matches no host" in err
    assert "Hunter2-Secret" not in err
    forget_secrets()


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.yml", "web:\n  hosts: [a\n")
    out = subprocess.run([str(Path(sys.executable).parent / "fleetctl"), "inventory", "list", "-i", str(inv)],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "hosts.yml" in out.stderr
    assert out.stdout == ""
