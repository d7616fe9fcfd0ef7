"""CreatePipeline messages written as text, byte for byte what pypsrp's generic serializer makes of them.

Every node operation is one CreatePipeline message. pypsrp builds it as a tree of ComplexObjects, deep-copies each
command, walks the tree through its generic CLIXML serializer into ElementTree elements and serializes those: in
a deploy profile that was a third of the controller's CPU. `FastSerializer.serialize` writes the same CLIXML
directly for the messages this transport sends (commands and scripts with named parameters of the protocol's
types, default merges, no host) and hands anything else to pypsrp unchanged. `tests/transport/test_pipeline_xml.py`
compares the two outputs for every kind of call; a pypsrp whose message layout differs is noticed here (the
property lists are checked) and served by pypsrp itself.
"""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

from pypsrp.complex_objects import Command, CommandParameter, HostInfo, Pipeline, PipelineResultTypes
from pypsrp.messages import CreatePipeline
from pypsrp.powershell import RunspacePool
from pypsrp.serializer import Serializer, TaggedValue

_LIST_TYPES = (("System.Collections.Generic.List`1[[System.Management.Automation.PSObject, "
                "System.Management.Automation, Version=1.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]"),
               "System.Object")
_APARTMENT = ("System.Management.Automation.Runspaces.ApartmentState", "System.Enum", "System.ValueType",
              "System.Object")
_STREAMS = ("System.Management.Automation.Runspaces.RemoteStreamOptions", "System.Enum", "System.ValueType",
            "System.Object")
_RESULT_TYPES = ("System.Management.Automation.Runspaces.PipelineResultTypes", "System.Enum", "System.ValueType",
                 "System.Object")
_HASHTABLE = ("System.Collections.Hashtable", "System.Object")
# What MS-PSRP's string encoding (`_xHHHH_`) changes: control characters, astral characters, and "_x"/"_X" (any
# "_" here, to stay simple). A string without any goes out as it is, without pypsrp's two regex substitutions.
_NEEDS_ENCODING = re.compile("[_\u0000-\u001f\u007f-\u009f\U00010000-\U0010ffff]")
_ARRAY = ("System.Object[]", "System.Array", "System.Object")
_APARTMENT_NAMES = {0: "STA", 1: "MTA", 2: "UNKNOWN"}
_STREAM_NAMES = {0: "None", 15: "AddInvocationInfo"}

# The layouts this writer reproduces (pypsrp 0.9, protocol 2.3); anything else goes to pypsrp's serializer.
_CREATE_PIPELINE = ("no_input", "apartment_state", "remote_stream_options", "add_to_history", "host_info",
                    "pipeline", "is_nested")
_PIPELINE = ("is_nested", "_extra_cmds", "_cmds", "history", "redirect_err_to_out")
_COMMAND = ("cmd", "is_script", "use_local_scope", "merge_my_result", "merge_to_result", "merge_previous", "args",
            "merge_error", "merge_warning", "merge_verbose", "merge_debug", "merge_information")
_MERGES_BEFORE_ARGS = (("merge_my_result", "MergeMyResult"), ("merge_to_result", "MergeToResult"),
                       ("merge_previous", "MergePreviousResults"))
_MERGES_AFTER_ARGS = (("merge_error", "MergeError"), ("merge_warning", "MergeWarning"),
                      ("merge_verbose", "MergeVerbose"), ("merge_debug", "MergeDebug"),
                      ("merge_information", "MergeInformation"))


class _Unsupported(Exception):
    """A message this writer does not reproduce; pypsrp serializes it."""


def _names(obj: Any) -> tuple[str, ...]:
    return tuple(name for name, _ in obj._extended_properties)


