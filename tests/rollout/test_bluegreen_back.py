"""Where a blue-green rollback goes (`bluegreen_back.choose_switch_back`, pure): the other colour's release, or the
rolling release a host ran before its first blue-green deploy; never forward, never to a release that failed its
health gate."""

from __future__ import annotations

from fleetctl.node.results import ColourInfo, NodeState, ReleaseInfo
from fleetctl.rollout.bluegreen_back import SwitchBack, choose_switch_back


def _state(releases: list[tuple[str, str | None]], current: str, previous: str | None,
           colours: dict[str, str | None]) -> NodeState:
    kept = tuple(ReleaseInfo(r, r.split("-")[0], "sha", None, failed) for r, failed in releases)
    return NodeState(kept, current, previous, None, None,
                     colours=tuple(ColourInfo(c, rel, None, None) for c, rel in sorted(colours.items())), live="blue")


def test_the_other_colour_holds_the_previous_release() -> None:
    state = _state([("1.0-a", None), ("2.0-b", None)], "2.0-b", "1.0-a", {"blue": "2.0-b", "green": "1.0-a"})
    assert choose_switch_back(state, "blue", None) == SwitchBack("green", "1.0-a")
    assert choose_switch_back(state, "blue", "1.0") == SwitchBack("green", "1.0-a")


def test_right_after_the_first_blue_green_deploy_the_rolling_release_is_adopted_by_the_other_colour() -> None:
    state = _state([("1.0-a", None), ("1.1-c", None), ("2.0-b", None)], "2.0-b", "1.0-a",
                   {"blue": "2.0-b", "green": None})
    assert choose_switch_back(state, "blue", None) == SwitchBack("green", "1.0-a", adopt=True)
    assert choose_switch_back(state, "blue", "1.0-a") == SwitchBack("green", "1.0-a", adopt=True)
    refused = choose_switch_back(state, "blue", "1.1")
    assert isinstance(refused, str) and "no release" in refused and "of version 1.1" in refused


def test_never_to_a_release_that_failed_its_gate() -> None:
    failed = _state([("1.0-a", "status 500"), ("2.0-b", None)], "2.0-b", "1.0-a", {"blue": "2.0-b", "green": None})
    refused = choose_switch_back(failed, "blue", None)
    assert isinstance(refused, str) and "passed its gate" in refused
    # The other colour holds a release whose deploy failed its gate: not that; the previous one, older, instead.
    colour_failed = _state([("1.0-a", None), ("2.0-b", None), ("3.0-d", "crash")], "2.0-b", "1.0-a",
                           {"blue": "2.0-b", "green": "3.0-d"})
    assert choose_switch_back(colour_failed, "blue", None) == SwitchBack("green", "1.0-a", adopt=True)


def test_never_forward_to_a_release_installed_after_the_current_one() -> None:
    # "Older" is install order on the node, as for the rolling rollback (rollout/rollback_target.py).
    state = _state([("1.0-a", None), ("2.0-b", None)], "1.0-a", "2.0-b", {"blue": "1.0-a", "green": None})
    refused = choose_switch_back(state, "blue", None)
    assert isinstance(refused, str) and "no older release" in refused
