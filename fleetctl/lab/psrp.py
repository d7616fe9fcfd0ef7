"""PowerShell Remoting Protocol for one WS-Management shell: the runspace pool and its pipelines, driving a
`NodeBackend`.

One `RunspaceSession` per shell (= one runspace pool). The WS-Management layer feeds it the PSRP bytes of
Create (`creationXml`), Command (first CreatePipeline fragment) and Send (more fragments, pipeline input), and
long-polls `receive()` for the bytes to answer a Receive with. Everything here runs on the event loop thread;
only the backend call runs in the executor, with plain values.

The pool's own messages (SessionCapability, InitRunspacePool, anything else addressed to the pool) go to
psrpcore's `ServerRunspacePool`. A pipeline's messages are this module's: CreatePipeline and PipelineInput are
read by `clixml.py` (a fast walk over the XML; psrpcore's full deserializer only for shapes it does not know), and
the pipeline's state and output messages are written here, so the per-operation cost is an XML parse rather than
psrpcore's object model (profiled: that was half of the lab's CPU in a deploy).

A pipeline runs when its CreatePipeline message is complete and, unless it declared no input, when its
EndOfPipelineInput arrived. Its commands run in order, each getting the previous one's output as input:
script commands (and `Invoke-Expression -Command`) go to `backend.run_script`, cmdlets to `backend.invoke`
(named parameters; a switch is True), and the formatting cmdlets `Out-String`/`Out-Null` are applied here. A
failure puts the pipeline in the Failed state with an error record, so pypsrp's `had_errors` is True and
`streams.error` holds the message.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
import time
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import psrpcore
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PipelineState,
    PSInvocationState,
    PSObject,
    deserialize,
    serialize,
)

from fleetctl.config.redaction import redact
from fleetctl.lab import clixml
from fleetctl.lab.backend import LabUnsupported, NodeBackend
from fleetctl.lab.scripts import ScriptError

# Outgoing messages are split into fragments of at most this many blob bytes. psrpcore's own fragmenter copies
# the rest of a message on every fragment (quadratic for a 27 MB fetch answer), so the lab takes each message
# whole and splits it here with memoryviews.
FRAGMENT_BLOB = 128 * 1024
_FRAGMENT_HEADER = struct.Struct(">QQBI")  # ObjectId, FragmentId, flags (S=1, E=2), BlobLength: MS-PSRP 2.2.4
_TERMINAL = (PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped)
# Object ids of the messages this module writes: far above psrpcore's own counter (which starts at 0), so a
# client's defragmenter never sees one id for two messages.
_OWN_OBJECT_IDS = 1 << 40
# FLEETCTL_LAB_CLIXML=psrpcore reads every pipeline message with psrpcore's deserializer (the lab's reader before
# clixml.py): the baseline tests/bench/bench_lab_scale.py measures the fast reader against, in the same run.
_FAST_READ = os.environ.get("FLEETCTL_LAB_CLIXML", "fast") != "psrpcore"


def plain(value: Any) -> Any:
    """A deserialised PowerShell value as plain Python (str, int, bool, float, bytes, list, dict, None)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, PSObject):
        props = getattr(value.PSObject, "extended_properties", None) or []
        if props:
            return {p.name: plain(p.get_value(value)) for p in props}
    return str(value)


@dataclass(frozen=True)
class CommandCall:
    """One command of a pipeline, in plain values."""

    name: str  # cmdlet/function name, or the script text
    is_script: bool
    named: dict[str, Any]
    positional: list[Any]
    end_of_statement: bool = False  # the last command of its statement (pypsrp's add_statement())


@dataclass
class _Run:
    pipeline_id: uuid.UUID
    state: PSInvocationState = PSInvocationState.NotStarted
    inputs: list[Any] = field(default_factory=list)
    calls: list[CommandCall] | None = None
    launched: bool = False
    stopped: bool = False


