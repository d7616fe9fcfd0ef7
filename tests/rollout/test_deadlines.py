"""Bounded calls (fleetctl/rollout/deadlines.py): the value or the error of a call within its budget, a
PhaseTimeout past it (the call left to finish on its own), and threads reused rather than one per call."""

from __future__ import annotations

import threading

import pytest

from fleetctl.rollout import deadlines
from fleetctl.rollout.deadlines import PhaseTimeout, call_within


def test_the_value_and_the_error_of_a_call_within_its_budget() -> None:
    assert call_within(5, lambda: 42, "answer") == 42

    def fails() -> None:
        raise KeyError("node said no")

    with pytest.raises(KeyError, match="node said no"):
        call_within(5, fails, "failing")


def test_a_call_past_its_budget_raises_and_does_not_hold_up_the_next() -> None:
    release = threading.Event()
    finished = threading.Event()

    def stuck() -> None:
        release.wait(10)
        finished.set()

    with pytest.raises(PhaseTimeout, match=r"no answer within 0.05s \(stuck"):
        call_within(0.05, stuck, "stuck")
    assert call_within(5, lambda: "next", "next") == "next"  # another thread took it
    release.set()
    assert finished.wait(5)  # the stuck call was left to finish, not killed


def test_sequential_calls_reuse_their_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    call_within(5, lambda: None, "warm")  # at least one idle thread now
    started: list[str] = []

    class Counted(threading.Thread):
        def start(self) -> None:
            started.append(self.name)
            super().start()

    monkeypatch.setattr(deadlines.threading, "Thread", Counted)
    for _ in range(50):
        assert call_within(5, lambda: 1, "again") == 1
    assert started == []  # every call ran on a thread already there
