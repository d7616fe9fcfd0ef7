"""Where a blue-green rollback goes (`bluegreen_plan.choose_switch_back`, pure): the rolling rollback's target
(`rollback_target.choose_rollback`: the newest release installed before the one the live colour serves, not marked
failed), put into the idle colour; never forward, never to a release that failed its health gate, and how the host
gets there (instant, start + gate, or the release put into the idle colour first)."""

from __future__ import annotations

from fleetctl.node.results import ColourInfo, NodeState, ProxyInfo, ReleaseInfo, ServiceInfo
from fleetctl.rollout.bluegreen import ColourPorts
from fleetctl.rollout.bluegreen_plan import NO_EARLIER, NOT_BLUE_GREEN, SwitchBack, choose_switch_back
from fleetctl.rollout.rollback_target import RollbackChoice

PORTS = ColourPorts(8080, 18080, 18081)


def _service(state: str) -> ServiceInfo:
    return ServiceInfo(True, state, None, None, 0, None)


def _state(releases: list[tuple[str, str | None]], live: str | None, colours: dict[str, tuple[str | None, str]]
           ) -> NodeState:
    """`releases`: (id, gate failure) oldest install first; `colours`: colour -> (release, service state)."""
    kept = tuple(ReleaseInfo(r, r.split("-")[0], "sha", None, failed) for r, failed in releases)
    current = colours[live][0] if live else releases[-1][0]
    proxy = ProxyInfo("0.0.0.0:8080", f"127.0.0.1:{PORTS.port(live)}") if live else None
    return NodeState(kept, current, None, None, None,
                     colours=tuple(ColourInfo(c, rel, None, _service(up)) for c, (rel, up) in sorted(colours.items())),
                     live=live, proxy=proxy)


def _plan(state: NodeState, to_version: str | None = None, *, force: bool = False) -> tuple[RollbackChoice, SwitchBack]:
    plan = choose_switch_back({"web-01": state}, {"web-01": PORTS}, to_version=to_version, force=force)
    return plan.choices["web-01"], plan.moves["web-01"]


def test_the_warm_idle_colour_holding_the_previous_release_is_an_instant_switch() -> None:
    state = _state([("1.0-a", None), ("2.0-b", None)], "green", {"blue": ("1.0-a", "Running"),
                                                                 "green": ("2.0-b", "Running")})
    _choice, move = _plan(state)
    assert move == SwitchBack("web-01", "green", "2.0-b", "blue", "1.0-a", "instant")
    assert move.how() == "instant switch to warm blue"
    stopped = _state([("1.0-a", None), ("2.0-b", None)], "green", {"blue": ("1.0-a", "Stopped"),
                                                                   "green": ("2.0-b", "Running")})
    assert _plan(stopped)[1].mode == "start"
    assert _plan(stopped, "1.0")[1].release == "1.0-a"


def test_a_second_rollback_never_switches_forward_to_the_newer_warm_colour() -> None:
    # deploy 1.0 (blue), deploy 2.0 (green), rollback (blue, 1.0): green still holds 2.0, warm. A second rollback
    # must not toggle back to it: 1.0 has no earlier release here, so the host is left as it is.
    toggled = _state([("1.0-a", None), ("2.0-b", None)], "blue", {"blue": ("1.0-a", "Running"),
                                                                  "green": ("2.0-b", "Running")})
    choice, move = _plan(toggled)
    assert choice.action == "refuse" and NO_EARLIER in choice.reason, choice
    assert move.colour is None and move.release is None
    # With an older good release kept (0.9), that release is put into green instead: started, gated, switched.
    older = _state([("0.9-z", None), ("1.0-a", None), ("2.0-b", None)], "blue",
                   {"blue": ("1.0-a", "Running"), "green": ("2.0-b", "Running")})
    assert _plan(older)[1] == SwitchBack("web-01", "blue", "1.0-a", "green", "0.9-z", "replace")
    # --to the newer release is refused as forward, whatever the warm colour holds.
    choice, move = _plan(toggled, "2.0")
    assert choice.action == "stay" and "never moves a host forward" in choice.reason
    assert move.colour is None


def test_three_deploys_roll_back_one_step_at_a_time_then_stop() -> None:
    # 1.0 (blue), 2.0 (green), 3.0 (blue again): each rollback goes one release back, by install order.
    releases = [("1.0-b", None), ("2.0-g", None), ("3.0-b", None)]
    on_three = _state(releases, "blue", {"blue": ("3.0-b", "Running"), "green": ("2.0-g", "Stopped")})
    assert _plan(on_three)[1] == SwitchBack("web-01", "blue", "3.0-b", "green", "2.0-g", "start")
    on_two = _state(releases, "green", {"blue": ("3.0-b", "Running"), "green": ("2.0-g", "Running")})
    assert _plan(on_two)[1] == SwitchBack("web-01", "green", "2.0-g", "blue", "1.0-b", "replace")
    on_one = _state(releases, "blue", {"blue": ("1.0-b", "Running"), "green": ("2.0-g", "Running")})
    choice, move = _plan(on_one)
    assert choice.action == "refuse" and NO_EARLIER in choice.reason and move.colour is None


def test_right_after_the_first_blue_green_deploy_the_rolling_release_goes_into_the_other_colour() -> None:
    state = _state([("1.0-a", None), ("1.1-c", None), ("2.0-b", None)], "blue",
                   {"blue": ("2.0-b", "Running"), "green": (None, "Stopped")})
    assert _plan(state)[1] == SwitchBack("web-01", "blue", "2.0-b", "green", "1.1-c", "replace")
    assert _plan(state, "1.0")[1].release == "1.0-a"
    choice, _ = _plan(state, "0.5")
    assert choice.action == "refuse" and "does not keep a release of version 0.5" in choice.reason


def test_never_to_a_release_that_failed_its_gate() -> None:
    failed = _state([("1.0-a", "status 500"), ("2.0-b", None)], "blue",
                    {"blue": ("2.0-b", "Running"), "green": ("1.0-a", "Stopped")})
    choice, move = _plan(failed)
    assert choice.action == "refuse" and "passed its gate" in choice.reason and move.colour is None
    # The idle colour holds a release whose deploy failed its gate (newer, too): the older good one goes into it.
    colour_failed = _state([("1.0-a", None), ("2.0-b", None), ("3.0-d", "crash")], "blue",
                           {"blue": ("2.0-b", "Running"), "green": ("3.0-d", "Stopped")})
    assert _plan(colour_failed)[1] == SwitchBack("web-01", "blue", "2.0-b", "green", "1.0-a", "replace")
    forced, _ = _plan(failed, "1.0")
    assert forced.action == "refuse" and "--force" in forced.reason
    assert _plan(failed, "1.0", force=True)[1].release == "1.0-a"


def test_a_host_not_on_blue_green_is_refused_and_left_out_of_the_fleet_choice() -> None:
    rolling = NodeState((ReleaseInfo("1.0-a", "1.0", "sha", None, None), ReleaseInfo("2.0-b", "2.0", "sha", None, None)),
                        "2.0-b", "1.0-a", None, None)
    on_bg = _state([("1.0-a", None), ("2.0-b", None)], "green", {"blue": ("1.0-a", "Running"),
                                                                 "green": ("2.0-b", "Running")})
    plan = choose_switch_back({"web-01": on_bg, "web-02": rolling}, {"web-01": PORTS, "web-02": PORTS})
    assert plan.choices["web-02"].action == "refuse" and plan.choices["web-02"].reason == NOT_BLUE_GREEN
    assert plan.moves["web-01"].mode == "instant" and plan.version == "1.0"