def _call(name: str, is_script: bool, parameters: list[tuple[Any, Any]], end_of_statement: bool) -> CommandCall:
    named: dict[str, Any] = {}
    positional: list[Any] = []
    for key, value in parameters:
        if key is None:
            positional.append(plain(value))
        else:
            # A switch parameter (`-Force`) arrives with no value.
            named[str(key)] = True if value is None else plain(value)
    return CommandCall(str(name), bool(is_script), named, positional, end_of_statement)


def _split_fragments(data: bytes) -> list[bytes]:
    """Re-split psrpcore's whole-message fragments into fragments of at most FRAGMENT_BLOB bytes."""
    out: list[bytes] = []
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        object_id, fragment_id, flags, length = _FRAGMENT_HEADER.unpack_from(view, pos)
        blob = view[pos + _FRAGMENT_HEADER.size: pos + _FRAGMENT_HEADER.size + length]
        pos += _FRAGMENT_HEADER.size + length
        if length <= FRAGMENT_BLOB:
            out.append(bytes(view[pos - _FRAGMENT_HEADER.size - length: pos]))
            continue
        # data_to_send(None) emits each message as one start+end fragment (id 0): split it into 0..n-1.
        pieces = range(0, length, FRAGMENT_BLOB)
        for index, offset in enumerate(pieces):
            piece = blob[offset: offset + FRAGMENT_BLOB]
            piece_flags = (1 if index == 0 and flags & 1 else 0) | (2 if index == len(pieces) - 1 and flags & 2
                                                                   else 0)
            out.append(_FRAGMENT_HEADER.pack(object_id, fragment_id + index, piece_flags, len(piece)) + piece)
    return out


