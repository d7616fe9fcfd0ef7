"""Property tests of the rollout planner (fleetctl/plan.py)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetctl.config.sizes import Size
from fleetctl.errors import ConfigError
from fleetctl.plan import make_plan, parse_size_option

host_lists = st.integers(min_value=1, max_value=300).map(lambda n: [f"h{i:04d}" for i in range(n)])
sizes = st.one_of(
    st.integers(min_value=1, max_value=400).map(lambda n: Size(n, False)),
    st.integers(min_value=1, max_value=100).map(lambda p: Size(p, True)),
)


@settings(max_examples=300, deadline=None)
@given(hosts=host_lists, batch=sizes, canary=st.one_of(st.none(), sizes))
def test_every_host_in_exactly_one_batch_and_sizes_hold(hosts: list[str], batch: Size, canary: Size | None) -> None:
    plan = make_plan(hosts, batch=batch, canary=canary)
    seen = [h for b in plan.batches for h in b.hosts]
    assert sorted(seen) == sorted(hosts)
    assert len(seen) == len(set(seen))
    n = len(hosts)
    limit = max(1, math.ceil(batch.value * n / 100) if batch.percent else int(batch.value))
    first_normal = 0
    if canary is not None:
        assert plan.batches[0].canary
        want = math.ceil(canary.value * n / 100) if canary.percent else int(canary.value)
        assert len(plan.batches[0].hosts) == min(n, max(1, want))
        first_normal = 1
    for b in plan.batches[first_normal:]:
        assert not b.canary
        assert 1 <= len(b.hosts) <= limit
    assert [b.index for b in plan.batches] == list(range(len(plan.batches)))


@settings(max_examples=300, deadline=None)
@given(
    hosts=host_lists,
    batch=sizes,
    canary=st.one_of(st.none(), sizes),
    ndc=st.integers(min_value=1, max_value=6),
    data=st.data(),
)
def test_spread_by_keeps_each_batch_within_one_of_even_share(hosts, batch, canary, ndc, data) -> None:
    values = {h: data.draw(st.integers(min_value=0, max_value=ndc - 1), label=h) for h in hosts}
    plan = make_plan(hosts, batch=batch, canary=canary, spread_values=values, spread_by="dc")
    totals = Counter(values.values())
    n = len(hosts)
    assert sorted(h for b in plan.batches for h in b.hosts) == sorted(hosts)
    for b in plan.batches:
        got = Counter(values[h] for h in b.hosts)
        for value, count in totals.items():
            share = len(b.hosts) * count / n
            assert abs(got.get(value, 0) - share) <= 1 + 1e-9, (b, value, share)


def test_canary_percentages_round_up_never_to_zero() -> None:
    hosts7 = [f"h{i}" for i in range(7)]
    assert len(make_plan(hosts7, batch=Size(25, True), canary=Size(10, True)).batches[0].hosts) == 1
    hosts25 = [f"h{i}" for i in range(25)]
    plan = make_plan(hosts25, batch=Size(25, True), canary=Size(10, True))
    assert len(plan.batches[0].hosts) == 3
    assert [len(b.hosts) for b in plan.batches[1:]] == [7, 7, 7, 1]


def test_inventory_order_without_spread() -> None:
    hosts = [f"h{i}" for i in range(10)]
    plan = make_plan(hosts, batch=Size(4, False), canary=Size(1, False))
    assert plan.to_json() == {
        "hosts": 10,
        "batches": [
            {"index": 0, "canary": True, "hosts": ["h0"]},
            {"index": 1, "canary": False, "hosts": ["h1", "h2", "h3", "h4"]},
            {"index": 2, "canary": False, "hosts": ["h5", "h6", "h7", "h8"]},
            {"index": 3, "canary": False, "hosts": ["h9"]},
        ],
    }


def test_spread_interleaves_datacenters() -> None:
    hosts = [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)]
    values = {h: h[0] for h in hosts}
    plan = make_plan(hosts, batch=Size(2, False), spread_values=values)
    assert [sorted(h[0] for h in b.hosts) for b in plan.batches] == [["a", "b"]] * 4


@pytest.mark.parametrize("bad", ["0", "0%", "120%", "-1", "abc", "1.5"])
def test_bad_sizes_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_size_option(bad, "--canary")
    assert "--canary" in str(info.value)


def test_max_failed_zero_is_allowed() -> None:
    assert parse_size_option("0", "--max-failed", allow_zero=True) == Size(0, False)
    plan = make_plan(["a", "b", "c"], batch=Size(1, False), max_failed=Size(50, True))
    assert plan.max_failed == 2
