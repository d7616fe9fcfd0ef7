"""The PSRP messages of a pipeline, read and written without psrpcore's object model: the lab's hot path.

psrpcore turns every CLIXML element into a `PSObject` with typed note properties; for the CreatePipeline message
of one protocol operation that costs ~2 ms of CPU (profiled: half of the lab's CPU during a deploy), where the
values the lab needs — command names, parameter names and plain values — are a C-parsed ElementTree walk away.
This module reads CreatePipeline and PipelineInput (MS-PSRP 2.2.2.10, 2.2.2.17) into plain Python values and
writes PipelineOutput strings and PipelineState messages (2.2.2.18, 2.2.2.21) and their fragments (2.2.4).
Anything it does not know (secure strings, dates, other .NET types) raises `Unsupported`, and the caller hands
that message to psrpcore instead: fast where the shape is known, never wrong where it is not.

API:
    split_fragments(data) -> [Fragment]                   # a Command/Send payload
    message_type(blob) -> int                             # of a message's first fragment
    unpack_message(blob) -> (message_type, rpid, pid, xml bytes)
    read_create_pipeline(xml) -> (no_input, [Statement of CommandSpec])   # or Unsupported
    read_value(xml) -> plain value                        # PipelineInput; or Unsupported
    output_message(rpid, pid, value) / state_message(rpid, pid, state) -> message bytes (None for non-strings)
    fragment(object_id, message, max_blob) -> [bytes]
"""

from __future__ import annotations

import base64
import re
import struct
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

FRAGMENT_HEADER = struct.Struct(">QQBI")  # ObjectId, FragmentId, flags (S=1, E=2), BlobLength
_MESSAGE_HEADER = struct.Struct("<iI16s16s")  # Destination, MessageType, RPID, PID (GUIDs little-endian)
DESTINATION_CLIENT = 0x00000001

CREATE_PIPELINE = 0x00021006
PIPELINE_INPUT = 0x00041002
END_OF_PIPELINE_INPUT = 0x00041003
PIPELINE_OUTPUT = 0x00041004
PIPELINE_STATE = 0x00041006
PIPELINE_MESSAGES = (CREATE_PIPELINE, PIPELINE_INPUT, END_OF_PIPELINE_INPUT)

_INTEGERS = {"I32", "I64", "I16", "U16", "U32", "U64", "By", "SB"}
_FLOATS = {"DB", "Sg"}
_LISTS = {"LST", "IE", "STK", "QUE"}
# CLIXML escapes C0/C1 control characters, surrogates and "_x" itself as _xHHHH_ (one per UTF-16 code unit).
_ESCAPED = re.compile(r"_x([0-9A-Fa-f]{4})_")
_NEEDS_ESCAPE = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\udfff\U00010000-\U0010ffff]|_x", re.IGNORECASE)


class Unsupported(Exception):
    """A CLIXML shape this reader does not handle; psrpcore's full deserializer takes the message instead."""


class Fragment(NamedTuple):
    object_id: int
    fragment_id: int
    start: bool
    end: bool
    blob: bytes
    raw: bytes  # the fragment as received, header included (to hand on to psrpcore unchanged)


@dataclass(frozen=True)
class CommandSpec:
    """One command of a pipeline as the client sent it."""

    name: str
    is_script: bool
    parameters: list[tuple[str | None, Any]]  # (name or None for positional, plain value; None for a switch)


@dataclass
class Statement:
    commands: list[CommandSpec] = field(default_factory=list)


# ---- framing ---------------------------------------------------------------------------------------------------
def split_fragments(data: bytes) -> list[Fragment]:
    out = []
    view = memoryview(data)
    pos = 0
    while pos + FRAGMENT_HEADER.size <= len(view):
        object_id, fragment_id, flags, length = FRAGMENT_HEADER.unpack_from(view, pos)
        end = pos + FRAGMENT_HEADER.size + length
        if end > len(view):
            raise Unsupported("a fragment runs past the end of the payload")
        out.append(Fragment(object_id, fragment_id, bool(flags & 1), bool(flags & 2),
                            bytes(view[pos + FRAGMENT_HEADER.size:end]), bytes(view[pos:end])))
        pos = end
    return out