class RunspaceSession:
    """One runspace pool: PSRP in, PSRP out, pipelines run on the backend."""

    def __init__(self, shell_id: str, backend: NodeBackend, executor: Executor | None = None) -> None:
        self.shell_id = shell_id
        self.backend = backend
        self.executor = executor
        self.pool = psrpcore.ServerRunspacePool()
        self.closed = False
        self._runs: dict[uuid.UUID, _Run] = {}
        self._queues: dict[uuid.UUID | None, deque[bytes]] = {}
        self._events: dict[uuid.UUID | None, asyncio.Event] = {}
        self._receivers: dict[uuid.UUID | None, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._incoming: dict[int, list[bytes]] = {}  # pipeline messages being defragmented, by object id
        self._object_ids = itertools.count(_OWN_OBJECT_IDS)
        self._waiting_receives = 0
        # When the client last did something with this shell (WinRM's idle timeout counts from here).
        self.last_activity = time.monotonic()

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    @property
    def busy(self) -> bool:
        """A command is running or a Receive is waiting: the shell is in use, not idle (MS-WSMV: the idle
        countdown restarts once the command sequence has completed)."""
        return self._waiting_receives > 0 or any(
            r.launched and not r.stopped and r.state not in _TERMINAL for r in self._runs.values())

    # --- input from the client -------------------------------------------------------------------------------
    def open(self, creation_data: bytes) -> None:
        """Create: SessionCapability + InitRunspacePool."""
        self._feed(creation_data, psrpcore.StreamType.default)

    def command(self, command_id: uuid.UUID, data: bytes) -> None:
        """Command: a new pipeline and the first fragment(s) of its CreatePipeline message."""
        self._runs[command_id] = _Run(command_id)
        self._feed(data, psrpcore.StreamType.default)

    def send(self, data: bytes, stream: str) -> None:
        """Send: more fragments (stdin) or host-call responses (pr)."""
        kind = psrpcore.StreamType.prompt_response if stream == "pr" else psrpcore.StreamType.default
        self._feed(data, kind)

    def has_pipeline(self, command_id: uuid.UUID) -> bool:
        return command_id in self._runs

    def _feed(self, data: bytes, kind: psrpcore.StreamType) -> None:
        """Pipeline messages are handled here; everything else (the pool's messages, host responses) goes on to
        psrpcore's pool unchanged."""
        if kind != psrpcore.StreamType.default:
            self._feed_pool(data, kind)
            return
        passthrough: list[bytes] = []
        for frag in clixml.split_fragments(data):
            if frag.object_id in self._incoming or (
                    frag.start and clixml.message_type(frag.blob) in clixml.PIPELINE_MESSAGES):
                parts = self._incoming.setdefault(frag.object_id, [])
                parts.append(frag.blob)
                if frag.end:
                    del self._incoming[frag.object_id]
                    self._on_pipeline_message(b"".join(parts))
            else:
                passthrough.append(frag.raw)
        if passthrough:
            self._feed_pool(b"".join(passthrough), kind)
        self._drain()

    def _feed_pool(self, data: bytes, kind: psrpcore.StreamType) -> None:
        self.pool.receive_data(psrpcore.PSRPPayload(data, kind, None))
        while self.pool.next_event() is not None:
            pass  # psrpcore answers the pool's messages itself; _drain() sends what it queued
        self._drain()

    def _on_pipeline_message(self, data: bytes) -> None:
        kind, _, pipeline_id, body = clixml.unpack_message(data)
        run = self._runs.get(pipeline_id) if pipeline_id is not None else None
        if run is None:
            raise ValueError(f"a pipeline message for pipeline {pipeline_id} that has no Command in this shell")
        if kind == clixml.CREATE_PIPELINE:
            no_input, run.calls = self._read_create_pipeline(body)
            # Running is not sent: MS-PSRP 3.1.4.3 has the client set it itself when it sends CreatePipeline,
            # and only a final state ends a client's Receive loop. Sent, it is all that a first Receive finds
            # for any call slower than a round trip, which then costs a second Receive for the output and state.
            self._set_state(run, PSInvocationState.Running, emit=False)
            if no_input:
                self._launch(run)
        elif kind == clixml.PIPELINE_INPUT:
            run.inputs.append(self._read_value(body))
        elif kind == clixml.END_OF_PIPELINE_INPUT:
            self._launch(run)

    def _read_create_pipeline(self, body: bytes) -> tuple[bool, list[CommandCall]]:
        try:
            if not _FAST_READ:
                raise clixml.Unsupported("FLEETCTL_LAB_CLIXML=psrpcore")
            no_input, statements = clixml.read_create_pipeline(body)
            calls = [_call(c.name, c.is_script, c.parameters, index == len(st.commands) - 1)
                     for st in statements for index, c in enumerate(st.commands)]
            return no_input, calls
        except clixml.Unsupported:
            shell: Any = psrpcore.PowerShell.FromPSObjectForRemoting(self._deserialize(body))
            return bool(shell.no_input), [_call(c.command_text, c.is_script, c.parameters,
                                                bool(getattr(c, "end_of_statement", False)))
                                          for c in shell.commands]

    def _read_value(self, body: bytes) -> Any:
        if not body:
            return None
        try:
            if not _FAST_READ:
                raise clixml.Unsupported("FLEETCTL_LAB_CLIXML=psrpcore")
            return clixml.read_value(body)
        except clixml.Unsupported:
            return plain(self._deserialize(body))

    def _deserialize(self, body: bytes) -> Any:
        # The slow path, for shapes clixml.py does not read (secure strings need the session key psrpcore holds).
        # psrpcore has no public accessor for the pool's session key; its own (de)serialization uses this one.
        return deserialize(ET.fromstring(body), self.pool._cipher,
                           our_capability=self.pool.our_capability, their_capability=self.pool.their_capability)

    def _serialize(self, value: Any) -> bytes:
        element = serialize(value, self.pool._cipher, our_capability=self.pool.our_capability,
                            their_capability=self.pool.their_capability)
        return ET.tostring(element, encoding="utf-8", method="xml")

    # --- running pipelines -------------------------------------------------------------------------------------
    def _launch(self, run: _Run) -> None:
        if run.launched or run.calls is None:
            return
        run.launched = True
        task = asyncio.get_running_loop().create_task(self._run(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        assert run.calls is not None
        # Statements that completed before a failing one keep their output, as in PowerShell.
        outputs: list[Any] = []
        try:
            await loop.run_in_executor(self.executor, self._execute, run.calls, run.inputs, outputs)
            error: str | None = None
        except LabUnsupported as err:
            error = f"Not supported by the fleetctl lab: {err}"
        except ScriptError as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - any node failure becomes a failed pipeline, never a dead server
            error = f"lab node internal error: {type(err).__name__}: {err}"
        run.inputs = []
        self.touch()
        if run.stopped or self.closed or run.state != PSInvocationState.Running:
            return
        for obj in outputs:
            self._write_output(run, obj)
        if error is None:
            self._set_state(run, PSInvocationState.Completed)
        else:
            self._set_state(run, PSInvocationState.Failed, _failure_record(redact(error)))

    def _execute(self, calls: list[CommandCall], inputs: list[Any], outputs: list[Any]) -> None:
        """Runs in the executor: each command gets the previous command's output as its input; a statement's
        output goes to `outputs` when it ends, and the next statement starts without input (the pipeline's
        input feeds the first statement only)."""
        objects = inputs
        for index, call in enumerate(calls):
            objects = self._execute_one(call, objects)
            if call.end_of_statement or index == len(calls) - 1:
                outputs.extend(objects)
                objects = []

    def _execute_one(self, call: CommandCall, objects: list[Any]) -> list[Any]:
        name = call.name.lower()
        if call.is_script:
            objects = list(self.backend.run_script(call.name, call.positional, objects))
        elif name == "invoke-expression" and isinstance(call.named.get("Command"), str):
            # pypsrp's Client.execute_ps(script) sends `Invoke-Expression -Command <script> | Out-String`.
            objects = list(self.backend.run_script(call.named["Command"], [], objects))
        elif name == "out-string":
            objects = ["" if o is None else str(o) for o in objects]
        elif name == "out-null":
            objects = []
        else:
            if call.positional:
                raise LabUnsupported(f"positional arguments to {call.name!r}; pass named parameters")
            objects = list(self.backend.invoke(call.name, call.named, objects))
        return objects

    # --- output to the client ------------------------------------------------------------------------------------
    def _queue_message(self, pipeline_id: uuid.UUID, message: bytes) -> None:
        queue = self._queues.setdefault(pipeline_id, deque())
        queue.extend(clixml.fragment(next(self._object_ids), message, FRAGMENT_BLOB))
        self._event(pipeline_id).set()

    def _write_output(self, run: _Run, value: Any) -> None:
        rpid = self.pool.runspace_pool_id
        message = clixml.output_message(rpid, run.pipeline_id, value)
        if message is None:  # not a string: psrpcore knows how every other type is written
            message = clixml.pack_message(clixml.PIPELINE_OUTPUT, rpid, run.pipeline_id, self._serialize(value))
        self._queue_message(run.pipeline_id, message)

    def _set_state(self, run: _Run, state: PSInvocationState, error: ErrorRecord | None = None,
                   emit: bool = True) -> None:
        run.state = state
        if not emit:
            return
        rpid = self.pool.runspace_pool_id
        if error is None:
            message = clixml.state_message(rpid, run.pipeline_id, int(state))
        else:
            # The error record travels in the state message, as a terminating error does in PowerShell.
            pipe_state = PipelineState(PipelineState=int(state))
            pipe_state.ExceptionAsErrorRecord = error
            message = clixml.pack_message(clixml.PIPELINE_STATE, rpid, run.pipeline_id, self._serialize(pipe_state))
        self._queue_message(run.pipeline_id, message)

    # --- signals -------------------------------------------------------------------------------------------------
    def stop(self, command_id: uuid.UUID) -> None:
        """PowerShell ctrl_c: the pipeline ends Stopped (a running backend call finishes but is not reported)."""
        run = self._runs.get(command_id)
        if run is None:
            return
        run.stopped = True
        if run.state in (PSInvocationState.Running, PSInvocationState.Stopping):
            self._set_state(run, PSInvocationState.Stopped, _stopped_record())

    def terminate(self, command_id: uuid.UUID) -> None:
        """Terminate: the client is done with the pipeline; forget it."""
        run = self._runs.pop(command_id, None)
        if run is not None:
            run.stopped = True
        self._queues.pop(command_id, None)
        self._receivers.pop(command_id, None)
        event = self._events.pop(command_id, None)
        if event is not None:
            event.set()

    def close(self) -> None:
        """Delete: the shell is gone; wake every waiting Receive."""
        self.closed = True
        for run in self._runs.values():
            run.stopped = True
        self._runs.clear()
        self._queues.clear()
        for event in self._events.values():
            event.set()

    def _drain(self) -> None:
        """Move what psrpcore queued for the pool (its own messages) to the Receive queues."""
        while (payload := self.pool.data_to_send()) is not None:
            queue = self._queues.setdefault(payload.pipeline_id, deque())
            queue.extend(_split_fragments(payload.data))
            self._event(payload.pipeline_id).set()

    def _event(self, target: uuid.UUID | None) -> asyncio.Event:
        event = self._events.get(target)
        if event is None:
            event = self._events[target] = asyncio.Event()
        return event

    def finished(self, command_id: uuid.UUID) -> bool:
        """The pipeline reached a final state and everything it produced has been handed out."""
        run = self._runs.get(command_id)
        done = run is None or run.state in _TERMINAL
        return done and not self._queues.get(command_id)

    async def receive(self, command_id: uuid.UUID | None, max_bytes: int, timeout: float) -> bytes | None:
        """Up to `max_bytes` of PSRP fragments for the pool (None) or a pipeline; None when `timeout` passed."""
        queue = self._queues.setdefault(command_id, deque())
        # Only the newest Receive per target may take data: when pypsrp gives up on one (read timeout) and
        # re-sends it on a new connection, the abandoned one must not consume output into a dead socket.
        generation = self._receivers[command_id] = self._receivers.get(command_id, 0) + 1
        if not queue:
            event = self._event(command_id)
            event.clear()
            self._waiting_receives += 1
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return None
            finally:
                self._waiting_receives -= 1
                self.touch()
            queue = self._queues.get(command_id, deque())
            if self.closed or not queue or self._receivers.get(command_id) != generation:
                return None
        out = bytearray()
        while queue and (not out or len(out) + len(queue[0]) <= max_bytes):
            out += queue.popleft()
        return bytes(out)


def _failure_record(message: str) -> ErrorRecord:
    # Like a terminating error (`throw`) in PowerShell: no separate error record, the pipeline state carries it;
    # pypsrp then lists it in streams.error and sets had_errors.
    exception = NETException(Message=message)
    category = ErrorCategoryInfo(Category=ErrorCategory.NotSpecified, Reason="LabError")
    return ErrorRecord(Exception=exception, CategoryInfo=category, FullyQualifiedErrorId="FleetLabError")


def _stopped_record() -> ErrorRecord:
    """What PowerShell reports for a pipeline stopped by ctrl_c (as psrpcore's ServerPipeline.stop writes it)."""
    exception = NETException(Message="The pipeline has been stopped.", HResult=-2146233087)
    exception.PSObject.type_names = ["System.Management.Automation.PipelineStoppedException",
                                     "System.Management.Automation.RuntimeException", "System.SystemException",
                                     *exception.PSTypeNames]
    return ErrorRecord(Exception=exception, CategoryInfo=ErrorCategoryInfo(
        Category=ErrorCategory.OperationStopped, Reason="PipelineStoppedException"),
        FullyQualifiedErrorId="PipelineStopped")
