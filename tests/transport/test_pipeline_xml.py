"""The fast CreatePipeline writer against pypsrp's own serializer: byte-for-byte equal for every operation of the
protocol, multi-statement pipelines, the module loader and awkward strings; anything it does not reproduce is
left to pypsrp (and still equal)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from pypsrp.complex_objects import ApartmentState, PipelineResultTypes, RunspacePoolState
from pypsrp.powershell import PowerShell
from pypsrp.serializer import Serializer, TaggedValue

from fleetctl.protocol.operations import OPERATIONS_LIST
from fleetctl.transport.pipeline_xml import FastSerializer, _Unsupported, _Writer
from fleetctl.transport.winrm import _add_call, _loader_call

AWKWARD = ["", "plain", "a & b < c > d \" ' ", "_x0041_ and _X00", "C:\\apps\\hello\\current", "naïve ☃ 中文",
           "emoji 🚀 beyond the BMP", "ctl \x00\x01\x1f\x7f tab\tnl\ncr\r", "]]> <![CDATA[", "$env:X; `n"]


class _Pool:
    protocol_version = "2.3"
    apartment_state = ApartmentState.UNKNOWN
    host = None
    id = uuid.uuid4()
    state = RunspacePoolState.OPENED

    def __init__(self) -> None:
        self.pipelines: dict[str, Any] = {}
        self._fragmenter = self  # input messages (after the CreatePipeline) are not of interest here

    def fragment_multiple(self, *args: Any) -> list[bytes]:
        return []


def create_pipeline(build: Callable[[PowerShell], None], **invoke: Any) -> Any:
    """The CreatePipeline message pypsrp would send for what `build` adds (captured, not sent)."""
    ps = PowerShell(_Pool())  # type: ignore[arg-type]
    build(ps)
    sent: list[Any] = []
    ps._invoke = sent.append  # type: ignore[method-assign]
    ps.begin_invoke(**invoke)
    return sent[0]


def both(message: Any) -> tuple[bytes, bytes]:
    theirs = ET.tostring(Serializer().serialize(message), encoding="utf-8", method="xml")
    ours = FastSerializer().serialize(message)
    assert isinstance(ours, bytes)
    return ours, theirs


def sample(kind: str, index: int) -> Any:
    text = AWKWARD[index % len(AWKWARD)]
    return {"string": text or "x", "int": 30 + index, "long": 7340032 + index, "bool": index % 2 == 0,
            "switch": True, "string[]": [text, "second", ""][: 1 + index % 3],
            "hashtable": {f"K{index}": text, "PATH": "C:\\bin"} if index % 4 else {}}[kind]


@pytest.mark.parametrize("operation", [op.name for op in OPERATIONS_LIST])
def test_every_operation_with_every_parameter_is_written_as_pypsrp_writes_it(operation: str) -> None:
    op = next(o for o in OPERATIONS_LIST if o.name == operation)
    for index in range(4):
        params = {p.name: sample(p.type, index + i) for i, p in enumerate(op.params)}
        message = create_pipeline(lambda ps, p=params: _add_call(ps, operation, p))  # type: ignore[misc]
        ours, theirs = both(message)
        assert ours == theirs


def test_statements_the_loader_and_input() -> None:
    script, parameters = _loader_call()

    def loader_and_lock(ps: PowerShell) -> None:
        ps.add_script(script)
        for name, value in parameters.items():
            ps.add_parameter(name, value)
        ps.add_statement()
        _add_call(ps, "Lock-FleetApp", {"App": "hello", "Owner": "me@ci", "DeployId": "d-1", "TtlSeconds": 600,
                                        "Process": "ctl/boot/ns/42/99"})
        ps.add_statement()
        _add_call(ps, "Get-FleetFacts", {})

    for message in (create_pipeline(loader_and_lock), create_pipeline(loader_and_lock, input=["a", "b"]),
                    create_pipeline(lambda ps: ps.add_cmdlet("Get-FleetFacts")),
                    create_pipeline(lambda ps: ps.add_script("1").add_cmdlet("Out-String").add_parameter("Stream"))):
        ours, theirs = both(message)
        assert ours == theirs


def test_what_it_does_not_reproduce_is_left_to_pypsrp() -> None:
    unusual = [
        lambda ps: ps.add_cmdlet("X").add_parameter("F", 1.5),  # a float
        lambda ps: ps.add_cmdlet("X").add_argument("positional"),
        lambda ps: ps.add_cmdlet("X").add_parameter("L", [1, 2]),
        lambda ps: ps.add_cmdlet("X").add_parameter("T", TaggedValue("By", 3)),
    ]
    for build in unusual:
        message = create_pipeline(build)
        with pytest.raises(_Unsupported):
            _Writer(Serializer()).create_pipeline(message)
        ours = FastSerializer().serialize(message)
        assert ET.tostring(ours, encoding="utf-8", method="xml") == both_theirs(message)
    merged = create_pipeline(lambda ps: ps.add_cmdlet("X").merge_error("output"))
    assert merged.pipeline.commands[0].merge_error.value != PipelineResultTypes.NONE
    with pytest.raises(_Unsupported):
        _Writer(Serializer()).create_pipeline(merged)


def both_theirs(message: Any) -> bytes:
    return ET.tostring(Serializer().serialize(message), encoding="utf-8", method="xml")
