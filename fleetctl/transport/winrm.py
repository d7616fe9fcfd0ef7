"""The WinRM transport: one pypsrp RunspacePool per host, opened once, the FleetNode module loaded once into it,
operations invoked as commands with named parameters, pypsrp and requests failures mapped to typed errors.

Round trips are the fixed cost of a host: `invoke_all` sends several operations as the statements of one
pipeline (pypsrp's `add_statement()`), and when the pool is not open yet, after the module loader in that same
pipeline, so connect + load + lock is one Command and one Receive after the pool opens.

A pool outlives WinRM's shell idle timeout (7200 s by default on Windows; pypsrp has no keep-alive): the
transport remembers the idle timeout the host reported when the shell was created and, past it, opens a new pool
(module loaded again) before the next call instead of sending it into a deleted shell. Should the host drop the
shell anyway (a shorter timeout, a WinRM restart), the call's Command fails with `ShellNotFound` before anything
ran, and the call is sent once more on a new pool (`reopen_expired_shell`); a failure after the Command was
accepted is never resent."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pypsrp.complex_objects import PSInvocationState
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import TaggedValue
from pypsrp.wsman import WSMan

from fleetctl.config.connection import ConnectionSettings
from fleetctl.config.redaction import redact, register_secret
from fleetctl.protocol import loader
from fleetctl.protocol.errors import NodeOperationError, ProtocolError, ShellNotFound, TransportError
from fleetctl.protocol.operations import MODULE_NAME, OPERATIONS, PROTOCOL_VERSION, secret_params
from fleetctl.transport import trace
from fleetctl.transport.base import Call, Transport, check_call, parse_result_document
from fleetctl.transport.envelope import LeanWSMan
from fleetctl.transport.error_mapping import map_exception
from fleetctl.transport.lean_http import LeanTransport, lean_applies
from fleetctl.transport.pipeline_xml import use_fast_serializer
from fleetctl.transport.retry import (
    DEFAULT_ATTEMPTS,
    is_expired_before_call,
    is_transient,
    reopen_expired_shell,
    retry_transient_io,
)
from fleetctl.transport.tls import share_tls_context

# pypsrp raises MaxEnvelopeSize to 512000 once the server speaks protocol 2.2+ (every supported Windows does);
# the payload it then allows per request is what an input object must fit in, after base64 and the PSRP
# message (40-byte header + <S></S>) and fragment (21-byte header) framing. The margin also leaves room for the
# EndOfPipelineInput message to share the last request.
_FRAMING_MARGIN = 40 + 21 + 256
# How much earlier than the host's idle timeout a pool counts as expired: our "last used" is when an answer
# arrived, the host's when it sent it (at most 5 s, at most a tenth of the timeout).
_IDLE_MARGIN_MAX_S = 5.0
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")

def _loader_call() -> tuple[str, dict[str, str]]:
    """The script that loads the FleetNode module into a runspace, and its parameters (fleetctl.protocol.loader)."""
    return loader.loader_script(), loader.loader_parameters()


def _check_and_protect(operation: str, params: dict[str, Any]) -> None:
    """Refuse a call the protocol does not define, and register its secret values before anything is sent."""
    check_call(operation, params)
    for name in secret_params(operation):
        register_secret(params.get(name))


def idle_timeout_seconds(text: str | None) -> float | None:
    """A shell's `rsp:IdleTimeOut` from the Create answer (`PT7200.000S`) in seconds; None if absent/unreadable."""
    match = _DURATION.match((text or "").strip())
    if not text or not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = match.groups()
    value = int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
    return value if value > 0 else None


