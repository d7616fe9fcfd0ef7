"""The lab's WinRM listeners: WS-Management over HTTP(S) for the PowerShell shell resource, on one event loop.

`NodeServer` is one node's listeners (HTTP on `address:http_port`, HTTPS on `address:https_port`), `LabServer`
many of them in one process: one asyncio loop (optionally in a background thread), keep-alive connections with
TCP_NODELAY, the long-poll Receive as an awaited event, and blocking backend calls in the loop's default thread
pool (a fixed set of reused worker threads). Layers, one module each: `httpwire` (HTTP/1.1) -> `auth` (Basic,
NTLM/Negotiate, CBT, encryption) -> `soap` (envelopes) -> this module (shell lifecycle) -> `psrp` (PSRP).

Network faults come from `backend.network_faults()` on every connection and request: blackhole (accept, read,
never answer), latency (sleep before answering), auth_failure (every request gets 401), idle_timeout_s (for
shells created from then on). A shell without requests for its idle timeout (WinRM's IdleTimeout, default
7200 s) is deleted, unless a command runs or a Receive waits in it; requests for it then get Windows' fault
2150858843 ("... the shell was not found on the server ..."). Unreachable is
`set_listening(False)`: listeners closed and open connections dropped, so clients get "connection refused".

API (async methods run on the server's loop; `set_listening` may be called from any thread):
    NodeServer(backend, *, address, http_port=5985, https_port=5986, credentials={user: password}, tls=TlsFiles,
               idle_timeout_s=7200.0)
        await start(); await stop(); set_listening(on); await set_listening_async(on)
        shell_counts() -> {"open", "expired", "unknown"}; await delete_shells()
    LabServer(workers=64)
        add(node); await start_all(); await stop_all()
        start_background() / stop_background()   # the same, on a loop in a daemon thread (sync callers, tests)
        run(coro) -> result                      # run a coroutine on that loop from another thread
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import logging
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fleetctl.config.redaction import redact
from fleetctl.lab import soap
from fleetctl.lab.auth import AuthPolicy, ConnectionAuth, Credentials, EncryptionError
from fleetctl.lab.backend import NodeBackend
from fleetctl.lab.certs import TlsFiles, channel_binding_data, server_ssl_context
from fleetctl.lab.httpwire import HttpError, HttpRequest, format_response, read_request
from fleetctl.lab.layout import DEFAULT_IDLE_TIMEOUT_S
from fleetctl.lab.psrp import RunspaceSession

log = logging.getLogger(__name__)
T = TypeVar("T")

SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
WSMAN_PATH = "/wsman"
# Answer a long-poll Receive this long before the client's OperationTimeout, so the fault arrives in time.
RECEIVE_MARGIN_S = 1.0
# Envelope and XML overhead kept free in a Receive answer, out of the client's MaxEnvelopeSize.
RECEIVE_OVERHEAD = 4096


@dataclass
class _Listener:
    scheme: str  # "http" | "https"
    port: int
    policy: AuthPolicy
    ssl: Any  # ssl.SSLContext | None
    server: asyncio.AbstractServer | None = None


class NodeServer:
    """One simulated node's WinRM listeners."""

    def __init__(self, backend: NodeBackend, *, address: str, http_port: int = 5985, https_port: int = 5986,
                 credentials: Mapping[str, str], tls: TlsFiles | None, enable_http: bool = True,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.backend = backend
        self.address = address
        self.idle_timeout_s = idle_timeout_s
        self.credentials = Credentials(credentials, computer_name=backend.name)
        self.listeners: list[_Listener] = []
        if enable_http:
            self.listeners.append(_Listener("http", http_port, AuthPolicy(
                self.credentials, allow_basic=False, channel_bindings=None, require_encryption=True), None))
        if tls is not None:
            self.listeners.append(_Listener("https", https_port, AuthPolicy(
                self.credentials, allow_basic=True, channel_bindings=channel_binding_data(tls),
                require_encryption=False), server_ssl_context(tls)))
        self.shells: dict[str, RunspaceSession] = {}
        self.shells_expired = 0  # shells deleted by the idle timeout
        self.unknown_shell_requests = 0  # requests for a shell this node does not have (fault 2150858843)
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}
        self._idle_timeouts: dict[str, float] = {}
        self.listening = False
        self.connections_accepted = 0  # TCP connections so far (keep-alive checks, benchmarks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        # The last answer per Receive target: pypsrp re-sends the identical Receive after a read timeout.
        self._last_receive: dict[tuple[str, str | None], tuple[str, bytes]] = {}

    # --- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.set_listening_async(True)

    async def stop(self) -> None:
        await self.set_listening_async(False)
        for session in self.shells.values():
            session.close()
        self.shells.clear()
        for timer in self._idle_timers.values():
            timer.cancel()
        self._idle_timers.clear()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        self.credentials.close()

    def shell_counts(self) -> dict[str, int]:
        return {"open": len(self.shells), "expired": self.shells_expired, "unknown": self.unknown_shell_requests}

    async def delete_shells(self) -> None:
        """Delete every open shell, as a restart of the WinRM service does (connections stay open here)."""
        for session in list(self.shells.values()):
            self._forget_shell(session)

    def set_listening(self, on: bool) -> None:
        """Open or close the listeners (closed = connection refused). Callable from any thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("NodeServer.set_listening before start()")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # On the loop thread we cannot block: closing is immediate, reopening finishes shortly after.
            if not on:
                self._close_listeners()
            else:
                loop.create_task(self.set_listening_async(True))
            return
        asyncio.run_coroutine_threadsafe(self.set_listening_async(on), loop).result(timeout=30)

    async def set_listening_async(self, on: bool) -> None:
        if not on:
            self._close_listeners()
            return
        if self.listening:
            return
        for listener in self.listeners:
            listener.server = await asyncio.start_server(
                functools.partial(self._connection, listener=listener),
                host=self.address, port=listener.port, ssl=listener.ssl, reuse_address=True,
                ssl_handshake_timeout=15 if listener.ssl else None, backlog=128)
        self.listening = True

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            if listener.server is not None:
                listener.server.close()
                listener.server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self.listening = False

    # --- one connection ----------------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                          listener: _Listener) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        self.connections_accepted += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Keep-alive request/response traffic: without this, Nagle + delayed ACK add ~40 ms per request.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        auth = ConnectionAuth(listener.policy)
        try:
            while True:
                faults = self.backend.network_faults()
                if faults.unreachable:
                    break
                if faults.blackhole:
                    await self._swallow(reader)
                    break
                try:
                    request = await read_request(reader)
                except HttpError as err:
                    writer.write(format_response(err.status, [], str(err).encode(), "text/plain", close=True))
                    await writer.drain()
                    break
                if request is None:
                    break
                faults = self.backend.network_faults()
                if faults.blackhole:
                    await self._swallow(reader)
                    break
                if faults.latency_ms > 0:
                    await asyncio.sleep(faults.latency_ms / 1000)
                data = await self._respond(request, auth, listener, faults.auth_failure)
                writer.write(data)
                await writer.drain()
                if not request.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
            pass  # the client went away (or the node was made unreachable)
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        """Blackhole: keep reading and never answer, until the client gives up."""
        while await reader.read(65536):
            pass

    async def _respond(self, request: HttpRequest, auth: ConnectionAuth, listener: _Listener,
                       refuse_auth: bool) -> bytes:
        self.backend.count_request(len(request.body))
        if request.method != "POST":
            return format_response(405, [("Allow", "POST")], b"", close=False)
        if request.path.split("?", 1)[0].rstrip("/").lower() != WSMAN_PATH:
            return format_response(404, [], b"", close=False)
        decision = auth.authorize(request.headers.get("authorization"), refuse=refuse_auth)
        if decision.logon is not None:
            self.backend.count_logon(accepted=decision.logon == "accepted")
        if not decision.ok:
            return format_response(401, decision.headers)
        content_type = request.headers.get("content-type", "")
        encrypted = content_type.lower().startswith("multipart/encrypted")
        if encrypted:
            try:
                body = auth.unwrap_body(content_type, request.body)
            except EncryptionError as err:
                auth.reset()
                log.info("%s: refused an encrypted request: %s", self.backend.name, err)
                return format_response(401, listener.policy.offers())
        elif listener.policy.require_encryption and request.body:
            # Windows' default (AllowUnencrypted=false): plain SOAP over HTTP is refused.
            return format_response(400, [], b"unencrypted WS-Management traffic is not allowed over HTTP; "
                                             b"use HTTPS or message encryption", "text/plain")
        else:
            body = request.body
        if not body:
            # pypsrp's empty request that sets up the context for message encryption.
            return format_response(200, decision.headers)
        status, xml = await self._dispatch(body, listener)
        if encrypted:
            wrapped_type, wrapped = auth.wrap_body(xml)
            return format_response(status, decision.headers, wrapped, wrapped_type)
        return format_response(status, decision.headers, xml, SOAP_CONTENT_TYPE)

    # --- WS-Management -----------------------------------------------------------------------------------------
    async def _dispatch(self, body: bytes, listener: _Listener) -> tuple[int, bytes]:
        relates_to = ""
        try:
            request = soap.parse_request(body)
            relates_to = request.message_id
            if not request.resource_uri.startswith(soap.POWERSHELL_URI_PREFIX):
                raise soap.SoapError(
                    f"the fleetctl lab serves only PowerShell remoting, not {request.resource_uri!r} "
                    "(WinRS cmd shells and WMI need a real Windows host)")
            handler = getattr(self, f"_on_{request.action.lower()}", None)
            if handler is None:
                raise soap.SoapError(f"action {request.action_uri!r} is not supported by the fleetctl lab")
            try:
                return 200, await handler(request, listener)
            finally:
                session = self.shells.get((request.shell_id or "").upper())
                if session is not None:
                    session.touch()  # the idle countdown starts when a request is done
        except soap.SoapError as err:
            return 500, soap.fault(relates_to, err.code, redact(str(err)), machine=self.address)
        except Exception as err:
            log.exception("%s: internal error handling a WS-Management request", self.backend.name)
            return 500, soap.fault(relates_to, soap.FAULT_INTERNAL,
                                   redact(f"lab internal error: {type(err).__name__}: {err}"), machine=self.address)

    def _shell(self, request: soap.WsmanRequest) -> RunspaceSession:
        session = self.shells.get((request.shell_id or "").upper())
        if session is None:
            # Never created, deleted, or deleted by the idle timeout: Windows answers all three alike.
            self.unknown_shell_requests += 1
            raise soap.SoapError(soap.shell_not_found(request.shell_id), soap.FAULT_INVALID_SELECTORS)
        session.touch()
        return session

    # --- WinRM's shell idle timeout ------------------------------------------------------------------------------
    def _idle_timeout_for(self, request: soap.WsmanRequest) -> float:
        """The node's idle timeout (`lab up --idle-timeout`, or the node's idle-timeout fault); a client may ask
        for a shorter one in Create (`rsp:IdleTimeOut`), never a longer one."""
        configured = self.backend.network_faults().idle_timeout_s or self.idle_timeout_s
        asked = request.body.findtext("rsp:Shell/rsp:IdleTimeOut", None, soap.NS)
        requested = soap.parse_duration(asked, 0.0) if asked else 0.0
        return min(configured, requested) if requested > 0 else configured

    def _arm_idle_timer(self, shell_id: str) -> None:
        session = self.shells.get(shell_id)
        if session is None or self._loop is None:
            return
        due = session.last_activity + self._idle_timeouts[shell_id] - time.monotonic()
        self._idle_timers[shell_id] = self._loop.call_later(max(0.05, due), self._idle_check, shell_id)

    def _idle_check(self, shell_id: str) -> None:
        # One timer per shell, re-armed only when it fires: a request costs a timestamp, not a timer.
        self._idle_timers.pop(shell_id, None)
        session = self.shells.get(shell_id)
        if session is None:
            return
        if session.busy:
            session.touch()  # a running command keeps the shell; the countdown restarts when it completes
        if time.monotonic() - session.last_activity < self._idle_timeouts[shell_id] - 0.001:
            self._arm_idle_timer(shell_id)
            return
        log.info("%s: shell %s idle for %.1f s: deleted (WinRM idle timeout)", self.backend.name, shell_id,
                 self._idle_timeouts[shell_id])
        self._forget_shell(session)
        self.shells_expired += 1

    def _forget_shell(self, session: RunspaceSession) -> None:
        session.close()
        self.shells.pop(session.shell_id, None)
        self._idle_timeouts.pop(session.shell_id, None)
        timer = self._idle_timers.pop(session.shell_id, None)
        if timer is not None:
            timer.cancel()
        for key in [k for k in self._last_receive if k[0] == session.shell_id]:
            del self._last_receive[key]

    @staticmethod
    def _b64(text: str | None) -> bytes:
        try:
            return base64.b64decode(text or "", validate=True)
        except binascii.Error:
            raise soap.SoapError("a stream or argument is not base64") from None

    @staticmethod
    def _command_id(text: str | None) -> uuid.UUID:
        try:
            return uuid.UUID(text or "")
        except ValueError:
            raise soap.SoapError(f"CommandId {text!r} is not a GUID") from None

    async def _on_create(self, request: soap.WsmanRequest, listener: _Listener) -> bytes:
        shell = request.body.find("rsp:Shell", soap.NS)
        creation = request.body.find("rsp:Shell/pwsh:creationXml", soap.NS)
        if shell is None or creation is None:
            raise soap.SoapError("Create needs rsp:Shell with a PowerShell creationXml")
        shell_id = (shell.get("ShellId") or str(uuid.uuid4())).upper()
        session = RunspaceSession(shell_id, self.backend)  # backend calls: the loop's default executor
        session.open(self._b64(creation.text))
        self.shells[shell_id] = session
        self._idle_timeouts[shell_id] = idle_timeout = self._idle_timeout_for(request)
        self._arm_idle_timer(shell_id)
        address = f"{listener.scheme}://{self.address}:{listener.port}{WSMAN_PATH}"
        return soap.create_response(request, shell_id, request.resource_uri, address, idle_timeout)

    async def _on_command(self, request: soap.WsmanRequest, listener: _Listener) -> bytes:
        session = self._shell(request)
        line = request.body.find("rsp:CommandLine", soap.NS)
        if line is None:
            raise soap.SoapError("Command needs rsp:CommandLine")
        command_text = line.get("CommandId") or str(uuid.uuid4())
        command_id = self._command_id(command_text)
        session.command(command_id, b"".join(self._b64(a.text) for a in line.findall("rsp:Arguments", soap.NS)))
        return soap.command_response(request, command_text)

    async def _on_send(self, request: soap.WsmanRequest, listener: _Listener) -> bytes:
        session = self._shell(request)
        for stream in request.body.findall("rsp:Send/rsp:Stream", soap.NS):
            command = stream.get("CommandId")
            if command and not session.has_pipeline(self._command_id(command)):
                raise soap.SoapError(f"no command {command!r} in this shell", soap.FAULT_INVALID_SELECTORS)
            session.send(self._b64(stream.text), stream.get("Name", "stdin"))
        return soap.response(request, "<rsp:SendResponse/>")

    async def _on_receive(self, request: soap.WsmanRequest, listener: _Listener) -> bytes:
        session = self._shell(request)
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", soap.NS)
        if desired is None:
            raise soap.SoapError("Receive needs rsp:DesiredStream")
        stream = ((desired.text or "stdout").split() or ["stdout"])[0]
        command_text = desired.get("CommandId")
        command_id = self._command_id(command_text) if command_text else None
        key = (session.shell_id, command_text.upper() if command_text else None)
        last = self._last_receive.get(key)
        if last is not None and last[0] == request.message_id:
            return last[1]
        max_bytes = max(1024, (request.max_envelope_size - RECEIVE_OVERHEAD) * 3 // 4)
        timeout = max(0.2, request.operation_timeout - RECEIVE_MARGIN_S)
        data = await session.receive(command_id, max_bytes, timeout)
        if data is None:
            if session.closed:
                raise soap.SoapError(soap.shell_not_found(session.shell_id), soap.FAULT_INVALID_SELECTORS)
            raise soap.SoapError("The WS-Management service cannot complete the operation within the time "
                                 "specified in OperationTimeout.", soap.FAULT_OPERATION_TIMEOUT)
        done = command_id is not None and session.finished(command_id)
        answer = soap.receive_response(request, stream, command_text, base64.b64encode(data).decode("ascii"),
                                       done)
        self._last_receive[key] = (request.message_id, answer)
        return answer

    async def _on_signal(self, request: soap.WsmanRequest, listener: _Listener) -> bytes:
        session = self._shell(request)
        signal = request.body.find("rsp:Signal", soap.NS)
        if signal is None:
            raise soap.SoapError("Signal needs rsp:Signal")
        command_id = self._command_id(signal.get("CommandId"))
        code = (signal.findtext("rsp:Code", "", soap.NS) or "").strip().lower()
        if code == soap.SIGNAL_TERMINATE:
            session.terminate(command_id)
            self._last_receive.pop((session.shell_id, str(signal.get("CommandId")).upper()), None)
        elif code in (soap.SIGNAL_PS_CTRL_C, soap.SIGNAL_CTRL_C):
            session.stop(command_id)
        else:
            raise soap.SoapError(f"signal {code!r} is not supported by the fleetctl lab")
        return soap.response(request, "<rsp:SignalResponse/>")

    async def _on_delete(self, request: soap.WsmanRequest, listener: _Listener) -> bytes:
        self._forget_shell(self._shell(request))
        return soap.response(request)


class LabServer:
    """Many `NodeServer`s on one event loop, their backend calls on one pool of `workers` threads."""

    def __init__(self, workers: int = 64) -> None:
        self.nodes: list[NodeServer] = []
        self.workers = workers
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                              thread_name_prefix="lab-node")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def add(self, node: NodeServer) -> NodeServer:
        self.nodes.append(node)
        return node

    async def start_all(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.loop.set_default_executor(self.executor)
        started: list[NodeServer] = []
        try:
            for node in self.nodes:
                await node.start()
                started.append(node)
        except BaseException:
            for node in started:
                await node.stop()
            raise

    async def stop_all(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)

    # --- running on a background thread ------------------------------------------------------------------------
    def start_background(self) -> None:
        """Start a loop in a daemon thread and every node on it; returns when all listen (or raises)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fleetctl-lab-server", daemon=True)
        self._thread.start()
        ready.wait()
        self.loop = loop
        try:
            self.run(self.start_all())
        except BaseException:
            self.stop_background()
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run `coro` on the background loop and wait for its result."""
        if self.loop is None:
            raise RuntimeError("LabServer is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop_background(self) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            self.run(self.stop_all(), timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
        self.loop = None
        self._thread = None
        self.executor.shutdown(wait=False, cancel_futures=True)
