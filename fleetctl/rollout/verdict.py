"""The rollout's decisions as pure functions over values: the failure budget, the verdict after each batch, and
the run's exit code and message. The engine (`rollout/engine.py`) asks these and carries out the answer; the rules
themselves are in docs/rollouts.md (exit codes: docs/cli.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fleetctl.errors import EXIT_HALTED, EXIT_INTERRUPTED, EXIT_OK, EXIT_ROLLOUT_FAILED
from fleetctl.rollout.events import HostOutcome

FAILED_OUTCOMES = ("failed", "rolled_back", "unknown")  # unknown: lost after its service was touched
ON_TARGET_OUTCOMES = ("deployed", "removed", "restarted", "skipped")
HALT_WORDS = ("hosts are on mixed releases", "no host was left on the new release")  # partway, none done
COUNT_ORDER = ("deployed", "removed", "restarted", "skipped", "rolled_back", "failed", "unknown", "not_started")


def is_failed(outcome: str) -> bool:
    return outcome in FAILED_OUTCOMES


def over_budget(failures: int, max_failed: int) -> bool:
    """The failure budget allows `max_failed` failed hosts; one more halts the run."""
    return failures > max_failed


def unreachable_verdict(unreachable: Sequence[str], max_failed: int) -> str | None:
    """Before any change: the halt reason when more hosts could not be reached or locked than the budget allows."""
    if not over_budget(len(unreachable), max_failed):
        return None
    names = ", ".join(unreachable[:5])
    return (f"{len(unreachable)} host(s) could not be reached or locked ({names}); failure budget is {max_failed}: "
            "nothing was changed")


BatchAction = Literal["continue", "halt", "undo_canaries"]


@dataclass(frozen=True)
class BatchVerdict:
    action: BatchAction
    reason: str | None = None


def judge_batch(*, canary: bool, failed: Sequence[str], failures: int, max_failed: int) -> BatchVerdict:
    """After a batch: a failed canary undoes every canary and halts; failures beyond the budget halt; else go on.
    `failed` are this batch's failed hosts, `failures` every failed host of the run so far."""
    if canary and failed:
        return BatchVerdict("undo_canaries", f"canary failed on {', '.join(failed)}")
    if over_budget(failures, max_failed):
        return BatchVerdict("halt", f"{failures} failed host(s) exceed the failure budget of {max_failed}")
    return BatchVerdict("continue")


def may_start_host(*, canary: bool, stopping: bool, failures: int, max_failed: int) -> bool:
    """Whether a host of a running batch still starts: not once the run stops (halt, Ctrl-C), nor past the budget
    (canaries always run: the canary rule, not the budget, judges them)."""
    return not stopping and (canary or not over_budget(failures, max_failed))


@dataclass(frozen=True)
class RunVerdict:
    exit_code: int
    message: str
    halted: bool = False


def judge_run(outcomes: Iterable[HostOutcome], *, interrupted: bool, halt_reason: str | None,
              max_failed: int, failed_outcomes: Sequence[str] = FAILED_OUTCOMES,
              halt_words: tuple[str, str] = HALT_WORDS) -> RunVerdict:
    """The run's exit code and one-line message from where every host ended. `failed_outcomes`: what counts as a
    failure (a rollback's success is `rolled_back`, so there only `failed` and `unknown` do). `halt_words`: what a
    halted run leaves, partway and with no host done (a restart changes no release, so it says so instead)."""
    values = list(outcomes)
    failed = [o.host for o in values if o.outcome in failed_outcomes]
    done = ON_TARGET_OUTCOMES + (("rolled_back",) if "rolled_back" not in failed_outcomes else ())
    on_target = [o.host for o in values if o.outcome in done]
    pending = [o.host for o in values if o.outcome == "not_started"]
    unknown = [o.host for o in values if o.outcome == "unknown"]
    counts = counts_text(values)
    if interrupted:
        return RunVerdict(EXIT_INTERRUPTED, f"interrupted: {counts}")
    if unknown:
        # Not a clean halt: nobody knows what those hosts run. Exit 3 says the fleet may be on mixed releases.
        lost = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        why = f"halted: {halt_reason}; " if halt_reason else ""
        return RunVerdict(EXIT_HALTED, f"{why}state unknown on {lost} (lost after their service was touched): "
                                       f"hosts may be on mixed releases; check them with `fleetctl status` and run "
                                       f"again ({counts})", halted=bool(halt_reason))
    # A halt with every host done and none failed can only be a lock lost after the last change: not a failure.
    if halt_reason and (pending or failed):
        mixed = bool(on_target) and bool(pending or failed)
        code = EXIT_HALTED if mixed else EXIT_ROLLOUT_FAILED
        where = halt_words[0] if mixed else halt_words[1]
        return RunVerdict(code, f"halted: {halt_reason}; {where} ({counts})", halted=True)
    if failed:
        return RunVerdict(EXIT_ROLLOUT_FAILED, f"{len(failed)} host(s) failed within the failure budget of "
                                               f"{max_failed} ({counts})")
    if halt_reason:
        return RunVerdict(EXIT_OK, f"{counts} (then {halt_reason})")
    return RunVerdict(EXIT_OK, counts)


def counts_text(outcomes: Iterable[HostOutcome]) -> str:
    """`3 deployed, 1 failed` in a fixed order; `no hosts` when empty."""
    values = list(outcomes)
    tally = {k: sum(1 for o in values if o.outcome == k) for k in COUNT_ORDER}
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in tally.items() if v) or "no hosts"


def lock_held_message(holders: Sequence[str]) -> str:
    """The run stops before any change when another run holds a lock: the first refusal (it names the holder and
    says what to do: wait, or --force only when the holder is provably gone), and how many more."""
    more = f" (and {len(holders) - 1} more host(s))" if len(holders) > 1 else ""
    return f"{holders[0]}{more}"


def holder_text(host: str, details: dict[str, Any]) -> str:
    """`HOST is locked by OWNER (deploy ID, since WHEN)` from a LOCK_HELD error's details."""
    nested = details.get("holder")
    holder: dict[str, Any] = nested if isinstance(nested, dict) else details
    owner = holder.get("owner", "someone")
    deploy_id = holder.get("deploy_id", "?")
    since = holder.get("acquired_at", "?")
    return f"{host} is locked by {owner} (deploy {deploy_id}, since {since})"
