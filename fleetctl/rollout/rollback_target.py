"""Where `fleetctl rollback` sends each host: a pure decision over every targeted host's node state (and the
gate failures the journal remembers), made once before anything changes, shown as "from → to", carried out by the
run and by `--dry-run` alike.

Rules (docs/rollouts.md, "Rollback"):
- Without `--to`, the target is **the fleet's last good release**, one version for the whole fleet: when hosts run
  different releases (a halted deploy), the newest of them is the one being rolled back and the target is the
  newest other release the fleet runs; when every host runs the same release, the target is the newest older
  release the hosts keep that did not fail its gate.
- "Older" and "newer" are install order on the host (the node lists its releases oldest first). A rollback never
  moves a host forward: a host already older than the target stays where it is.
- A release that failed its health gate on a host is never a target without `--to`, and with `--to` only when
  forced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from fleetctl.node.results import NodeState

Action = Literal["switch", "stay", "refuse"]


@dataclass(frozen=True)
class HostReleases:
    """What the decision needs of one host: its kept releases in install order and what failed there."""

    host: str
    current: str | None
    releases: tuple[tuple[str, str], ...]  # (release id, version), oldest install first
    failed: Mapping[str, str]  # release id -> why it failed its gate on this host

    @classmethod
    def from_state(cls, host: str, state: NodeState,
                   journal_failures: Mapping[str, str] | None = None) -> HostReleases:
        failed = {r.release: r.gate_failed for r in state.releases if r.gate_failed}
        for release, reason in (journal_failures or {}).items():
            failed.setdefault(release, reason)
        return cls(host, state.current, tuple((r.release, r.version) for r in state.releases), failed)

    def version_of(self, release: str | None) -> str | None:
        return next((v for r, v in self.releases if r == release), None)

    def position(self, release: str | None) -> int:
        """Install position (higher is newer); -1 when the host does not keep the release."""
        return next((i for i, (r, _) in enumerate(self.releases) if r == release), -1)

    def newest_of_version(self, version: str, *, allow_failed: bool = False) -> str | None:
        matches = [r for r, v in self.releases if (v == version or r == version)
                   and (allow_failed or r not in self.failed)]
        return matches[-1] if matches else None

    def older_good(self) -> list[str]:
        """Kept releases older than the current one that did not fail their gate here, newest first."""
        here = self.position(self.current)
        return [r for r, _ in reversed(self.releases[:here]) if r not in self.failed] if here > 0 else []


@dataclass(frozen=True)
class RollbackChoice:
    """One host's part of a rollback: switch to `target`, stay (nothing to do), or refuse (why)."""

    host: str
    current: str | None
    target: str | None
    action: Action
    reason: str = ""

    def to_json(self) -> dict[str, object]:
        return {"current": self.current, "target": self.target, "action": self.action, "reason": self.reason}


@dataclass(frozen=True)
class RollbackPlan:
    """The fleet's target version (None when there is none) and each host's choice, in host order."""

    version: str | None
    choices: dict[str, RollbackChoice]

    @property
    def refused(self) -> list[RollbackChoice]:
        return [c for c in self.choices.values() if c.action == "refuse"]


def choose_rollback(hosts: list[HostReleases], *, to_version: str | None = None,
                    force: bool = False) -> RollbackPlan:
    """Each host's rollback target (see the module's rules). Pure."""
    if to_version is not None:
        def newer_than_current(current_version: str | None) -> bool:
            # For a host that does not keep `--to`'s release: newer by the install order of the hosts keeping both.
            return current_version is not None and current_version != to_version and \
                _installed_later(hosts, to_version, current_version)

        return RollbackPlan(to_version, {h.host: _explicit(h, to_version, force, newer_than_current) for h in hosts})
    version = fleet_last_good_version(hosts)

    def older_than_target(other: str | None) -> bool:
        # Fleet-wide install order: a host that keeps only its own old release still counts as older.
        return version is not None and other is not None and other != version and \
            _newest_version(hosts, {other, version}) == version

    return RollbackPlan(version, {h.host: _to_fleet_version(h, version, older_than_target) for h in hosts})


def fleet_last_good_version(hosts: list[HostReleases]) -> str | None:
    """The version the fleet returns to: the release being rolled back is the newest one the fleet runs; the
    target is the newest other version hosts run (a halted deploy) or, on a uniform fleet, the version most hosts
    ran before (their newest older release that passed its gate)."""
    running = [h for h in hosts if h.current is not None and h.version_of(h.current) is not None]
    versions = {h.version_of(h.current) for h in running}
    if not versions:
        return None
    newest = _newest_version(running, versions)
    others = versions - {newest}
    if others:
        return _newest_version(running, others)
    before = Counter(h.version_of(older[0]) for h in running if (older := h.older_good()))
    if not before:
        return None
    # The most common one; ties go to the newest (a smaller step back).
    top = max(before.values())
    return _newest_version(running, {v for v, n in before.items() if n == top and v is not None})


