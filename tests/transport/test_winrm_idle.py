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


def test_a_transient_failure_of_the_first_try_is_retried_and_others_are_not(node: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The first try runs outside tenacity; a failure a policy retries becomes its first attempt (same count,
    same waits), anything else is raised at once, unchanged."""
    from fleetctl.protocol.errors import HostUnreachable, NodeOperationError

    _, _, settings = node
    transport = WinRMTransport(settings, retry_wait=0.0)
    client = NodeClient(transport)
    real_run = transport._run
    tries: list[str] = []
    failures: list[BaseException] = []

    def flaky(operation: str, params: dict[str, Any], input_objects: Any = None) -> Any:
        tries.append(operation)
        if failures:
            raise failures.pop()
        return real_run(operation, params, input_objects)

    monkeypatch.setattr(transport, "_run", flaky)
    try:
        failures[:] = [HostUnreachable("connection reset", host="n", transient=True)] * 2
        assert client.get_fleet_facts().hostname == "NODE-127-0-31-1"
        assert tries == ["Get-FleetFacts"] * 3  # two transient failures, then the answer (3 attempts allowed)
        tries.clear()
        failures[:] = [HostUnreachable("connection reset", host="n", transient=True)] * 3
        with pytest.raises(HostUnreachable):
            client.get_fleet_facts()
        assert len(tries) == 3  # DEFAULT_ATTEMPTS in all, the first one outside tenacity included
        tries.clear()
        failures[:] = [NodeOperationError("LOCK_HELD", "held", operation="Get-FleetFacts", host="n")]
        with pytest.raises(NodeOperationError):
            client.get_fleet_facts()
        assert len(tries) == 1  # a node error is an answer: never retried
    finally:
        client.close()
