"""The HTTP layer under pypsrp's WS-Man client for the common case (HTTPS; negotiate, ntlm, kerberos or basic):
one keep-alive TLS connection per host, read and written directly, instead of requests + urllib3 (+ http.client),
which cost about a third of the controller's CPU per WS-Man request (a session merge, a prepared request, a
connection pool, hooks, header objects and the email parser, per request).

What it keeps of pypsrp's own transport (`pypsrp.wsman._TransportHTTP`, still used for the other cases: HTTP with
message encryption, certificate and CredSSP authentication):
- certificate and host name validation as configured: the process's shared context per CA bundle (tls.py), or
  none when the inventory turned validation off;
- Negotiate/NTLM/Kerberos through pyspnego with the same SPN and the TLS channel binding (RFC 5929
  tls-server-end-point: the hash of the server's certificate), and Basic over TLS;
- the same errors for the same failures: `AuthenticationError` for a 401 after authenticating, and
  `WinRMTransportError(code, body)` for another status, whose SOAP fault pypsrp's `WSMan.invoke` turns into a
  `WSManFaultError`; socket and TLS errors as the standard library raises them (error_mapping.py maps all).

The handshake costs one request less than pypsrp's: every token goes out with the message itself, so NTLM costs one
request more than the message (pypsrp sends the message unauthenticated first, to learn the scheme from the 401). Authentication is per
connection (as WinRM does it); a connection the host closed while idle is noticed before it is reused, and a new
one is opened and authenticated. The password is only handed to pyspnego; it is never in an error or a log."""

from __future__ import annotations

import base64
import functools
import http.client
import re
import select
import socket
import ssl
import time
from typing import Any

import spnego
import spnego.channel_bindings
from pypsrp.exceptions import AuthenticationError, WinRMTransportError
from pypsrp.negotiate import HTTPNegotiateAuth
from spnego._ntlm_raw.crypto import is_ntlm_hash, lmowfv1, ntowfv1  # pyspnego's own hash functions

from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.redaction import register_secret
from fleetctl.transport import trace
from fleetctl.transport.tls import shared_context

LEAN_AUTHS = ("negotiate", "ntlm", "kerberos", "basic")
_TOKEN = re.compile(r"(Kerberos|Negotiate|NTLM)\s*([^,]*)", re.IGNORECASE)
_HEADERS = {"Content-Type": "application/soap+xml;charset=UTF-8", "Connection": "Keep-Alive",
            "User-Agent": "fleetctl", "Accept-Encoding": "identity"}


class ConnectTimedOut(TimeoutError):
    """The TCP connection or the TLS handshake did not complete within the connect timeout."""


def lean_applies(settings: ConnectionSettings) -> bool:
    """Whether this host is reached through `LeanTransport` (else pypsrp's own requests-based transport)."""
    return settings.scheme == "https" and settings.auth in LEAN_AUTHS and \
        (settings.auth == "basic" or settings.password is not None or settings.user is None)


def client_context(settings: ConnectionSettings) -> ssl.SSLContext:
    """The TLS context for a host: the shared, verifying one for its CA bundle, or one that checks nothing when
    the inventory turned validation off (`fleet_cert_validation: false`)."""
    if not settings.cert_validation:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    return shared_context(settings.ca_bundle or DEFAULT_CA_BUNDLE_PATH)


