"""NodeClient: its methods match the protocol exactly (contract), results are typed, and every operation works
end to end against a lab node over real WinRM/PSRP."""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.templating import render_vars
from fleetctl.node.client import NodeClient
from fleetctl.node.results import Facts, NodeState
from fleetctl.node.transfer import ensure_artifact
from fleetctl.protocol.errors import NodeOperationError, ProtocolError
from fleetctl.protocol.operations import OPERATIONS, function_name, snake_case
from fleetctl.transport.fake import FakeNode, FakeTransport, error_document

NET = os.environ.get("FLEETCTL_TEST_CLIENT_NET", "127.0.32")


def test_one_method_per_operation_with_protocol_parameters() -> None:
    for name, op in OPERATIONS.items():
        method = getattr(NodeClient, function_name(name), None)
        assert method is not None, f"NodeClient lacks {function_name(name)} for {name}"
        params = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), name
        expected = {snake_case(p.name) for p in op.params} | ({"chunks"} if op.pipeline_input else set())
        assert {p.name for p in params} == expected, name
        for p in op.params:
            required = params[[q.name for q in params].index(snake_case(p.name))].default is inspect.Parameter.empty
            assert required == p.required or p.type == "switch", f"{name} {p.name}"


def test_calls_use_protocol_names_and_leave_out_unset_values() -> None:
    transport = FakeTransport(lambda call: {"created": True, "changed": ["binary_path"]})
    change = NodeClient(transport).set_fleet_service(name="hello", binary_path="C:\\apps\\hello\\current\\h.exe",
                                                     environment={"A": "1"}, recovery_restart_seconds=5)
    assert transport.calls[0].params == {"Name": "hello", "BinaryPath": "C:\\apps\\hello\\current\\h.exe",
                                         "Environment": {"A": "1"}, "RecoveryRestartSeconds": 5}
    assert change.created and change.changed == ("binary_path",)


def test_results_are_typed_values() -> None:
    client = NodeClient(FakeTransport(FakeNode()))
    facts = client.get_fleet_facts()
    assert isinstance(facts, Facts) and facts.system_drive_free == 10 * 2**30 and facts.utc_now is not None
    state = NodeClient(FakeTransport(lambda c: {
        "releases": [{"release": "1.0-a", "version": "1.0", "sha256": "ab", "installed_at": "2024-05-01T10:00:00Z"}],
        "current": "1.0-a", "previous": None, "service": {"exists": True, "state": "Running", "pid": 42},
        "lock": None, "history": []})).get_fleet_state(app="hello", root="C:\\apps\\hello")
    assert isinstance(state, NodeState) and state.current == "1.0-a" and state.service and state.service.pid == 42
    assert state.release("1.0-a") and state.release("1.0-a").installed_at.year == 2024  # type: ignore[union-attr]


def test_structured_errors_and_malformed_answers() -> None:
    client = NodeClient(FakeTransport(lambda c: error_document("NOT_FOUND", "no release 9", {"release": "9"}),
                                      host="web01"))
    with pytest.raises(NodeOperationError) as info:
        client.switch_fleet_release(app="a", root="C:\\a", release="9")
    assert info.value.code == "NOT_FOUND" and info.value.details == {"release": "9"}
    assert str(info.value) == "web01: Switch-FleetRelease: NOT_FOUND: no release 9"
    for bad in ("not json", '{"ok": "yes"}', '{"ok": false}', "[1]"):
        with pytest.raises(ProtocolError):
            NodeClient(FakeTransport(lambda c, bad=bad: bad)).get_fleet_facts()


def test_a_call_that_does_not_match_the_protocol_is_refused() -> None:
    transport = FakeTransport(FakeNode())
    with pytest.raises(ValueError, match="no parameter"):
        transport.invoke("Get-FleetFacts", {"Bogus": 1})
    with pytest.raises(ValueError, match="needs parameter"):
        transport.invoke("Test-FleetArtifact", {})


# -- every operation against a lab node ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectionSettings]:
    from fleetctl.config.inventory import load_inventory
    from fleetctl.lab.control import lab_down, lab_up
    from fleetctl.lab.layout import LabLayout

    layout = LabLayout.at(tmp_path_factory.mktemp("clientlab"))
    lab_up(layout, nodes=1, base=f"{NET}.1", wine=False)
    try:
        host = load_inventory([layout.dir / "inventory.yml"]).select("all")[0]
        yield ConnectionSettings.from_hostvars(host.name, render_vars(dict(host.vars), source="lab"))
    finally:
        lab_down(layout)


