"""The rollout engine: lock every targeted host, run the plan's batches (hosts in parallel, bounded by forks),
enforce the failure budget and canary rule, honour Ctrl-C, unlock everything, and decide the exit code.

It knows nothing of what a host does (deploy or rollback): it is given a per-host `work` function and an `undo`
function (used to roll back the canaries that passed when another canary failed). It never prints: it emits
events on the bus and returns a `RunResult`.

Overlap, to keep the wall time near the critical path: an optional `stage` function (the part of a host's work
that changes nothing the service runs: state, transfer, install) runs for the next batch's hosts while the
current batch is in its health gates, but never during a canary batch (a failed canary leaves every other host
untouched); its result reaches `work` as `ctx.staged`. An optional `after` function (retention) runs once a host
is deployed without holding up the batch; all of it is joined before the locks are released.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from fleetctl.errors import (
    EXIT_HALTED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_ROLLOUT_FAILED,
    FleetError,
    Halted,
    Interrupted,
    LockHeld,
    RolloutFailed,
)
from fleetctl.node.client import NodeClient
from fleetctl.plan import Plan
from fleetctl.protocol.errors import NodeOperationError
from fleetctl.rollout.events import (
    Baking,
    BatchFinished,
    BatchStarted,
    EventBus,
    Halting,
    HostFinished,
    HostOutcome,
    Notice,
    RunFinished,
    RunStarted,
)
from fleetctl.rollout.host_steps import HostContext, Interruption, describe_error

FAILED_OUTCOMES = ("failed", "rolled_back")
HostWork = Callable[[HostContext], HostOutcome]
Undo = Callable[[HostContext, HostOutcome], HostOutcome]
Stage = Callable[[HostContext], object]  # pre-work whose result `work` finds in ctx.staged; must not raise
After = Callable[[HostContext, HostOutcome], HostOutcome]  # follow-up work of a deployed host (retention)


@dataclass(frozen=True)
class RunInfo:
    """What a run is, for `RunStarted` and the journal."""

    run_id: str
    kind: Literal["deploy", "rollback", "remove"]
    playbook: str
    service: str
    version: str | None
    release: str | None
    strategy: str
    user: str
    trigger: Literal["manual", "scheduled"] = "manual"
    schedule: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LockSpec:
    app: str
    owner: str
    ttl_seconds: int
    force: bool = False
    unattended: bool = False  # never suggest --force: nobody is there to judge whether a lock is stale


@dataclass(frozen=True)
class RunResult:
    """Where every host ended, the exit code (SPEC 2) and a one-line summary."""

    run_id: str
    exit_code: int
    outcomes: dict[str, HostOutcome]
    message: str = ""
    halted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The `--json` document of deploy and rollback."""
        return {"deploy_id": self.run_id, "exit_code": self.exit_code,
                "hosts": {h: o.to_json() for h, o in self.outcomes.items()}}

    def raise_for_exit(self) -> None:
        """Raise the error that carries this run's exit code (the CLI maps it and prints the message)."""
        error: type[FleetError] | None = {
            EXIT_ROLLOUT_FAILED: RolloutFailed, EXIT_HALTED: Halted, EXIT_LOCKED: LockHeld,
            EXIT_INTERRUPTED: Interrupted,
        }.get(self.exit_code)
        if error is not None:
            raise error(self.message)


@dataclass
class _Host:
    ctx: HostContext
    locked: bool = False
    outcome: HostOutcome | None = None


