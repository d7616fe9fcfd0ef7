"""The lab's fast CLIXML reader and writer (`fleetctl.lab.clixml`) against the libraries on both ends: what it reads
from pypsrp's messages equals what psrpcore's full deserializer makes of them, what it writes pypsrp reads back
unchanged, and shapes it does not know are refused (so psrpcore takes them), never misread."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import psrpcore
import pytest
from psrpcore.types import deserialize, serialize
from pypsrp.complex_objects import (
    ApartmentState,
    Command,
    CommandParameter,
    HostInfo,
    Pipeline,
    RemoteStreamOptions,
)
from pypsrp.messages import CreatePipeline, Message
from pypsrp.serializer import Serializer, TaggedValue

from fleetctl.lab import clixml
from fleetctl.lab.psrp import plain

VALUES: list[Any] = [
    "plain", "", "C:\\apps\\hello\\current\\hello.exe", "<&>\"'", "tab\tnew\nline\r", "_x0041_ is not A",
    "control \x01\x1f \x7f\x85", "unicode é ü ß ☃", "emoji 😀 outside the BMP", 0, -7, 2**31 - 1,
    TaggedValue("I64", 2**40), True, False, None, ["a", "b", ""], [], {"A": "1", "PATH": "C:\\x;C:\\y"}, {},
    ["nested", ["list", 1]], b"\x00\x01bytes",
]


def create_pipeline(statements: list[list[tuple[str, list[tuple[str | None, Any]]]]], no_input: bool = True,
                    is_script: bool = False) -> bytes:
    """A CreatePipeline message body exactly as pypsrp serializes it."""
    cmds = []
    for statement in statements:
        for index, (name, params) in enumerate(statement):
            cmd = Command(cmd=name, is_script=is_script, use_local_scope=None)
            for key, value in params:
                cmd.args.append(CommandParameter(name=key, value=value))
            cmd.end_of_statement = index == len(statement) - 1
            cmds.append(cmd)
    message = CreatePipeline(no_input, ApartmentState(value=ApartmentState.UNKNOWN),
                             RemoteStreamOptions(value=RemoteStreamOptions.ADD_INVOCATION_INFO), False, HostInfo(),
                             Pipeline(is_nested=False, cmds=cmds, history=None, redirect_err_to_out=False), False)
    return ET.tostring(Serializer().serialize(message), encoding="utf-8", method="xml")


def psrpcore_reading(body: bytes) -> tuple[bool, list[tuple[str, bool, list[tuple[Any, Any]], bool]]]:
    obj = deserialize(ET.fromstring(body), psrpcore.PSRemotingCrypto())
    shell: Any = psrpcore.PowerShell.FromPSObjectForRemoting(obj)
    return bool(shell.no_input), [(c.command_text, c.is_script, [(k, plain(v)) for k, v in c.parameters],
                                   bool(c.end_of_statement)) for c in shell.commands]


def fast_reading(body: bytes) -> tuple[bool, list[tuple[str, bool, list[tuple[Any, Any]], bool]]]:
    no_input, statements = clixml.read_create_pipeline(body)
    return no_input, [(c.name, c.is_script, c.parameters, i == len(s.commands) - 1)
                      for s in statements for i, c in enumerate(s.commands)]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:30])
def test_a_parameter_value_reads_as_psrpcore_reads_it(value: Any) -> None:
    body = create_pipeline([[("Set-FleetService", [("Name", "hello"), ("Value", value)])]])
    assert fast_reading(body) == psrpcore_reading(body)


def test_statements_switches_and_positional_arguments() -> None:
    body = create_pipeline([[("Lock-FleetApp", [("App", "a"), ("Force", None)])],
                            [("Get-FleetState", [("App", "a")]), ("Out-String", [])],
                            [("Unlock-FleetApp", [(None, "positional"), ("DeployId", "d")])]], no_input=False)
    fast = fast_reading(body)
    assert fast == psrpcore_reading(body)
    assert fast[0] is False and [c[3] for c in fast[1]] == [True, False, True, True]


def test_a_script_command() -> None:
    body = create_pipeline([[("# FleetNode module loader\n$x = 1", [("Module", "H4sI...")])]], is_script=True)
    assert fast_reading(body) == psrpcore_reading(body)


@pytest.mark.parametrize("value", [v for v in VALUES if v is not None], ids=lambda v: repr(v)[:30])
def test_pipeline_input_reads_as_psrpcore_reads_it(value: Any) -> None:
    # pypsrp's PipelineInput message body is the serialized value itself (Message.pack)
    body = ET.tostring(Serializer().serialize(value), encoding="utf-8", method="xml")
    assert clixml.read_value(body) == plain(deserialize(ET.fromstring(body), psrpcore.PSRemotingCrypto()))


@pytest.mark.parametrize("xml", [
    b'<Obj RefId="0"><MS><B N="NoInput">true</B></MS></Obj>',  # no PowerShell member
    b"<DT>2024-01-01T00:00:00Z</DT>",  # a DateTime
    b'<SS>AAAA</SS>',  # a secure string: needs the session key
    (b'<Obj RefId="0"><TN RefId="0"><T>System.IO.FileAttributes</T></TN><ToString>Archive</ToString>'
     b"<I32>32</I32></Obj>"),  # an enum
    b'<Ref RefId="9" />',
    b"not xml",
])
def test_unknown_shapes_are_refused_not_misread(xml: bytes) -> None:
    with pytest.raises(clixml.Unsupported):
        if b"NoInput" in xml:
            clixml.read_create_pipeline(xml)
        else:
            clixml.read_value(xml)


@pytest.mark.parametrize("value", [v for v in VALUES if isinstance(v, str)], ids=lambda v: repr(v)[:30])
def test_output_strings_are_written_as_psrpcore_writes_them_and_pypsrp_reads_them_back(value: str) -> None:
    rpid, pid = uuid.uuid4(), uuid.uuid4()
    message = clixml.output_message(rpid, pid, value)
    assert message is not None
    kind, got_rpid, got_pid, body = clixml.unpack_message(message)
    assert (kind, got_rpid, got_pid) == (clixml.PIPELINE_OUTPUT, rpid, pid)
    assert body == ET.tostring(serialize(value, psrpcore.PSRemotingCrypto()), encoding="utf-8")
    parsed = Message.unpack(message, Serializer())
    assert parsed.data.data == value


def test_a_state_message_reads_as_pypsrp_expects() -> None:
    rpid, pid = uuid.uuid4(), uuid.uuid4()
    parsed = Message.unpack(clixml.state_message(rpid, pid, 4), Serializer())
    assert parsed.message_type == 0x00041006 and parsed.data.state == 4 and parsed.pid == pid


def test_fragments_split_a_message_and_reassemble() -> None:
    message = bytes(range(256)) * 10
    frags = clixml.fragment(7, message, 1000)
    parsed = clixml.split_fragments(b"".join(frags))
    assert [(f.object_id, f.fragment_id, f.start, f.end) for f in parsed] == [
        (7, 0, True, False), (7, 1, False, False), (7, 2, False, True)]
    assert b"".join(f.blob for f in parsed) == message
    assert clixml.split_fragments(clixml.fragment(1, b"", 1000)[0])[0][2:4] == (True, True)
