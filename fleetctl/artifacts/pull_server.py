"""The controller's artifact pull server: a threaded HTTPS server that serves only the artifacts it was given,
by sha256, to clients presenting the per-deploy bearer token (registered as a secret, never shown).

TLS by default: unless given a certificate, each server makes its own throwaway CA and a certificate for the
addresses it binds and advertises; nodes pin that CA (`ca_pem`, sent as CaCertificate), so the token never crosses
the network in clear and no other certificate is trusted. The CA's key lives only in memory during construction,
so nothing can issue another certificate the nodes would accept. Plain HTTP only when asked for (`plain_http`).

Bounded: one thread waits on every accepted connection until it sends its first bytes (closing those that stay
silent for `idle_timeout`), and only then hands it to a pool of at most `workers` threads; at most
`max_connections` are open at once (more are closed at accept). Each connection serves one request. So idle or
hostile clients cost sockets, never threads, and cannot keep the nodes' downloads waiting.
"""

from __future__ import annotations

import hmac
import os
import secrets
import selectors
import shutil
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from fleetctl import pki
from fleetctl.config.redaction import register_secret

_COPY_BUFFER = 1024 * 1024
_HANDSHAKE_TIMEOUT = 10.0  # seconds a connection that has started talking may take for its TLS handshake
_REQUEST_TIMEOUT = 10.0  # ... and then to send its request line and headers
_IO_TIMEOUT = 300.0  # per write of the body: a vanished node must not hold a thread and a socket forever
IDLE_TIMEOUT = 10.0  # a connection that sends nothing for this long is closed without costing a thread
WORKERS = 16  # threads serving requests (a node downloads its artifact once: this is plenty for 1000 nodes)
MAX_CONNECTIONS = 512  # open at once, idle ones included


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


class _TlsServer(HTTPServer):
    """An HTTP server that, given `tls`, does each TLS handshake in the worker that serves the connection (in the
    accept loop one slow or silent client would stall every other node's download). `PullServer` runs its loop."""

    tls: ssl.SSLContext | None = None
    # listen() backlog: socketserver's 5 makes a burst of node connections wait for SYN retransmits (1 s each).
    request_queue_size = 128
    request_timeout = _REQUEST_TIMEOUT

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            request.settimeout(self.request_timeout)
            super().finish_request(request, client_address)
            return
        request.settimeout(min(_HANDSHAKE_TIMEOUT, self.request_timeout))
        try:
            secured = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            # A client that does not trust our CA (or is no TLS client) hangs up: nothing to serve, nothing to log.
            return
        try:
            secured.settimeout(self.request_timeout)
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
        workers: int = WORKERS,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        request_timeout: float = _REQUEST_TIMEOUT,
    ) -> None:
        """`advertise` is the host name or address put in URLs (default: the bound address). With `certfile`
        and `keyfile` it presents that certificate and `ca_pem` (the PEM of the CA that signed it) is given to the
        nodes; without them it issues its own from a per-server CA; `plain_http` turns TLS off (tests, benches).
        `workers`, `max_connections`, `idle_timeout` and `request_timeout` (for the TLS handshake and the request
        headers once a client has started talking) bound what clients can hold (see the module docstring)."""
        if workers < 1 or max_connections < 1 or idle_timeout <= 0 or request_timeout <= 0:
            raise ValueError("workers and max_connections must be at least 1, the timeouts positive")
        self.token = secrets.token_urlsafe(32)
        register_secret(self.token)
        self._artifacts: dict[str, Path] = {}
        self._lock = threading.Lock()
        self.requests_served = 0
        self.ca_pem = ca_pem
        self.workers = workers
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.connections_refused = 0  # closed at accept because max_connections were open
        self.connections_timed_out = 0  # closed after idle_timeout without a byte
        self._open = 0  # accepted and not yet closed
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._pool: ThreadPoolExecutor | None = None
        self._httpd = _TlsServer((bind, port), self._handler_class())
        self._httpd.request_timeout = request_timeout
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
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fleetctl-pull-worker")
            self._thread = threading.Thread(target=self._accept_loop, name="fleetctl-pull-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        if self._pool is not None:
            # Running downloads finish (each is bounded by its timeouts); queued ones are dropped.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._httpd.server_close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    def _accept_loop(self) -> None:
        """Accept, wait for each connection's first bytes without a thread, hand it to the pool."""
        listener = self._httpd.socket
        listener.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, "accept")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        waiting: dict[socket.socket, tuple[float, Any]] = {}  # connection -> (deadline, client address)
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                timeout = min((d for d, _ in waiting.values()), default=now + 1.0) - now
                for key, _ in selector.select(max(0.0, min(timeout, 1.0))):
                    if key.data == "wake":
                        os.read(self._wake_r, 64)
                    elif key.data == "accept":
                        self._accept(listener, selector, waiting)
                    else:
                        conn = key.fileobj
                        assert isinstance(conn, socket.socket)
                        selector.unregister(conn)
                        _, address = waiting.pop(conn)
                        conn.setblocking(True)
                        self._dispatch(conn, address)
                now = time.monotonic()
                for conn in [c for c, (deadline, _) in waiting.items() if deadline <= now]:
                    selector.unregister(conn)
                    del waiting[conn]
                    with self._lock:
                        self.connections_timed_out += 1
                    self._close(conn)
        finally:
            for conn in waiting:
                self._close(conn)
            selector.close()

    def _accept(self, listener: socket.socket, selector: selectors.BaseSelector,
                waiting: dict[socket.socket, tuple[float, Any]]) -> None:
        while True:
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE: the client will retry; the loop must go on
            with self._lock:
                full = self._open >= self.max_connections
                if full:
                    self.connections_refused += 1
                else:
                    self._open += 1
            if full:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            waiting[conn] = (time.monotonic() + self.idle_timeout, address)
            selector.register(conn, selectors.EVENT_READ, "client")

    def _dispatch(self, conn: socket.socket, address: Any) -> None:
        pool = self._pool
        if pool is None:
            self._close(conn)
            return

        def serve() -> None:
            try:
                self._httpd.finish_request(conn, address)
            except Exception:  # noqa: BLE001, S110 - one client's broken connection is its own business
                pass
            finally:
                self._close(conn)

        try:
            pool.submit(serve)
        except RuntimeError:  # shut down meanwhile
            self._close(conn)

    def _close(self, conn: socket.socket) -> None:
        try:
            conn.close()
        finally:
            with self._lock:
                self._open -= 1

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
                # One request per connection: a kept-alive connection would hold a worker while it idles.
                self.close_connection = True
                self.connection.settimeout(_IO_TIMEOUT)
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
                self.send_header("Connection", "close")
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
                self.send_header("Connection", "close")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                # Quiet: request lines would clutter the deploy view (and never carry the token anyway).
                return

        return Handler