@pytest.mark.lab
def test_every_operation_end_to_end(lab_node: ConnectionSettings, tmp_path: Path) -> None:
    from fleetctl.transport.winrm import WinRMTransport

    port = 18080
    exe = tmp_path / "hello.exe"  # a script: the lab runs non-PE "exes" natively (no Wine needed here)
    exe.write_bytes(f"#!/bin/sh\nexec python3 -m http.server {port} --bind {lab_node.address}\n".encode())
    sha = hashlib.sha256(exe.read_bytes()).hexdigest()
    app, root = "hello", "C:\\apps\\hello"
    client = NodeClient(WinRMTransport(lab_node))
    try:
        assert client.get_fleet_facts().lab
        lock = client.lock_fleet_app(app=app, owner="ci@test", deploy_id="d1", ttl_seconds=600)
        assert lock.lock and lock.lock.deploy_id == "d1"
        with pytest.raises(NodeOperationError) as held:
            client.lock_fleet_app(app=app, owner="other@test", deploy_id="d2", ttl_seconds=600)
        assert held.value.code == "LOCK_HELD"
        assert ensure_artifact(client, exe, sha, "push").method == "push"
        installed = client.install_fleet_release(app=app, root=root, release="1.0.0-a", version="1.0.0", sha256=sha,
                                                 exe_name="hello.exe", files={"config\\app.txt": "x=1"})
        assert installed.created
        assert client.switch_fleet_release(app=app, root=root, release="1.0.0-a").current == "1.0.0-a"
        service = client.set_fleet_service(name=app, binary_path=f"{root}\\current\\hello.exe",
                                           arguments=[], environment={"GREETING": "hi"}, start_type="auto")
        assert service.created
        started = client.start_fleet_service(name=app, timeout_seconds=20)
        assert started.state == "Running" and started.pid
        probe = None
        for _ in range(100):  # the server needs a moment to bind: poll, bounded
            probe = client.test_fleet_health(url=f"http://{lab_node.address}:{port}/", timeout_seconds=2)
            if probe.status == 200:
                break
        assert probe is not None and probe.status == 200
        state = client.get_fleet_state(app=app, root=root)
        assert state.current == "1.0.0-a" and state.service and state.service.state == "Running"
        assert state.lock and state.lock.deploy_id == "d1"
        assert client.stop_fleet_service(name=app, timeout_seconds=20).state == "Stopped"
        with pytest.raises(NodeOperationError) as no_log:
            client.get_fleet_log(app=app, root=root, tail=10)
        assert no_log.value.code == "NOT_FOUND"
        rendered = client.get_fleet_log(app=app, root=root, path="releases\\1.0.0-a\\config\\app.txt")
        assert rendered.lines == ("x=1",)
        assert client.set_fleet_firewall_rule(name="hello-http", port=port).changed
        assert not client.set_fleet_firewall_rule(name="hello-http", port=port).changed
        assert client.set_fleet_scheduled_task(name="hello-nightly", execute=f"{root}\\current\\hello.exe",
                                               at="02:00").changed
        assert client.set_fleet_port_proxy(listen_port=18081, listen_address=lab_node.address,
                                           connect_port=port, connect_address=lab_node.address).changed
        assert client.set_fleet_port_proxy(listen_port=18081, listen_address=lab_node.address, remove=True).changed
        assert client.remove_fleet_release(app=app, root=root, keep=5).removed == ()
        assert client.unlock_fleet_app(app=app, deploy_id="d1")
    finally:
        client.close()


@pytest.mark.lab
def test_connect_and_lock_is_one_pipeline_and_batches_report_errors_in_place(lab_node: ConnectionSettings) -> None:
    from fleetctl.transport.winrm import WinRMTransport

    transport = WinRMTransport(lab_node)
    client = NodeClient(transport)
    other = NodeClient(WinRMTransport(lab_node))

    def separate_pipeline(*args: object) -> list[object]:
        raise AssertionError("the lock must travel in the loader's pipeline, not in one of its own")

    transport._run = separate_pipeline  # type: ignore[method-assign]
    try:
        lock = client.connect_and_lock(app="batchapp", owner="ci@test", deploy_id="b1", ttl_seconds=600)
        assert lock.lock is not None and lock.lock.deploy_id == "b1"
        del transport._run
        with pytest.raises(NodeOperationError) as held:
            other.connect_and_lock(app="batchapp", owner="x@y", deploy_id="b2", ttl_seconds=600)
        assert held.value.code == "LOCK_HELD"
        # On an open pool: several statements, a node error in its place, the next call still answered.
        results = other.transport.invoke_all([
            ("Lock-FleetApp", {"App": "batchapp", "Owner": "x@y", "DeployId": "b2", "TtlSeconds": 600}),
            ("Get-FleetFacts", {}),
        ])
        assert isinstance(results[0], NodeOperationError) and results[0].code == "LOCK_HELD"
        assert isinstance(results[1], dict) and Facts.from_result(results[1]).lab
        assert client.unlock_fleet_app(app="batchapp", deploy_id="b1")
    finally:
        client.close()
        other.close()


def test_invoke_all_default_runs_each_call_and_keeps_errors_in_place() -> None:
    node = FakeNode()
    transport = FakeTransport(node)
    results = transport.invoke_all([
        ("Lock-FleetApp", {"App": "a", "Owner": "o", "DeployId": "d1", "TtlSeconds": 60}),
        ("Lock-FleetApp", {"App": "a", "Owner": "o", "DeployId": "d2", "TtlSeconds": 60}),
        ("Get-FleetFacts", {}),
    ])
    assert isinstance(results[0], dict) and results[0]["lock"]["deploy_id"] == "d1"
    assert isinstance(results[1], NodeOperationError) and results[1].code == "LOCK_HELD"
    assert isinstance(results[2], dict)
