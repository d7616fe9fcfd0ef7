"""`transfer: url` end to end: lab nodes download the artifact from a real nginx serving it over HTTPS with a
throwaway CA; the controller's pull server never starts and the controller moves no artifact bytes. A wrong
sha256 is refused with nothing kept or installed, an untrusted server is refused, and a presigned URL's
signature never reaches the output or the journal.

Addresses: FLEETCTL_TEST_URL_BASE (lab, default 127.0.54.1); nginx listens on 127.0.0.1, a free port.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleetctl import pki
from tests.support import wait_for

from .conftest import Lab, _start_lab

pytestmark = pytest.mark.lab

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SIGNATURE = "X-Amz-Signature=5ec7e7519a7u7e0f1ee7"  # what a presigned URL carries; must never be shown


@dataclass
class Nginx:
    port: int
    root: Path
    ca_file: Path
    access_log: Path

    def url(self, name: str, query: str = "") -> str:
        return f"https://127.0.0.1:{self.port}/artifacts/{name}" + (f"?{query}" if query else "")

    def gets(self, name: str) -> list[str]:
        """Status codes nginx answered to GETs of /artifacts/NAME, in order."""
        lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
        return [m.group(1) for line in lines if (m := re.search(rf'"GET /artifacts/{re.escape(name)}\S* HTTP/[\d.]+" '
                                                                 r"(\d{3})", line))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if not os.path.exists(NGINX):
        pytest.fail("nginx is not installed (scripts/bootstrap installs it)")
    base = tmp_path_factory.mktemp("nginx")
    ca = pki.new_ca("fleetctl test artifact repository CA", "fleetctl tests")
    server = pki.issue_server_cert(ca, ["127.0.0.1"])
    pki.write_pair(server, base / "server.pem", base / "server.key")
    (base / "ca.pem").write_bytes(ca.cert_pem)
    root = base / "www"
    (root / "artifacts").mkdir(parents=True)
    port = _free_port()
    (base / "nginx.conf").write_text(f"""
