"""Secrets never reach output (issue 15, "Checked by"): unique values planted through `env()`, `file()`, a
secret-named variable and through filters (`lower`, `b64encode`) of an `env()` value; every command is run on its
success and failure paths, with and without `--json` (the `--json` documents are the reports fleetctl writes);
stdout, stderr, every webhook payload (a loopback receiver) and everything under `.fleetctl/` (the SQLite journal and
its WAL included) are searched: zero hits.

What stays on the nodes is out of scope here (a release's service definition holds its environment on the node:
docs/windows.md). The lab: FLEETCTL_TEST_SECRETS_BASE (default 127.0.56.1), 2 nodes.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator

import pytest

from .conftest import FLEETCTL, Lab, _env, _start_lab

pytestmark = pytest.mark.lab


def token(prefix: str) -> str:
    # Mixed case, so that `lower` derives a different string, long enough never to occur by chance.
    return prefix + secrets.token_hex(8) + "QzX"


ENV_SECRET = token("EnvS")
FILE_SECRET = token("FileS")
NAMED_SECRET = token("NamedS")
LOWERED = token("LowerS")
PACKED = token("PackS")

# Each planted value, and what a filter derives from it: none of these strings may appear anywhere.
FORBIDDEN = {
    "env()": [ENV_SECRET],
    "file()": [FILE_SECRET],
    "secret-named variable": [NAMED_SECRET],
    "env() | lower": [LOWERED, LOWERED.lower()],
    "env() | b64encode": [PACKED, base64.b64encode(PACKED.encode()).decode()],
}


class Hooks:
    """A webhook receiver on loopback that keeps every payload it is sent."""

    def __init__(self) -> None:
        received: list[bytes] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    receiver = Hooks()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, hooks: Hooks) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_SECRETS_BASE", "127.0.56.1")
    for started in _start_lab(tmp_path_factory.mktemp("secrets"), 2, base, "linux"):
        (started.directory / "motd.txt").write_text(FILE_SECRET + "\n")
        (started.directory / "secrets.yml").write_text(
            "all:\n  vars:\n"
            "    greeting: \"{{ env('FLEET_TEST_GREETING') }}\"\n"
            "    motd: \"{{ file('motd.txt') | trim }}\"\n"
            f"    db_password: {NAMED_SECRET}\n"
            "    shout: \"{{ env('FLEET_TEST_SHOUT') | lower }}\"\n"
            "    packed: \"{{ env('FLEET_TEST_PACKED') | b64encode }}\"\n")
        text = started.playbook.read_text().replace(
            "    HELLO_ENV: \"{{ hello_env | default('production') }}\"\n",
            "    HELLO_ENV: \"{{ hello_env | default('production') }}\"\n"
            "    GREETING: \"{{ greeting }}\"\n    MOTD: \"{{ motd }}\"\n    DB_PASSWORD: \"{{ db_password }}\"\n"
            "    SHOUT: \"{{ shout }}\"\n    PACKED: \"{{ packed }}\"\n")
        assert "GREETING" in text and "\nnotify:" not in text
        text += f"\nnotify:\n  webhooks:\n    - url: {hooks.url}\n      format: json\n"
        started.playbook.write_text(text)
        yield started


def run(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    env = _env()
    env.update({"FLEET_TEST_GREETING": ENV_SECRET, "FLEET_TEST_SHOUT": LOWERED, "FLEET_TEST_PACKED": PACKED})
    return subprocess.run([*FLEETCTL, *args], cwd=lab.directory, capture_output=True, text=True, timeout=240,
                          env=env, check=False)


def test_no_planted_secret_reaches_any_output(lab: Lab, hooks: Hooks) -> None:
    pb, inv = str(lab.playbook), ["-i", str(lab.inventory), "-i", str(lab.directory / "secrets.yml")]
    commands: list[tuple[str, ...]] = [
        ("inventory", "list", *inv), ("inventory", "list", *inv, "--json"),
        ("inventory", "show", "lab-node01", *inv),
        ("inventory", "show", "no-such-host", *inv), ("inventory", "graph", *inv),
        ("ping", *inv), ("ping", *inv, "--json"),
        ("plan", pb, *inv), ("plan", pb, *inv, "--canary", "1"),
        ("deploy", pb, *inv, "--version", "1.0.0", "--dry-run"),
        ("deploy", pb, *inv, "--version", "1.0.0", "--dry-run", "--json"),
        ("deploy", pb, *inv, "--version", "1.0.0", "--yes"),
        ("deploy", pb, *inv, "--version", "1.1.0", "--yes", "--json", "--var", "window=0.5s"),
        # failure paths: a gate that fails (rolled back), bad input naming a templated key
        ("deploy", pb, *inv, "--version", "1.2.0", "--yes", "--json", "--var", "hello_mode=unhealthy"),
        ("deploy", pb, *inv, "--version", "1.2.0", "--yes", "--var", "hello_port={{ greeting }}"),
        ("status", pb, *inv), ("status", pb, *inv, "--json"),
        ("logs", pb, *inv, "--host", "lab-node01", "--tail", "50"),
        ("logs", pb, *inv, "--host", "lab-node01", "--tail", "50", "--json"),
        ("rollback", pb, *inv, "--dry-run"), ("rollback", pb, *inv, "--dry-run", "--json"),
        ("rollback", pb, *inv, "--yes", "--json"), ("rollback", pb, *inv, "--yes", "--to", "9.9.9"),
        ("history",), ("history", "--json"),
    ]
    after: list[tuple[str, ...]] = [("remove", pb, *inv, "--yes", "--json")]
    hits: list[str] = []
    failed: list[str] = []
    for args in commands + [("history", "show", run_id) for run_id in ("",)] + after:
        if args == ("history", "show", ""):
            # every recorded run, one by one (also as --json)
            listed = json.loads(run(lab, "history", "--json").stdout)
            runs = listed["runs"]
            # the newest run, a failed one and a rollback cover every kind of host line
            picked = {runs[0]["id"]} | {next((r["id"] for r in runs if r["status"] != "succeeded"), runs[0]["id"]),
                                        next((r["id"] for r in runs if r["kind"] == "rollback"), runs[0]["id"])}
            ids = sorted(picked)
            shows = [("history", "show", i, *j) for i in ids for j in ((), ("--json",))]
            for show in shows:
                proc = run(lab, *show)
                assert proc.returncode == 0, proc.stderr
                hits += [f"history show stdout: {how}" for how, values in FORBIDDEN.items()
                         if any(v in proc.stdout + proc.stderr for v in values)]
            continue
        proc = run(lab, *args)
        if proc.returncode != 0:
            failed.append(f"{' '.join(a for a in args if not a.startswith('/'))} -> {proc.returncode}: "
                          f"{proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else ''}")
        for stream, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            hits += [f"{' '.join(args[:3])} {stream}: {how}" for how, values in FORBIDDEN.items()
                     if any(v in text for v in values)]
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
    # The failure paths fail (unknown host, gate failure, bad input, a version not kept); the rest must succeed,
    # or the search proves little.
    assert len(failed) == 4, "\n".join(failed)
    assert hooks.received, "the webhook payloads are part of the search: some must have been sent"
    for payload in hooks.received:
        hits += [f"webhook payload: {how}" for how, values in FORBIDDEN.items()
                 if any(v.encode() in payload for v in values)]
    files = [p for p in (lab.directory / ".fleetctl").rglob("*") if p.is_file()]
    assert any(p.name.startswith("history.db") for p in files)
    for path in files:
        data = path.read_bytes()
        hits += [f"{path.relative_to(lab.directory)}: {how}" for how, values in FORBIDDEN.items()
                 if any(v.encode() in data for v in values)]
    assert hits == []