def message_type(blob: bytes) -> int:
    """The message type from the first fragment of a message (its first 8 bytes are Destination and Type)."""
    return int(struct.unpack_from("<I", blob, 4)[0]) if len(blob) >= 8 else 0


def unpack_message(data: bytes) -> tuple[int, uuid.UUID, uuid.UUID | None, bytes]:
    _, kind, rpid, pid = _MESSAGE_HEADER.unpack_from(data, 0)
    body = data[_MESSAGE_HEADER.size:]
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    pipeline = uuid.UUID(bytes_le=pid)
    return kind, uuid.UUID(bytes_le=rpid), None if pipeline.int == 0 else pipeline, body


def pack_message(kind: int, rpid: uuid.UUID, pid: uuid.UUID | None, body: bytes) -> bytes:
    return _MESSAGE_HEADER.pack(DESTINATION_CLIENT, kind, rpid.bytes_le, (pid or uuid.UUID(int=0)).bytes_le) + body


def fragment(object_id: int, message: bytes, max_blob: int) -> list[bytes]:
    """A message as fragments of at most `max_blob` bytes each (ids 0..n-1, start and end flags)."""
    view = memoryview(message)
    offsets = range(0, max(1, len(view)), max_blob)
    out = []
    for index, offset in enumerate(offsets):
        piece = view[offset:offset + max_blob]
        flags = (1 if index == 0 else 0) | (2 if index == len(offsets) - 1 else 0)
        out.append(FRAGMENT_HEADER.pack(object_id, index, flags, len(piece)) + piece)
    return out


# ---- reading ---------------------------------------------------------------------------------------------------
def _text(element: ET.Element) -> str:
    text = element.text or ""
    if "_x" not in text and "_X" not in text:
        return text
    # Each _xHHHH_ is one UTF-16 code unit; a pair of surrogates becomes one character.
    units = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)
    return units.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class _Reader:
    def __init__(self) -> None:
        self.refs: dict[str, Any] = {}

    def value(self, element: ET.Element) -> Any:
        tag = element.tag
        if tag == "S":
            return _text(element)
        if tag == "Nil":
            return None
        if tag == "B":
            return (element.text or "").strip().lower() == "true"
        if tag in _INTEGERS:
            return int((element.text or "0").strip())
        if tag in _FLOATS:
            return float((element.text or "0").strip())
        if tag == "BA":
            return base64.b64decode(element.text or "")
        if tag == "Ref":
            ref = element.get("RefId")
            if ref not in self.refs:
                raise Unsupported(f"reference to unknown object {ref!r}")
            return self.refs[ref]
        if tag == "Obj":
            return self._object(element)
        raise Unsupported(f"CLIXML element <{tag}>")

    def _object(self, element: ET.Element) -> Any:
        value: Any
        children = [c for c in element if c.tag not in ("TN", "TNRef", "ToString")]
        if len(children) == 1 and children[0].tag in _LISTS:
            value = [self.value(item) for item in children[0]]
        elif len(children) == 1 and children[0].tag == "DCT":
            value = {}
            for entry in children[0]:
                key = next((c for c in entry if c.get("N") == "Key"), None)
                item = next((c for c in entry if c.get("N") == "Value"), None)
                if key is None or item is None:
                    raise Unsupported("a dictionary entry without Key or Value")
                value[self.value(key)] = self.value(item)
        elif len(children) == 1 and children[0].tag == "MS":
            value = {c.get("N"): self.value(c) for c in children[0]}
        else:
            raise Unsupported("an object that is neither a list, a dictionary nor a property bag")
        ref = element.get("RefId")
        if ref is not None:
            self.refs[ref] = value
        return value

    def members(self, element: ET.Element) -> dict[str, ET.Element]:
        """The named members (<MS> children) of an <Obj>, as elements."""
        if element.tag != "Obj":
            raise Unsupported(f"expected an object, got <{element.tag}>")
        ms = element.find("MS")
        return {c.get("N") or "": c for c in ms} if ms is not None else {}

    def items(self, element: ET.Element | None) -> list[ET.Element]:
        """The items of a list object (<Obj><LST>...</LST></Obj>)."""
        if element is None or element.tag == "Nil":
            return []
        lst = next((c for c in element if c.tag in _LISTS), None)
        if lst is None:
            raise Unsupported("expected a list")
        return list(lst)


