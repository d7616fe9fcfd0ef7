"""Change freezes and the lock overview: `fleetctl lock PLAYBOOK --reason TEXT [--ttl 12h]` puts a freeze on every
targeted node (a lock with a reason, held by a person, not a run), `fleetctl unlock PLAYBOOK` lifts it (and frees a
run lock that was left behind by a run that is provably gone), `fleetctl lock PLAYBOOK --status` shows who holds
what.

A freeze is all or nothing with respect to runs: when a live run holds a node, the freeze taken so far is lifted
again and the command exits 4 naming the holder. A node already frozen stays as it is (its freeze is kept, not
replaced), so re-running `lock` after an unreachable node came back completes the freeze. Deploys, rollbacks and
removes refuse a frozen node with exit 4 (the engine's lock step; `--force` never lifts a freeze).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from fleetctl.config.sizes import Duration
from fleetctl.errors import EXIT_LOCKED, EXIT_OK, EXIT_ROLLOUT_FAILED, ConfigError
from fleetctl.node.client import NodeClient
from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import LockInfo
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.rollout.host_steps import describe_error
from fleetctl.rollout.lock_keeper import HolderJudge, describe_holder, refusal
from fleetctl.rollout.preparation import Connect, DeployOptions, RolloutTargets, load_fleet, new_run_id

DEFAULT_FREEZE_TTL = "12h"
MAX_FREEZE_TTL_S = 30 * 86400  # a freeze nobody lifts ends within a month
MAX_REASON_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

HostLockState = Literal["free", "locked", "frozen", "expired", "unreachable"]


@dataclass(frozen=True)
class FreezeRequest:
    """A checked `fleetctl lock`/`unlock`: the targeted fleet, and for `lock` the reason and TTL."""

    fleet: RolloutTargets
    playbook: str
    reason: str = ""
    ttl_seconds: int = 0


@dataclass(frozen=True)
class HostLock:
    """One host's answer: its lock now (or after the command), what the command did there, or why it failed."""

    host: str
    state: HostLockState
    lock: LockInfo | None = None
    action: str = ""  # what the command did: "frozen", "kept", "unfrozen", "freed", "refused", "" (nothing)
    error: str | None = None
    gone: str | None = None  # a run lock whose holder is provably gone: why

    def to_json(self) -> dict[str, Any]:
        lock = self.lock
        return {
            "state": self.state, "action": self.action or None, "error": self.error, "holder_gone": self.gone,
            "lock": None if lock is None else {
                "owner": lock.owner, "deploy_id": lock.deploy_id, "reason": lock.reason,
                "acquired_at": _iso(lock.acquired_at), "renewed_at": _iso(lock.renewed_at),
                "expires_at": _iso(lock.expires_at), "expired": lock.expired,
            },
        }


@dataclass(frozen=True)
class FreezeResult:
    exit_code: int
    message: str
    hosts: dict[str, HostLock]

    def to_json(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "message": self.message,
                "hosts": {h: r.to_json() for h, r in self.hosts.items()}}


def _iso(value: Any) -> str | None:
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z") if value is not None else None


def check_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise ConfigError("a change freeze needs a reason people will read: --reason TEXT", key="--reason")
    if len(text) > MAX_REASON_CHARS:
        raise ConfigError(f"expected at most {MAX_REASON_CHARS} characters, got {len(text)}", key="--reason")
    if _CONTROL.search(text):
        raise ConfigError("control and bidi characters are not allowed (the reason is shown in terminals)",
                          key="--reason")
    return text


def check_ttl(ttl: str | None) -> int:
    try:
        seconds = float(Duration.parse(ttl or DEFAULT_FREEZE_TTL))
    except ValueError as err:
        raise ConfigError(f"{err} (for example 12h, 90m)", key="--ttl") from None
    if seconds < 1 or seconds > MAX_FREEZE_TTL_S:
        raise ConfigError(f"expected between 1s and {MAX_FREEZE_TTL_S // 3600}h, got {ttl}", key="--ttl")
    return int(seconds)


