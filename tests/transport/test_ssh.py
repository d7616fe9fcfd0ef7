"""The SSH transport's pure parts: quoting remote commands and reading connection variables."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from fleetctl.config.redaction import forget_secrets, redact
from fleetctl.errors import ConfigError
from fleetctl.transport.ssh import SshSettings, quote_command

NASTY = ["a b", "it's", '"dq"', "$(touch /tmp/pwned-g)", "`id`", "x;y", "*", "new\nline", "", "-rf"]


@pytest.mark.parametrize("value", NASTY)
def test_quote_command_survives_a_real_shell(value: str, tmp_path: Path) -> None:
    command = quote_command(["printf", "%s", value], env={"FLEET_X": value}, cwd=str(tmp_path))
    done = subprocess.run(check=False, args=["/bin/sh", "-c", command], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0 and done.stdout == value
    env_check = quote_command(["sh", "-c", 'printf %s "$FLEET_X"'], env={"FLEET_X": value})
    assert subprocess.run(check=False, args=["/bin/sh", "-c", env_check], capture_output=True, text=True).stdout == value


def test_quote_command_shape() -> None:
    assert quote_command(["go", "build"], cwd="/tmp/a b", merge_stderr=True) == "cd '/tmp/a b' && go build 2>&1"
    assert shlex.split(quote_command(["x"], env={"A": "1 2"})) == ["env", "A=1 2", "x"]
    with pytest.raises(ValueError):
        quote_command(["x"], env={"A;rm": "1"})


def test_settings_from_ansible_vars_and_fleet_names_win(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("k")
    s = SshSettings.from_hostvars("b1", {"ansible_host": "10.0.0.5", "ansible_port": "2222", "ansible_user": "ci",
                                         "ansible_ssh_private_key_file": str(key), "fleet_ssh_user": "builder"})
    assert (s.address, s.port, s.user, s.key_file) == ("10.0.0.5", 2222, "builder", str(key))
    assert SshSettings.from_hostvars("b2.example", {}).address == "b2.example"


def test_password_is_registered_as_secret() -> None:
    forget_secrets()
    s = SshSettings.from_hostvars("b1", {"ansible_password": "hunter2-secret"})
    assert "hunter2-secret" not in repr(s)
    assert redact("pw hunter2-secret") == "pw ********"
    forget_secrets()


@pytest.mark.parametrize("hostvars, problem", [
    ({"ansible_port": "ssh"}, "expected an integer from 1 to 65535, got 'ssh'"),
    ({"ansible_port": 70000}, "expected an integer from 1 to 65535, got 70000"),
    ({"ansible_host": "bad host!"}, "expected a host name or IP address"),
    ({"fleet_ssh_connect_timeout": "soon"}, "expected a number of seconds"),
    ({"ansible_ssh_private_key_file": "/no/such/key"}, "private key file /no/such/key does not exist"),
    ({"fleet_ssh_known_hosts": "/no/such/kh"}, "known_hosts file /no/such/kh does not exist"),
])
def test_bad_connection_vars(hostvars: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as err:
        SshSettings.from_hostvars("b1", hostvars)
    assert "host b1" in str(err.value) and err.value.key