def read_value(xml: bytes) -> Any:
    """One serialized value (a PipelineInput message's body) as a plain Python value."""
    try:
        return _Reader().value(ET.fromstring(xml))
    except ET.ParseError as err:
        raise Unsupported(f"not XML: {err}") from None


def read_create_pipeline(xml: bytes) -> tuple[bool, list[Statement]]:
    """(no_input, statements) of a CreatePipeline message body, as psrpcore's `PowerShell` would give them."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise Unsupported(f"not XML: {err}") from None
    reader = _Reader()
    top = reader.members(root)
    no_input = top.get("NoInput")
    shell = top.get("PowerShell")
    if no_input is None or shell is None:
        raise Unsupported("a CreatePipeline without NoInput or PowerShell")
    members = reader.members(shell)
    extra = members.get("ExtraCmds")
    # PowerShell batches several statements as ExtraCmds (each with its own Cmds); one statement is just Cmds.
    groups = ([reader.members(e).get("Cmds") for e in reader.items(extra)]
              if extra is not None and extra.tag != "Nil" else [members.get("Cmds")])
    statements = []
    for cmds in groups:
        statement = Statement()
        for item in reader.items(cmds):
            command = reader.members(item)
            name, is_script = command.get("Cmd"), command.get("IsScript")
            if name is None or is_script is None:
                raise Unsupported("a command without Cmd or IsScript")
            parameters: list[tuple[str | None, Any]] = []
            for arg in reader.items(command.get("Args")):
                pair = reader.members(arg)
                key, value = pair.get("N"), pair.get("V")
                parameters.append((None if key is None else reader.value(key),
                                   None if value is None else reader.value(value)))
            statement.commands.append(CommandSpec(str(reader.value(name)), bool(reader.value(is_script)),
                                                  parameters))
        statements.append(statement)
    return bool(reader.value(no_input)), statements


# ---- writing ---------------------------------------------------------------------------------------------------
def _escape_text(value: str) -> str:
    if _NEEDS_ESCAPE.search(value):
        value = re.sub("(?i)_(x)", r"_x005F_\1", value)
        value = re.sub("[\u0000-\u001f\u007f-\u009f\ud800-\udfff\U00010000-\U0010ffff]", _escape_char, value)
    return escape(value)


def _escape_char(match: re.Match[str]) -> str:
    units = match.group(0).encode("utf-16-be", "surrogatepass")
    return "".join(f"_x{units[i]:02X}{units[i + 1]:02X}_" for i in range(0, len(units), 2))


def output_message(rpid: uuid.UUID, pid: uuid.UUID, value: Any) -> bytes | None:
    """A PipelineOutput message for a string (None output: an empty message); None for other types."""
    if value is None:
        body = b""
    elif isinstance(value, str):
        body = f"<S>{_escape_text(value)}</S>".encode() if value else b"<S />"
    else:
        return None
    return pack_message(PIPELINE_OUTPUT, rpid, pid, body)


def state_message(rpid: uuid.UUID, pid: uuid.UUID, state: int) -> bytes:
    """A PipelineState message without an error record (Running, Completed)."""
    body = f'<Obj RefId="0"><MS><I32 N="PipelineState">{int(state)}</I32></MS></Obj>'.encode()
    return pack_message(PIPELINE_STATE, rpid, pid, body)
