"""Read-ahead (fleetctl/node/read_ahead.py): registered reads ride on the next call's pipeline, and the call that
asks exactly that right after gets the answer without a round trip; once, fresh, and never across another call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from fleetctl.node.client import NodeClient
from fleetctl.node.read_ahead import ReadAhead
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.transport.base import Call
from fleetctl.transport.fake import FakeCall, FakeTransport, error_document

STATE = {"app": "hello", "current": "1.0.0-aaaa", "releases": [], "service": None, "lock": None}


class Recording(FakeTransport):
    """A fake node that records each round trip: a batch of calls (`invoke_all`) or one call (`invoke`)."""

    def __init__(self, handler: Any) -> None:
        super().__init__(handler)
        self.round_trips: list[list[str]] = []

    def invoke_all(self, calls: Sequence[Call]) -> list[dict[str, Any] | NodeOperationError]:
        self.round_trips.append([op for op, _ in calls])
        before = len(self.round_trips)
        results = super().invoke_all(calls)  # the base class runs each through invoke()
        del self.round_trips[before:]
        return results

    def invoke(self, operation: str, params: dict[str, Any], input_objects: Any = None) -> dict[str, Any]:
        self.round_trips.append([operation])
        return super().invoke(operation, params, input_objects)


def node(call: FakeCall) -> Any:
    if call.operation == "Lock-FleetApp":
        return {"lock": {"owner": "me", "deploy_id": "d1"}, "taken_over": None}
    if call.operation == "Get-FleetState":
        return STATE
    if call.operation == "Test-FleetArtifact":
        return {"present": True, "path": "C:\\cache\\x", "size": 3}
    return {}


def client_of(handler: Any = node) -> tuple[NodeClient, Recording]:
    transport = Recording(handler)
    return NodeClient(transport), transport


def lock(client: NodeClient) -> None:
    client.connect_and_lock(app="hello", owner="me", deploy_id="d1", ttl_seconds=60)


def test_state_and_artifact_ride_on_the_lock_and_cost_no_round_trip_of_their_own() -> None:
    client, transport = client_of()
    client.read_ahead_state(app="hello", root="C:\\apps\\hello", service_name="hello")
    client.read_ahead_artifact(sha256="ab" * 32)
    lock(client)
    state = client.get_fleet_state(app="hello", root="C:\\apps\\hello", service_name="hello")
    artifact = client.test_fleet_artifact(sha256="ab" * 32)
    assert transport.round_trips == [["Lock-FleetApp", "Get-FleetState", "Test-FleetArtifact"]]
    assert state.current == "1.0.0-aaaa" and artifact.present
    assert client.round_trips_saved == 2


def test_an_answer_is_used_once_and_only_for_exactly_the_same_call() -> None:
    client, transport = client_of()
    client.read_ahead_state(app="hello", root="C:\\apps\\hello", service_name="hello")
    lock(client)
    client.get_fleet_state(app="hello", root="C:\\apps\\hello", service_name="other")  # other arguments: asked
    assert transport.round_trips[-1] == ["Get-FleetState"]
    client.get_fleet_state(app="hello", root="C:\\apps\\hello", service_name="hello")  # dropped by that call
    assert len(transport.round_trips) == 3


def test_any_other_call_in_between_drops_what_was_read_ahead() -> None:
    client, transport = client_of()
    client.read_ahead_state(app="hello", root="C:\\apps\\hello")
    lock(client)
    client.unlock_fleet_app(app="hello", deploy_id="d1")  # may have changed the state
    client.get_fleet_state(app="hello", root="C:\\apps\\hello")
    assert transport.round_trips[-1] == ["Get-FleetState"] and client.round_trips_saved == 0


def test_a_stale_answer_is_not_used() -> None:
    client, transport = client_of()
    client._ahead.max_age_s = 0.0
    client.read_ahead_state(app="hello", root="C:\\apps\\hello")
    lock(client)
    client.get_fleet_state(app="hello", root="C:\\apps\\hello")
    assert transport.round_trips[-1] == ["Get-FleetState"] and client.round_trips_saved == 0


def test_an_error_read_ahead_is_not_kept_and_the_real_call_gets_its_own_answer() -> None:
    answers = iter([error_document("INTERNAL", "disk busy"), STATE])

    def handler(call: FakeCall) -> Any:
        return next(answers) if call.operation == "Get-FleetState" else node(call)

    client, transport = client_of(handler)
    client.read_ahead_state(app="hello", root="C:\\apps\\hello")
    lock(client)  # the read-ahead's error does not fail the lock
    assert client.get_fleet_state(app="hello", root="C:\\apps\\hello").current == "1.0.0-aaaa"
    assert len(transport.round_trips) == 2


def test_a_failed_call_raises_as_without_read_ahead() -> None:
    def handler(call: FakeCall) -> Any:
        if call.operation == "Lock-FleetApp":
            return error_document("LOCK_HELD", "held", {"holder": {"owner": "x", "deploy_id": "d0"}})
        return node(call)

    client, _ = client_of(handler)
    client.read_ahead_state(app="hello", root="C:\\apps\\hello")
    with pytest.raises(NodeOperationError) as caught:
        lock(client)
    assert caught.value.code == "LOCK_HELD"


def test_reads_wait_for_a_call_without_pipeline_input() -> None:
    client, transport = client_of()
    client.read_ahead_artifact(sha256="cd" * 32)
    client.stop_fleet_service(name="hello", timeout_seconds=5)
    assert transport.round_trips == [["Stop-FleetService", "Test-FleetArtifact"]]


def test_a_read_already_answered_is_not_asked_again() -> None:
    client, transport = client_of()
    client.read_ahead_artifact(sha256="cd" * 32)
    lock(client)
    client.read_ahead_artifact(sha256="cd" * 32)  # fresh answer here: nothing to send along
    client.get_fleet_state(app="hello", root="C:\\apps\\hello")
    assert transport.round_trips[-1] == ["Get-FleetState"]


def test_only_read_only_operations_can_be_read_ahead() -> None:
    with pytest.raises(ValueError, match="changes the node"):
        ReadAhead().want("Unlock-FleetApp", {"App": "hello", "DeployId": "d1"})
