"""How a run holds its locks (docs/rollouts.md#locks): every targeted host is connected to and locked before any
change, a lock whose holder is provably gone is taken over only with --force, and at the end every lock the run
took is released, or named with the command that frees it. The heartbeat that renews them meanwhile is
`lock_keeper.LockKeeper`. A mixin of `engine.RolloutEngine`, which owns the state these steps use."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from fleetctl.node.client import NodeClient
from fleetctl.node.results import LockInfo
from fleetctl.plan import Plan
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.rollout.deadlines import PhaseTimeouts
from fleetctl.rollout.events import EventBus, HostOutcome, Notice, RunInfo
from fleetctl.rollout.host_steps import HostContext, Interruption, describe_error
from fleetctl.rollout.lock_keeper import HolderJudge, LockKeeper, refusal, this_process
from fleetctl.rollout.verdict import lock_held_message


@dataclass(frozen=True)
class LockSpec:
    """The app lock a run takes on every host; `force` takes over a holder `judge` proves gone, never a live one."""

    app: str
    owner: str
    ttl_seconds: int
    force: bool = False
    judge: HolderJudge = field(default_factory=HolderJudge)
    unattended: bool = False  # never suggest --force: nobody is there to judge whether a lock is stale


@dataclass
class HostSlot:
    ctx: HostContext
    locked: bool = False
    outcome: HostOutcome | None = None


class LockSteps:
    """Locking, take-over and release for the engine (these attributes are the engine's)."""

    lock: LockSpec
    info: RunInfo
    bus: EventBus
    connect: Callable[[str], NodeClient]
    interruption: Interruption
    timeouts: PhaseTimeouts | None
    unlock_hint: str
    plan: Plan
    _hosts: dict[str, HostSlot]
    _guard: threading.Lock
    _keeper: LockKeeper
    _announce_early: Callable[[HostSlot], None]

    def _lock_all(self, pool: ThreadPoolExecutor) -> str | None:
        """Connect to and lock every targeted host before any change; why the run cannot go on (a lock held by
        someone else: the first holder, named), or None."""
        held: list[str] = []
        process = this_process()

        def lock_one(name: str) -> None:
            client = self.connect(name)
            host = HostSlot(HostContext(name, client, self.bus, self.interruption, timeouts=self.timeouts))
            with self._guard:
                self._hosts[name] = host
            sent = time.monotonic()
            try:
                # One round trip after the pool opens: module loader + Lock-FleetApp in one pipeline.
                taken = host.ctx.step("lock", lambda: client.connect_and_lock(
                    app=self.lock.app, owner=self.lock.owner, deploy_id=self.info.run_id,
                    ttl_seconds=self.lock.ttl_seconds, process=process))
                host.locked = True
                if taken.taken_over is not None and taken.taken_over.deploy_id:
                    old = taken.taken_over
                    self.bus.emit(Notice(f"{name}: took over the expired lock of {old.owner} (deploy "
                                         f"{old.deploy_id})"))
            except NodeOperationError as err:
                if err.code != "LOCK_HELD":
                    host.outcome = HostOutcome(name, "failed", None, f"lock: {describe_error(err)}",
                                               host.ctx.timings)
                    return
                holder = _holder(err)
                gone = self.lock.judge.gone(holder) if holder else None
                if holder is not None and gone and self.lock.force:
                    sent = time.monotonic()
                    if self._take_over(host, holder, gone, process):
                        if host.locked:
                            self._keeper.hold(name, client, sent)
                        return
                    holder = None  # it changed hands meanwhile: report what the node says now
                text = refusal(name, holder, gone=gone, force=self.lock.force, playbook=self.info.playbook,
                               unattended=self.lock.unattended) \
                    if holder else f"{name} is locked by another run"
                with self._guard:
                    held.append(text)
                host.outcome = HostOutcome(name, "not_started", None, "locked by another run", host.ctx.timings)
                return
            except Exception as err:  # noqa: BLE001 - unreachable, auth... : this host fails, the run goes on
                host.outcome = HostOutcome(name, "failed", None, f"connect: {describe_error(err)}",
                                           host.ctx.timings)
                # A lock call that outlived its budget may still take the lock: try to release it at the end.
                host.locked = host.ctx.lost is not None
                return
            self._keeper.hold(name, client, sent)

        def lock_and_tell(name: str) -> None:
            lock_one(name)
            host = self._hosts.get(name)
            if host is not None and host.outcome is not None and host.outcome.outcome == "failed":
                self._announce_early(host)  # an unreachable host shows failed now, not when its batch comes

        for future in [pool.submit(lock_and_tell, name) for name in self.plan.hosts]:
            future.result()
        return lock_held_message(held) if held else None

    def _take_over(self, host: HostSlot, holder: LockInfo, gone: str, process: str) -> bool:
        """--force on a lock whose holder is provably gone: replace exactly that holder's lock (the node refuses if
        it changed hands since), and say so."""
        try:
            host.ctx.step("lock", lambda: host.ctx.client.lock_fleet_app(
                app=self.lock.app, owner=self.lock.owner, deploy_id=self.info.run_id,
                ttl_seconds=self.lock.ttl_seconds, process=process, take_over=holder.deploy_id))
        except NodeOperationError as err:
            if err.code == "LOCK_HELD":
                return False
            host.outcome = HostOutcome(host.ctx.host, "failed", None, f"lock: {describe_error(err)}",
                                       host.ctx.timings)
            return True  # not a lock held by someone: this host failed, the run goes on without it
        host.locked = True
        self.bus.emit(Notice(f"{host.ctx.host}: took over the lock of {holder.owner} (deploy {holder.deploy_id}): "
                             f"{gone}"))
        return True

    def _leaked_message(self, leaked: list[str]) -> str:
        """Name every lock left behind and how to free it (announced now; the run's message ends with it)."""
        hint = self.unlock_hint or "fleetctl unlock PLAYBOOK --limit HOST"
        names = ":".join(entry.split(" ", 1)[0] for entry in leaked)
        message = (f"lock left on {'; '.join(leaked)}: it expires after the lock TTL ({self.lock.ttl_seconds}s); "
                   f"to free it once the host answers: {hint.replace('HOST', names)}")
        self.bus.emit(Notice(message))
        return message

    def _unlock_all(self, pool: ThreadPoolExecutor) -> list[str]:
        """Release every lock this run took, whatever happened; the hosts whose lock is left behind (it expires
        after its TTL), each with the reason."""
        leaked: list[str] = []

        def unlock(host: HostSlot) -> None:
            try:
                if host.locked:
                    # A host lost earlier (a call outlived its budget) is not asked again: named as leaked.
                    host.ctx.step("unlock", lambda: host.ctx.client.unlock_fleet_app(
                        app=self.lock.app, deploy_id=self.info.run_id))
                    host.locked = False
            except Exception as err:  # noqa: BLE001 - named in the run's message, never swallowed
                with self._guard:
                    leaked.append(f"{host.ctx.host} ({describe_error(err)})")
            finally:
                if host.ctx.lost is None:
                    try:
                        host.ctx.client.close()
                    except Exception:  # noqa: BLE001, S110 - closing is best effort
                        pass

        futures = [pool.submit(unlock, h) for h in list(self._hosts.values())]
        wait(futures)
        return sorted(leaked)

def _holder(err: NodeOperationError) -> LockInfo | None:
    nested = err.details.get("holder") if isinstance(err.details, dict) else None
    return LockInfo.from_result(nested if isinstance(nested, dict) else err.details)
