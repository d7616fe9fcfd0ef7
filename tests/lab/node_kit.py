"""Helpers for the lab node tests: addresses in this suite's range, a scriptable test service, deploy steps.

Addresses: `FLEETCTL_TEST_NODE_ADDR_BASE` (default `127.0.20`) then `.1`, `.2`, ... one per call, so tests never
share a listener. The test service is a Python script with a `#!` line (the lab runs scripts like ELF binaries):
it serves `/healthz`, writes `service.log` into `--log-dir`, and can ignore SIGTERM or exit at once.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import itertools
import json
import os
import sys
from typing import Any

ADDR_BASE = os.environ.get("FLEETCTL_TEST_NODE_ADDR_BASE", "127.0.20")
_numbers = itertools.count(1)

SERVICE_SCRIPT = f"""#!{sys.executable}
import http.server, os, signal, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
if args.get("--mode") == "exit":
    sys.exit(7)
if args.get("--mode") == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
log_dir = args.get("--log-dir")
if log_dir:
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, "service.log"), "a") as f:
        f.write("started greeting=%s\\n" % os.environ.get("GREETING", ""))
        f.write("line two\\n")
host, port = args["--listen"].rsplit(":", 1)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{{"status": "ok"}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer((host, int(port)), Handler).serve_forever()
""".encode()


def next_address() -> str:
    n = next(_numbers)
    return f"{ADDR_BASE}.{n % 250 + 1}"






def call(node: Any, command: str, input_objects: list[Any] | None = None, **parameters: Any) -> dict[str, Any]:
    """Invoke a protocol operation the way the server does; returns the parsed JSON document."""
    out = node.invoke(command, parameters, input_objects or [])
    assert len(out) == 1 and isinstance(out[0], str)
    return dict(json.loads(out[0]))


def ok(node: Any, command: str, input_objects: list[Any] | None = None, **parameters: Any) -> dict[str, Any]:
    doc = call(node, command, input_objects, **parameters)
    assert doc["ok"], doc
    return dict(doc["result"])


def error(node: Any, command: str, code: str, **parameters: Any) -> dict[str, Any]:
    doc = call(node, command, **parameters)
    assert not doc["ok"], doc
    assert doc["error"]["code"] == code, doc
    return dict(doc["error"])


def chunks(data: bytes, compress: bool = True, size: int = 1000) -> list[str]:
    payload = gzip.compress(data) if compress else data
    return [base64.b64encode(payload[i:i + size]).decode() for i in range(0, len(payload), size)] or [""]


def push(node: Any, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    ok(node, "Receive-FleetArtifact", chunks(data), Sha256=sha, Size=len(data))
    return sha


def install(node: Any, data: bytes, release: str, app: str = "hello", root: str = "C:\\apps\\hello",
            switch: bool = True, exe: str = "hello.exe") -> str:
    sha = push(node, data)
    ok(node, "Install-FleetRelease", App=app, Root=root, Release=release, Version=release.split("-")[0],
       Sha256=sha, ExeName=exe)
    if switch:
        ok(node, "Switch-FleetRelease", App=app, Root=root, Release=release)
    return sha


def define_service(node: Any, port: int, *, name: str = "hello", mode: str = "ok", root: str = "C:\\apps\\hello",
                   **extra: Any) -> None:
    ok(node, "Set-FleetService", Name=name, BinaryPath=f"{root}\\current\\hello.exe",
       Arguments=["--listen", f"0.0.0.0:{port}", "--log-dir", f"{root}\\shared\\logs", "--mode", mode], **extra)
