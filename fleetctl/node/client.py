"""`NodeClient`: one typed method per node-protocol operation; the only code that builds node calls.

Method names are `protocol.function_name(operation)` and keyword parameters are `protocol.snake_case(param)`
(tests/node/test_client.py checks this against `protocol.OPERATIONS`). Operations with pipeline input take one
extra keyword, `chunks`. Structured node errors arrive as `NodeOperationError` with the protocol's code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fleetctl.node.op_log import log_operations
from fleetctl.node.read_ahead import ReadAhead
from fleetctl.node.results import (
    ArtifactStatus,
    Changed,
    ColourSwitch,
    CommandResult,
    Deployed,
    EventTail,
    Facts,
    InstalledRelease,
    LockInfo,
    LockResult,
    LogChunk,
    LogTail,
    NodeHealthProbe,
    NodeState,
    RetentionResult,
    ServiceChange,
    ServiceRemoval,
    ServiceTransition,
    StoredArtifact,
    SwitchResult,
    parse_time,
)
from fleetctl.protocol.operations import OPERATIONS, snake_case
from fleetctl.transport.base import Transport


class NodeClient:
    """Typed calls to one node over one transport (which keeps its connection for the client's lifetime)."""

    def __init__(self, transport: Transport) -> None:
        # -v/-vv: every operation below goes through here, timed and logged (node/op_log.py); off, it is `transport`.
        self.transport = log_operations(transport)
        self._ahead = ReadAhead()

    @property
    def host(self) -> str:
        return self.transport.host

    @property
    def max_chunk_bytes(self) -> int:
        """Raw bytes per pipeline input object that fit one request to this node."""
        return self.transport.max_input_object_bytes

    def connect(self) -> None:
        """Connect, authenticate and load the node module now."""
        self.transport.open()

    def connect_and_lock(self, *, app: str, owner: str, deploy_id: str, ttl_seconds: int, process: str | None = None,
                         reason: str | None = None, take_over: str | None = None) -> LockResult:
        """Connect, load the node module and take the app lock, in one round trip where the transport allows
        (`Transport.invoke_all`), reads registered with `read_ahead_*` riding along; raises like `connect()` and
        `lock_fleet_app()`."""
        args = {"app": app, "owner": owner, "deploy_id": deploy_id, "ttl_seconds": ttl_seconds, "process": process,
                "reason": reason, "take_over": take_over}
        r = self._batch("Lock-FleetApp", _params("Lock-FleetApp", args))
        return LockResult(LockInfo.from_result(r.get("lock")), LockInfo.from_result(r.get("taken_over")))

    def connect_and_get_state(self, *, app: str, root: str, service_name: str | None = None) -> NodeState:
        """Connect, load the node module and read the app's state in one round trip after the pool opens (a
        read-only comparison of many hosts, `deploy --if-changed`); raises like `get_fleet_state()`."""
        args = {"app": app, "root": root, "service_name": service_name}
        return NodeState.from_result(self._batch("Get-FleetState", _params("Get-FleetState", args)))

    # -- read-ahead (node/read_ahead.py) ------------------------------------------------------------------------

    def read_ahead_state(self, *, app: str, root: str, service_name: str | None = None,
                         task_names: Sequence[str] | None = None, proxy_port: int | None = None) -> None:
        """Have the next call to this node also read the app's state, in the same round trip, for a
        `get_fleet_state()` with the same arguments right after (node/read_ahead.py says when it is used)."""
        self._ahead.want("Get-FleetState", _params("Get-FleetState", locals()))

    def read_ahead_artifact(self, *, sha256: str) -> None:
        """Have the next call to this node also ask whether the artifact is cached (for `test_fleet_artifact()`)."""
        self._ahead.want("Test-FleetArtifact", _params("Test-FleetArtifact", locals()))

    def forget_read_ahead(self) -> None:
        """The next read goes to the node: answers read ahead are dropped (a read that must see the state now)."""
        self._ahead.drop()

    @property
    def round_trips_saved(self) -> int:
        """Calls answered from a read-ahead instead of a round trip of their own."""
        return self._ahead.used

    def close(self) -> None:
        self.transport.close()

    def _call(self, operation: str, args: Mapping[str, Any], chunks: Iterable[str] | None = None) -> dict[str, Any]:
        """Invoke with the protocol's parameter names; None values are left out (the node's default applies). An
        answer read ahead for exactly this call is used instead; reads waiting to be read ahead ride along."""
        params = _params(operation, args)
        answer = self._ahead.take(operation, params)
        if answer is not None:
            return answer
        if chunks is None and self._ahead.waiting:
            return self._batch(operation, params)
        return self.transport.invoke(operation, params, chunks)

    def _batch(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One call through `invoke_all` (connecting and loading the module in the same round trip), with the
        reads waiting to be read ahead as further statements of its pipeline."""
        calls = self._ahead.ride_along([(operation, params)])
        results = self.transport.invoke_all(calls)
        self._ahead.keep(calls[1:], results[1:])
        first = results[0]
        if isinstance(first, Exception):
            raise first
        return first

    # -- facts, locks -------------------------------------------------------------------------------------------

    def get_fleet_facts(self) -> Facts:
        return Facts.from_result(self._call("Get-FleetFacts", {}))

    def lock_fleet_app(self, *, app: str, owner: str, deploy_id: str, ttl_seconds: int, process: str | None = None,
                       reason: str | None = None, take_over: str | None = None) -> LockResult:
        r = self._call("Lock-FleetApp", locals())
        return LockResult(LockInfo.from_result(r.get("lock")), LockInfo.from_result(r.get("taken_over")))

    def update_fleet_app_lock(self, *, app: str, deploy_id: str, ttl_seconds: int) -> LockInfo | None:
        return LockInfo.from_result(self._call("Update-FleetAppLock", locals()).get("lock"))

    def unlock_fleet_app(self, *, app: str, deploy_id: str) -> bool:
        return bool(self._call("Unlock-FleetApp", locals()).get("released", False))

    def test_fleet_artifact(self, *, sha256: str) -> ArtifactStatus:
        r = self._call("Test-FleetArtifact", locals())
        size = r.get("size")
        return ArtifactStatus(bool(r.get("present", False)), r.get("path"), int(size) if size is not None else None)

    def receive_fleet_artifact(self, *, sha256: str, size: int, compression: str | None = None,
                               chunks: Iterable[str]) -> StoredArtifact:
        args = {"sha256": sha256, "size": size, "compression": compression}
        return StoredArtifact.from_result(self._call("Receive-FleetArtifact", args, chunks))

    def save_fleet_artifact_from_url(self, *, url: str, sha256: str, size: int, token: str | None = None,
                                     ca_certificate: str | None = None) -> StoredArtifact:
        return StoredArtifact.from_result(self._call("Save-FleetArtifactFromUrl", locals()))

    # -- releases and services ----------------------------------------------------------------------------------

    def install_fleet_release(self, *, app: str, root: str, release: str, version: str, sha256: str,
                              exe_name: str, files: Mapping[str, str] | None = None) -> InstalledRelease:
        r = self._call("Install-FleetRelease", locals())
        return InstalledRelease(str(r.get("release", release)), str(r.get("path", "")), bool(r.get("created")))

    def set_fleet_service(self, *, name: str, binary_path: str, display_name: str | None = None,
                          description: str | None = None, arguments: Sequence[str] | None = None,
                          environment: Mapping[str, str] | None = None, account: str | None = None,
                          password: str | None = None, start_type: str | None = None,
                          dependencies: Sequence[str] | None = None, recovery_restart_seconds: int | None = None,
                          recovery_reset_seconds: int | None = None,
                          recovery_actions: Sequence[str] | None = None,
                          stop_timeout_seconds: int | None = None, hosting: str | None = None,
                          wrapper_sha256: str | None = None, working_directory: str | None = None,
                          stdout_path: str | None = None, stderr_path: str | None = None,
                          rotate_bytes: int | None = None, restart_delay_milliseconds: int | None = None,
                          throttle_milliseconds: int | None = None) -> ServiceChange:
        r = self._call("Set-FleetService", locals())
        return ServiceChange(bool(r.get("created")), tuple(str(x) for x in r.get("changed") or ()))

    def stop_fleet_service(self, *, name: str, timeout_seconds: int) -> ServiceTransition:
        r = self._call("Stop-FleetService", locals())
        return ServiceTransition(str(r.get("state", "")), r.get("was"), r.get("waited_ms"))

    def start_fleet_service(self, *, name: str, timeout_seconds: int) -> ServiceTransition:
        r = self._call("Start-FleetService", locals())
        return ServiceTransition(str(r.get("state", "")), r.get("was"), r.get("waited_ms"), r.get("pid"))

    def switch_fleet_release(self, *, app: str, root: str, release: str, colour: str | None = None) -> SwitchResult:
        r = self._call("Switch-FleetRelease", locals())
        return SwitchResult(str(r.get("current", release)), r.get("previous"), bool(r.get("changed")))

    def set_fleet_release_verdict(self, *, app: str, release: str, verdict: str, reason: str | None = None) -> None:
        self._call("Set-FleetReleaseVerdict", locals())

    def switch_fleet_colour(self, *, app: str, root: str, colour: str, listen_port: int, connect_port: int,
                            listen_address: str | None = None, connect_address: str | None = None) -> ColourSwitch:
        r = self._call("Switch-FleetColour", locals())
        return ColourSwitch(str(r.get("live", colour)), _opt(r.get("current")), _opt(r.get("previous")),
                            _opt(r.get("connect")), bool(r.get("changed")))

    def get_fleet_state(self, *, app: str, root: str, service_name: str | None = None,
                        task_names: Sequence[str] | None = None, proxy_port: int | None = None) -> NodeState:
        return NodeState.from_result(self._call("Get-FleetState", locals()))

    def test_fleet_health(self, *, url: str, timeout_seconds: int) -> NodeHealthProbe:
        r = self._call("Test-FleetHealth", locals())
        return NodeHealthProbe(r.get("status"), str(r.get("body") or ""), r.get("elapsed_ms"), r.get("error"))

    def remove_fleet_release(self, *, app: str, root: str, keep: int | None = None,
                             release: str | None = None) -> RetentionResult:
        r = self._call("Remove-FleetRelease", locals())
        return RetentionResult(tuple(r.get("removed") or ()), tuple(r.get("kept") or ()))

    # -- host configuration -------------------------------------------------------------------------------------

    def set_fleet_firewall_rule(self, *, name: str, port: int, protocol: str | None = None,
                                direction: str | None = None, action: str | None = None,
                                remote_address: Sequence[str] | None = None, remove: bool = False) -> Changed:
        return Changed(bool(self._call("Set-FleetFirewallRule", locals()).get("changed")))

    def set_fleet_scheduled_task(self, *, name: str, execute: str | None = None,
                                 arguments: Sequence[str] | None = None, at: str | None = None,
                                 at_startup: bool = False, every_minutes: int | None = None,
                                 user: str | None = None, restart_count: int | None = None,
                                 restart_interval_minutes: int | None = None,
                                 execution_time_limit_minutes: int | None = None, remove: bool = False,
                                 run_now: bool = False) -> Changed:
        r = self._call("Set-FleetScheduledTask", locals())
        result = r.get("last_result")
        return Changed(bool(r.get("changed")), last_run=parse_time(r.get("last_run")),
                       last_result=int(result) if isinstance(result, int) else None)

    def set_fleet_port_proxy(self, *, listen_port: int, listen_address: str | None = None,
                             connect_port: int | None = None, connect_address: str | None = None,
                             remove: bool = False) -> Changed:
        r = self._call("Set-FleetPortProxy", locals())
        return Changed(bool(r.get("changed")), connect=r.get("connect"))

    def get_fleet_events(self, *, source: str, max: int | None = None) -> EventTail:
        return EventTail.from_result(self._call("Get-FleetEvents", locals()))

    # -- retiring a service -------------------------------------------------------------------------------------

    def remove_fleet_service(self, *, name: str, timeout_seconds: int) -> ServiceRemoval:
        r = self._call("Remove-FleetService", locals())
        return ServiceRemoval(bool(r.get("removed")), r.get("was"))

    def remove_fleet_app(self, *, app: str, root: str, purge: bool = False) -> RetentionResult:
        r = self._call("Remove-FleetApp", locals())
        return RetentionResult(tuple(r.get("removed") or ()), tuple(r.get("kept") or ()))

    def get_fleet_log(self, *, app: str, root: str, tail: int | None = None, path: str | None = None) -> LogTail:
        r = self._call("Get-FleetLog", locals())
        return LogTail(str(r.get("path", "")), tuple(str(x) for x in r.get("lines") or ()))

    # -- the day-one commands -----------------------------------------------------------------------------------

    def read_fleet_log(self, *, app: str, root: str, path: str | None = None, file: str | None = None,
                       offset: int | None = None, tail: int | None = None) -> LogChunk:
        return LogChunk.from_result(self._call("Read-FleetLog", locals()))

    def invoke_fleet_command(self, *, script: str) -> CommandResult:
        return CommandResult.from_result(self._call("Invoke-FleetCommand", locals()))

    # -- reading back what is deployed (deploy --dry-run --diff) ------------------------------------------------

    def get_fleet_deployed(self, *, app: str, root: str, service_name: str | None = None,
                           release: str | None = None) -> Deployed:
        return Deployed.from_result(self._call("Get-FleetDeployed", locals()))


def _params(operation: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol-named parameters of a call from its snake_case arguments, without the None ones."""
    return {p.name: args[snake_case(p.name)] for p in OPERATIONS[operation].params
            if args.get(snake_case(p.name)) is not None}


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)