user root root;
daemon off;
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {base}/access.log;
    client_body_temp_path {base}/tmp-body;
    proxy_temp_path {base}/tmp-proxy;
    fastcgi_temp_path {base}/tmp-fastcgi;
    uwsgi_temp_path {base}/tmp-uwsgi;
    scgi_temp_path {base}/tmp-scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {base}/server.pem;
        ssl_certificate_key {base}/server.key;
        root {root};
    }}
}}
""")
    proc = subprocess.Popen([NGINX, "-p", str(base), "-c", str(base / "nginx.conf"), "-e", str(base / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def listening() -> bool:
            assert proc.poll() is None, (base / "error.log").read_text() if (base / "error.log").exists() else ""
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for(listening, 10, "nginx to listen")
        yield Nginx(port, root, base / "ca.pem", base / "access.log")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def url_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = os.environ.get("FLEETCTL_TEST_URL_BASE", "127.0.54.1")
    yield from _start_lab(tmp_path_factory.mktemp("rollout-url"), 3, base, "linux")


@dataclass(frozen=True)
class Built:
    name: str  # the file name nginx serves it under
    sha256: str
    size: int


def build(lab: Lab, nginx: Nginx, version: str) -> Built:
    """`fleetctl build` the example (Linux ELF) and publish it on nginx, as CI publishes to a repository."""
    proc = lab.fleetctl("build", str(lab.playbook), "--version", version, "--json", check=True, timeout=300)
    manifest = json.loads(proc.stdout)
    name = f"hello-{version}"
    shutil.copyfile(lab.directory / "dist" / Path(manifest["path"]).name, nginx.root / "artifacts" / name)
    return Built(name, manifest["sha256"], manifest["size"])


def url_playbook(lab: Lab, nginx: Nginx, built: Built, *, sha256: str | None = None, query: str = "",
                 ca: Path | None = None, tag: str = "url") -> Path:
    """The test playbook with its build replaced by `collect.url` on nginx and `transfer: url` (the CA file beside
    it: a playbook reads files of its project only)."""
    text = lab.playbook.read_text()
    ca_file = lab.directory / f"ca-{tag}.pem"
    shutil.copyfile(ca or nginx.ca_file, ca_file)
    collect = (f"  collect:\n    url: \"{nginx.url(built.name, query)}\"\n    sha256: {sha256 or built.sha256}\n"
               f"    size: {built.size}\n    ca: {ca_file.name}\n")
    text, count = re.subn(r"(?m)^  build:\n    go:\n(      .*\n)+", collect, text)
    assert count == 1, text
    text = text.replace("transfer: auto", "transfer: url")
    path = lab.directory / f"hello-{tag}.yml"
    path.write_text(text)
    return path


def deploy(lab: Lab, playbook: Path, version: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = lab.fleetctl("deploy", str(playbook), "-i", str(lab.inventory), "--yes", "--json", "--version", version,
                        "--var", "window=0s", *extra)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def node_state(lab: Lab, node: str) -> Any:
    from fleetctl.rollout.runner import DeployOptions, load_fleet

    fleet = load_fleet(DeployOptions(playbook=lab.playbook, inventories=[lab.inventory], limit=node),
                       {"version": "0"})
    client = fleet.client_factory()(node)
    try:
        return client.get_fleet_state(app="hello", root="C:\\apps\\hello")
    finally:
        client.close()


def stored(lab: Lab) -> dict[str, int]:
    return {n: s["counters"]["artifact_bytes_stored"] for n, s in lab.status().items()}


def test_nodes_download_from_nginx_and_the_pull_server_never_starts(
        url_lab: Lab, nginx: Nginx, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.rollout.events import EventBus
    from fleetctl.rollout.runner import DeployOptions, prepare_deploy, run_deploy

    lab = url_lab
    built = build(lab, nginx, "5.0.0")
    playbook = url_playbook(lab, nginx, built, query=SIGNATURE)
    dist_before = sorted(p.name for p in (lab.directory / "dist").iterdir())

    def no_pull_server(addresses: Any) -> Any:
        raise AssertionError("transfer: url started the controller's pull server")

    monkeypatch.setattr("fleetctl.rollout.deploy.pull_server_for", no_pull_server)
    opts = DeployOptions(playbook=playbook, inventories=[lab.inventory], version="5.0.0",
                         dist_dir=lab.directory / "dist", extra_vars=("window=0s",))
    result = run_deploy(prepare_deploy(opts), EventBus())
    assert result.exit_code == 0, result.message
    assert {h: (o.outcome, o.transfer) for h, o in result.outcomes.items()} == \
        {n: ("deployed", "url") for n in lab.nodes}
    assert all((lab.health(n) or {}).get("version") == "5.0.0" for n in lab.nodes)
    # Each node fetched it from nginx, once; the controller neither downloaded nor copied anything into dist/.
    assert nginx.gets(built.name) == ["200"] * len(lab.nodes)
    assert sorted(p.name for p in (lab.directory / "dist").iterdir()) == dist_before
    # A redeploy finds it in every node's cache: nothing is fetched again.
    code, doc, err = deploy(lab, playbook, "5.0.0")
    assert code == 0, err
    assert {v["outcome"] for v in doc["hosts"].values()} == {"skipped"}
    assert nginx.gets(built.name) == ["200"] * len(lab.nodes)


def test_a_wrong_sha256_is_refused_with_nothing_kept_or_installed(url_lab: Lab, nginx: Nginx) -> None:
    lab = url_lab
    good = build(lab, nginx, "5.1.0")
    code, _, err = deploy(lab, url_playbook(lab, nginx, good, tag="good"), "5.1.0", "--limit", "lab-node01")
    assert code == 0, err
    bad = build(lab, nginx, "5.2.0")
    wrong = "ab" * 32
    before, releases_before = stored(lab), node_state(lab, "lab-node01").releases
    code, doc, err = deploy(lab, url_playbook(lab, nginx, bad, sha256=wrong, query=SIGNATURE, tag="bad"), "5.2.0",
                            "--limit", "lab-node01")
    assert code == 1, err
    host = doc["hosts"]["lab-node01"]
    assert host["outcome"] == "failed" and "CHECKSUM_MISMATCH" in host["error"], host
    assert nginx.gets(bad.name) == ["200"]  # the node did download it, then refused it
    assert stored(lab) == before  # nothing entered any node's artifact cache
    assert (lab.health("lab-node01") or {}).get("version") == "5.1.0"  # still running what it ran
    assert node_state(lab, "lab-node01").releases == releases_before  # no release was installed
    # The presigned URL's signature is in no output and not in the journal.
    secret = SIGNATURE.split("=", 1)[1]
    assert secret not in json.dumps(doc) and secret not in err
    db = sqlite3.connect(lab.directory / ".fleetctl" / "history.db")
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert secret not in dump


def test_a_server_the_ca_did_not_sign_is_refused(url_lab: Lab, nginx: Nginx, tmp_path: Path) -> None:
    lab = url_lab
    built = build(lab, nginx, "5.3.0")
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pki.new_ca("some other CA", "elsewhere").cert_pem)
    began = time.monotonic()
    code, doc, err = deploy(lab, url_playbook(lab, nginx, built, ca=other, tag="other-ca"), "5.3.0",
                            "--limit", "lab-node02")
    assert code == 1, err
    host = doc["hosts"]["lab-node02"]
    assert host["outcome"] == "failed" and "DOWNLOAD_FAILED" in host["error"], host
    assert "CERTIFICATE_VERIFY_FAILED" in host["error"] or "certificate" in host["error"].lower()
    assert nginx.gets(built.name) == []  # the TLS handshake failed: no request was ever made
    assert time.monotonic() - began < 60
