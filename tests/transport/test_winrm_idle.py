"""The WinRM transport against a real lab node whose shells expire (WinRM's idle timeout) or vanish (a WinRM
restart): calls keep working on a new pool over the same connection, and the module is loaded again."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from fleetctl.node.client import NodeClient
from fleetctl.transport.winrm import WinRMTransport

pytestmark = pytest.mark.lab
ADDRESS = os.environ.get("FLEETCTL_TEST_IDLE_ADDR", "127.0.31.1")


@pytest.fixture
def node(lab_node: Any) -> Any:
    served = lab_node(ADDRESS, idle_timeout_s=1.0)
    return served.server, served.lab, served.settings


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
        assert client.get_fleet_facts().hostname == "NODE-127-0-31-1"
        wait_until(lambda: server.shells_expired == 1, 5)  # the host deleted the idle shell
        assert client.get_fleet_facts().hostname == "NODE-127-0-31-1"
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
