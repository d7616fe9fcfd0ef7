"""Where a blue-green rollback sends each host, decided once before anything changes: shown for confirmation,
printed by `--dry-run` and carried out as it was shown (`bluegreen_back` re-checks each host against it).

The target is the rolling rollback's (`rollback_target.choose_rollback`, the one rule for both strategies): the
fleet's last good release, by install order on each host, never forward, never a release that failed its gate.
The "current" release of a blue-green host is its live colour's. What changes is only *how* a host gets there:

    instant   the idle colour holds the target and runs: the switch alone (no stop, no start, no bytes)
    start     the idle colour holds the target, stopped: start it, gate it on its own port, then switch
    replace   the idle colour holds another release (the newer one a previous rollback left, or none): the target,
              kept on the node, becomes the idle colour's release (its own definition; no artifact bytes), is
              started and gated, then switched to

A host with no earlier good release is not changed and says so; it is never switched to the newer colour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from fleetctl.node.fleet import run_parallel
from fleetctl.node.results import NodeState
from fleetctl.rollout.bluegreen import ColourPorts, live_colour, other
from fleetctl.rollout.rollback_target import HostReleases, RollbackChoice, RollbackPlan, choose_rollback

if TYPE_CHECKING:
    from collections.abc import Callable

    from fleetctl.rollout.traffic_steps import HostTraffic

NOT_BLUE_GREEN = "does not run blue-green (no live colour): roll it back with --strategy rolling"
NO_EARLIER = "no earlier release to roll back to"

Mode = Literal["instant", "start", "replace", ""]


@dataclass(frozen=True)
class SwitchBack:
    """One host's switch back: from the `live` colour (running `current`) to `colour` running `release`, how
    (`mode`), and the load balancer's move in words (`backend`). `colour` None: the host is not switched."""

    host: str
    live: str | None
    current: str | None
    colour: str | None = None
    release: str | None = None
    mode: Mode = ""
    backend: str | None = None

    def how(self) -> str:
        """What the switch takes, in words (the plan's "how" column, --json's `how`)."""
        if self.colour is None:
            return ""
        steps = {"instant": f"instant switch to warm {self.colour}",
                 "start": f"start {self.colour} and gate it, then switch",
                 "replace": f"put {self.release} into {self.colour} (kept on the node, no bytes), start and gate "
                            "it, then switch"}[self.mode or "start"]
        return f"{steps}; {self.backend}" if self.backend else steps

    def to_json(self) -> dict[str, object]:
        return {"from_colour": self.live, "to_colour": self.colour, "mode": self.mode or None,
                "how": self.how() or None, "backend": self.backend}


@dataclass(frozen=True)
class SwitchBackPlan(RollbackPlan):
    """The rolling rollback's plan (version, each host's choice) and, per host, how its colours switch."""

    moves: dict[str, SwitchBack] = field(default_factory=dict)


def colour_view(host: str, state: NodeState, ports: ColourPorts,
                failures: Mapping[str, str] | None = None) -> HostReleases | None:
    """What the shared rule needs of a blue-green host (its live colour's release is current), or None when the
    host runs no live colour."""
    live = live_colour(state, ports)
    if live is None:
        return None
    info = state.colour(live)
    view = HostReleases.from_state(host, state, failures)
    return replace(view, current=info.release if info is not None and info.release else state.current)


def switch_back_for(state: NodeState, ports: ColourPorts, choice: RollbackChoice) -> SwitchBack:
    """How a host in `state` carries out `choice` (pure): the target always goes into the idle colour."""
    live = live_colour(state, ports)
    if choice.action != "switch" or choice.target is None or live is None:
        return SwitchBack(choice.host, live, choice.current)
    back = other(live)
    info = state.colour(back)
    if info is not None and info.release == choice.target:
        mode: Mode = "instant" if info.service is not None and info.service.state == "Running" else "start"
    else:
        mode = "replace"
    return SwitchBack(choice.host, live, choice.current, back, choice.target, mode)


def choose_switch_back(states: Mapping[str, NodeState], ports: Mapping[str, ColourPorts], *,
                       to_version: str | None = None, force: bool = False,
                       failures: Mapping[str, Mapping[str, str]] | None = None) -> SwitchBackPlan:
    """Every host's switch back (pure). Hosts not on blue-green are refused and left out of the fleet's choice."""
    views = {h: colour_view(h, s, ports[h], (failures or {}).get(h)) for h, s in states.items()}
    shared = choose_rollback([v for v in views.values() if v is not None], to_version=to_version, force=force)
    choices: dict[str, RollbackChoice] = {}
    for host, state in states.items():
        choice = shared.choices.get(host)
        if choice is None:
            choice = RollbackChoice(host, state.current, None, "refuse", NOT_BLUE_GREEN)
        elif choice.action == "refuse" and to_version is None and choice.current is not None:
            # Said the way people ask it: this host has nowhere older to go (and is left as it is).
            choice = replace(choice, reason=f"{NO_EARLIER} ({choice.reason})")
        choices[host] = choice
    moves = {h: switch_back_for(states[h], ports[h], c) for h, c in choices.items()}
    return SwitchBackPlan(shared.version, choices, moves)


def plan_switch_back(hosts: list[str], read: Callable[[str], NodeState], ports: Mapping[str, ColourPorts], *,
                     forks: int, to_version: str | None, force: bool, traffic: HostTraffic | None,
                     journal_failures: dict[str, dict[str, str]] | None = None) -> SwitchBackPlan:
    """Read every targeted host's colours (`read`, read-only) and choose its switch back; with a load balancer in
    front, each switching host's backend move is part of the plan. A host that cannot be asked is refused."""
    outcomes = run_parallel(hosts, read, forks=forks)
    states = {h: o.value for h, o in outcomes.items() if o.value is not None}
    plan = choose_switch_back(states, ports, to_version=to_version, force=force,
                              failures=journal_failures)
    choices = {h: plan.choices.get(h) or RollbackChoice(h, None, None, "refuse", f"could not be asked: "
                                                        f"{outcomes[h].error}") for h in hosts}
    moves = {h: plan.moves.get(h) or SwitchBack(h, None, None) for h in hosts}
    if traffic is not None:
        for host, move in moves.items():
            if move.colour is not None and move.live is not None:
                mine = ports[host]
                server = traffic.balancer.pool.backend(host).server
                moves[host] = replace(move, backend=f"move backend {server} on {traffic.where} from {move.live} "
                                                    f"port {mine.port(move.live)} to {move.colour} port "
                                                    f"{mine.port(move.colour)}")
    return SwitchBackPlan(plan.version, choices, moves)