@dataclass
class RolloutEngine:
    plan: Plan
    info: RunInfo
    connect: Callable[[str], NodeClient]
    work: HostWork
    undo: Undo | None
    bus: EventBus
    lock: LockSpec
    forks: int = 50
    interruption: Interruption = field(default_factory=Interruption)
    stage: Stage | None = None
    after: After | None = None
    notes: tuple[str, ...] = ()  # one-line remarks announced right after RunStarted (Notice events)

    def __post_init__(self) -> None:
        self._hosts: dict[str, _Host] = {}
        self._guard = threading.Lock()
        self._halt_reason: str | None = None
        self._failures = 0
        self._reported: set[str] = set()
        self._staging: dict[str, Future[None]] = {}
        self._background: dict[str, Future[None]] = {}  # host -> its `after` work
        self._pool: ThreadPoolExecutor | None = None

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        plan = self.plan
        self.bus.emit(RunStarted(
            run_id=self.info.run_id, kind=self.info.kind, playbook=self.info.playbook, service=self.info.service,
            version=self.info.version, release=self.info.release, strategy=self.info.strategy, user=self.info.user,
            batches=tuple(b.hosts for b in plan.batches), canary=any(b.canary for b in plan.batches),
            trigger=self.info.trigger, schedule=self.info.schedule, inputs=dict(self.info.inputs)))
        for note in self.notes:
            self.bus.emit(Notice(note))
        workers = max(1, min(self.forks, len(plan.hosts) or 1))
        result: RunResult | None = None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleetctl-host") as pool:
            self._pool = pool
            try:
                holder = self._lock_all(pool)
                if holder is not None:
                    result = self._finish(EXIT_LOCKED, holder)
                else:
                    result = self._run_batches(pool)
            finally:
                self._join_background()
                self._unlock_all(pool)
        assert result is not None
        self.bus.emit(RunFinished(result.run_id, result.exit_code, result.outcomes, result.message))
        return result

    def _lock_all(self, pool: ThreadPoolExecutor) -> str | None:
        """Connect to and lock every targeted host before any change; the first LOCK_HELD holder, or None."""
        held: list[str] = []

        def lock_one(name: str) -> None:
            client = self.connect(name)
            host = _Host(HostContext(name, client, self.bus, self.interruption))
            with self._guard:
                self._hosts[name] = host
            try:
                # One round trip after the pool opens: module loader + Lock-FleetApp in one pipeline.
                host.ctx.step("lock", lambda: client.connect_and_lock(
                    app=self.lock.app, owner=self.lock.owner, deploy_id=self.info.run_id,
                    ttl_seconds=self.lock.ttl_seconds, force=self.lock.force))
                host.locked = True
            except NodeOperationError as err:
                if err.code == "LOCK_HELD":
                    with self._guard:
                        held.append(_holder_text(name, err.details))
                    host.outcome = HostOutcome(name, "not_started", None, "locked by another run", host.ctx.timings)
                else:
                    host.outcome = HostOutcome(name, "failed", None, f"lock: {describe_error(err)}",
                                               host.ctx.timings)
            except Exception as err:  # noqa: BLE001 - unreachable, auth... : this host fails, the run goes on
                host.outcome = HostOutcome(name, "failed", None, f"connect: {describe_error(err)}",
                                           host.ctx.timings)

        for future in [pool.submit(lock_one, name) for name in self.plan.hosts]:
            future.result()
        if held:
            more = f" (and {len(held) - 1} more host(s))" if len(held) > 1 else ""
            if self.lock.unattended:
                return (f"{held[0]}{more}; an unattended run never takes over a lock: this run changed nothing "
                        "and the next one will try again")
            return (f"{held[0]}{more}; wait for that run to finish, or pass --force if its lock is stale")
        return None

    def _run_batches(self, pool: ThreadPoolExecutor) -> RunResult:
        early = [h for h in self._hosts.values() if h.outcome is not None]
        self._failures = len(early)
        if self._failures > self.plan.max_failed:
            names = ", ".join(h.ctx.host for h in early[:5])
            self._halt(f"{self._failures} host(s) could not be reached or locked ({names}); failure budget is "
                       f"{self.plan.max_failed}: nothing was changed")
        batches = self.plan.batches
        for position, batch in enumerate(batches):
            if self._halt_reason or self.interruption.requested.is_set():
                break
            following = batches[position + 1] if position + 1 < len(batches) else None
            self.bus.emit(BatchStarted(batch.index, batch.canary, batch.hosts))
            futures: list[Future[None]] = [pool.submit(self._run_host, name, batch.canary) for name in batch.hosts]
            if following is not None and not batch.canary:
                self._await_gates(batch.hosts, futures)
                self._stage_batch(pool, following.hosts)
            self._wait(futures)
            failed = tuple(n for n in batch.hosts if self._outcome(n).outcome in FAILED_OUTCOMES)
            self.bus.emit(BatchFinished(batch.index, passed=not failed, failed=failed))
            if batch.canary and failed:
                self._halt(f"canary failed on {', '.join(failed)}")
                self._undo_canaries(pool, batch.hosts)
            elif self._failures > self.plan.max_failed:
                self._halt(f"{self._failures} failed host(s) exceed the failure budget of {self.plan.max_failed}")
            elif batch.canary and following is not None:
                # The canaries passed: the next batch may stage while the canaries bake.
                self._stage_batch(pool, following.hosts)
                if self.plan.canary_bake > 0:
                    self.bus.emit(Baking(self.plan.canary_bake))
                    self.interruption.requested.wait(self.plan.canary_bake)
        return self._conclude()

    def _await_gates(self, names: tuple[str, ...], futures: list[Future[None]]) -> None:
        """Return once every host of the batch is in its health gate or done (its transfer, stop and start no
        longer compete with the next batch's staging), or the run is stopping."""
        pending = set(futures)
        while pending:
            if self._halt_reason or self.interruption.requested.is_set():
                return
            if all(self._hosts[n].ctx.gating.is_set() for n, f in zip(names, futures, strict=True) if f in pending):
                return
            # Short slices: the gating flags are polled, and the main thread stays responsive to SIGINT.
            _, pending = wait(pending, timeout=0.02, return_when=FIRST_COMPLETED)

    def _stage_batch(self, pool: ThreadPoolExecutor, names: tuple[str, ...]) -> None:
        """Start the stage work of the next batch's hosts (only changes the running services do not see)."""
        stage = self.stage
        if stage is None:
            return
        for name in names:
            host = self._hosts.get(name)
            with self._guard:
                stop = self._halt_reason is not None or self.interruption.requested.is_set() or \
                    self._failures > self.plan.max_failed
            if stop:
                return
            if host is None or host.outcome is not None or name in self._staging:
                continue
            self._staging[name] = pool.submit(self._stage_one, host, stage)

    def _stage_one(self, host: _Host, stage: Stage) -> None:
        if self.interruption.requested.is_set() or self._halt_reason is not None:
            return  # the run is stopping: leave this host untouched
        try:
            host.ctx.staged = stage(host.ctx)
        except Exception:  # noqa: BLE001 - the host's own work stages again and reports the error
            host.ctx.staged = None

    def _run_host(self, name: str, canary: bool) -> None:
        host = self._hosts[name]
        if host.outcome is not None:  # failed while connecting or locking
            with self._guard:
                self._reported.add(name)
            self.bus.emit(HostFinished(host.outcome))
            return
        with self._guard:
            stop = self.interruption.requested.is_set() or self._halt_reason is not None or (
                not canary and self._failures > self.plan.max_failed)
        if stop:
            return  # stays not_started; reported at the end
        staging = self._staging.pop(name, None)
        # A stage that has not started yet is done here instead: waiting for it could starve a small pool.
        if staging is not None and not staging.cancel():
            staging.result()
        try:
            outcome = self.work(host.ctx)
        except Exception as err:  # noqa: BLE001 - a bug in one host's work must not abandon the others
            outcome = HostOutcome(name, "failed", None, describe_error(err), host.ctx.timings)
        after = self.after
        if after is None or outcome.outcome != "deployed":
            self._record(host, outcome)
            return
        # Counted now (the batch is judged on it), announced once the follow-up work is done.
        self._record(host, outcome, announce=False)
        assert self._pool is not None
        self._background[name] = self._pool.submit(self._follow_up, host, outcome, after)

    def _follow_up(self, host: _Host, outcome: HostOutcome, after: After) -> None:
        try:
            final = after(host.ctx, outcome)
        except Exception as err:  # noqa: BLE001 - follow-up work never undoes a healthy deploy
            final = HostOutcome(outcome.host, outcome.outcome, outcome.release, describe_error(err),
                                outcome.timings, outcome.transfer)
        self._record(host, final)

    def _join_background(self) -> None:
        """Wait for staging and follow-up work still running (a stage not started yet is dropped)."""
        for future in self._staging.values():
            future.cancel()
        self._wait(list(self._staging.values()) + list(self._background.values()), cancelled_ok=True)
        self._staging.clear()

    def _record(self, host: _Host, outcome: HostOutcome, announce: bool = True) -> None:
        """Store a host's outcome and announce it (a canary undone after passing is announced again)."""
        with self._guard:
            already_failed = host.outcome is not None and host.outcome.outcome in FAILED_OUTCOMES
            host.outcome = outcome
            if outcome.outcome in FAILED_OUTCOMES and not already_failed:
                self._failures += 1
            if announce:
                self._reported.add(host.ctx.host)
        if announce:
            self.bus.emit(HostFinished(outcome))

    def _undo_canaries(self, pool: ThreadPoolExecutor, names: tuple[str, ...]) -> None:
        """A canary failure rolls back every canary, including those that passed (SPEC 6)."""
        undo = self.undo
        if undo is None:
            return
        # One thing at a time per host: a canary's retention ends before it is undone.
        self._wait([f for n, f in self._background.items() if n in names])
        passed = [self._hosts[n] for n in names if self._outcome(n).outcome == "deployed"]

        def one(host: _Host) -> None:
            before = self._outcome(host.ctx.host)
            try:
                after = undo(host.ctx, before)
            except Exception as err:  # noqa: BLE001
                after = HostOutcome(host.ctx.host, "failed", before.release,
                                    f"rolling back after the canary failure failed: {describe_error(err)}",
                                    host.ctx.timings)
            self._record(host, after)

        self._wait([pool.submit(one, h) for h in passed])

    def _wait(self, futures: list[Future[None]], cancelled_ok: bool = False) -> None:
        # wait() in short slices keeps the main thread responsive to SIGINT between checks
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.5)
        for f in futures:
            if not (cancelled_ok and f.cancelled()):
                f.result()

    def _halt(self, reason: str) -> None:
        if self._halt_reason is None:
            self._halt_reason = reason
            self.bus.emit(Halting(reason))

    def _outcome(self, name: str) -> HostOutcome:
        host = self._hosts.get(name)
        if host is None or host.outcome is None:
            timings = host.ctx.timings if host else {}
            return HostOutcome(name, "not_started", None, None, timings)
        return host.outcome

    # -- the end -----------------------------------------------------------------------------------------------

    def _conclude(self) -> RunResult:
        self._join_background()
        outcomes = {n: self._outcome(n) for n in self.plan.hosts}
        self._report_rest(outcomes)
        values = list(outcomes.values())
        failed = [o.host for o in values if o.outcome in FAILED_OUTCOMES]
        on_target = [o.host for o in values if o.outcome in ("deployed", "removed", "skipped")]
        pending = [o.host for o in values if o.outcome == "not_started"]
        counts = _counts(values)
        if self.interruption.requested.is_set():
            return self._result(EXIT_INTERRUPTED, outcomes, f"interrupted: {counts}")
        if self._halt_reason:
            mixed = bool(on_target) and bool(pending or failed)
            code = EXIT_HALTED if mixed else EXIT_ROLLOUT_FAILED
            where = "hosts are on mixed releases" if mixed else "no host was left on the new release"
            return self._result(code, outcomes, f"halted: {self._halt_reason}; {where} ({counts})", halted=True)
        if failed:
            return self._result(EXIT_ROLLOUT_FAILED, outcomes, f"{len(failed)} host(s) failed within the failure "
                                                               f"budget of {self.plan.max_failed} ({counts})")
        return self._result(EXIT_OK, outcomes, counts)

    def _report_rest(self, outcomes: dict[str, HostOutcome]) -> None:
        """Every host ends in a reported state: announce those no batch reached (not started, failed to lock)."""
        for name, outcome in outcomes.items():
            if name not in self._reported:
                self._reported.add(name)
                self.bus.emit(HostFinished(outcome))

    def _finish(self, code: int, message: str) -> RunResult:
        self._join_background()
        outcomes = {n: self._outcome(n) for n in self.plan.hosts}
        self._report_rest(outcomes)
        return self._result(code, outcomes, message)

    def _result(self, code: int, outcomes: dict[str, HostOutcome], message: str, halted: bool = False) -> RunResult:
        return RunResult(self.info.run_id, code, outcomes, message, halted)

    def _unlock_all(self, pool: ThreadPoolExecutor) -> None:
        """Release every lock this run took, whatever happened (a lock left behind expires after its TTL)."""
        def unlock(host: _Host) -> None:
            try:
                if host.locked:
                    host.ctx.step("unlock", lambda: host.ctx.client.unlock_fleet_app(
                        app=self.lock.app, deploy_id=self.info.run_id))
                    host.locked = False
            except Exception:  # noqa: BLE001, S110 - unreachable now: the lock expires by its TTL
                pass
            finally:
                try:
                    host.ctx.client.close()
                except Exception:  # noqa: BLE001, S110 - closing is best effort
                    pass

        futures = [pool.submit(unlock, h) for h in list(self._hosts.values())]
        wait(futures)


def _holder_text(host: str, details: dict[str, Any]) -> str:
    nested = details.get("holder")
    holder: dict[str, Any] = nested if isinstance(nested, dict) else details
    owner = holder.get("owner", "someone")
    deploy_id = holder.get("deploy_id", "?")
    since = holder.get("acquired_at", "?")
    return f"{host} is locked by {owner} (deploy {deploy_id}, since {since})"


def _counts(outcomes: list[HostOutcome]) -> str:
    order = ("deployed", "removed", "skipped", "rolled_back", "failed", "not_started")
    tally = {k: sum(1 for o in outcomes if o.outcome == k) for k in order}
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in tally.items() if v) or "no hosts"


@contextmanager
def sigint_handler(interruption: Interruption) -> Iterator[None]:
    """While active, Ctrl-C presses the interruption instead of raising KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: object) -> None:
        interruption.press()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def new_run_id() -> str:
    """Sortable and unique enough across controllers: UTC time plus random hex."""
    import secrets

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