class LeanTransport:
    """pypsrp's transport interface (`send(message, timeout=...) -> bytes`, `close()`, `endpoint`) over one
    authenticated keep-alive HTTPS connection."""

    def __init__(self, settings: ConnectionSettings, context: ssl.SSLContext | None = None,
                 host: str | None = None) -> None:
        self.settings = settings
        self.host = host or settings.address  # the inventory name, for -vv lines
        self._tracing = trace.tracing()  # -vv: decided once per transport, not per request
        self.endpoint = settings.endpoint
        self.ssl = True
        self.auth = settings.auth
        self.cert_validation = settings.cert_validation
        self._context = context or client_context(settings)
        self._conn: _Connection | None = None
        self.handshakes = 0  # connections authenticated (one per connection)

    # -- pypsrp's interface -------------------------------------------------------------------------------------

    def send(self, message: bytes, *, retries_on_read_timeout: int = 0,
             timeout: float | tuple[float, float] | None = None) -> bytes:
        read_timeout = _read_timeout(timeout, self.settings.read_timeout)
        attempt = 0
        while True:
            try:
                status, body = self._send_once(message, read_timeout)
                break
            except TimeoutError:
                # As pypsrp: a Receive (the only caller passing retries) is sent again, on a new connection, when
                # its answer did not come in time (a bounced network adapter); the host answers it the same.
                if attempt >= retries_on_read_timeout:
                    raise
                attempt += 1
        if status == 401:
            self.close()
            raise AuthenticationError(f"the host refused the {self.auth} authentication of this connection")
        if status != 200:
            raise WinRMTransportError("http", status, body.decode("utf-8", "replace"))
        return body

    def _send_once(self, message: bytes, read_timeout: float) -> tuple[int, bytes]:
        conn = self._conn if self._conn is not None and self._conn.sock is not None and \
            not _dropped(self._conn.sock) else None
        if conn is None:
            return self._connect_with(message, read_timeout)
        headers = dict(_HEADERS)
        if self.auth == "basic":
            headers["Authorization"] = self._basic_header()
        status, _, body = self._exchange(conn, message, headers, read_timeout)
        return status, body

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- the connection -----------------------------------------------------------------------------------------

    def _connect_with(self, message: bytes, read_timeout: float) -> tuple[int, bytes]:
        """A new connection, authenticated by the exchange that carries `message`: every token goes out with the
        message, and the answer that is not a 401 is the message's (NTLM: the second request; Kerberos and Basic:
        the first). Its (status, body)."""
        self.close()
        s = self.settings
        started = time.monotonic()
        try:
            conn = _Connection.open(s.address, s.port, self._context, s.connect_timeout,
                                    server_hostname=s.address if self._context.check_hostname else None)
        except BaseException as err:
            trace.connected(self.host, f"{s.address}:{s.port}", time.monotonic() - started, True, err)  # -vv
            raise
        trace.connected(self.host, f"{s.address}:{s.port}", time.monotonic() - started, True)  # -vv
        try:
            status, body = self._authenticate(conn, message, read_timeout)
        except BaseException:
            conn.close()
            raise
        if status != 401 and conn.sock is not None:
            self._conn = conn
            self.handshakes += 1
        else:
            conn.close()
        return status, body

    def _authenticate(self, conn: _Connection, message: bytes,
                      read_timeout: float) -> tuple[int, bytes]:
        """Negotiate/NTLM/Kerberos (bound to the TLS channel) or Basic on this connection, each token sent with
        `message`; the (status, body) of the first answer that is not a step of the handshake."""
        if self.auth == "basic":
            status, _, body = self._exchange(conn, message, {**_HEADERS, "Authorization": self._basic_header()},
                                             read_timeout)
            return status, body
        assert conn.sock is not None
        s = self.settings
        peer = conn.sock.getpeercert(True)
        bindings = None
        if peer:
            bindings = spnego.channel_bindings.GssChannelBindings(
                application_data=b"tls-server-end-point:" + HTTPNegotiateAuth._get_certificate_hash(peer))
        username, password = _credentials(s.user, s.password, self.auth)
        context = spnego.client(username, password, hostname=s.address, service="host", channel_bindings=bindings,
                                protocol=self.auth)
        token = context.step()
        while True:
            if token is None:
                raise AuthenticationError(f"{self.auth} authentication did not complete")
            headers = {**_HEADERS, "Authorization": f"Negotiate {base64.b64encode(token).decode('ascii')}"}
            status, reply, body = self._exchange(conn, message, headers, read_timeout)
            in_token = _auth_token(reply.get("www-authenticate", ""))
            if status != 401:
                if in_token and not context.complete:
                    context.step(in_token)  # Kerberos mutual authentication
                return status, body
            if not in_token or context.complete:
                return status, body  # refused: wrong credentials, or a channel binding that does not match
            token = context.step(in_token)

    def _basic_header(self) -> str:
        s = self.settings
        pair = f"{s.user or ''}:{s.password or ''}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")

    def _exchange(self, conn: _Connection, body: bytes, headers: dict[str, str],
                  read_timeout: float) -> tuple[int, dict[str, str], bytes]:
        """One request and its whole answer: (status, lower-cased headers, body); with -vv, a line for it (the
        action, status and sizes: trace.py)."""
        if not self._tracing:
            return conn.exchange(body, headers, read_timeout)
        started = time.monotonic()
        try:
            status, answer_headers, data = conn.exchange(body, headers, read_timeout)
        except BaseException as err:
            trace.round_trip(self.host, trace.action_of(body), f"failed ({type(err).__name__})",
                             time.monotonic() - started, len(body))
            raise
        trace.round_trip(self.host, trace.action_of(body), f"HTTP {status}", time.monotonic() - started, len(body),
                         len(data), trace.auth_note(status, answer_headers.get("www-authenticate", "")))
        return status, answer_headers, data


