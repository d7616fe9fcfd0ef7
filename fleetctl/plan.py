"""Rollout plans: targeted hosts plus rollout settings become ordered batches. Pure: no I/O.

Canary first (`canary` hosts, a count or a percentage of the targeted hosts rounded up, at least 1), then
batches of `batch` hosts. With `spread_by`, each batch holds each value (e.g. each datacenter) in proportion to
its share of the fleet: the per-batch counts are a rounding of the exact proportional shares that keeps every
row (batch size) and column (hosts per value) total, so no batch is more than one host off its even share.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetctl.config.playbook import Traffic
from fleetctl.config.sizes import Size
from fleetctl.errors import ConfigError


@dataclass(frozen=True)
class Batch:
    index: int
    canary: bool
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    hosts: tuple[str, ...]
    batches: tuple[Batch, ...]
    max_failed: int
    canary_bake: float = 0.0
    spread_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "hosts": len(self.hosts),
            "batches": [{"index": b.index, "canary": b.canary, "hosts": list(b.hosts)} for b in self.batches],
        }


def parse_size_option(value: str | None, option: str, *, allow_zero: bool = False) -> Size | None:
    """A `--canary`/`--batch`/`--max-failed` value, or a ConfigError naming the option."""
    if value is None:
        return None
    try:
        size = Size.parse(value)
    except ValueError as err:
        raise ConfigError(str(err), key=option) from None
    if size.is_zero and not allow_zero:
        raise ConfigError(f"expected at least 1 host or more than 0%, got {value!r}", key=option)
    return size


def make_plan(
    hosts: Sequence[str],
    *,
    batch: Size,
    canary: Size | None = None,
    max_failed: Size | None = None,
    spread_values: Mapping[str, Any] | None = None,
    spread_by: str | None = None,
    canary_bake: float = 0.0,
) -> Plan:
    """Order `hosts` (inventory order) into batches. `spread_values` maps host -> its `spread_by` value."""
    if len(set(hosts)) != len(hosts):
        raise ValueError("hosts must be unique")
    total = len(hosts)
    if total == 0:
        return Plan(hosts=(), batches=(), max_failed=0, canary_bake=canary_bake, spread_by=spread_by)
    sizes: list[tuple[int, bool]] = []
    remaining = total
    if canary is not None:
        c = max(1, canary.hosts(total))
        sizes.append((c, True))
        remaining -= c
    b = max(1, batch.hosts(total))
    while remaining > 0:
        take = min(b, remaining)
        sizes.append((take, False))
        remaining -= take

    if spread_values is None:
        groups = [list(hosts)]
        counts = [[n] for n, _ in sizes]
    else:
        groups, counts = _spread(hosts, [n for n, _ in sizes], spread_values)

    batches = []
    cursors = [0] * len(groups)
    for index, ((_, is_canary), row) in enumerate(zip(sizes, counts)):
        picked_per_group = []
        for g, want in enumerate(row):
            picked_per_group.append(groups[g][cursors[g]: cursors[g] + want])
            cursors[g] += want
        batches.append(Batch(index=index, canary=is_canary, hosts=tuple(_interleave(picked_per_group))))
    failed = (max_failed or Size(0, False)).hosts(total)
    ordered = tuple(h for batch_ in batches for h in batch_.hosts)
    return Plan(hosts=ordered, batches=tuple(batches), max_failed=failed, canary_bake=canary_bake, spread_by=spread_by)


def _interleave(lists: list[list[str]]) -> list[str]:
    """Round-robin across groups, largest first, so even a prefix of a batch spans the values."""
    order = sorted(range(len(lists)), key=lambda i: -len(lists[i]))
    out: list[str] = []
    for k in range(max((len(x) for x in lists), default=0)):
        out.extend(lists[i][k] for i in order if k < len(lists[i]))
    return out


def _spread(
    hosts: Sequence[str], batch_sizes: list[int], values: Mapping[str, Any]
) -> tuple[list[list[str]], list[list[int]]]:
    """Group hosts by value (first-seen order) and round the proportional batch x value matrix."""
    by_value: dict[str, list[str]] = defaultdict(list)
    for h in hosts:
        by_value[str(values.get(h, ""))].append(h)
    groups = list(by_value.values())
    total = len(hosts)
    shares = [[size * len(g) / total for g in groups] for size in batch_sizes]
    return groups, _round_matrix(shares, batch_sizes, [len(g) for g in groups])


def _round_matrix(shares: list[list[float]], row_sums: list[int], col_sums: list[int]) -> list[list[int]]:
    """Round each entry down or up so rows and columns keep their integer sums (always possible for a
    matrix whose row and column sums are integers). The extra units are placed by augmenting paths in the
    bipartite graph of fractional entries: rows needing units -> columns with units left."""
    rows, cols = len(shares), len(col_sums)
    out = [[math.floor(shares[r][c] + 1e-9) for c in range(cols)] for r in range(rows)]
    frac = [[shares[r][c] - out[r][c] > 1e-9 for c in range(cols)] for r in range(rows)]
    row_need = [row_sums[r] - sum(out[r]) for r in range(rows)]
    col_left = [col_sums[c] - sum(out[r][c] for r in range(rows)) for c in range(cols)]
    used = [[False] * cols for _ in range(rows)]  # unit placed on edge (r, c)

    def augment(r: int, seen_cols: set[int]) -> bool:
        for c in range(cols):
            if not frac[r][c] or used[r][c] or c in seen_cols:
                continue
            seen_cols.add(c)
            if col_left[c] > 0:
                col_left[c] -= 1
                used[r][c] = True
                return True
            # column full: move one of its units from another row r2 that can take a different column
            for r2 in range(rows):
                if used[r2][c] and r2 != r:
                    used[r2][c] = False
                    if augment(r2, seen_cols):
                        used[r][c] = True
                        return True
                    used[r2][c] = True
        return False

    for r in range(rows):
        for _ in range(row_need[r]):
            if not augment(r, set()):
                raise AssertionError("matrix rounding failed")  # cannot happen for consistent sums
    for r in range(rows):
        for c in range(cols):
            out[r][c] += int(used[r][c])
    return out


def host_sequence(strategy: str, traffic: Traffic | None, *, bake: float = 0.0) -> tuple[str, ...]:
    """What happens to each host of a batch, in order, traffic steps included (for `plan` and `deploy`). Pure."""
    if strategy == "blue-green" and traffic is not None and traffic.blue_green is not None:
        ports = traffic.blue_green
        after = "kept warm" if ports.keep_warm else f"kept warm {bake:g} s, then stopped"
        moved: tuple[str, ...] = ()
        if traffic.kind in ("nginx", "haproxy"):
            moved = (f"move its backend on {traffic.kind} on {traffic.host} to the idle colour's port",)
        return (f"install the release into the idle colour (blue :{ports.blue_port} / green :{ports.green_port})",
                "start the idle colour", "gate it on its own port", *moved,
                f"switch port {ports.listen_port} to it (the node's port proxy)", f"the old colour is {after}")
    steps = ("stop", "switch release", "start", "health gate")
    if traffic is not None and traffic.kind in ("nginx", "haproxy"):
        where = f"{traffic.kind} on {traffic.host}"
        drain = f"drain from {where}" + (f" ({float(traffic.drain):g} s)" if traffic.kind == "nginx" else
                                         f" (until its sessions end, at most {float(traffic.drain_timeout):g} s)")
        return (drain, *steps, f"return to the pool on {where}")
    return steps