def _newest_version(hosts: list[HostReleases], versions: set[str | None]) -> str | None:
    """Of `versions`, the one installed last wherever hosts keep more than one of them (majority of hosts);
    a version no host can compare comes last in name order, so the choice is stable."""
    candidates = sorted(v for v in versions if v is not None)
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    wins = _installed_last(hosts, candidates)
    if not wins:
        return candidates[-1]
    return max(candidates, key=lambda v: (wins[v], v))


def _installed_last(hosts: list[HostReleases], candidates: list[str]) -> Counter[str]:
    """Per version of `candidates`, on how many of the hosts keeping more than one of them it was installed last."""
    wins: Counter[str] = Counter()
    for h in hosts:
        positions = {v: max((i for i, (_, rv) in enumerate(h.releases) if rv == v), default=-1) for v in candidates}
        kept = [v for v in candidates if positions[v] >= 0]
        if len(kept) > 1:
            wins[max(kept, key=lambda v: positions[v])] += 1
    return wins


def _installed_later(hosts: list[HostReleases], version: str, other: str) -> bool:
    """Whether `version` was installed after `other` on most of the hosts that keep both (False when none does:
    without a host to compare on, nothing is assumed, unlike `_newest_version`'s name order)."""
    wins = _installed_last(hosts, [version, other])
    return wins[version] > wins[other]


def _to_fleet_version(h: HostReleases, version: str | None, older_than_target: Callable[[str | None], bool]
                      ) -> RollbackChoice:
    if h.current is None:
        return RollbackChoice(h.host, None, None, "refuse", "runs no release of this service")
    current_version = h.version_of(h.current)
    if version is None:
        return RollbackChoice(h.host, h.current, None, "refuse",
                              "the fleet has no older release that passed its gate to return to")
    if current_version == version:
        return RollbackChoice(h.host, h.current, h.current, "stay", f"already on the fleet's last good release "
                                                                    f"{version}")
    anywhere = h.newest_of_version(version, allow_failed=True)
    if (anywhere is not None and h.position(anywhere) > h.position(h.current)) or \
            (anywhere is None and older_than_target(current_version)):
        return RollbackChoice(h.host, h.current, h.current, "stay",
                              f"{h.current} is older than {version}: a rollback never moves a host forward")
    target = h.newest_of_version(version)
    if target is not None:
        return RollbackChoice(h.host, h.current, target, "switch", f"back to the fleet's last good release {version}")
    why = (f"{version} failed its health gate here ({h.failed[anywhere]})" if anywhere is not None
           else f"does not keep {version}")
    older = h.older_good()
    if older:
        return RollbackChoice(h.host, h.current, older[0], "switch",
                              f"{why}; back to its newest older release that passed its gate")
    return RollbackChoice(h.host, h.current, None, "refuse", f"{why}, and it keeps no older release that passed "
                                                             "its gate")


def _explicit(h: HostReleases, to_version: str, force: bool,
              newer_than_current: Callable[[str | None], bool]) -> RollbackChoice:
    target = h.newest_of_version(to_version, allow_failed=True)
    if h.current is None:
        return RollbackChoice(h.host, None, target, "refuse" if target is None else "switch",
                              "runs no release of this service" if target is None else f"to {to_version}")
    if target is None and newer_than_current(h.version_of(h.current)):
        return RollbackChoice(h.host, h.current, h.current, "stay",
                              f"{to_version} is newer than {h.current} (installed after it on the hosts that keep "
                              "both) and not kept here: a rollback never moves a host forward")
    if target is None:
        kept = ", ".join(r for r, _ in h.releases) or "none"
        return RollbackChoice(h.host, h.current, None, "refuse",
                              f"does not keep a release of version {to_version} (kept: {kept})")
    good = h.newest_of_version(to_version)
    if good is not None:
        target = good
    elif not force:
        return RollbackChoice(h.host, h.current, None, "refuse",
                              f"{target} failed its health gate on this host ({h.failed[target]}); pass --force to "
                              "roll back to it anyway")
    if target == h.current:
        return RollbackChoice(h.host, h.current, target, "stay", f"already on {to_version}")
    if h.position(target) > h.position(h.current):
        return RollbackChoice(h.host, h.current, h.current, "stay", f"{to_version} is newer than {h.current}: a "
                              "rollback never moves a host forward (deploy it instead)")
    note = " (forced: it failed its health gate here)" if target in h.failed else ""
    return RollbackChoice(h.host, h.current, target, "switch", f"to {to_version}{note}")
