"""The rollout's decisions as tables of cases: batch verdict, failure budget, whether a host starts, the exit code
and message of a run (rollout/verdict.py)."""

from __future__ import annotations

import pytest

from fleetctl.errors import EXIT_HALTED, EXIT_INTERRUPTED, EXIT_OK, EXIT_ROLLOUT_FAILED
from fleetctl.rollout.events import HostOutcome
from fleetctl.rollout.verdict import (
    counts_text,
    holder_text,
    judge_batch,
    judge_run,
    lock_held_message,
    may_start_host,
    over_budget,
    unreachable_verdict,
)


@pytest.mark.parametrize("canary,failed,failures,max_failed,action,reason", [
    (True, (), 0, 0, "continue", None),
    (True, ("a",), 1, 5, "undo_canaries", "canary failed on a"),  # the budget never excuses a canary
    (True, ("a", "b"), 2, 0, "undo_canaries", "canary failed on a, b"),
    (False, (), 0, 0, "continue", None),
    (False, ("c",), 1, 1, "continue", None),  # within the budget
    (False, ("c",), 2, 1, "halt", "2 failed host(s) exceed the failure budget of 1"),
    (False, (), 3, 2, "halt", "3 failed host(s) exceed the failure budget of 2"),  # earlier failures count
])
def test_batch_verdict(canary: bool, failed: tuple[str, ...], failures: int, max_failed: int, action: str,
                       reason: str | None) -> None:
    verdict = judge_batch(canary=canary, failed=failed, failures=failures, max_failed=max_failed)
    assert (verdict.action, verdict.reason) == (action, reason)


@pytest.mark.parametrize("failures,max_failed,over", [(0, 0, False), (1, 0, True), (2, 2, False), (3, 2, True)])
def test_failure_budget(failures: int, max_failed: int, over: bool) -> None:
    assert over_budget(failures, max_failed) is over


@pytest.mark.parametrize("canary,stopping,failures,max_failed,starts", [
    (False, False, 0, 0, True),
    (False, True, 0, 0, False),  # halted or Ctrl-C: no new host
    (True, True, 0, 0, False),
    (False, False, 1, 0, False),  # past the budget
    (True, False, 1, 0, True),  # canaries are judged by the canary rule
    (False, False, 1, 1, True),
])
def test_may_start_host(canary: bool, stopping: bool, failures: int, max_failed: int, starts: bool) -> None:
    assert may_start_host(canary=canary, stopping=stopping, failures=failures, max_failed=max_failed) is starts


def test_unreachable_hosts_before_any_change() -> None:
    assert unreachable_verdict(["a"], 1) is None
    reason = unreachable_verdict([f"h{i}" for i in range(7)], 2)
    assert reason == "7 host(s) could not be reached or locked (h[0:6]); failure budget is 2: nothing was changed"


def test_verdict_messages_name_hosts_as_ranges_at_500() -> None:
    """Every host is named compactly in one line, never 500 names nor only the first five."""
    web = [f"web{i:03d}" for i in range(1, 501)]
    reason = unreachable_verdict(web, 10)
    assert reason is not None and "(web[001:500])" in reason and len(reason) < 160
    canaries = judge_batch(canary=True, failed=["web010", "web011", "web012", "web015"], failures=4, max_failed=0)
    assert canaries.reason == "canary failed on web[010:012,015]"
    # Scattered hosts beyond the line's width: cut at a boundary with the total counted.
    scattered = web[::2]
    lost = judge_run([HostOutcome(h, "unknown") for h in scattered], interrupted=False,
                     halt_reason="lock lost", max_failed=0)
    assert "state unknown on web[001,003,005," in lost.message and "(250 hosts)" in lost.message
    assert "web499" not in lost.message and len(lost.message) < 300


def _outcomes(*kinds: str) -> list[HostOutcome]:
    return [HostOutcome(f"h{i}", kind) for i, kind in enumerate(kinds)]  # type: ignore[arg-type]


@pytest.mark.parametrize("kinds,interrupted,halt,max_failed,code,message,halted", [
    (("deployed", "skipped"), False, None, 0, EXIT_OK, "1 deployed, 1 skipped", False),
    ((), False, None, 0, EXIT_OK, "no hosts", False),
    (("deployed", "failed"), False, None, 1, EXIT_ROLLOUT_FAILED,
     "1 host(s) failed within the failure budget of 1 (1 deployed, 1 failed)", False),
    (("deployed", "rolled_back"), False, None, 1, EXIT_ROLLOUT_FAILED,
     "1 host(s) failed within the failure budget of 1 (1 deployed, 1 rolled back)", False),
    (("deployed", "not_started"), False, "budget", 0, EXIT_HALTED,
     "halted: budget; hosts are on mixed releases (1 deployed, 1 not started)", True),
    (("rolled_back", "not_started"), False, "canary failed on h0", 0, EXIT_ROLLOUT_FAILED,
     "halted: canary failed on h0; no host was left on the new release (1 rolled back, 1 not started)", True),
    # A halt after every host was done and none failed (a lock lost after the last change) is not a failure.
    (("deployed", "deployed"), False, "x", 0, EXIT_OK, "2 deployed (then x)", False),
    (("deployed", "not_started"), True, "x", 0, EXIT_INTERRUPTED, "interrupted: 1 deployed, 1 not started", False),
    (("removed", "failed"), False, "y", 0, EXIT_HALTED,
     "halted: y; hosts are on mixed releases (1 removed, 1 failed)", True),
])
def test_run_verdict(kinds: tuple[str, ...], interrupted: bool, halt: str | None, max_failed: int, code: int,
                     message: str, halted: bool) -> None:
    verdict = judge_run(_outcomes(*kinds), interrupted=interrupted, halt_reason=halt, max_failed=max_failed)
    assert (verdict.exit_code, verdict.message, verdict.halted) == (code, message, halted)


def test_counts_are_in_a_fixed_order() -> None:
    assert counts_text(_outcomes("failed", "deployed", "not_started", "deployed")) == \
        "2 deployed, 1 failed, 1 not started"


def test_lock_held_names_the_holder_and_what_to_do() -> None:
    first = holder_text("n1", {"holder": {"owner": "ops@ctl", "deploy_id": "r9", "acquired_at": "12:00"}})
    assert first == "n1 is locked by ops@ctl (deploy r9, since 12:00)"
    assert holder_text("n2", {}) == "n2 is locked by someone (deploy ?, since ?)"
    # The refusal itself says what to do (lock_keeper.refusal: wait, or --force only for a holder provably gone).
    assert lock_held_message([first, "n2 ..."]) == f"{first} (and 1 more host(s))"
