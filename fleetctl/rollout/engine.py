"""The rollout engine: lock every targeted host, run the plan's batches (hosts in parallel, bounded by forks),
enforce the failure budget and canary rule, honour Ctrl-C (and say at once what a press does:
`rollout/interruption.py`), unlock everything, and report the exit code.

It knows nothing of what a host does: it is given one `HostProcedure` (`rollout/procedure.py`: stage, activate,
follow_up, undo) and decides only when each part runs. What to do after a batch and how the run ends are pure
functions in `rollout/verdict.py`. It never prints: it emits events on the bus and returns a `RunResult`.

Overlap, to keep the wall time near the critical path: the next batch's hosts are staged (the part that changes
nothing the service runs) while the current batch is in its health gates, but never during a canary batch (a
failed canary leaves every other host untouched); the staged value reaches `activate` through `ctx.staged`. A
host's follow-up (retention) runs without holding up its batch; all of it is joined before the locks are
released.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from fleetctl.errors import (
    EXIT_HALTED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_ROLLOUT_FAILED,
    FleetError,
    Halted,
    Interrupted,
    LockHeld,
    RolloutFailed,
)
from fleetctl.node.client import NodeClient
from fleetctl.plan import Plan
from fleetctl.rollout.deadlines import PhaseTimeouts
from fleetctl.rollout.events import (
    Baking,
    BatchFinished,
    BatchStarted,
    EventBus,
    Halting,
    HostFinished,
    HostOutcome,
    Interrupting,
    Notice,
    RunFinished,
    RunStarted,
)
from fleetctl.rollout.host_steps import HostContext, Interruption, describe_error
from fleetctl.rollout.interruption import Phase, RunStage, interruption_notice
from fleetctl.rollout.lock_keeper import LockKeeper
from fleetctl.rollout.procedure import HostProcedure
from fleetctl.rollout.run_locks import HostSlot, LockSpec, LockSteps
from fleetctl.rollout.verdict import (
    FAILED_OUTCOMES,
    HALT_WORDS,
    judge_batch,
    judge_run,
    may_start_host,
    over_budget,
    unreachable_verdict,
)

# How often the main thread looks whether a batch's hosts reached their health gates.
_GATE_POLL_S = 0.05

Recheck = Callable[[HostContext, HostOutcome], HostOutcome]  # a deployed host still running at its batch's end?


@dataclass(frozen=True)
class RunResult:
    """Where every host ended, the exit code (docs/cli.md) and a one-line summary."""

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
class RolloutEngine(LockSteps):
    plan: Plan
    procedure: HostProcedure
    connect: Callable[[str], NodeClient]
    bus: EventBus
    lock: LockSpec
    forks: int = 50
    interruption: Interruption = field(default_factory=Interruption)
    timeouts: PhaseTimeouts | None = None  # per-phase bounds of each host's node calls (rollout.timeouts)
    unlock_hint: str = ""  # the command that frees a lock this run could not release, for the message

    def __post_init__(self) -> None:
        self._hosts: dict[str, HostSlot] = {}
        self._guard = threading.Lock()
        self._halt_reason: str | None = None
        self._halted = threading.Event()
        self._failures = 0
        self._reported: set[str] = set()
        self._staging: dict[str, Future[None]] = {}
        self._background: dict[str, Future[None]] = {}  # host -> its follow-up work
        self._pool: ThreadPoolExecutor | None = None
        self._active: set[str] = set()  # hosts whose activation runs now (what a Ctrl-C waits for)
        self._phase: Phase = "locking"
        self._position = 0  # the current batch's position in the plan
        self.info = self.procedure.info
        # What the procedure adds to the engine's rules: which outcomes count as failed (a rollback's success is
        # `rolled_back`), and the end-of-batch check of hosts that passed their gate.
        self.failed_outcomes: tuple[str, ...] = getattr(self.procedure, "failed_outcomes", FAILED_OUTCOMES)
        self.recheck: Recheck | None = getattr(self.procedure, "recheck", None)
        self._keeper = LockKeeper(app=self.lock.app, deploy_id=self.info.run_id, ttl_seconds=self.lock.ttl_seconds,
                                  bus=self.bus, on_lost=self._halt)

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        plan = self.plan
        self.bus.emit(RunStarted.of(self.info, batches=tuple(b.hosts for b in plan.batches),
                                    canary=any(b.canary for b in plan.batches)))
        for note in self.procedure.notes:
            self.bus.emit(Notice(note))
        workers = max(1, min(self.forks, len(plan.hosts) or 1))
        result: RunResult | None = None
        leaked: list[str] = []
        stop_listening = self.interruption.listen(self._tell_interruption)
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleetctl-host") as pool:
                self._pool = pool
                try:
                    holder = self._lock_all(pool)
                    if holder is not None:
                        result = self._finish(EXIT_LOCKED, holder)
                    else:
                        self._keeper.start()  # the heartbeat: every lock renewed well inside its TTL until the end
                        result = self._run_batches(pool)
                finally:
                    self._join_background()
                    self._keeper.stop()
                    leaked = self._unlock_all(pool)
            assert result is not None
            if leaked:
                note = self._leaked_message(leaked)
                result = RunResult(result.run_id, result.exit_code, result.outcomes,
                                   f"{result.message}; {note}" if result.message else note, result.halted)
            self.bus.emit(RunFinished(result.run_id, result.exit_code, result.outcomes, result.message))
            return result
        finally:
            stop_listening()
            # Whatever happened, every event emitted so far reaches the journal and the screen before we return.
            self.bus.flush()

    def _run_batches(self, pool: ThreadPoolExecutor) -> RunResult:
        early = [n for n in self.plan.hosts if self._hosts[n].outcome is not None]
        self._failures = len(early)
        reason = unreachable_verdict(early, self.plan.max_failed)
        if reason is not None:
            self._halt(reason)
        batches = self.plan.batches
        self._phase = "batch"
        for position, batch in enumerate(batches):
            if self._halt_reason or self.interruption.requested.is_set():
                break
            self._position = position
            following = batches[position + 1] if position + 1 < len(batches) else None
            self.bus.emit(BatchStarted(batch.index, batch.canary, batch.hosts))
            futures: list[Future[None]] = [pool.submit(self._run_host, name, batch.canary) for name in batch.hosts]
            if following is not None and not batch.canary:
                self._await_gates(batch.hosts, futures)
                self._stage_batch(pool, following.hosts)
            self._wait(futures)
            self._recheck(pool, batch.hosts)
            failed = tuple(n for n in batch.hosts if self._outcome(n).outcome in self.failed_outcomes)
            counts: dict[str, int] = dict(Counter(self._outcome(n).outcome for n in batch.hosts))
            self.bus.emit(BatchFinished(batch.index, passed=not failed, failed=failed, counts=counts))
            verdict = judge_batch(canary=batch.canary, failed=failed, failures=self._failures,
                                  max_failed=self.plan.max_failed)
            if verdict.action == "undo_canaries":
                self._halt(verdict.reason or "")
                self._undo_canaries(pool, batch.hosts)
            elif verdict.action == "halt":
                self._halt(verdict.reason or "")
            elif batch.canary and following is not None:
                # The canaries passed: the next batch may stage while the canaries bake.
                self._stage_batch(pool, following.hosts)
                if self.plan.canary_bake > 0:
                    self.bus.emit(Baking(self.plan.canary_bake))
                    self._phase = "baking"
                    self._bake(self.plan.canary_bake)
                    self._phase = "batch"
                    # The bake is part of the canaries' test: one that died while baking fails the canary batch.
                    self._recheck(pool, batch.hosts)
                    failed = tuple(n for n in batch.hosts if self._outcome(n).outcome in self.failed_outcomes)
                    if failed:
                        self._halt(f"canary failed during its bake on {', '.join(failed)}")
                        self._undo_canaries(pool, batch.hosts)
        self._phase = "ending"
        return self._conclude()

    def _bake(self, seconds: float) -> None:
        """The canary bake: wait, unless the run is interrupted or halted (a lost lock) meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.interruption.requested.wait(min(left, 0.1)) or self._halted.is_set():
                return

    def _recheck(self, pool: ThreadPoolExecutor, names: tuple[str, ...]) -> None:
        """Every host of the batch that passed its gate must still be running it now: restarts and exits are
        watched from the switch until the batch (and the canary bake) ends."""
        recheck = self.recheck
        if recheck is None:
            return
        self._wait([f for n, f in self._background.items() if n in names])  # retention first, one thing a host
        passed = [self._hosts[n] for n in names if self._outcome(n).outcome == "deployed"]

        def one(host: HostSlot) -> None:
            before = self._outcome(host.ctx.host)
            try:
                after = recheck(host.ctx, before)
            except Exception as err:  # noqa: BLE001
                after = HostOutcome(host.ctx.host, before.outcome, before.release,
                                    f"could not be checked at the end of its batch: {describe_error(err)}",
                                    before.timings, before.transfer)
            if after != before:
                self._record(host, after)

        self._wait([pool.submit(one, h) for h in passed])

    def _await_gates(self, names: tuple[str, ...], futures: list[Future[None]]) -> None:
        """Return once every host of the batch is in its health gate or done (its transfer, stop and start no
        longer compete with the next batch's staging), or the run is stopping."""
        pending = set(futures)
        while pending:
            if self._halt_reason or self.interruption.requested.is_set():
                return
            if all(self._hosts[n].ctx.gating.is_set() for n, f in zip(names, futures, strict=True) if f in pending):
                return
            # The gating flags are polled, in slices short enough for the batch's pace and for SIGINT; the
            # futures' own state is read, not waited on (a wait() installs a waiter on every pending future:
            # a tenth of the controller's CPU in a deploy at 20 ms slices).
            self.interruption.requested.wait(_GATE_POLL_S)
            pending = {f for f in pending if not f.done()}

    def _stage_batch(self, pool: ThreadPoolExecutor, names: tuple[str, ...]) -> None:
        """Start the stage work of the next batch's hosts (only changes the running services do not see)."""
        for name in names:
            host = self._hosts.get(name)
            with self._guard:
                stop = self._stopping() or over_budget(self._failures, self.plan.max_failed)
            if stop:
                return
            if host is None or host.outcome is not None or name in self._staging:
                continue
            self._staging[name] = pool.submit(self._stage_one, host)

    def _stage_one(self, host: HostSlot) -> None:
        if self._stopping():
            return  # the run is stopping: leave this host untouched
        try:
            host.ctx.staged = self.procedure.stage(host.ctx)
        except Exception:  # noqa: BLE001 - the host's own activation stages again and reports the error
            host.ctx.staged = None

    def _stopping(self) -> bool:
        return self._halt_reason is not None or self.interruption.requested.is_set()

    def _run_host(self, name: str, canary: bool) -> None:
        host = self._hosts[name]
        if host.outcome is not None:  # failed while connecting or locking
            self._announce_early(host)
            return
        with self._guard:
            start = may_start_host(canary=canary, stopping=self._stopping(), failures=self._failures,
                                   max_failed=self.plan.max_failed)
            if start:
                self._active.add(name)
        if not start:
            return  # stays not_started; reported at the end
        try:
            self._activate_host(host)
        finally:
            with self._guard:
                self._active.discard(name)

    def _announce_early(self, host: HostSlot) -> None:
        """A host that failed while connecting or locking is announced when it fails, not when its batch comes
        (called from the lock step too); once."""
        with self._guard:
            if host.outcome is None or host.ctx.host in self._reported:
                return
            self._reported.add(host.ctx.host)
        self.bus.emit(HostFinished(host.outcome))

    def _activate_host(self, host: HostSlot) -> None:
        name = host.ctx.host
        staging = self._staging.pop(name, None)
        # A stage that has not started yet is done here instead: waiting for it could starve a small pool.
        if staging is not None and not staging.cancel():
            staging.result()
        procedure = self.procedure
        try:
            staged = host.ctx.staged if host.ctx.staged is not None else procedure.stage(host.ctx)
            outcome = procedure.activate(host.ctx, staged)
        except Exception as err:  # noqa: BLE001 - a bug in one host's work must not abandon the others
            outcome = HostOutcome(name, "failed", None, describe_error(err), host.ctx.timings)
        if outcome.outcome != "deployed":
            self._record(host, outcome)
            return
        # Counted now (the batch is judged on it), announced once the follow-up work is done.
        self._record(host, outcome, announce=False)
        assert self._pool is not None
        self._background[name] = self._pool.submit(self._follow_up, host, outcome)

    def _follow_up(self, host: HostSlot, outcome: HostOutcome) -> None:
        try:
            final = self.procedure.follow_up(host.ctx, outcome)
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

    def _record(self, host: HostSlot, outcome: HostOutcome, announce: bool = True) -> None:
        """Store a host's outcome and announce it (a canary undone after passing is announced again)."""
        with self._guard:
            already_failed = host.outcome is not None and host.outcome.outcome in self.failed_outcomes
            host.outcome = outcome
            if outcome.outcome in self.failed_outcomes and not already_failed:
                self._failures += 1
            if announce:
                self._reported.add(host.ctx.host)
        if announce:
            self.bus.emit(HostFinished(outcome))

    def _undo_canaries(self, pool: ThreadPoolExecutor, names: tuple[str, ...]) -> None:
        """A canary failure rolls back every canary, including those that passed (docs/rollouts.md)."""
        undo = self.procedure.undo
        # One thing at a time per host: a canary's retention ends before it is undone.
        self._wait([f for n, f in self._background.items() if n in names])
        passed = [self._hosts[n] for n in names if self._outcome(n).outcome == "deployed"]

        def one(host: HostSlot) -> None:
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

    def _tell_interruption(self, presses: int) -> None:
        """Ctrl-C was pressed: say at once what happens now (called from the SIGINT watcher thread)."""
        with self._guard:
            active = [self._hosts[n] for n in self._active if n in self._hosts]
            left = tuple(b.index + 1 for b in self.plan.batches[self._position + 1:]) if self._phase == "batch" \
                or self._phase == "baking" else ()
            stage = RunStage(self._phase, in_flight=len(active), gating=sum(1 for h in active if h.ctx.in_gate),
                             batches_left=left)
        self.bus.emit(Interrupting(presses, interruption_notice(presses, stage)))

    def request_halt(self, reason: str) -> None:
        """Stop before the next host (hosts already at work finish): a shared dependency such as the load
        balancer failed."""
        with self._guard:
            self._halt(reason)

    def _halt(self, reason: str) -> None:
        """Stop before changing more hosts (a failed canary, the budget spent, a lost lock); in-flight hosts
        finish. Called from worker threads and the lock keeper."""
        with self._guard:
            if self._halt_reason is not None:
                return
            self._halt_reason = reason
        self._halted.set()
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
        verdict = judge_run(outcomes.values(), interrupted=self.interruption.requested.is_set(),
                            halt_reason=self._halt_reason, max_failed=self.plan.max_failed,
                            failed_outcomes=self.failed_outcomes,
                            halt_words=getattr(self.procedure, "halt_words", HALT_WORDS))
        return self._result(verdict.exit_code, outcomes, verdict.message, halted=verdict.halted)

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
