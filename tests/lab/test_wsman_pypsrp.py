"""Unmodified pypsrp against a lab node's WinRM listeners: TLS, pipelines, copy/fetch, faults (docs/lab.md)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from fleetctl.lab.backend import NetworkFaults
from fleetctl.lab.scripts import LOADER_MARKER
from fleetctl.protocol.operations import PROTOCOL_VERSION

pytestmark = pytest.mark.lab


def open_and_close(wsman: WSMan) -> None:
    """Open and close a runspace pool: the whole connect + authenticate + PSRP negotiation."""
    with RunspacePool(wsman):
        pass


def _echo(pool: RunspacePool, **params: object) -> dict:
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Echo")
    for name, value in params.items():
        ps.add_parameter(name, value)
    out = ps.invoke()
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    return json.loads(out[0])


def test_ntlm_over_https_validates_against_lab_ca(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        result = _echo(pool, App="hello", Retries=3, Enabled=False, Tags=["a", "b"], Env={"K": "v"})
    assert result == {"ok": True, "result": {"parameters": {"App": "hello", "Retries": 3, "Enabled": False,
                                                            "Tags": ["a", "b"], "Env": {"K": "v"}},
                                             "input": []}}


def test_switch_parameter_and_pipeline_input(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Echo").add_parameter("Force")
        out = ps.invoke(input=["one", "two", "three"])
    assert json.loads(out[0])["result"] == {"parameters": {"Force": True}, "input": ["one", "two", "three"]}


def test_validation_against_another_ca_fails(fake_node, other_ca):
    with pytest.raises(requests.exceptions.SSLError):
        open_and_close(fake_node.wsman(cert_validation=str(other_ca.cert)))


def test_ntlm_over_http_with_message_encryption(fake_node):
    with RunspacePool(fake_node.wsman(ssl=False, encryption="always")) as pool:
        assert _echo(pool, App="enc")["result"]["parameters"] == {"App": "enc"}


def test_http_refuses_unencrypted_soap(fake_node):
    # Windows' default AllowUnencrypted=false: the lab must not accept plain SOAP over HTTP.
    with pytest.raises(WinRMTransportError) as err:
        open_and_close(fake_node.wsman(ssl=False, encryption="never"))
    assert err.value.code == 400


def test_basic_over_https(fake_node):
    with RunspacePool(fake_node.wsman(auth="basic")) as pool:
        assert _echo(pool, App="basic")["ok"] is True


def test_keep_alive_one_connection_per_pool(fake_node):
    before = fake_node.server.connections_accepted
    with RunspacePool(fake_node.wsman()) as pool:
        for i in range(5):
            _echo(pool, N=i)
    assert fake_node.server.connections_accepted - before == 1


def test_many_outputs_span_several_receives(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Many").add_parameter("Count", 20000)
        out = ps.invoke()
    assert out == [f"item-{i}" for i in range(20000)]


def test_unsupported_command_fails_the_pipeline_with_a_clear_message(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Remove-Item").add_parameter("Path", "C:\\x")
        ps.invoke()
        assert ps.had_errors
        assert ps.state == PSInvocationState.FAILED
        messages = [str(e) for e in ps.streams.error]
        assert len(messages) == 1 and "Not supported by the fleetctl lab" in messages[0]
        # The pool stays usable after a failed pipeline.
        assert _echo(pool, App="after")["ok"] is True


def test_arbitrary_powershell_is_refused_and_cmd_shell_is_a_fault(fake_node):
    client = fake_node.client()
    _, streams, had_errors = client.execute_ps("Get-Process")
    assert had_errors and "not arbitrary PowerShell" in str(streams.error[0])
    with pytest.raises(WSManFaultError) as err:
        client.execute_cmd("whoami")
    assert "only PowerShell remoting" in str(err.value.reason)


def test_module_loader_script_answers_the_lab_document(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        ps = PowerShell(pool)
        ps.add_script(LOADER_MARKER + "\nImport-Module FleetNode\n")
        out = ps.invoke()
    assert json.loads(out[0]) == {"ok": True, "result": {"module": "FleetNode", "version": PROTOCOL_VERSION, "lab": True}}


def test_stop_a_running_pipeline(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Wait-Release")
        ps.begin_invoke()
        deadline = time.monotonic() + 10
        while "Wait-Release" not in fake_node.backend.invoked:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        ps.stop()
        assert ps.state == PSInvocationState.STOPPED
        fake_node.backend.release.set()
        assert _echo(pool, App="after-stop")["ok"] is True


@pytest.mark.parametrize("ssl", [True, False], ids=["https", "http-encrypted"])
def test_copy_and_fetch_20mb_round_trip(fake_node, tmp_path: Path, ssl: bool):
    data = os.urandom(20 * 1024 * 1024)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    client = fake_node.client(ssl=ssl)
    started = time.monotonic()
    written = client.copy(str(src), "C:\\temp\\payload.bin")
    copy_s = time.monotonic() - started
    assert written == "C:\\temp\\payload.bin"
    assert hashlib.sha256(fake_node.backend.sandbox.files["c:\\temp\\payload.bin"]).digest() == \
        hashlib.sha256(data).digest()
    started = time.monotonic()
    client.fetch("C:\\temp\\payload.bin", str(tmp_path / "back.bin"))
    fetch_s = time.monotonic() - started
    assert (tmp_path / "back.bin").read_bytes() == data
    print(f"20 MB over {'https' if ssl else 'http+ntlm-encryption'}: copy {copy_s:.2f} s, fetch {fetch_s:.2f} s")
    # "A few seconds, not tens" on a shared 2-core machine.
    assert copy_s < 15 and fetch_s < 15


def test_fetch_of_a_missing_file_fails_like_the_real_script(fake_node, tmp_path: Path):
    from pypsrp.exceptions import WinRMError

    with pytest.raises(WinRMError, match="does not exist"):
        fake_node.client().fetch("C:\\temp\\nope.bin", str(tmp_path / "x"))


def test_unreachable_refuses_connections_and_recovers(fake_node):
    fake_node.set_listening(False)
    with pytest.raises(requests.exceptions.ConnectionError), RunspacePool(fake_node.wsman()):
        pass
    fake_node.set_listening(True)
    with RunspacePool(fake_node.wsman()) as pool:
        assert _echo(pool)["ok"] is True


def test_blackhole_accepts_and_never_answers(fake_node):
    fake_node.backend.faults = NetworkFaults(blackhole=True)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        open_and_close(fake_node.wsman(read_timeout=1, connection_timeout=1))
    assert time.monotonic() - started >= 0.9


def test_latency_is_added_to_every_response(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        started = time.monotonic()
        _echo(pool)
        fast = time.monotonic() - started
        fake_node.backend.faults = NetworkFaults(latency_ms=150)
        started = time.monotonic()
        _echo(pool)  # Command + Receive: at least two delayed responses
        slow = time.monotonic() - started
    assert slow >= 0.3 > fast


def test_auth_failure_fault_gives_authentication_error(fake_node):
    fake_node.backend.faults = NetworkFaults(auth_failure=True)
    with pytest.raises(AuthenticationError), RunspacePool(fake_node.wsman()):
        pass


def test_against_the_real_lab_node(serve_backend, lab_address, tmp_path: Path):
    node_module = pytest.importorskip("fleetctl.lab.node")
    address = lab_address()
    node = node_module.LabNode("LABREAL1", address, tmp_path / "node")
    try:
        served = serve_backend(node)
        client = served.client()
        src = tmp_path / "small.bin"
        src.write_bytes(b"lab node bytes" * 1000)
        assert client.copy(str(src), "C:\\temp\\small.bin") == "C:\\temp\\small.bin"
        assert node.sandbox.read_bytes("C:\\temp\\small.bin") == src.read_bytes()
        with RunspacePool(served.wsman()) as pool:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-FleetFacts")
            out = ps.invoke()
        assert not ps.had_errors and json.loads(out[0])["ok"] is True
    finally:
        close = getattr(node, "close", None)
        if close is not None:
            close()


def test_a_superseded_receive_does_not_swallow_output(fake_backend_class):
    """pypsrp re-sends a Receive after a read timeout; the abandoned long-poll must not take the data."""
    import asyncio
    import uuid

    import psrpcore

    from fleetctl.lab.psrp import RunspaceSession

    async def scenario() -> None:
        session = RunspaceSession("S1", fake_backend_class(name="UNIT", address="127.0.0.1"))
        client = psrpcore.ClientRunspacePool()
        client.open()
        session.open(client.data_to_send().data)
        assert await session.receive(None, 1 << 20, 1)  # the pool's open answers
        ps = psrpcore.ClientPowerShell(client)
        ps.add_command("Get-Echo")
        ps.start()
        command_id = uuid.UUID(str(ps.pipeline_id))
        create = client.data_to_send()
        stale = asyncio.create_task(session.receive(command_id, 1 << 20, 5))
        await asyncio.sleep(0)
        fresh = asyncio.create_task(session.receive(command_id, 1 << 20, 5))
        await asyncio.sleep(0)
        session.command(command_id, create.data)
        assert await stale is None
        data = await fresh
        assert data
        client.receive_data(psrpcore.PSRPPayload(data, psrpcore.StreamType.default, command_id))
        events = []
        while (event := client.next_event()) is not None:
            events.append(event)
        assert events and all(e.pipeline_id == command_id for e in events)
        session.close()

    asyncio.run(scenario())


def test_statements_of_one_pipeline_run_in_order_each_without_the_previous_output(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        ps = PowerShell(pool)
        ps.add_script(LOADER_MARKER + "\nImport-Module FleetNode\n").add_statement()
        ps.add_cmdlet("Get-Echo").add_parameter("App", "first").add_statement()
        ps.add_cmdlet("Get-Echo").add_parameter("App", "second")
        out = ps.invoke(input=["in"])
    assert not ps.had_errors
    docs = [json.loads(o) for o in out]
    assert docs[0]["result"]["module"] == "FleetNode"
    # Each statement starts afresh: the loader's document is not piped into the first Get-Echo.
    assert [d["result"] for d in docs[1:]] == [{"parameters": {"App": "first"}, "input": []},
                                               {"parameters": {"App": "second"}, "input": []}]


def test_a_failing_statement_keeps_the_output_of_those_before_it(fake_node):
    with RunspacePool(fake_node.wsman()) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Echo").add_parameter("App", "first").add_statement()
        ps.add_cmdlet("Remove-Item").add_parameter("Path", "C:\\x").add_statement()
        ps.add_cmdlet("Get-Echo").add_parameter("App", "never")
        out = ps.invoke()
    assert ps.had_errors and "Not supported by the fleetctl lab" in str(ps.streams.error[0])
    assert [json.loads(o)["result"]["parameters"]["App"] for o in out] == ["first"]
