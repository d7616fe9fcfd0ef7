"""Templating: strict undefined, native types, lazy cross-references, env()/file(), Ansible's common filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetctl.config.redaction import forget_secrets, redact
from fleetctl.config.templating import UnsafeText, render_string, render_vars
from fleetctl.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_secrets() -> Any:
    forget_secrets()
    yield
    forget_secrets()


@pytest.mark.parametrize("template, expected", [
    ("plain text", "plain text"),
    ("{{ port + 1 }}", 5987),
    ("{{ port }}", 5986),
    ("https://{{ name }}:{{ port }}/wsman", "https://web1:5986/wsman"),
    ("{{ name | upper }}", "WEB1"),
    ("{{ 'ABC' | lower }}", "abc"),
    ("{{ name | replace('web', 'app') }}", "app1"),
    ("{{ tags | join(',') }}", "a,b"),
    ("{{ '42' | int }}", 42),
    ("{{ 'yes' | bool }}", True),
    ("{{ 'off' | bool }}", False),
    ("{{ missing | default('fallback') }}", "fallback"),
    ("{{ tags | to_json }}", '["a", "b"]'),
    ("{{ {'k': port} | to_json }}", '{"k": 5986}'),
    ("{{ name ~ '-' ~ port }}", "web1-5986"),
    ("{% if port > 5985 %}https{% else %}http{% endif %}", "https"),
    ("{{ 'web1.corp' | regex_replace('\\\\.corp$', '') }}", "web1"),
    ("{{ tags }}", ["a", "b"]),
    (" {{ port }}", " 5986"),  # anything around the expression makes it text, as in Ansible
])
def test_render_string(template: str, expected: Any) -> None:
    variables = {"name": "web1", "port": 5986, "tags": ["a", "b"]}
    result = render_string(template, variables, source="hosts.yml", key="k")
    assert result == expected and type(result) is type(expected)


def test_render_vars_resolves_references_in_any_order_and_recursively() -> None:
    raw = {"url": "https://{{ host }}:{{ port }}", "host": "{{ name }}.{{ domain }}", "name": "web1",
           "domain": "corp.example", "port": "{{ base + 1 }}", "base": 5985,
           "nested": {"list": ["{{ name }}", {"deep": "{{ port }}"}]}}
    out = render_vars(raw, source="hosts.yml")
    assert out["url"] == "https://web1.corp.example:5986"
    assert out["port"] == 5986
    assert out["nested"] == {"list": ["web1", {"deep": 5986}]}


def test_unsafe_values_are_never_rendered() -> None:
    out = render_vars({"raw": UnsafeText("{{ not_a_var }}")}, source="s")
    assert out["raw"] == "{{ not_a_var }}"


def test_undefined_variable_is_a_config_error_naming_source_and_key() -> None:
    with pytest.raises(ConfigError) as err:
        render_vars({"url": "http://{{ nope }}"}, source="inventory/hosts.yml")
    assert err.value.file == "inventory/hosts.yml" and err.value.key == "url"
    assert "'nope' is undefined" in str(err.value)


def test_undefined_inside_nested_value_names_the_path() -> None:
    with pytest.raises(ConfigError) as err:
        render_vars({"svc": {"args": ["--x", "{{ nope }}"]}}, source="p.yml")
    assert err.value.key == "svc.args[1]"


def test_reference_loop_is_reported() -> None:
    with pytest.raises(ConfigError, match="loop: a -> b -> a"):
        render_vars({"a": "{{ b }}", "b": "{{ a }}"}, source="s")


@pytest.mark.parametrize("template, fragment", [
    ("{{ 1 / 0 }}", "division by zero"),
    ("{{ oops", "syntax"),
    ("{{ 'a' + 1 }}", "cannot render"),
    ("{{ x | nosuchfilter }}", "nosuchfilter"),
])
def test_template_failures_are_config_errors(template: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        render_string(template, {"x": 1}, source="s", key="k")


def test_env_reads_and_registers_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_TEST_PW", "correct-horse-battery")
    out = render_vars({"winrm_pass": "{{ env('FLEET_TEST_PW') }}", "dsn": "u:{{ env('FLEET_TEST_PW') }}@db"},
                      source="s")
    assert out["winrm_pass"] == "correct-horse-battery"
    # A value built from a secret is a secret as a whole (taint), not only the part that came from env().
    assert redact(f"dsn={out['dsn']}") == "dsn=********"


def test_env_missing_is_an_error_unless_defaulted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_TEST_UNSET", raising=False)
    with pytest.raises(ConfigError, match="FLEET_TEST_UNSET is not set") as err:
        render_vars({"pw": "{{ env('FLEET_TEST_UNSET') }}"}, source="inv.yml")
    assert err.value.key == "pw"
    assert render_string("{{ env('FLEET_TEST_UNSET', 'dflt') }}", {}, source="s", key="k") == "dflt"


def test_file_reads_relative_to_base_dir_strips_newline_and_registers_secret(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("s3cr3t-from-file\n")
    value = render_string("{{ file('secret.txt') }}", {}, source="s", key="k", base_dir=tmp_path)
    assert value == "s3cr3t-from-file"
    assert redact("x s3cr3t-from-file y") == "x ******** y"


def test_file_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read") as err:
        render_string("{{ file('nope.pem') }}", {}, source="inv.yml", key="cert", base_dir=tmp_path)
    assert err.value.file == "inv.yml"


def test_secret_named_variables_are_registered_when_rendered() -> None:
    render_vars({"api_token": "{{ 'tok' ~ 'en-value-123' }}"}, source="s")
    assert redact("token-value-123") != "token-value-123"
