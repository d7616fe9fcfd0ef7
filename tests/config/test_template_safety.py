"""Templates from git and reviewers run nothing on the controller (issue 15, item 6), read only project files, and
whatever is rendered from a secret is masked, whichever filter it went through (item 10)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from fleetctl.config.project import find_project
from fleetctl.config.redaction import MASK, forget_secrets, redact
from fleetctl.config.templating import render_string, render_vars
from fleetctl.errors import ConfigError

SECRET = "Sup3r-Secret-Value-42"


@pytest.fixture(autouse=True)
def _clean_secrets() -> Any:
    forget_secrets()
    yield
    forget_secrets()


@pytest.mark.parametrize("template", [
    "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "{{ joiner.__init__.__globals__['os'].system('touch MARKER') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].system('touch MARKER') }}",
    "{{ range.__self__ }}",
    "{{ 'x' * 100000000 }}",
    "{{ [0] * 100000000 }}",
    "{{ 10 ** 100000 }}",
    "{{ range(100000000) | list }}",
])
def test_sandbox_refuses_code_and_memory_bombs(template: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        render_string(template, {}, source="inventory/hosts.yml", key="evil")
    assert err.value.file == "inventory/hosts.yml" and err.value.key == "evil"
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("template, expected", [
    ("{{ name | upper }}-{{ name | lower }}", "WEB1-web1"),
    ("{{ '  x ' | trim }}", "x"),
    ("{{ items | map('upper') | join(',') }}", "A,B"),
    ("{{ items | select('equalto', 'a') | list }}", ["a"]),
    ("{{ '%s:%d' | format(name, 80) }}", "web1:80"),
    ("{{ 'a-b' | split('-') if false else 'a-b'.split('-') }}", ["a", "b"]),
    ("{{ name.startswith('web') }}", True),
    ("{{ {'a': 1}.items() | list }}", [("a", 1)]),
    ("{{ 'v' ~ (3 * 2) }}", "v6"),
    ("{{ name | b64encode | b64decode }}", "web1"),
    ("{{ 'a\\\\b' | basename }}", "a\\b"),
    ("{{ 2 ** 10 }}", 1024),
    ("{{ 'ab' * 3 }}", "ababab"),
    ("{% for i in range(3) %}{{ i }}{% endfor %}", "012"),
])
def test_common_filters_and_methods_still_work_in_the_sandbox(template: str, expected: Any) -> None:
    assert render_string(template, {"name": "web1", "items": ["a", "b"]}, source="s", key="k") == expected


def test_file_reads_under_the_project_root_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "secrets").mkdir(parents=True)
    (project / "fleet.yml").write_text("inventory: [inventory]\n")
    (project / "secrets" / "pw").write_text("in-project-secret\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside-secret\n")
    (project / "secrets" / "link").symlink_to(outside)
    monkeypatch.chdir(project / "secrets")  # the root is found by walking up
    assert render_string("{{ file('pw') }}", {}, source="s", key="k") == "in-project-secret"
    assert render_string("{{ file('../secrets/pw') }}", {}, source="s", key="k") == "in-project-secret"
    for path in (str(outside), "../../outside.txt", "link", "/etc/passwd", "~/.ssh/id_rsa"):
        with pytest.raises(ConfigError, match="outside the project directory") as err:
            render_string(f"{{{{ file('{path}') }}}}", {}, source="inventory/hosts.yml", key="fleet_password")
        assert err.value.file == "inventory/hosts.yml" and err.value.key == "fleet_password"
        assert "allow_absolute_paths" in str(err.value)


def test_fleet_yml_allows_named_directories_outside_the_project(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / "pw").write_text("vault-secret\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "fleet.yml").write_text(f"allow_absolute_paths:\n  - {vault}\n")
    monkeypatch.chdir(project)
    assert render_string(f"{{{{ file('{vault / 'pw'}') }}}}", {}, source="s", key="k") == "vault-secret"
    with pytest.raises(ConfigError, match="outside the project"):
        render_string("{{ file('/etc/hostname') }}", {}, source="s", key="k")


@pytest.mark.parametrize("text, key, fragment", [
    ("allow_absolute_paths: relative/dir\n", "allow_absolute_paths", "expected a list"),
    ("allow_absolute_paths: [relative/dir]\n", "allow_absolute_paths[0]", "expected an absolute directory"),
    ("inventory: 5\n", "inventory", "expected a path or a list of paths"),
    ("inventroy: [inventory]\n", "inventroy", "unknown key"),
])
def test_bad_project_file_is_one_error_naming_file_and_key(tmp_path: Path, text: str, key: str,
                                                           fragment: str) -> None:
    (tmp_path / "fleet.yml").write_text(text)
    with pytest.raises(ConfigError, match=fragment) as err:
        find_project(tmp_path)
    assert err.value.file == str(tmp_path / "fleet.yml") and err.value.key == key and err.value.line == 1


# Each row: a template that derives something from the secret. Whatever it renders to must be masked, alone and
# inside other text, and the secret's own text too.
DERIVED = [
    "{{ pw | lower }}",
    "{{ pw | upper }}",
    "{{ pw | b64encode }}",
    "{{ pw | replace('-', '_') }}",
    "{{ (' ' ~ pw ~ ' ') | trim }}",
    "{{ pw | reverse | join }}",
    "{{ pw[::-1] }}",
    "{{ pw | list | join('.') }}",
    "{{ pw | to_json }}",
    "{{ pw | urlencode }}",
    "{{ pw | title }}",
    "{{ pw | quote }}",
    "{{ pw | regex_replace('[0-9]', 'N') }}",
    "{{ pw[:8] }}",
    "{{ 'user:' ~ pw }}",
    "{{ '%s!' | format(pw) }}",
    "{{ pw.swapcase() }}",
    "{{ {'k': pw} | to_json | b64encode }}",
    "{% set x = pw | lower %}{{ x }}",
    "{{ derived }}",
    "{{ derived | upper }}",
]


@pytest.mark.parametrize("template", DERIVED)
@pytest.mark.parametrize("source", ["secret-name", "env", "file"])
def test_values_derived_from_a_secret_are_masked(template: str, source: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLEETCTL_TEST_SECRET", SECRET)
    (tmp_path / "pw.txt").write_text(SECRET + "\n")
    pw = {"secret-name": SECRET, "env": "{{ env('FLEETCTL_TEST_SECRET') }}", "file": "{{ file('pw.txt') }}"}[source]
    name = "db_password" if source == "secret-name" else "pw_source"
    variables = {name: pw, "pw": "{{ " + name + " }}", "derived": "{{ pw | lower | b64encode }}",
                 "alone": template, "inside": "--opt=" + template + " --other"}
    out = render_vars(variables, source="hosts.yml")
    for key in ("alone", "inside"):
        value = out[key]
        text = value if isinstance(value, str) else str(value)
        shown = redact(f"[{text}]")
        assert SECRET not in shown and SECRET.lower() not in shown, (key, shown)
        assert MASK in shown, (key, shown)
    # The derived value on its own, as a node might echo it in a log line.
    alone = out["alone"]
    assert redact(f"log: {alone} end") == f"log: {MASK} end"


def test_derived_value_inside_a_long_template_is_masked_on_its_own(tmp_path: Path) -> None:
    body = "line\n" * 20000 + "password_b64={{ db_password | b64encode }}\n" + "tail\n" * 10
    render_string(body, {"db_password": SECRET}, source="templates/app.conf.j2", key="install.files.0")
    encoded = base64.b64encode(SECRET.encode()).decode()
    assert redact(f"node echoed {encoded}") == f"node echoed {MASK}"


def test_values_not_derived_from_secrets_stay_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETCTL_TEST_UNSET", raising=False)
    out = render_vars({"db_password": SECRET, "port": "{{ 8000 + 80 }}", "url": "http://{{ host }}:{{ port }}",
                       "host": "web01.example", "envname": "{{ env('FLEETCTL_TEST_UNSET', 'production') }}"},
                      source="s")
    assert redact(f"{out['url']} {out['envname']}") == "http://web01.example:8080 production"
    assert os.environ.get("FLEETCTL_TEST_UNSET") is None
