"""Redaction: registered values and secret-named keys are masked in every rendering of inventory data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetctl.config.inventory import load_inventory
from fleetctl.config.redaction import (
    MASK,
    forget_secrets,
    is_secret_name,
    redact,
    redact_value,
    register_secret,
)


@pytest.fixture(autouse=True)
def _clean_secrets() -> Any:
    forget_secrets()
    yield
    forget_secrets()


@pytest.mark.parametrize("name, secret", [
    ("ansible_password", True), ("winrm_passwd", True), ("client_secret", True), ("api_token", True),
    ("API_KEY", True), ("private_key", True), ("ansible_user", False), ("http_port", False), ("passage", True),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_registered_values_are_masked_inside_text_and_structures() -> None:
    register_secret("hunter2-long")
    assert redact("login with hunter2-long now") == f"login with {MASK} now"
    assert redact_value({"a": ["x hunter2-long"], "n": 5}) == {"a": [f"x {MASK}"], "n": 5}


def test_secret_named_keys_are_masked_even_when_short() -> None:
    assert redact_value({"password": "abc", "user": "abc"}) == {"password": MASK, "user": "abc"}


def test_inventory_literal_secrets_are_registered_on_load(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web]\nweb1 ansible_password=Sup3rS3cret url=https://u:Sup3rS3cret@x\n")
    hosts = load_inventory([inv])
    doc = json.dumps(redact_value(hosts.to_json()))
    assert "Sup3rS3cret" not in doc
    assert redact("error near Sup3rS3cret") == f"error near {MASK}"


def test_templates_are_not_registered_as_secrets(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("web:\n  hosts:\n    web1:\n      ansible_password: \"{{ env('PW') }}\"\n")
    load_inventory([inv])
    assert redact("{{ env('PW') }}") == "{{ env('PW') }}"
