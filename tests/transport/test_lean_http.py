"""The lean HTTP layer under pypsrp (fleetctl/transport/lean_http.py) against scripted HTTPS servers on loopback:
answers, faults, garbled and truncated answers, refused authentication, keep-alive reuse and reconnection, each
failure ending as the typed error the rest of fleetctl expects, with no secret in it. The NTLM handshake itself
runs against real lab nodes in tests/transport/test_tls.py, test_winrm_idle.py and the lab rollout tests."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pypsrp.wsman import WSMan

from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.redaction import register_secret
from fleetctl.lab.certs import server_ssl_context
from fleetctl.protocol.errors import (
    AuthenticationFailed,
    CertificateError,
    HostTimeout,
    ProtocolError,
    ShellNotFound,
)
from fleetctl.transport import lean_http
from fleetctl.transport.error_mapping import map_exception
from fleetctl.transport.lean_http import LeanTransport, lean_applies

pytestmark = pytest.mark.lab
PASSWORD = "Lean:Secret-pw9!"

# (status, headers, body) for one request; or raw bytes to send as they are, then close
Answer = tuple[int, dict[str, str], bytes] | bytes
Script = Callable[[dict[str, str], bytes], Answer]

FAULT = b"""<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"
 xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"><s:Body><s:Fault>
