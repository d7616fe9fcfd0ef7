"""Running over many hosts: bounded by forks, one outcome per host in order, failures reported (redacted), and
`ping_hosts` over fake transports."""

from __future__ import annotations

import threading
import time

from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.redaction import forget_secrets, register_secret
from fleetctl.node.fleet import HostClients, run_parallel
from fleetctl.node.ping import ping_hosts
from fleetctl.protocol.errors import HostUnreachable
from fleetctl.transport.fake import FakeNode, FakeTransport
from fleetctl.ui.ping import ping_json


def test_parallelism_is_bounded_by_forks_and_every_host_reported() -> None:
    running, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def work(host: str) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(0.05)  # hold the slot briefly so that concurrency shows
        with lock:
            running -= 1
        if host == "h07":
            raise RuntimeError("boom on h07")
        return host.upper()

    hosts = [f"h{i:02d}" for i in range(20)]
    outcomes = run_parallel(hosts, work, forks=4)
    assert list(outcomes) == hosts and peak <= 4 and peak >= 2
    assert outcomes["h03"].ok and outcomes["h03"].value == "H03"
    assert not outcomes["h07"].ok and outcomes["h07"].error == "RuntimeError: boom on h07"


def test_errors_are_redacted() -> None:
    register_secret("hunter2-secret")
    try:
        out = run_parallel(["a"], lambda h: (_ for _ in ()).throw(ValueError("pw hunter2-secret leaked")))
        assert out["a"].error == "ValueError: pw ******** leaked"
    finally:
        forget_secrets()


def test_ping_hosts_over_fake_transports() -> None:
    settings = {n: ConnectionSettings.from_hostvars(n, {}) for n in ("web01", "web02")}

    def factory(s: ConnectionSettings) -> FakeTransport:
        if s.host_name == "web02":
            return FakeTransport(lambda c: HostUnreachable("connection refused at web02:5986", host="web02"),
                                 host="web02")
        return FakeTransport(FakeNode(hostname="WEB01"), host=s.host_name)

    started = time.monotonic()
    with HostClients(settings, transport_factory=factory, forks=2) as fleet:
        results = ping_hosts(fleet)
    assert time.monotonic() - started < 5
    doc = ping_json(results)
    assert doc["hosts"]["web01"]["ok"] is True and doc["hosts"]["web01"]["facts"]["hostname"] == "WEB01"
    assert doc["hosts"]["web01"]["rtt_ms"] is not None
    assert doc["hosts"]["web02"] == {"ok": False, "error": "web02: connection refused at web02:5986",
                                     "facts": None, "rtt_ms": None}
