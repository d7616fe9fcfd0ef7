"""Real balancers on loopback for the traffic tests: a throwaway `sshd` (the balancer "host"), `nginx` and
`haproxy` started with configs in a temp directory, and small HTTP backends. Every process is started here and
stopped by its own pid. Addresses: FLEETCTL_TEST_TRAFFIC_NET (default 127.0.60), run inside a network namespace.
"""

from __future__ import annotations

import getpass
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NET = os.environ.get("FLEETCTL_TEST_TRAFFIC_NET", "127.0.60")
SSHD = "/usr/sbin/sshd"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class SshHost:
    """A running sshd: the balancer's Linux host, reached with a throwaway key and a pinned host key."""

    address: str
    port: int
    client_key: Path
    known_hosts: Path
    process: subprocess.Popen[bytes]

    def hostvars(self) -> dict[str, object]:
        return {"ansible_host": self.address, "ansible_port": self.port, "ansible_user": getpass.getuser(),
                "ansible_ssh_private_key_file": str(self.client_key), "fleet_ssh_known_hosts": str(self.known_hosts)}


@contextmanager
def running_sshd(directory: Path, address: str) -> Iterator[SshHost]:
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (scripts/bootstrap installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleetctl-test", "-f",
                        str(directory / key)], check=True, capture_output=True)
    shutil.copy(directory / "client_key.pub", directory / "authorized_keys")
    port = free_port(address)
    host_pub = (directory / "host_key.pub").read_text().split()
    (directory / "known_hosts").write_text(f"[{address}]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"ListenAddress {address}:{port}", f"HostKey {directory / 'host_key'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}", f"PidFile {directory / 'sshd.pid'}",
        "StrictModes no", "PermitRootLogin prohibit-password", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
        "Subsystem sftp internal-sftp", "LogLevel ERROR", "MaxSessions 100", "MaxStartups 100", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is None and listening(address, port) or proc.poll() is not None, 15,
                 "sshd to listen")
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        yield SshHost(address, port, directory / "client_key", directory / "known_hosts", proc)
    finally:
        stop(proc)


class _Named(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_backend(address: str, body: bytes) -> Iterator[int]:
    """An HTTP server answering `body`; yields its port."""
    server = http.server.ThreadingHTTPServer((address, 0), _Named)
    server.body = body  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


NGINX_TEMPLATE = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    upstream {{{{ upstream }}}} {{
{{% for b in backends %}}        server {{{{ b.address }}}}:{{{{ b.port }}}} max_fails=0{{% if b.down %}} down{{% endif %}};  # {{{{ b.name }}}}
{{% endfor %}}    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://{{{{ upstream }}}};
            # A refused connection is the client's failure, not retried elsewhere, and a failing server is not
            # benched (max_fails=0): without drain, every request sent to a restarting host fails, as it would for
            # a non-idempotent request; the tests must see a restart.
            proxy_next_upstream off;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    directory: Path
    config: Path  # the live nginx.conf, which fleetctl renders
    template: Path
    address: str
    port: int
    process: subprocess.Popen[bytes]

    def traffic(self, balancer_host: str, *, port: int | None = 8080, drain: str = "0.5s",
                template: Path | None = None, check: list[str] | None = None) -> dict[str, Any]:
        """The playbook's `traffic:` section for this nginx."""
        return {"kind": "nginx", "host": balancer_host, "config_path": str(self.config),
                "template": str(template or self.template), "port": port, "drain": drain,
                "check_command": check or [NGINX, "-t", "-q", "-c", "{config}"],
                "reload_command": [NGINX, "-c", str(self.config), "-s", "reload"]}


@contextmanager
def running_nginx(directory: Path, address: str, first_config: str) -> Iterator[Nginx]:
    """nginx in the foreground on `address`, started from `first_config` (the rendered template)."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (scripts/bootstrap installs it)")
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(first_config)
    port = int(first_config.split("listen ", 1)[1].split(":")[1].split(";")[0])
    proc = subprocess.Popen([NGINX, "-e", "stderr", "-c", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: listening(address, port) or proc.poll() is not None, 15, "nginx to listen")
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        yield Nginx(directory, config, directory / "nginx.conf.j2", address, port, proc)
    finally:
        stop(proc)


def nginx_template(directory: Path, address: str, port: int) -> Path:
    path = directory / "nginx.conf.j2"
    path.write_text(NGINX_TEMPLATE.format(dir=directory, listen=f"{address}:{port}"))
    return path


HAPROXY_TEMPLATE = """\
global
    stats socket {dir}/admin.sock mode 600 level admin
    pidfile {dir}/haproxy.pid
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    retries 0
frontend fe
    bind {listen}
    default_backend {{{{ backend }}}}
backend {{{{ backend }}}}
{{% for b in backends %}}    server {{{{ b.name }}}} {{{{ b.address }}}}:{{{{ b.port }}}}{{% if b.down %}} disabled{{% endif %}}
{{% endfor %}}"""


@dataclass
class Haproxy:
    directory: Path
    config: Path
    template: Path
    socket: Path
    address: str
    port: int
    process: subprocess.Popen[bytes]

    def traffic(self, balancer_host: str, *, port: int | None = 8080, drain_timeout: str = "20s") -> dict[str, Any]:
        return {"kind": "haproxy", "host": balancer_host, "config_path": str(self.config),
                "template": str(self.template), "port": port, "admin_socket": str(self.socket),
                "drain_timeout": drain_timeout, "check_command": [HAPROXY, "-c", "-q", "-f", "{config}"]}


def haproxy_template(directory: Path, address: str, port: int) -> Path:
    path = directory / "haproxy.cfg.j2"
    path.write_text(HAPROXY_TEMPLATE.format(dir=directory, listen=f"{address}:{port}"))
    return path


@contextmanager
def running_haproxy(directory: Path, address: str, first_config: str) -> Iterator[Haproxy]:
    if not Path(HAPROXY).exists() or shutil.which("socat") is None:
        pytest.skip("haproxy and socat are not installed (scripts/bootstrap installs them)")
    config = directory / "haproxy.cfg"
    config.write_text(first_config)
    port = int(first_config.split("bind ", 1)[1].split(":")[1].split()[0])
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (listening(address, port) and (directory / "admin.sock").exists()) or
                 proc.poll() is not None, 15, "haproxy to listen")
        if proc.poll() is not None:
            raise AssertionError(f"haproxy exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        yield Haproxy(directory, config, directory / "haproxy.cfg.j2", directory / "admin.sock", address, port, proc)
    finally:
        stop(proc)
