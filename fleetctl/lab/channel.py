"""The pipe between the lab supervisor and one worker process: newline-delimited JSON, requests with ids, events.

A worker reads requests on its stdin and writes answers and events on its original stdout (the worker moves its
own fd 1 to stderr so that nothing else can write into the channel). The supervisor's `WorkerChannel` sends
requests and waits for the answer with the same `id`; lines without an `id` are events (`ready`, `failed`,
`pids`) handed to a callback on the reader thread. End of file on either side means the other side is gone: a
worker then shuts its nodes down, the supervisor fails every waiting request.

Wire shapes:
    request   {"id": 7, "cmd": "status" | "fault" | "down" | "wine", ...}
    answer    {"id": 7, "ok": true, ...} | {"id": 7, "ok": false, "error": "...", "exit_code": 2}
    event     {"event": "ready" | "failed" | "pids", ...}
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import IO, Any


class ChannelClosed(Exception):
    """The other end of the channel went away (its process exited)."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class WorkerChannel:
    """The supervisor's end: `request(cmd, **fields)` from any thread; events go to `on_event` (reader thread)."""

    def __init__(self, to_worker: IO[bytes], from_worker: IO[bytes], on_event: Callable[[dict[str, Any]], None],
                 name: str) -> None:
        self.name = name
        self._out = to_worker
        self._in = from_worker
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"lab-{name}-channel", daemon=True)
        self._reader.start()

    def send(self, message: dict[str, Any]) -> None:
        """A message that gets no answer (e.g. `wine`)."""
        with self._lock:
            if self.closed.is_set():
                raise ChannelClosed(f"{self.name} has exited")
            try:
                self._out.write(encode(message))
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError):
                raise ChannelClosed(f"{self.name} has exited") from None

    def request(self, cmd: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its answer; ChannelClosed if the worker exits first, TimeoutError."""
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            request_id = next(self._ids)
            self._waiting[request_id] = future
        try:
            self.send({"id": request_id, "cmd": cmd, **fields})
            return future.result(timeout)
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)

    def close(self) -> None:
        """Close our writing end: the worker reads end of file and shuts down."""
        with self._lock:
            try:
                self._out.close()
            except OSError:
                pass

    def _read(self) -> None:
        try:
            for line in self._in:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not ours; the worker's stdout is reserved, but never die on noise
                request_id = message.get("id")
                if request_id is None:
                    self._on_event(message)
                    continue
                with self._lock:
                    future = self._waiting.get(request_id)
                if future is not None and not future.done():
                    future.set_result(message)
        except (OSError, ValueError):
            pass
        finally:
            self.closed.set()
            with self._lock:
                waiting = list(self._waiting.values())
            for future in waiting:
                if not future.done():
                    future.set_exception(ChannelClosed(f"{self.name} has exited"))
            self._on_event({"event": "exited"})


class WorkerEnd:
    """The worker's end: `requests()` yields what the supervisor sends; `answer` and `emit` write back."""

    def __init__(self, from_supervisor: IO[bytes], to_supervisor: IO[bytes]) -> None:
        self._in = from_supervisor
        self._out = to_supervisor
        self._lock = threading.Lock()

    def requests(self) -> Any:
        """Each request as a dict, until the supervisor closes the channel (or dies)."""
        for line in self._in:
            try:
                yield json.loads(line)
            except ValueError:
                continue

    def write(self, message: dict[str, Any]) -> None:
        with self._lock:
            try:
                self._out.write(encode(message))
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the supervisor is gone; the request loop ends at end of file

    def answer(self, request: dict[str, Any], **fields: Any) -> None:
        self.write({"id": request.get("id"), **fields})

    def emit(self, event: str, **fields: Any) -> None:
        self.write({"event": event, **fields})
