"""A bounded load generator on loopback: steady HTTP GETs, a new connection per request, from a few threads, until
stopped, a time limit or a request count is reached. It counts requests sent, failed (refused, reset, timed out or
a status other than 2xx) and their latencies, for the zero-downtime tests and benchmarks.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Self


@dataclass(frozen=True)
class LoadReport:
    sent: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]  # kind of failure -> count (e.g. "ConnectionRefusedError", "HTTP 502")
    duration_s: float

    def line(self) -> str:
        return (f"sent {self.sent}, failed {self.failed}, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"max {self.max_ms:.1f} ms over {self.duration_s:.1f} s" +
                (f" ({dict(self.errors)})" if self.errors else ""))


@dataclass
class LoadGenerator:
    """`with LoadGenerator(address, port) as load: ...` then `load.report()`; at most `max_requests` requests and
    `max_seconds` seconds, each thread waiting `interval_s` between its requests."""

    address: str
    port: int
    path: str = "/"
    threads: int = 4
    interval_s: float = 0.01
    timeout_s: float = 5.0
    max_seconds: float = 300.0
    max_requests: int = 200_000
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _latencies: list[float] = field(default_factory=list)
    _errors: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (wall-clock time, kind) of each failure
    _workers: list[threading.Thread] = field(default_factory=list)
    _started: float = 0.0
    _ended: float = 0.0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._started = time.monotonic()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"loadgen-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout_s + 5)
        self._ended = self._ended or time.monotonic()

    @property
    def sent(self) -> int:
        with self._lock:
            return len(self._latencies)

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the load generator sent only {self.sent} of {count} requests in {timeout} s")
            time.sleep(0.02)

    def _run(self) -> None:
        deadline = self._started + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self._latencies) >= self.max_requests:
                    break
            began = time.monotonic()
            error = self._one()
            elapsed = (time.monotonic() - began) * 1000.0
            with self._lock:
                self._latencies.append(elapsed)
                if error is not None:
                    self._errors[error] += 1
                    self.failures.append((time.time(), error))
            self._stop.wait(self.interval_s)
        with self._lock:
            self._ended = max(self._ended, time.monotonic())

    def _one(self) -> str | None:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout_s)
        try:
            conn.request("GET", self.path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            if not 200 <= response.status < 300:
                return f"HTTP {response.status}"
            return None
        except (OSError, http.client.HTTPException) as err:
            return type(err).__name__
        finally:
            conn.close()

    def report(self) -> LoadReport:
        with self._lock:
            latencies = sorted(self._latencies)
            errors = dict(self._errors)
        def pct(q: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))]
        return LoadReport(len(latencies), sum(errors.values()), pct(0.50), pct(0.99),
                          latencies[-1] if latencies else 0.0, errors,
                          (self._ended or time.monotonic()) - self._started)