class WinRMTransport(Transport):
    """Talks to one Windows host (or lab node) over WS-Management with pypsrp."""

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        loader: str | None = None,
        retry_attempts: int = DEFAULT_ATTEMPTS,
        retry_wait: float = 0.5,
    ) -> None:
        self.settings = settings
        self.host = settings.host_name
        self._loader = loader
        # Built once: tenacity keeps each run's state per thread, and calls on one transport are serialised by its
        # lock; a policy per call was ~4 % of a deploy's controller CPU.
        self._retry = retry_transient_io(retry_attempts, retry_wait)
        self._reopen = reopen_expired_shell()
        self._lock = threading.RLock()
        self._wsman: WSMan | None = None
        self._pool: RunspacePool | None = None
        self._idle_timeout_s: float | None = None  # what the host reported for the pool's shell
        self._last_used = 0.0  # monotonic time of the pool's last answer
        self.pools_reopened = 0  # pools replaced because the host's idle timeout had (or would have) expired
        register_secret(settings.password)

    # -- connection -------------------------------------------------------------------------------------------

    def open(self) -> None:
        with self._lock:
            if self._pool is not None:
                return
            for attempt in trace.retries(self._retry, self.host,
                                         "connect"):  # -vv
                with attempt:
                    self._open_once()

    def _open_once(self, calls: Sequence[Call] = ()) -> list[Any]:
        """Open the pool and run the loader, then `calls`, as one pipeline; the calls' output objects.

        After an expired shell the connection (TLS, NTLM) is kept and only the pool is new."""
        wsman = self._wsman or self._new_wsman()
        pool = RunspacePool(wsman)
        use_fast_serializer(pool)  # CreatePipeline messages written directly (pipeline_xml.py)
        started = time.monotonic()  # -vv
        try:
            pool.open()
            self._pool_opened(pool)
            outputs = self._run_loader(pool, calls)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped to a typed error below
            trace.pool_opened(self.host, started, len(calls), exc)  # -vv
            # No pool.close(): it would send a Delete to a host that just failed (one more connection and
            # timeout); dropping the HTTP session is enough for a pool that never opened.
            self._wsman = None
            _close_quietly(None, wsman)
            raise self._mapped(exc) from None
        self._wsman, self._pool = wsman, pool
        trace.pool_opened(self.host, started, len(calls))  # -vv
        return outputs

    def _pool_opened(self, pool: RunspacePool) -> None:
        self._idle_timeout_s = idle_timeout_seconds(getattr(pool.shell, "idle_time_out", None))
        self._last_used = time.monotonic()

    def _idle_expired(self) -> bool:
        """The open pool has been idle for (about) the host's idle timeout: its shell is gone or about to be."""
        if self._pool is None or self._idle_timeout_s is None:
            return False
        margin = min(_IDLE_MARGIN_MAX_S, self._idle_timeout_s / 10)
        return time.monotonic() - self._last_used >= self._idle_timeout_s - margin

    def _ensure_live_pool(self) -> None:
        """Before a call: a pool idle past the host's idle timeout is replaced, not used (its shell is deleted,
        so no Delete is sent for it; the connection is kept)."""
        if self._idle_expired():
            self._pool = None
            self.pools_reopened += 1
            trace.pool_reopened(self.host, "idle past the host's shell timeout")  # -vv

    def _new_wsman(self) -> WSMan:
        s = self.settings
        verify: bool | str = (s.ca_bundle or True) if s.cert_validation else False
        extra: dict[str, Any] = {}
        if s.auth == "certificate":
            extra = {"certificate_pem": s.cert_pem, "certificate_key_pem": s.cert_key_pem}
        lean = lean_applies(s)
        wsman = (LeanWSMan if lean else WSMan)(
            s.address,
            port=s.port,
            username=s.user,
            password=s.password,
            ssl=s.scheme == "https",
            auth=s.auth,
            cert_validation=verify,  # type: ignore[arg-type]  # pypsrp also takes a CA bundle path
            connection_timeout=max(1, round(s.connect_timeout)),
            operation_timeout=max(1, round(s.operation_timeout)),
            read_timeout=s.read_timeout,
            no_proxy=True,
            **extra,
        )
        if lean:
            # pypsrp's WS-Man and PSRP logic, with text envelopes (envelope.py), over one keep-alive connection
            # of our own (lean_http.py)
            wsman.transport = LeanTransport(s, host=self.host)  # type: ignore[assignment]
            return wsman
        share_tls_context(wsman)  # one certificate store per CA bundle, not one per host (tls.py)
        _settle_environment(wsman)
        trace.trace_requests_session(wsman.transport.session, self.host)  # -vv: round trips and connects
        return wsman

    def _run_loader(self, pool: RunspacePool, calls: Sequence[Call]) -> list[Any]:
        """The loader (a fixed script) as the first statement, each call a further statement; returns the
        calls' output objects (the loader's document is checked here)."""
        ps = PowerShell(pool)
        if self._loader is not None:
            ps.add_script(self._loader)
        else:
            script, parameters = _loader_call()
            ps.add_script(script)
            for name, value in parameters.items():
                ps.add_parameter(name, value)
        for operation, params in calls:
            ps.add_statement()
            _add_call(ps, operation, params)
        try:
            outputs = ps.invoke()
        finally:
            self._last_used = time.monotonic()
        pool.pipelines.pop(ps.id, None)
        texts = _documents(outputs)
        if not texts and (ps.had_errors or ps.streams.error):
            raise ProtocolError(f"the FleetNode module did not load: {_first_error(ps)}", host=self.host)
        try:
            result = parse_result_document(texts[:1], "FleetNode loader", self.host)
        except NodeOperationError as err:
            raise ProtocolError(f"the FleetNode module did not load: {err.message}", host=self.host) from None
        # The lab's loader reply carries no version (it runs the protocol in Python); a real one always does.
        version = result.get("version")
        if result.get("module") != MODULE_NAME or (version is not None and str(version) != PROTOCOL_VERSION):
            raise ProtocolError(f"the node loaded {result.get('module')} protocol version {version}, expected "
                                f"{MODULE_NAME} {PROTOCOL_VERSION}; mixed fleetctl versions?", host=self.host)
        if len(texts) < 1 + len(calls) and not (ps.had_errors or ps.streams.error):
            raise ProtocolError(f"the pipeline of {len(calls)} call(s) after the loader returned "
                                f"{len(texts) - 1} document(s)", host=self.host)
        # A failed pipeline (a terminating error) ends after the statements that completed.
        if ps.had_errors or ps.streams.error:
            return [*texts[1:], _PipelineFailed(_first_error(ps))]
        return texts[1:]

    def close(self) -> None:
        with self._lock:
            expired = self._idle_expired()
            pool, wsman = self._pool, self._wsman
            self._pool = self._wsman = None
        if wsman is not None:
            # A shell the host has deleted for idleness needs no Delete (it would only earn a fault).
            _close_quietly(None if expired else pool, wsman)

    def _discard(self) -> None:
        """Forget a pool that failed mid-operation so the next attempt opens a fresh one."""
        self.close()

    @property
    def max_input_object_bytes(self) -> int:
        self.open()
        assert self._wsman is not None
        chars = self._wsman.max_payload_size - _FRAMING_MARGIN
        return max(3, (chars // 4) * 3)

    # -- operations ---------------------------------------------------------------------------------------------

    def invoke(
        self,
        operation: str,
        params: dict[str, Any],
        input_objects: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        _check_and_protect(operation, params)

        def once() -> list[Any]:
            # Not open(): its own retries would multiply with these.
            self._ensure_live_pool()
            if self._pool is None:
                self._open_once()
            return self._run(operation, params, input_objects)

        with self._lock:
            outputs = self._retrying(once, operation)
        return parse_result_document(outputs, operation, self.host)

    def invoke_all(self, calls: Sequence[Call]) -> list[dict[str, Any] | NodeOperationError]:
        """All `calls` as the statements of one pipeline (after the loader if the pool is not open yet)."""
        for operation, params in calls:
            _check_and_protect(operation, params)

        def once() -> list[Any]:
            self._ensure_live_pool()
            if self._pool is None:
                return self._open_once(calls)
            return self._run_statements(calls)

        with self._lock:
            outputs = self._retrying(once, "pipeline")
        return self._split(calls, outputs)

    def _retrying(self, once: Callable[[], list[Any]], what: str) -> list[Any]:
        """`once()` under the retry policies: transient errors are retried with backoff (`self._retry`), a call
        whose pool's shell had expired before it ran is sent once more on a new pool (`self._reopen`). The first
        try runs outside tenacity (the usual case costs no retry machinery, which was ~4 % of a deploy's CPU); a
        failure either policy retries becomes the first attempt of the same policies, so retries, waits and
        their -vv lines are as if tenacity had made that try itself."""
        try:
            return once()
        except Exception as first:  # re-raised below unless a policy retries it
            if not (is_transient(first) or is_expired_before_call(first)):
                raise
            failed: list[BaseException] = [first]

        def attempt() -> list[Any]:
            if failed:
                raise failed.pop()  # the try already made, as the first attempt
            return once()

        for outer in trace.retries(self._retry, self.host, what):  # -vv
            with outer:
                for reopen in self._reopen:
                    with reopen:
                        outputs = attempt()
        return outputs

    def _run_statements(self, calls: Sequence[Call]) -> list[Any]:
        assert self._pool is not None
        ps = PowerShell(self._pool)
        for index, (operation, params) in enumerate(calls):
            if index:
                ps.add_statement()
            _add_call(ps, operation, params)
        try:
            outputs = ps.invoke()
        except Exception as exc:  # noqa: BLE001 - every failure is mapped to a typed error below
            raise self._failed(exc, ps) from None
        finally:
            self._last_used = time.monotonic()
            if self._pool is not None:
                self._pool.pipelines.pop(ps.id, None)
        texts = _documents(outputs)
        if ps.had_errors or ps.streams.error:
            return [*texts, _PipelineFailed(_first_error(ps))]
        return texts

    def _split(self, calls: Sequence[Call], outputs: list[Any]) -> list[dict[str, Any] | NodeOperationError]:
        """One result (or node error) per call from a pipeline's documents, one document per statement."""
        if not any(isinstance(o, _PipelineFailed) for o in outputs) and len(outputs) != len(calls):
            raise ProtocolError(f"{len(calls)} calls in one pipeline returned {len(outputs)} document(s), "
                                "expected one each", host=self.host)
        results: list[dict[str, Any] | NodeOperationError] = []
        failed = False
        for index, (operation, _) in enumerate(calls):
            item = outputs[index] if index < len(outputs) else None
            if failed or item is None:  # after the statement that failed the pipeline: never ran
                results.append(NodeOperationError("INTERNAL", "not run: an earlier call of the same pipeline failed",
                                                  operation=operation, host=self.host))
            elif isinstance(item, _PipelineFailed):
                failed = True
                results.append(NodeOperationError("INTERNAL", item.message, operation=operation, host=self.host))
            else:
                try:
                    results.append(parse_result_document([item], operation, self.host))
                except NodeOperationError as err:
                    results.append(err)
        return results

    def _run(self, operation: str, params: dict[str, Any], input_objects: Iterable[str] | None) -> list[Any]:
        assert self._pool is not None
        ps = PowerShell(self._pool)
        _add_call(ps, operation, params)
        try:
            outputs = ps.invoke(input=_input_generator(input_objects))
        except Exception as exc:  # noqa: BLE001 - every failure is mapped to a typed error below
            raise self._failed(exc, ps) from None
        finally:
            self._last_used = time.monotonic()
            # Completed pipelines are done on the server; dropping our record (instead of PowerShell.close(),
            # which costs a Signal round trip) keeps a long-lived pool from accumulating outputs.
            if self._pool is not None:
                self._pool.pipelines.pop(ps.id, None)
        if not any(isinstance(o, str) and o.strip() for o in outputs) and (ps.had_errors or ps.streams.error):
            raise NodeOperationError("INTERNAL", _first_error(ps), operation=operation, host=self.host)
        return outputs

    def _failed(self, exc: BaseException, ps: PowerShell) -> TransportError | NodeOperationError:
        """The typed error for a pipeline that failed, and the pool forgotten: a shell the host no longer has
        costs only the pool (the connection stays); anything else drops the connection too."""
        mapped = self._mapped(exc)
        if isinstance(mapped, ShellNotFound):
            # pypsrp marks a pipeline Running once the host accepted its Command: before that nothing ran.
            mapped.before_call = ps.state == PSInvocationState.NOT_STARTED
            self._pool = None
            if mapped.before_call:
                self.pools_reopened += 1
                trace.pool_reopened(self.host, "the host had dropped the shell; the call is sent again")  # -vv
        else:
            self._discard()
        return mapped

    def _mapped(self, exc: BaseException) -> TransportError | NodeOperationError:
        if isinstance(exc, (TransportError, NodeOperationError)):
            return exc
        return map_exception(exc, self.settings)


class _PipelineFailed:
    """Stands for the statement a terminating error ended a multi-statement pipeline in."""

    def __init__(self, message: str) -> None:
        self.message = message


def _documents(outputs: list[Any]) -> list[str]:
    """The non-blank output strings: one JSON document per protocol operation (the wire rule)."""
    return [o for o in outputs if isinstance(o, str) and o.strip()]


def _add_call(ps: PowerShell, operation: str, params: dict[str, Any]) -> None:
    """One protocol operation as a command: its name is fixed protocol text, every value a parameter."""
    ps.add_cmdlet(operation)
    for name, value in _wire_parameters(operation, params):
        ps.add_parameter(name, value)


def _wire_parameters(operation: str, params: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Protocol parameters as pypsrp values: switches present or absent, longs tagged I64 (pypsrp tags every
    Python int I32), string lists as lists, hashtables as dicts of strings."""
    types = {p.name: p.type for p in OPERATIONS[operation].params}
    for name, value in params.items():
        if value is None:
            continue
        kind = types[name]
        if kind == "switch":
            if value:
                yield name, None
        elif kind == "long":
            yield name, TaggedValue("I64", int(value))
        elif kind == "int":
            yield name, int(value)
        elif kind == "bool":
            yield name, bool(value)
        elif kind == "string[]":
            yield name, [str(v) for v in value]
        elif kind == "hashtable":
            yield name, {str(k): str(v) for k, v in dict(value).items()}
        else:
            yield name, str(value)


def _input_generator(input_objects: Iterable[str] | None) -> Iterator[str] | None:
    """A generator over the input objects (pypsrp streams a generator, one Send per object), or None if empty.

    pypsrp calls next() once before sending anything, so an empty generator must become "no input"."""
    if input_objects is None:
        return None
    iterator = iter(input_objects)
    try:
        first = next(iterator)
    except StopIteration:
        return None

    def chain() -> Iterator[str]:
        yield first
        yield from iterator

    return chain()


def _first_error(ps: PowerShell) -> str:
    if ps.streams.error:
        return redact(str(ps.streams.error[0]))
    return "the pipeline failed without an error record"


def _settle_environment(wsman: WSMan) -> None:
    """Read the environment once per connection, not once per request: pypsrp resolves the environment's CA bundle
    when it builds the session, and proxies are off (`no_proxy`); left trusting the environment, requests scans
    every variable of os.environ for proxy settings on each WS-Man request (4 % of the controller's CPU in a
    deploy profile). Netrc, the other thing it consults, never applies: the session has its own auth."""
    transport = wsman.transport
    if transport.session is None:
        transport.session = transport._build_session()
    transport.session.trust_env = False


def _close_quietly(pool: RunspacePool | None, wsman: WSMan) -> None:
    # Closing a pool on a dead host must not mask the error that got us here: pypsrp, requests and socket
    # errors alike are dropped.
    with contextlib.suppress(Exception):
        if pool is not None:
            pool.close()
    with contextlib.suppress(Exception):
        wsman.close()