def prepare_freeze(options: DeployOptions, *, reason: str | None = None, ttl: str | None = None,
                   lifting: bool = False) -> FreezeRequest:
    """Check everything before any node is contacted (ConfigError, exit 2)."""
    checked_reason = "" if lifting else check_reason(reason)
    checked_ttl = 0 if lifting else check_ttl(ttl)
    fleet = load_fleet(options, {"version": "freeze"}, refuse_unsupported=False)
    return FreezeRequest(fleet, str(options.playbook), checked_reason, checked_ttl)


def _app(request: FreezeRequest) -> str:
    return request.fleet.targets.settings.name


def _root_of(request: FreezeRequest, host: str) -> str:
    return request.fleet.playbooks[host].install.root


def _each(request: FreezeRequest, connect: Connect | None, work: Any) -> dict[str, HostLock]:
    factory = connect or request.fleet.client_factory()

    def one(host: str) -> HostLock:
        client = factory(host)
        try:
            result: HostLock = work(host, client)
            return result
        except Exception as err:  # noqa: BLE001 - reported per host
            return HostLock(host, "unreachable", error=describe_error(err))
        finally:
            try:
                client.close()
            except Exception:  # noqa: BLE001, S110 - closing is best effort
                pass

    hosts = list(request.fleet.plan.hosts)
    outcomes = run_parallel(hosts, one, forks=request.fleet.forks)
    return {h: outcomes[h].value or HostLock(h, "unreachable", error=outcomes[h].error) for h in hosts}


def freeze(request: FreezeRequest, judge: HolderJudge | None = None, *,
           connect: Connect | None = None) -> FreezeResult:
    """Put the change freeze on every targeted node (see the module docstring for the rules)."""
    freeze_id = "freeze-" + new_run_id()
    app = _app(request)

    def take(host: str, client: NodeClient) -> HostLock:
        try:
            taken = client.connect_and_lock(app=app, owner=request.fleet.owner, deploy_id=freeze_id,
                                            ttl_seconds=request.ttl_seconds, reason=request.reason)
        except NodeOperationError as err:
            if err.code != "LOCK_HELD":
                raise
            holder = LockInfo.from_result(err.details.get("holder"))
            if holder is not None and holder.freeze:
                return HostLock(host, "frozen", holder, action="kept")
            return HostLock(host, "locked", holder, action="refused")
        return HostLock(host, "frozen", taken.lock, action="frozen")

    hosts = _each(request, connect, take)
    refused = [h for h in hosts.values() if h.action == "refused"]
    if refused:
        # All or nothing against runs: lift what this command froze, then name the holder.
        undone = _each(request, connect, lambda host, client: _lift(client, app, host, freeze_id, hosts[host]))
        first = refused[0]
        text = _held_text(first, judge or HolderJudge(), request.playbook)
        more = f" (and {len(refused) - 1} more host(s))" if len(refused) > 1 else ""
        stuck = [h for h, after in undone.items() if after.state == "unreachable" and hosts[h].action == "frozen"]
        if stuck:
            left = (f"; the freeze could not be lifted again from {', '.join(stuck[:5])} (unreachable): "
                    f"`fleetctl unlock {request.playbook}` lifts it")
            return FreezeResult(EXIT_LOCKED, f"not frozen: {text}{more}{left}", undone)
        return FreezeResult(EXIT_LOCKED, f"not frozen: {text}{more}; nothing was frozen", undone)
    count = sum(1 for h in hosts.values() if h.state == "frozen")
    kept = sum(1 for h in hosts.values() if h.action == "kept")
    also = f" ({kept} already were, kept as they are)" if kept else ""
    return _finish(hosts, f"{count} host(s) frozen{also} until {_until(hosts)}: {request.reason}", "frozen")


def _held_text(host: HostLock, judge: HolderJudge, playbook: str) -> str:
    if host.lock is None:
        return f"{host.host} is locked by another run"
    gone = judge.gone(host.lock)
    if gone:
        return f"{describe_holder(host.host, host.lock)}; that run is gone ({gone}): `fleetctl unlock {playbook}` frees it"
    return refusal(host.host, host.lock, gone=None, force=False, playbook=playbook)


def _lift(client: NodeClient, app: str, host: str, freeze_id: str, before: HostLock) -> HostLock:
    if before.action == "frozen":
        client.unlock_fleet_app(app=app, deploy_id=freeze_id)
        return HostLock(host, "free", None, action="")
    return before


