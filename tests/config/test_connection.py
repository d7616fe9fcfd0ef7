"""Connection settings from inventory variables: defaults, Ansible spellings, and one clear error per bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetctl.config.connection import ConnectionSettings, insecure_hosts_warning, render_connection_vars
from fleetctl.config.redaction import forget_secrets, redact
from fleetctl.errors import ConfigError


def settings(**values: Any) -> ConnectionSettings:
    return ConnectionSettings.from_hostvars("web01", values, source="inventory/hosts.yml")


def test_defaults() -> None:
    s = settings()
    assert (s.address, s.port, s.scheme, s.auth, s.cert_validation) == ("web01", 5986, "https", "negotiate", True)
    assert s.endpoint == "https://web01:5986/wsman"
    assert settings(fleet_scheme="http", fleet_auth="ntlm", fleet_user="u", fleet_password="p").port == 5985


def test_fleet_names_win_over_ansible_spellings() -> None:
    s = settings(ansible_host="10.0.0.5", ansible_port="5999", ansible_user="CORP\\deploy",
                 ansible_password="pw-ansible", ansible_winrm_transport="ntlm",
                 ansible_winrm_server_cert_validation="ignore", ansible_winrm_scheme="https")
    assert (s.address, s.port, s.user, s.password, s.auth, s.cert_validation) == (
        "10.0.0.5", 5999, "CORP\\deploy", "pw-ansible", "ntlm", False)
    s = settings(fleet_host="10.0.0.6", ansible_host="10.0.0.5", fleet_user="me", ansible_user="them",
                 fleet_password="x-pass", fleet_connect_timeout="2.5", fleet_operation_timeout=30)
    assert (s.address, s.user, s.connect_timeout, s.operation_timeout) == ("10.0.0.6", "me", 2.5, 30.0)


def test_password_is_registered_secret_and_hidden_from_repr() -> None:
    forget_secrets()
    s = settings(fleet_user="u", fleet_password="Sup3r-secret")
    assert "Sup3r-secret" not in repr(s)
    assert redact("login Sup3r-secret") == "login ********"
    forget_secrets()


@pytest.mark.parametrize("values, key, words", [
    ({"fleet_port": "59x"}, "fleet_port", "expected an integer from 1 to 65535"),
    ({"fleet_port": 70000}, "fleet_port", "got 70000"),
    ({"fleet_scheme": "ftp"}, "fleet_scheme", "expected https or http"),
    ({"fleet_auth": "digest"}, "fleet_auth", "expected one of negotiate, ntlm"),
    ({"fleet_auth": "basic", "fleet_user": "u"}, "fleet_password", "needs fleet_user and fleet_password"),
    ({"fleet_auth": "basic", "fleet_user": "u", "fleet_password": "p", "fleet_scheme": "http"}, "fleet_auth",
     "in clear"),
    ({"fleet_auth": "certificate"}, "fleet_cert_pem", "needs fleet_cert_pem"),
    ({"fleet_cert_validation": "maybe"}, "fleet_cert_validation", "expected true or false"),
    ({"fleet_connect_timeout": "soon"}, "fleet_connect_timeout", "seconds"),
    ({"fleet_host": "bad host!"}, "fleet_host", "host name or IP address"),
    ({"fleet_ca_bundle": "/nonexistent/ca.pem"}, "fleet_ca_bundle", "readable CA bundle"),
    ({"fleet_transport": "ssh"}, "fleet_transport", "expected 'winrm'"),
    ({"fleet_user": ["a"]}, "fleet_user", "expected a string"),
])
def test_bad_values_name_file_key_and_expectation(values: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(**values)
    err = info.value
    assert err.key == key and err.file == "inventory/hosts.yml"
    assert words in str(err) and "host web01" in str(err)


def test_insecure_warning_lists_each_host_once(tmp_path: Path) -> None:
    hosts = [ConnectionSettings.from_hostvars(n, {"fleet_cert_validation": False}) for n in ("b", "a", "a")]
    hosts.append(ConnectionSettings.from_hostvars("c", {}))
    warning = insecure_hosts_warning(hosts)
    assert warning is not None and "2 host(s) (a, b)" in warning
    assert insecure_hosts_warning([ConnectionSettings.from_hostvars("c", {})]) is None


def test_only_connection_variables_are_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAB_PW", "s3cret-pw")
    monkeypatch.delenv("NOT_SET_FOR_CONNECTING", raising=False)
    variables = {"fleet_user": "{{ user_name }}", "user_name": "deploy", "fleet_password": "{{ env('LAB_PW') }}",
                 "app_token": "{{ env('NOT_SET_FOR_CONNECTING') }}", "ansible_port": 5986,
                 "health_version": "{{ version }}"}
    rendered = render_connection_vars(variables, source="inventory host w1")
    assert rendered == {"fleet_user": "deploy", "fleet_password": "s3cret-pw", "ansible_port": 5986}
    with pytest.raises(ConfigError) as info:
        render_connection_vars({"fleet_password": "{{ env('NOT_SET_FOR_CONNECTING') }}"}, source="inventory host w1")
    assert "fleet_password" in str(info.value) and "w1" in str(info.value)