class _Writer:
    """One message's text, with pypsrp's numbering: Obj RefIds in document order, one TN per distinct type list
    (a TNRef after the first)."""

    def __init__(self, serializer: Serializer) -> None:
        self.parts: list[str] = []
        self.next_obj = 0
        self.type_ids: dict[tuple[str, ...], int] = {}
        self.serializer = serializer

    def obj(self, name: str | None = None) -> None:
        attr = f' N="{name}"' if name is not None else ""
        self.parts.append(f'<Obj RefId="{self.next_obj}"{attr}>')
        self.next_obj += 1

    def types(self, names: tuple[str, ...]) -> None:
        known = self.type_ids.get(names)
        if known is not None:
            self.parts.append(f'<TNRef RefId="{known}" />')
            return
        ref = self.type_ids[names] = len(self.type_ids)
        self.parts.append(f'<TN RefId="{ref}">' + "".join(f"<T>{t}</T>" for t in names) + "</TN>")

    def string(self, value: str, name: str | None = None) -> None:
        attr = f' N="{name}"' if name is not None else ""
        text = value if _NEEDS_ENCODING.search(value) is None else self.serializer._serialize_string(value)
        self.parts.append(f"<S{attr}>{escape(text)}</S>" if text else f"<S{attr} />")

    def boolean(self, value: bool, name: str) -> None:
        self.parts.append(f'<B N="{name}">{"true" if value else "false"}</B>')

    def nil(self, name: str) -> None:
        self.parts.append(f'<Nil N="{name}" />')

    def enum(self, name: str, types: tuple[str, ...], text: str, value: int) -> None:
        self.obj(name)
        self.types(types)
        self.parts.append(f"<ToString>{text}</ToString><I32>{value}</I32></Obj>")

    def value(self, value: Any, name: str) -> None:
        """A parameter value of one of the protocol's types (transport/winrm.py `_wire_parameters`)."""
        if value is None:
            self.nil(name)
        elif isinstance(value, TaggedValue):
            if value.tag != "I64" or not isinstance(value.value, int) or isinstance(value.value, bool):
                raise _Unsupported(f"tagged {value.tag}")
            self.parts.append(f'<I64 N="{name}">{value.value}</I64>')
        elif isinstance(value, bool):
            self.boolean(value, name)
        elif isinstance(value, int):
            self.parts.append(f'<I32 N="{name}">{value}</I32>')
        elif isinstance(value, str):
            self.string(value, name)
        elif isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise _Unsupported("a list of non-strings")
            self.obj(name)
            self.types(_ARRAY)
            if value:
                self.parts.append("<LST>")
                for item in value:
                    self.string(item)
                self.parts.append("</LST></Obj>")
            else:
                self.parts.append("<LST /></Obj>")
        elif isinstance(value, dict):
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise _Unsupported("a dict of non-strings")
            self.obj(name)
            self.types(_HASHTABLE)
            if value:
                self.parts.append("<DCT>")
                for key, item in value.items():
                    self.parts.append("<En>")
                    self.string(key, "Key")
                    self.string(item, "Value")
                    self.parts.append("</En>")
                self.parts.append("</DCT></Obj>")
            else:
                self.parts.append("<DCT /></Obj>")
        else:
            raise _Unsupported(type(value).__name__)

    def merge(self, command: Command, attribute: str, name: str) -> None:
        merge = getattr(command, attribute)
        if not isinstance(merge, PipelineResultTypes) or merge.value != PipelineResultTypes.NONE:
            raise _Unsupported(f"{attribute} merge")
        self.enum(name, _RESULT_TYPES, "None", 0)

    def command(self, command: Command) -> None:
        if _names(command) != _COMMAND or not isinstance(command.cmd, str) or \
                not isinstance(command.is_script, bool) or command.use_local_scope not in (None, True, False):
            raise _Unsupported("command layout")
        self.obj()
        self.parts.append("<MS>")
        self.string(command.cmd, "Cmd")
        self.boolean(command.is_script, "IsScript")
        if command.use_local_scope is None:
            self.nil("UseLocalScope")
        else:
            self.boolean(command.use_local_scope, "UseLocalScope")
        for attribute, name in _MERGES_BEFORE_ARGS:
            self.merge(command, attribute, name)
        self.obj("Args")
        self.types(_LIST_TYPES)
        args = command.args or []
        if args:
            self.parts.append("<LST>")
            for arg in args:
                if not isinstance(arg, CommandParameter) or _names(arg) != ("name", "value") or \
                        not isinstance(arg.name, str):
                    raise _Unsupported("a positional or unusual parameter")
                self.obj()
                self.parts.append("<MS>")
                self.string(arg.name, "N")
                self.value(arg.value, "V")
                self.parts.append("</MS></Obj>")
            self.parts.append("</LST></Obj>")
        else:
            self.parts.append("<LST /></Obj>")
        for attribute, name in _MERGES_AFTER_ARGS:
            self.merge(command, attribute, name)
        self.parts.append("</MS></Obj>")

    def commands(self, commands: list[Command], name: str) -> None:
        self.obj(name)
        self.types(_LIST_TYPES)
        self.parts.append("<LST>")
        for command in commands:
            self.command(command)
        self.parts.append("</LST></Obj>")

    def pipeline(self, pipeline: Pipeline) -> None:
        if _names(pipeline) != _PIPELINE or not pipeline.commands:
            raise _Unsupported("pipeline layout")
        # pypsrp's statements: commands up to each end_of_statement, the last command always ending one.
        statements: list[list[Command]] = [[]]
        for index, command in enumerate(pipeline.commands):
            statements[-1].append(command)
            if command.end_of_statement or index == len(pipeline.commands) - 1:
                statements.append([])
        statements.pop()
        self.obj("PowerShell")
        self.parts.append("<MS>")
        self.boolean(bool(pipeline.is_nested), "IsNested")
        if len(statements) < 2:
            self.nil("ExtraCmds")
        else:
            self.obj("ExtraCmds")
            self.types(_LIST_TYPES)
            self.parts.append("<LST>")
            for statement in statements:
                self.obj()
                self.parts.append("<MS>")
                self.commands(statement, "Cmds")
                self.parts.append("</MS></Obj>")
            self.parts.append("</LST></Obj>")
        self.commands(statements[0], "Cmds")
        if pipeline.history is None:
            self.nil("History")
        else:
            self.string(pipeline.history, "History")
        self.boolean(bool(pipeline.redirect_err_to_out), "RedirectShellErrorOutputPipe")
        self.parts.append("</MS></Obj>")

    def create_pipeline(self, message: CreatePipeline) -> bytes:
        if _names(message) != _CREATE_PIPELINE:
            raise _Unsupported("message layout")
        host = message.host_info
        if not isinstance(host, HostInfo) or host.host is not None:
            raise _Unsupported("a PowerShell host")
        apartment = getattr(message.apartment_state, "value", None)
        streams = getattr(message.remote_stream_options, "value", None)
        pipeline = message.pipeline
        if pipeline is None or apartment not in _APARTMENT_NAMES or streams not in _STREAM_NAMES or \
                pipeline.is_nested or message.is_nested:
            raise _Unsupported("apartment, stream options or nesting")
        self.obj()
        self.parts.append("<MS>")
        self.boolean(bool(message.no_input), "NoInput")
        self.enum("ApartmentState", _APARTMENT, _APARTMENT_NAMES[apartment], apartment)
        self.enum("RemoteStreamOptions", _STREAMS, _STREAM_NAMES[streams], streams)
        self.boolean(bool(message.add_to_history), "AddToHistory")
        self.obj("HostInfo")
        self.parts.append('<MS><B N="_isHostNull">true</B><B N="_isHostUINull">true</B>'
                          '<B N="_isHostRawUINull">true</B><B N="_useRunspaceHost">true</B></MS></Obj>')
        self.pipeline(pipeline)
        self.boolean(bool(message.is_nested), "IsNested")
        self.parts.append("</MS></Obj>")
        return "".join(self.parts).encode("utf-8")


class FastSerializer(Serializer):
    """pypsrp's serializer, except that CreatePipeline messages of the supported shape are written directly (as
    bytes, which `Message.pack` sends as they are)."""

    def serialize(self, value: Any, metadata: Any = None, parent: Any = None, clear: bool = True) -> Any:
        if isinstance(value, CreatePipeline) and metadata is None and parent is None and clear:
            try:
                return _Writer(self).create_pipeline(value)
            except _Unsupported:
                pass
        return super().serialize(value, metadata, parent, clear)


def use_fast_serializer(pool: RunspacePool) -> None:
    """Give a new pool (before `open()`) the fast serializer; it also deserializes, exactly as pypsrp's."""
    serializer = FastSerializer()
    pool._serializer = serializer
    pool._fragmenter.serializer = serializer