def _until(hosts: dict[str, HostLock]) -> str:
    # Each node counts the TTL from its own clock, so the ends differ by the seconds the fleet took: one range.
    ends = sorted({_iso(h.lock.expires_at) or "?" for h in hosts.values() if h.lock is not None})
    if not ends:
        return "?"
    return ends[0] if len(ends) == 1 else f"{ends[0]} to {ends[-1]}"


def _finish(hosts: dict[str, HostLock], message: str, done: str) -> FreezeResult:
    """Exit 0, or 1 naming the hosts that could not be reached (the command can simply be run again)."""
    failed = [h for h in hosts.values() if h.state == "unreachable"]
    if failed:
        names = ", ".join(h.host for h in failed[:5]) + (" ..." if len(failed) > 5 else "")
        return FreezeResult(EXIT_ROLLOUT_FAILED, f"{message}; {len(failed)} host(s) could not be reached"
                                                 f"{' and are not ' + done if done else ''}: {names}", hosts)
    return FreezeResult(EXIT_OK, message, hosts)


def lock_states(request: FreezeRequest, judge: HolderJudge, *, connect: Connect | None = None) -> FreezeResult:
    """`lock --status`: who holds each targeted node's lock (read only)."""
    def read(host: str, client: NodeClient) -> HostLock:
        return _state(host, _current_lock(request, host, client), judge)

    hosts = _each(request, connect, read)
    return _finish(hosts, _overview(hosts), "")


def _overview(hosts: dict[str, HostLock]) -> str:
    counts: dict[str, int] = {}
    for h in hosts.values():
        counts[h.state] = counts.get(h.state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def _current_lock(request: FreezeRequest, host: str, client: NodeClient) -> LockInfo | None:
    return client.get_fleet_state(app=_app(request), root=_root_of(request, host)).lock


def _state(host: str, lock: LockInfo | None, judge: HolderJudge) -> HostLock:
    if lock is None:
        return HostLock(host, "free")
    if lock.expired:
        return HostLock(host, "expired", lock, gone=judge.gone(lock))
    if lock.freeze:
        return HostLock(host, "frozen", lock)
    return HostLock(host, "locked", lock, gone=judge.gone(lock))


def unfreeze(request: FreezeRequest, judge: HolderJudge, *, connect: Connect | None = None) -> FreezeResult:
    """Lift the freeze on every targeted node; free a run lock whose holder is provably gone; refuse (exit 4) to
    touch a live run's lock. Each release names the lock it read (compare and delete on the node)."""
    app = _app(request)

    def lift(host: str, client: NodeClient) -> HostLock:
        now = _state(host, _current_lock(request, host, client), judge)
        if now.lock is None:
            return now
        if now.state == "locked" and not now.gone:
            return HostLock(host, "locked", now.lock, action="refused")
        try:
            client.unlock_fleet_app(app=app, deploy_id=now.lock.deploy_id)
        except NodeOperationError as err:
            if err.code != "LOCK_NOT_OWNED":
                raise
            # It changed hands since it was read: report what holds it now, touch nothing.
            return HostLock(host, "locked", LockInfo.from_result(err.details.get("holder")), action="refused")
        return HostLock(host, "free", now.lock, action="unfrozen" if now.state == "frozen" else "freed",
                        gone=now.gone)

    hosts = _each(request, connect, lift)
    refused = [h for h in hosts.values() if h.action == "refused"]
    lifted = sum(1 for h in hosts.values() if h.action == "unfrozen")
    freed = sum(1 for h in hosts.values() if h.action == "freed")
    message = f"{lifted} host(s) unfrozen" + (f", {freed} lock(s) of finished runs freed" if freed else "")
    if refused:
        first = refused[0]
        held = describe_holder(first.host, first.lock) if first.lock else f"{first.host} is locked by another run"
        more = f" (and {len(refused) - 1} more host(s))" if len(refused) > 1 else ""
        return FreezeResult(EXIT_LOCKED, f"{message}; left alone: {held}{more}: a live run's lock is released by "
                                         "that run when it ends", hosts)
    return _finish(hosts, message, "unfrozen")


__all__ = ["FreezeRequest", "FreezeResult", "HostLock", "freeze", "lock_states", "prepare_freeze", "unfreeze"]
