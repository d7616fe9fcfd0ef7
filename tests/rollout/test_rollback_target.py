"""The rollback target choice (issue 15 item 1): a table of fleets, each host's releases in install order, what
failed where, and where `fleetctl rollback` must send each host."""

from __future__ import annotations

import pytest

from fleetctl.rollout.rollback_target import HostReleases, choose_rollback


def host(name: str, current: str | None, kept: str, failed: dict[str, str] | None = None) -> HostReleases:
    """`kept`: versions oldest first, e.g. "1 2 3"; release ids are "<version>-id"."""
    return HostReleases(name, f"{current}-id" if current else None,
                        tuple((f"{v}-id", v) for v in kept.split()),
                        {f"{v}-id": why for v, why in (failed or {}).items()})


GATE = {"3": "crash during the stability window"}

CASES = {
    # The scenario: 3 halted mixed; c failed its gate on 3 and was rolled back to 2; d, e never started.
    "halted mixed deploy": (
        [host("a", "3", "1 2 3"), host("b", "3", "1 2 3"), host("c", "2", "1 2 3", GATE),
         host("d", "2", "1 2"), host("e", "2", "1 2")],
        None, False, "2",
        {"a": ("switch", "2"), "b": ("switch", "2"), "c": ("stay", "2"), "d": ("stay", "2"), "e": ("stay", "2")}),
    "uniform fleet goes to its previous": (
        [host("a", "2", "1 2"), host("b", "2", "1 2")], None, False, "1",
        {"a": ("switch", "1"), "b": ("switch", "1")}),
    # After rolling the halted deploy back, a second rollback goes one further back, never forward to 3.
    "second rollback after a halted deploy": (
        [host("a", "2", "1 2 3"), host("c", "2", "1 2 3", GATE), host("d", "2", "1 2")], None, False, "1",
        {"a": ("switch", "1"), "c": ("switch", "1"), "d": ("switch", "1")}),
    "a release that failed its gate is skipped": (
        [host("a", "3", "1 2 3", {"2": "unhealthy"}), host("b", "3", "1 2 3", {"2": "unhealthy"})], None, False,
        "1", {"a": ("switch", "1"), "b": ("switch", "1")}),
    "three releases: the newest goes back, the oldest never forward": (
        [host("a", "3", "1 2 3"), host("b", "2", "1 2"), host("c", "1", "1")], None, False, "2",
        {"a": ("switch", "2"), "b": ("stay", "2"), "c": ("stay", "1")}),
    "a host without the target returns to its own older good release": (
        [host("a", "3", "2 3"), host("b", "3", "1 3"), host("c", "2", "1 2")], None, False, "2",
        {"a": ("switch", "2"), "b": ("switch", "1"), "c": ("stay", "2")}),
    "a first release has nothing to go back to": (
        [host("a", "1", "1")], None, False, None, {"a": ("refuse", None)}),
    "--to a failed release is refused": (
        [host("a", "2", "1 2 3", GATE), host("b", "2", "1 2 3")], "3", False, "3",
        {"a": ("refuse", None), "b": ("stay", "2")}),
    "--to a failed release with --force": (
        [host("a", "3", "1 3 4", GATE)], "3", True, "3", {"a": ("stay", "3")}),
    "--to forced returns to an older failed release": (
        [host("a", "4", "1 3 4", GATE)], "3", True, "3", {"a": ("switch", "3")}),
    "--to never moves forward": (
        [host("a", "1", "1 2"), host("b", "2", "1 2")], "2", False, "2", {"a": ("stay", "1"), "b": ("stay", "2")}),
    # d never got 3 (the deploy halted before it); a and b installed 3 after 2, so 3 is newer for d too.
    "--to a newer version a host never got stays": (
        [host("a", "2", "1 2 3"), host("b", "2", "1 2 3"), host("d", "2", "1 2")], "3", True, "3",
        {"a": ("stay", "2"), "b": ("stay", "2"), "d": ("stay", "2")}),
    # ...but with no host keeping both, nothing says 9 is newer: refused as not kept, not guessed from the name.
    "--to a version no host can compare": (
        [host("a", "2", "1 2"), host("b", "9", "9")], "9", False, "9", {"a": ("refuse", None), "b": ("stay", "9")}),
    "--to a version not kept": (
        [host("a", "2", "1 2")], "9", False, "9", {"a": ("refuse", None)}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rollback_target(case: str) -> None:
    hosts, to, force, version, expected = CASES[case]
    plan = choose_rollback(hosts, to_version=to, force=force)
    assert plan.version == version
    got = {h: (c.action, c.target.split("-")[0] if c.target else None) for h, c in plan.choices.items()}
    assert got == expected, {h: c.reason for h, c in plan.choices.items()}


def test_reasons_say_why() -> None:
    plan = choose_rollback([host("a", "2", "1 2 3", GATE)], to_version="3")
    assert "failed its health gate" in plan.choices["a"].reason and "--force" in plan.choices["a"].reason
    plan = choose_rollback([host("a", "1", "1 2"), host("b", "2", "1 2")], to_version="2")
    assert "never moves a host forward" in plan.choices["a"].reason
