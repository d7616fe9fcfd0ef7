"""The WinRM transport against a real lab node whose shells expire (WinRM's idle timeout) or vanish (a WinRM
restart): calls keep working on a new pool over the same connection, and the module is loaded again."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetctl.config.connection import ConnectionSettings
from fleetctl.lab.certs import create_ca, issue_node_cert
from fleetctl.lab.node import LabNode
from fleetctl.lab.wsman import LabServer, NodeServer
from fleetctl.node.client import NodeClient
from fleetctl.transport.winrm import WinRMTransport

pytestmark = pytest.mark.lab
ADDRESS = os.environ.get("FLEETCTL_TEST_IDLE_ADDR", "127.0.31.1")
PASSWORD = "Idle:Pass-w0rd!"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[NodeServer, LabServer, ConnectionSettings]]:
    ca = create_ca(tmp_path / "ca")
    backend = LabNode("IDLE01", ADDRESS, tmp_path / "node")
    server = NodeServer(backend, address=ADDRESS, credentials={"fleet": PASSWORD},
                        tls=issue_node_cert(ca, ADDRESS, ["idle01"], tmp_path / "tls"), idle_timeout_s=1.0)
    lab = LabServer(workers=4)
    lab.add(server)
    lab.start_background()
    settings = ConnectionSettings.from_hostvars("idle01", {
        "fleet_host": ADDRESS, "fleet_auth": "ntlm", "fleet_user": "fleet", "fleet_password": PASSWORD,
        "fleet_ca_bundle": str(ca.cert)})
    try:
        yield server, lab, settings
    finally:
        lab.stop_background()
        backend.close()


def wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_pool_idle_past_the_hosts_timeout_is_replaced_before_the_next_call(node: Any) -> None:
    server, _, settings = node
    transport = WinRMTransport(settings)
    client = NodeClient(transport)
    try:
        assert client.get_fleet_facts().hostname == "IDLE01"
        wait_until(lambda: server.shells_expired == 1, 5)  # the host deleted the idle shell
        assert client.get_fleet_facts().hostname == "IDLE01"
        # Known from the Create answer: no request went into the deleted shell, the connection was kept.
        assert transport.pools_reopened == 1 and server.connections_accepted == 1
        assert server.shell_counts() == {"open": 1, "expired": 1, "unknown": 0}
    finally:
        client.close()


def test_a_call_into_a_shell_the_host_dropped_is_sent_again_on_a_new_pool(node: Any) -> None:
    server, lab, settings = node
    server.idle_timeout_s = 3600.0  # the transport has no reason to expect the shell to be gone
    transport = WinRMTransport(settings)
    client = NodeClient(transport)
    try:
        client.lock_fleet_app(app="hello", owner="me", deploy_id="d1", ttl_seconds=600)
        lab.run(server.delete_shells())  # what a WinRM service restart does
        state = client.get_fleet_state(app="hello", root="C:\\apps\\hello")
        assert state.lock is not None and state.lock.deploy_id == "d1"  # the node's state survived, of course
        assert transport.pools_reopened == 1 and server.shell_counts()["unknown"] == 1  # the refused Command
        assert server.connections_accepted == 1
        lab.run(server.delete_shells())
        results = transport.invoke_all([("Unlock-FleetApp", {"App": "hello", "DeployId": "d1"})])
        assert results == [{"released": True}] and transport.pools_reopened == 2
    finally:
        client.close()
