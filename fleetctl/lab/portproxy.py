"""Real TCP port proxies (what `netsh interface portproxy` does on Windows), all on one asyncio loop thread.

A proxy listens on address:port and pipes each accepted connection to its current target. Switching the target
affects new connections only; open ones continue to the old target, as with netsh. A proxy can also be put in
*failing* mode, where it answers every connection with `HTTP/1.1 500` instead of forwarding: the lab's
health-failing fault puts such a front before a service's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_FAIL_BODY = b"fleetctl lab: health-failing fault injected on this node\n"
_FAIL_RESPONSE = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                  b"Content-Length: " + str(len(_FAIL_BODY)).encode() + b"\r\n\r\n" + _FAIL_BODY)


@dataclass
class PortProxy:
    listen: tuple[str, int]
    connect: tuple[str, int]
    failing: bool = False
    server: asyncio.base_events.Server | None = None
    connections: int = 0


class ProxyHub:
    """Every port proxy of a lab process; the loop thread starts on first use and stops in `close()`."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxies: dict[tuple[str, int], PortProxy] = {}
        self._lock = threading.Lock()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="lab-portproxy", daemon=True)
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def get(self, listen: tuple[str, int]) -> PortProxy | None:
        return self._proxies.get(listen)

    def list(self) -> list[PortProxy]:
        return list(self._proxies.values())

    def ensure(self, listen: tuple[str, int], connect: tuple[str, int], *, failing: bool = False) -> bool:
        """Listen on `listen` forwarding to `connect`; returns whether anything changed. Raises OSError if the
        port cannot be bound."""
        existing = self._proxies.get(listen)
        if existing is not None:
            changed = existing.connect != connect or existing.failing != failing
            existing.connect, existing.failing = connect, failing
            return changed
        proxy = PortProxy(listen=listen, connect=connect, failing=failing)
        proxy.server = self._run(self._serve(proxy))
        self._proxies[listen] = proxy
        return True

    def set_failing(self, listen: tuple[str, int], failing: bool) -> None:
        proxy = self._proxies.get(listen)
        if proxy is not None:
            proxy.failing = failing

    def remove(self, listen: tuple[str, int]) -> bool:
        proxy = self._proxies.pop(listen, None)
        if proxy is None:
            return False
        if proxy.server is not None:
            self._run(self._close_server(proxy.server))
        return True

    def close(self) -> None:
        for listen in list(self._proxies):
            self.remove(listen)
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    async def _close_server(self, server: asyncio.base_events.Server) -> None:
        server.close()
        await server.wait_closed()

    async def _serve(self, proxy: PortProxy) -> asyncio.base_events.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            proxy.connections += 1
            _nodelay(writer)
            if proxy.failing:
                writer.write(_FAIL_RESPONSE)
                with contextlib.suppress(OSError):
                    await writer.drain()
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*proxy.connect)
            except OSError:
                writer.close()  # target down: the client sees the connection closed, as with netsh
                return
            _nodelay(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            for w in (writer, up_writer):
                w.close()

        return await asyncio.start_server(handle, proxy.listen[0], proxy.listen[1], reuse_address=True)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()


def free_port(address: str) -> int:
    """A port currently free on `address` (for a service moved behind a failing front)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])
