"""The node-side rule of the app lock, written once for the lab and mirrored statement for statement by the
module's `Get-FleetLockDecision` (tests/node/test_contract.py runs both over every case and compares).

A lock is taken when it is free, renewed when it is ours, replaced when it has expired, and taken over from a
live holder only when the caller names exactly that holder's deploy id (`TakeOver`, after the controller proved
the holder gone, docs/rollouts.md). A change freeze (a lock with a reason, held by a person, not a process) is
never taken over: it ends when it expires or is lifted with its own deploy id.
"""

from __future__ import annotations

from typing import Literal

LockDecision = Literal["take", "renew", "replace-expired", "take-over", "held"]
DECISIONS: tuple[LockDecision, ...] = ("take", "renew", "replace-expired", "take-over", "held")


def lock_decision(held_by: str, expired: bool, freeze: bool, deploy_id: str, take_over: str) -> LockDecision:
    """What Lock-FleetApp does: `held_by` is the current holder's deploy id ('' when free), `take_over` the deploy
    id the caller proved gone ('' for none). Deploy ids compare case-sensitively."""
    if held_by == "":
        return "take"
    if held_by == deploy_id:
        return "renew"
    if expired:
        return "replace-expired"
    if freeze:
        return "held"
    if take_over == "":
        return "held"
    if take_over == held_by:
        return "take-over"
    return "held"
