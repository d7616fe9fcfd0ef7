"""The playbook's `notify:` section: templated (secret) URLs, defaults, and bad input as one clear exit-2 error
that never shows the URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetctl.config.playbook import load_playbook
from fleetctl.config.redaction import forget_secrets, redact
from fleetctl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
HELLO = (REPO / "playbooks" / "hello" / "playbook.yml").read_text()


def playbook(tmp_path: Path, notify: str) -> Path:
    path = tmp_path / "pb.yml"
    path.write_text(HELLO.replace("dir: src", f"dir: {REPO / 'playbooks' / 'hello' / 'src'}") + "\n" + notify)
    return path


@pytest.fixture(autouse=True)
def _clean() -> object:
    yield
    forget_secrets()


def test_a_url_from_env_is_rendered_and_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_URL", "https://hooks.example.com/services/T000/B000/XXXXSECRET")
    path = playbook(tmp_path, "notify:\n  webhooks:\n    - url: \"{{ env('HOOK_URL') }}\"\n      format: teams\n")
    settings = load_playbook(path).render_global({})
    [hook] = settings.notify.webhooks
    assert hook.url == os.environ["HOOK_URL"] and hook.format == "teams"
    assert hook.events == ["start", "success", "failure", "halted", "interrupted"]
    assert hook.timeout == 10 and hook.attempts == 3
    assert redact(f"posting to {hook.url}") == "posting to ********"


def test_a_literal_url_is_secret_too(tmp_path: Path) -> None:
    path = playbook(tmp_path, "notify:\n  webhooks:\n    - url: https://hooks.example.com/literal-T0K3N\n")
    load_playbook(path).render_global({})
    assert "literal-T0K3N" not in redact("https://hooks.example.com/literal-T0K3N")


@pytest.mark.parametrize(("section", "key", "words"), [
    ("    - url: ftp://hooks.example.com/SECRETPATH\n", "notify.webhooks.0.url", "http:// or https://"),
    ("    - url: https://h.example/x\n      event: [start]\n", "notify.webhooks.0.event", "unknown key"),
    ("    - url: https://h.example/x\n      events: [deployed]\n", "notify.webhooks.0.events.0", "start"),
    ("    - url: https://h.example/x\n      events: []\n", "notify.webhooks.0.events", "at least one"),
    ("    - url: https://h.example/x\n      format: discord\n", "notify.webhooks.0.format", "slack"),
    ("    - url: https://h.example/x\n      timeout: 0s\n", "notify.webhooks.0.timeout", "above 0"),
    ("    - url: https://h.example/x\n      attempts: 0\n", "notify.webhooks.0.attempts", "1"),
])
def test_bad_notify_settings(tmp_path: Path, section: str, key: str, words: str) -> None:
    path = playbook(tmp_path, "notify:\n  webhooks:\n" + section)
    with pytest.raises(ConfigError) as err:
        load_playbook(path).render_global({})
    assert err.value.key == key, str(err.value)
    assert words in str(err.value)
    assert "SECRETPATH" not in str(err.value)


def test_plan_refuses_a_bad_webhook_with_exit_2(tmp_path: Path) -> None:
    path = playbook(tmp_path, "notify:\n  webhooks:\n    - url: https://h.example/x\n      format: discord\n")
    inventory = tmp_path / "inv.yml"
    inventory.write_text("all:\n  hosts:\n    web1: {}\n")
    proc = subprocess.run([sys.executable, "-m", "fleetctl", "plan", str(path), "-i", str(inventory)],
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "notify.webhooks.0.format" in proc.stderr and str(path) in proc.stderr
