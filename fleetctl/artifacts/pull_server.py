"""The controller's artifact pull server: a threaded HTTPS server that serves only the artifacts it was given,
by sha256, to clients presenting the per-deploy bearer token (registered as a secret, never shown).

TLS by default: unless given a certificate, each server makes its own throwaway CA and a certificate for the
addresses it binds and advertises; nodes pin that CA (`ca_pem`, sent as CaCertificate), so the token never crosses
the network in clear and no other certificate is trusted. The CA's key lives only in memory during construction,
so nothing can issue another certificate the nodes would accept. Plain HTTP only when asked for (`plain_http`).
"""

from __future__ import annotations

import hmac
import secrets
import shutil
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from fleetctl import pki
from fleetctl.config.redaction import register_secret

_COPY_BUFFER = 1024 * 1024
_HANDSHAKE_TIMEOUT = 30.0  # seconds a connection may take to complete its TLS handshake
_IO_TIMEOUT = 300.0  # then per read/write: a vanished node must not hold a thread and a socket forever


def address_facing(target: str, port: int = 5986) -> str:
    """The local address this machine uses to reach `target`: what to bind so that the nodes can reach us.

    Uses a UDP "connect", which only consults the routing table and sends nothing.
    """
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((target, port))
        return str(probe.getsockname()[0])


def pull_server_for(node_addresses: list[str], *, bind: str | None = None, port: int = 0,
                    certfile: str | Path | None = None, keyfile: str | Path | None = None,
                    ca_pem: str | None = None, plain_http: bool = False) -> PullServer:
    """A (not yet started) pull server bound to `bind`, else to the local address routed towards the first
    node: the address the nodes can reach us on when they share a network with the controller."""
    if bind is None:
        if not node_addresses:
            raise ValueError("no node address to find a reachable local address for")
        bind = address_facing(socket.gethostbyname(node_addresses[0]))
    return PullServer(bind, port, certfile=certfile, keyfile=keyfile, ca_pem=ca_pem, plain_http=plain_http)


class _TlsThreadingServer(ThreadingHTTPServer):
    """A threaded HTTP server that, given `tls`, does each TLS handshake in that connection's own thread.

    (Wrapping the listening socket instead would handshake in the accept loop: one slow or silent client would
    stall every other node's download.)
    """

    tls: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_HANDSHAKE_TIMEOUT)
        try:
            secured = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            # A client that does not trust our CA (or is no TLS client) hangs up: nothing to serve, nothing to log.
            return
        try:
            secured.settimeout(_IO_TIMEOUT)
            super().finish_request(secured, client_address)
        finally:
            secured.close()


class PullServer:
    """Serves `GET /artifacts/<sha256>` with `Authorization: Bearer <token>` until `stop()`."""

    def __init__(
        self,
        bind: str = "127.0.0.1",
        port: int = 0,
        *,
        advertise: str | None = None,
        certfile: str | Path | None = None,
        keyfile: str | Path | None = None,
        ca_pem: str | None = None,
        plain_http: bool = False,
    ) -> None:
        """`advertise` is the host name or address put in URLs (default: the bound address). With `certfile`
        and `keyfile` it presents that certificate and `ca_pem` (the PEM of the CA that signed it) is given to the
        nodes; without them it issues its own from a per-server CA; `plain_http` turns TLS off (tests, benches)."""
        self.token = secrets.token_urlsafe(32)
        register_secret(self.token)
        self._artifacts: dict[str, Path] = {}
        self._lock = threading.Lock()
        self.requests_served = 0
        self.ca_pem = ca_pem
        self._httpd = _TlsThreadingServer((bind, port), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.advertise = advertise or str(self._httpd.server_address[0])
        self.scheme = "http"
        try:
            context = self._tls_context(bind, certfile, keyfile, plain_http)
        except BaseException:
            self._httpd.server_close()
            raise
        if context is not None:
            self._httpd.tls = context
            self.scheme = "https"
        self._thread: threading.Thread | None = None

    def _tls_context(self, bind: str, certfile: str | Path | None, keyfile: str | Path | None,
                     plain_http: bool) -> ssl.SSLContext | None:
        if certfile and keyfile:
            return pki.server_ssl_context(Path(certfile), Path(keyfile))
        if plain_http:
            return None
        # A wildcard bind is no name a client connects to; the advertised name is what the URLs carry.
        names = [n for n in (self.advertise, str(self._httpd.server_address[0]), bind)
                 if n and n not in ("0.0.0.0", "::")]
        authority = pki.new_ca("fleetctl pull server CA", "fleetctl deploy")
        self.ca_pem = authority.cert_pem.decode("ascii")
        return pki.server_ssl_context_for(pki.issue_server_cert(authority, names))

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="fleetctl-pull-server",
                                            kwargs={"poll_interval": 0.2}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- content ------------------------------------------------------------------------------------------------

    def add(self, path: str | Path, sha256: str) -> None:
        """Serve `path` under its sha256 (the node verifies the bytes; we only choose which file to send)."""
        with self._lock:
            self._artifacts[sha256.lower()] = Path(path)

    def url_for(self, sha256: str) -> str:
        host = f"[{self.advertise}]" if ":" in self.advertise else self.advertise
        return f"{self.scheme}://{host}:{self.port}/artifacts/{sha256.lower()}"

    def _lookup(self, sha256: str) -> Path | None:
        with self._lock:
            return self._artifacts.get(sha256.lower())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "fleetctl-pull"

            def do_GET(self) -> None:
                self._serve(send_body=True)

            def do_HEAD(self) -> None:
                self._serve(send_body=False)

            def _serve(self, send_body: bool) -> None:
                supplied = self.headers.get("Authorization", "")
                expected = f"Bearer {server.token}"
                # Constant-time compare: the token is the only thing protecting the artifact.
                if not hmac.compare_digest(supplied.encode(), expected.encode()):
                    self._empty(401, {"WWW-Authenticate": "Bearer"})
                    return
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                path = server._lookup(parts[1]) if len(parts) == 2 and parts[0] == "artifacts" else None
                if path is None or not path.is_file():
                    self._empty(404, {})
                    return
                size = path.stat().st_size
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if send_body:
                    with path.open("rb") as source:
                        shutil.copyfileobj(source, self.wfile, _COPY_BUFFER)
                    with server._lock:
                        server.requests_served += 1

            def _empty(self, status: int, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                # Quiet: request lines would clutter the deploy view (and never carry the token anyway).
                return

        return Handler