class _Connection:
    """One TLS connection speaking just the HTTP/1.1 WinRM needs: a POST with a Content-Length body, and an
    answer with a Content-Length or chunked body, read with a buffered reader (no header objects, no email
    parser: http.client's per-request cost was a tenth of the controller's CPU). Malformed answers raise the
    standard library's http.client exceptions (error_mapping.py maps them); a half-done exchange closes it."""

    MAX_LINE = 65536
    MAX_HEADERS = 100

    def __init__(self, sock: ssl.SSLSocket, host_header: str) -> None:
        self.sock: ssl.SSLSocket | None = sock
        self._reader = sock.makefile("rb")
        self._head = f"POST /wsman HTTP/1.1\r\nHost: {host_header}\r\n"

    @classmethod
    def open(cls, address: str, port: int, context: ssl.SSLContext, connect_timeout: float,
             server_hostname: str | None) -> _Connection:
        """Connect and complete the TLS handshake within `connect_timeout` (ConnectTimedOut otherwise)."""
        try:
            raw = socket.create_connection((address, port), timeout=connect_timeout)
        except TimeoutError as err:
            raise ConnectTimedOut(f"no connection within {connect_timeout:g}s") from err
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock = context.wrap_socket(raw, server_hostname=server_hostname)
        except TimeoutError as err:
            raw.close()
            raise ConnectTimedOut(f"no TLS handshake within {connect_timeout:g}s") from err
        except BaseException:
            raw.close()
            raise
        host = f"[{address}]" if ":" in address else address
        return cls(sock, f"{host}:{port}")

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            self._reader.close()
            sock.close()

    def exchange(self, body: bytes, headers: dict[str, str], read_timeout: float) -> tuple[int, dict[str, str], bytes]:
        sock = self.sock
        if sock is None:
            raise http.client.NotConnected("the connection is closed")
        head = self._head + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
        try:
            sock.settimeout(read_timeout)
            sock.sendall(request)
            status, answer_headers, data = self._read_answer()
        except BaseException:
            self.close()  # a half-sent or half-read exchange leaves the connection unusable
            raise
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return status, answer_headers, data

    def _line(self) -> bytes:
        line = self._reader.readline(self.MAX_LINE + 1)
        if len(line) > self.MAX_LINE:
            raise http.client.LineTooLong("header line")
        return line

    def _read_answer(self) -> tuple[int, dict[str, str], bytes]:
        line = self._line()
        if not line:
            raise http.client.RemoteDisconnected("the host closed the connection without an answer")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise http.client.BadStatusLine(line[:80].decode("latin-1", "replace").strip() or "(empty)")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for _ in range(self.MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                break
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise http.client.BadStatusLine(f"not a header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise http.client.HTTPException(f"more than {self.MAX_HEADERS} headers")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, headers, self._read_chunked()
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise http.client.BadStatusLine(f"Content-Length {length_text[:40]!r}")
        length = int(length_text)
        data = self._reader.read(length)
        if len(data) < length:
            raise http.client.IncompleteRead(data, length - len(data))
        return status, headers, data

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise http.client.IncompleteRead(b"".join(chunks)) from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunk = self._reader.read(size)
            if len(chunk) < size:
                raise http.client.IncompleteRead(b"".join(chunks) + chunk, size - len(chunk))
            chunks.append(chunk)
            self._line()


def _dropped(sock: socket.socket) -> bool:
    """An idle keep-alive connection the host has closed (or sent something unasked on): not reusable."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _credentials(user: str | None, password: str | None, auth: str) -> tuple[Any, str | None]:
    """pyspnego's (username, password): for NTLM (and Negotiate, which may fall back to it) the password's NTLM
    hashes, computed once per process, go ahead of the password itself (which Kerberos needs). pyspnego derives
    them for every context, and the LM hash alone (DES in pure Python) was ~0.7 ms of controller CPU per host."""
    if user is None or password is None or auth not in ("ntlm", "negotiate") or is_ntlm_hash(password):
        return user, password  # (a password written as LMHASH:NTHASH is taken as the hashes by pyspnego itself)
    lm, nt = _ntlm_hashes(password)
    return [spnego.NTLMHash(user, lm_hash=lm, nt_hash=nt), spnego.Password(user, password)], None


@functools.lru_cache(maxsize=32)
def _ntlm_hashes(password: str) -> tuple[str, str]:
    lm, nt = lmowfv1(password).hex(), ntowfv1(password).hex()
    register_secret(lm)  # as good as the password to NTLM: masked wherever the password would be
    register_secret(nt)
    return lm, nt


def _auth_token(header: str) -> bytes | None:
    match = _TOKEN.search(header)
    if not match or not match.group(2).strip():
        return None
    try:
        return base64.b64decode(match.group(2).strip())
    except ValueError:
        return None


def _read_timeout(timeout: Any, default: float) -> float:
    if isinstance(timeout, tuple):
        return float(timeout[1])
    return float(timeout) if timeout else float(default)