<s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason><s:Text xml:lang="">The shell was not found.</s:Text></s:Reason>
<s:Detail><f:WSManFault Code="2150858843" Machine="x"><f:Message>The request for the Windows Remote Shell with
ShellId X failed because the shell was not found on the server.</f:Message></f:WSManFault></s:Detail>
</s:Fault></s:Body></s:Envelope>"""


class ScriptedServer:
    """An HTTPS server answering each request with `script(headers, body)`; counts connections and requests."""

    def __init__(self, address: str, context: ssl.SSLContext, script: Script) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.context, self.script = context, script
        self.connections = 0
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.open: list[ssl.SSLSocket] = []
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self.open.append(conn)
        reader = conn.makefile("rb")
        try:
            while True:
                line = reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", "0")))
                self.requests.append((headers, body))
                answer = self.script(headers, body)
                if isinstance(answer, bytes):
                    conn.sendall(answer)
                    return
                status, extra, content = answer
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(content)}\r\n" + \
                    "".join(f"{k}: {v}\r\n" for k, v in extra.items())
                conn.sendall(head.encode() + b"\r\n" + content)
        except OSError:
            return
        finally:
            conn.close()

    def drop_connections(self) -> None:
        """Close every open connection from the server side (as a host does with idle keep-alive ones)."""
        for conn in self.open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.open.clear()

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()
        self.drop_connections()


@pytest.fixture
def serve(tls_files: Any) -> Iterator[Callable[..., tuple[ScriptedServer, ConnectionSettings]]]:
    """serve(script, auth="basic", **hostvars) -> (server, settings reaching it and trusting its CA)."""
    server_tls, ca, _ = tls_files
    made: list[ScriptedServer] = []

    def make(script: Script, auth: str = "basic", **hostvars: Any) -> tuple[ScriptedServer, ConnectionSettings]:
        server = ScriptedServer(_address(), server_ssl_context(server_tls), script)
        made.append(server)
        settings = ConnectionSettings.from_hostvars("h1", {
            "fleet_host": _address(), "fleet_port": server.port, "fleet_auth": auth, "fleet_user": "fleet",
            "fleet_password": PASSWORD, "fleet_ca_bundle": str(ca.cert), "fleet_connect_timeout": 2,
            "fleet_operation_timeout": 2, **hostvars})
        register_secret(PASSWORD)
        return server, settings

    yield make
    for server in made:
        server.close()


def _address() -> str:
    # tls_files' server certificate is issued for FLEETCTL_TEST_NET's .11 (tests/transport/conftest.py)
    return f"{os.environ.get('FLEETCTL_TEST_NET', '127.0.30')}.11"


def ok(body: bytes = b"<answer/>") -> Script:
    return lambda headers, request: (200, {}, body)


def mapped(exc: BaseException, settings: ConnectionSettings) -> Exception:
    return map_exception(exc, settings)


def test_basic_answers_over_one_kept_connection_with_the_header_on_each(serve: Any) -> None:
    server, settings = serve(ok(b"<a>1</a>"))
    transport = LeanTransport(settings)
    try:
        assert transport.send(b"<m>1</m>") == b"<a>1</a>"
        assert transport.send(b"<m>2</m>") == b"<a>1</a>"
    finally:
        transport.close()
    assert server.connections == 1
    assert [body for _, body in server.requests] == [b"<m>1</m>", b"<m>2</m>"]
    headers = server.requests[1][0]
    assert headers["authorization"].startswith("Basic ") and headers["connection"].lower() == "keep-alive"
    assert headers["content-type"] == "application/soap+xml;charset=UTF-8"


def test_a_connection_the_host_closed_while_idle_is_replaced(serve: Any) -> None:
    server, settings = serve(ok())
    transport = LeanTransport(settings)
    try:
        transport.send(b"<m/>")
        server.drop_connections()
        assert transport.send(b"<m/>") == b"<answer/>"  # noticed before reuse: a new connection, not an error
    finally:
        transport.close()
    assert server.connections == 2


def test_a_wsman_fault_becomes_the_typed_error(serve: Any) -> None:
    _, settings = serve(lambda headers, body: (500, {"Content-Type": "application/soap+xml"}, FAULT))
    wsman = WSMan(settings.address, port=settings.port, username="fleet", password=PASSWORD, ssl=True,
                  auth="basic", cert_validation=str(settings.ca_bundle))
    wsman.transport = LeanTransport(settings)  # type: ignore[assignment]
    with pytest.raises(Exception) as caught:
        wsman.invoke("http://schemas.xmlsoap.org/ws/2004/09/transfer/Get", "http://x/y", None)
    error = mapped(caught.value, settings)
    assert isinstance(error, ShellNotFound)
    wsman.close()


def test_another_status_without_a_fault_is_a_transport_error_naming_it(serve: Any) -> None:
    _, settings = serve(lambda headers, body: (503, {}, b"busy"))
    transport = LeanTransport(settings)
    with pytest.raises(Exception) as caught:
        transport.send(b"<m/>")
    error = mapped(caught.value, settings)
    assert "HTTP 503" in str(error) and error.transient


@pytest.mark.parametrize(("raw", "named"), [
    (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "BadStatusLine"),  # not HTTP at all
    (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<s:Envelope", "IncompleteRead"),  # cut short
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "BadStatusLine"),  # a length that is not one
])
def test_a_garbled_or_truncated_answer_is_a_protocol_error(serve: Any, raw: bytes, named: str) -> None:
    _, settings = serve(lambda headers, body: raw)
    transport = LeanTransport(settings)
    with pytest.raises(Exception) as caught:
        transport.send(b"<m/>")
    error = mapped(caught.value, settings)
    assert isinstance(error, ProtocolError) and "garbled HTTP answer" in str(error) and named in str(error)
    assert transport._conn is None  # a half-read connection is never reused


@pytest.mark.parametrize("auth", ["basic", "ntlm"])
def test_refused_authentication_names_the_variables_never_the_password(serve: Any, auth: str) -> None:
    offer = {"WWW-Authenticate": "Basic realm=\"x\"" if auth == "basic" else "Negotiate"}
    server, settings = serve(lambda headers, body: (401, offer, b""), auth=auth)
    transport = LeanTransport(settings)
    with pytest.raises(Exception) as caught:
        transport.send(b"<m/>")
    error = mapped(caught.value, settings)
    assert isinstance(error, AuthenticationFailed)
    assert "fleet_password" in str(error) and PASSWORD not in str(error) and PASSWORD not in repr(caught.value)
    if auth == "ntlm":  # the first NTLM token went out with the message itself
        assert server.requests[0][0]["authorization"].startswith("Negotiate ")
        assert server.requests[0][1] == b"<m/>"


def test_a_certificate_from_another_ca_is_refused(serve: Any, tls_files: Any) -> None:
    _, _, other_ca = tls_files
    server, settings = serve(ok(), fleet_ca_bundle=str(other_ca))
    transport = LeanTransport(settings)
    with pytest.raises(Exception) as caught:
        transport.send(b"<m/>")
    assert isinstance(mapped(caught.value, settings), CertificateError)
    assert server.requests == []


def test_a_host_that_accepts_but_never_handshakes_is_a_connect_timeout(listener: Any) -> None:
    endpoint = listener("silent", 12)
    settings = ConnectionSettings.from_hostvars("h2", {
        "fleet_host": endpoint.address, "fleet_port": endpoint.port, "fleet_auth": "basic", "fleet_user": "u",
        "fleet_password": PASSWORD, "fleet_connect_timeout": 0.3})
    with pytest.raises(Exception) as caught:
        LeanTransport(settings).send(b"<m/>")
    error = mapped(caught.value, settings)
    assert isinstance(error, HostTimeout) and "connecting" in str(error)


def test_which_hosts_take_the_lean_layer() -> None:
    def settings(**hostvars: Any) -> ConnectionSettings:
        return ConnectionSettings.from_hostvars("h", {"fleet_host": "10.0.0.1", "fleet_user": "u",
                                                      "fleet_password": "p", **hostvars})

    assert lean_applies(settings(fleet_auth="ntlm"))
    assert lean_applies(settings(fleet_auth="negotiate"))
    assert lean_applies(settings(fleet_auth="basic"))
    assert not lean_applies(settings(fleet_auth="ntlm", fleet_scheme="http"))  # message encryption: pypsrp's
    assert not lean_applies(settings(fleet_auth="credssp"))
    assert lean_http.LEAN_AUTHS == ("negotiate", "ntlm", "kerberos", "basic")


def test_a_chunked_answer_is_read_whole(serve: Any) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n<a>1\r\n5\r\n</a>x\r\n0\r\n\r\n"
    server, settings = serve(lambda headers, body: chunked if len(server.requests) > 1 else (200, {}, b"<x/>"))
    transport = LeanTransport(settings)
    try:
        transport.send(b"<m/>")  # a first answer keeps the connection; the scripted raw one then closes it
        assert transport.send(b"<m/>") == b"<a>1</a>x"
    finally:
        transport.close()


def test_an_answer_saying_connection_close_is_not_reused(serve: Any) -> None:
    server, settings = serve(lambda headers, body: (200, {"Connection": "close"}, b"<a/>"))
    transport = LeanTransport(settings)
    try:
        transport.send(b"<m/>")
        transport.send(b"<m/>")
    finally:
        transport.close()
    assert server.connections == 2


def test_a_receive_whose_answer_is_late_is_sent_again_on_a_new_connection(serve: Any) -> None:
    delays = [1.0]  # the host answers the next request only after the client's read timeout

    def script(headers: dict[str, str], body: bytes) -> Answer:
        if delays:
            threading.Event().wait(delays.pop())  # a slow host, not a wait of the test's
        return 200, {}, b"<late/>"

    server, settings = serve(script)
    transport = LeanTransport(settings)
    try:
        assert transport.send(b"<receive/>", timeout=0.3, retries_on_read_timeout=1) == b"<late/>"
        assert server.connections == 2
        delays.append(1.0)
        with pytest.raises(TimeoutError):  # without retries (every call but Receive) the timeout is raised
            transport.send(b"<command/>", timeout=0.3)
    finally:
        transport.close()


def test_ntlm_hashes_are_derived_once_per_password_and_never_shown() -> None:
    """pyspnego would derive the LM and NT hashes for every connection (the LM hash in pure-Python DES): they are
    computed once per password and handed over ahead of the password, which Kerberos still gets."""
    import spnego
    from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

    from fleetctl.config.redaction import redact

    lean_http._ntlm_hashes.cache_clear()
    first, none = lean_http._credentials("ops@corp", "Hunter2-once-only", "negotiate")
    again, _ = lean_http._credentials("ops@corp", "Hunter2-once-only", "ntlm")
    assert none is None and lean_http._ntlm_hashes.cache_info().hits == 1
    ntlm_hash, password = first
    assert isinstance(ntlm_hash, spnego.NTLMHash) and isinstance(password, spnego.Password)
    assert (ntlm_hash.lm_hash, ntlm_hash.nt_hash) == (lmowfv1("Hunter2-once-only").hex(),
                                                      ntowfv1("Hunter2-once-only").hex())
    assert password.password == "Hunter2-once-only" and again == first
    assert ntlm_hash.nt_hash not in redact(f"leaked {ntlm_hash.nt_hash}")
    # Kerberos, Basic and a password pyspnego itself reads as LMHASH:NTHASH are passed on as given.
    assert lean_http._credentials("ops@corp", "pw", "kerberos") == ("ops@corp", "pw")
    hashes = f"{'a' * 32}:{'b' * 32}"
    assert lean_http._credentials("ops@corp", hashes, "ntlm") == ("ops@corp", hashes)
    # The same NTLM exchange either way: a context from the hashes authenticates like one from the password.
    client = spnego.client(*first, hostname="h", service="host", protocol="ntlm")
    assert client.step() is not None
