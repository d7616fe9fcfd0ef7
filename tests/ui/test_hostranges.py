"""`compact_hosts`: host lists as ranges, table-tested (padding kept, gaps, mixed names, caps)."""

from __future__ import annotations

import pytest

from fleetctl.config.inventory_ranges import expand_range
from fleetctl.ui.hostranges import compact_hosts


@pytest.mark.parametrize(("names", "shown"), [
    ([], ""),
    (["db-primary"], "db-primary"),
    ([f"web{i:03d}" for i in range(3, 20)], "web[003:019]"),
    ([f"web{i}" for i in range(1, 11)], "web[1:10]"),  # not padded: stays unpadded
    (["web01", "web02"], "web[01,02]"),  # two neighbours are listed, not a range of two
    (["web001", "web002", "web003", "web005", "web007", "web008", "web009"], "web[001:003,005,007:009]"),
    (["web09", "web10", "web11"], "web[09:11]"),  # 10 and 11 fit the width the padded 09 sets
    (["web9", "web010"], "web9, web010"),  # padded differently: never merged
    ([f"n{i:02d}" for i in range(1, 501)], "n[01:500]"),  # Ansible pads to the first number's width
    (["web1", "web01", "web02", "web100"], "web1, web[01,02,100]"),
    (["web7", "web07"], "web7, web07"),  # the same number, two names
    (["web03", "web01", "web02", "web01"], "web[01:03]"),  # order inside a range does not matter; duplicates once
    (["db-primary", "web01", "web02", "web03", "cache"], "db-primary, web[01:03], cache"),  # mixed names listed
    (["web-east-01.corp.example", "web-east-02.corp.example", "web-east-03.corp.example"],
     "web-east-[01:03].corp.example"),
    (["web01.dc1", "web02.dc1", "web01.dc2", "web02.dc2", "web03.dc2"], "web[01,02].dc1, web[01:03].dc2"),
    ([f"127.0.1.{i}" for i in range(2, 8)], "127.0.1.[2:7]"),
    (["lab-node01", "lab-node02", "lab-node04", "other-01"], "lab-node[01,02,04], other-01"),
])
def test_compact_hosts(names: list[str], shown: str) -> None:
    assert compact_hosts(names) == shown


def test_ranges_expand_back_to_exactly_the_names_given() -> None:
    """Each span read by the inventory's own range expander (Ansible's `[a:b]`) gives back the names."""
    names = [f"web{i:03d}" for i in (*range(1, 40), *range(45, 120, 3), 500)] + [f"app{i}" for i in range(8, 13)]
    names += [f"n{i:02d}" for i in (*range(1, 30), *range(95, 130))]
    expanded = []
    for part in compact_hosts(names).split(", "):
        prefix, _, rest = part.partition("[")
        spans, _, suffix = rest.partition("]")
        for span in spans.split(",") if rest else [""]:
            a, _, b = span.partition(":")
            expanded += expand_range(f"{prefix}[{a}:{b or a}]{suffix}") if rest else [part]
    assert sorted(expanded) == sorted(names)


def test_a_capped_list_says_how_many_hosts_it_stands_for() -> None:
    scattered = [f"n{i}" for i in range(1, 60, 3)]
    text = compact_hosts(scattered, max_chars=30)
    assert len(text) <= 30 and text.endswith("(20 hosts)") and text.startswith("n[1,4,7,")
    named = [f"h{c}x" for c in "abcdefghijklmnop"]
    text = compact_hosts(named, max_chars=30)
    assert text == "hax, hbx, hcx, … (16 hosts)"
    assert compact_hosts(["a" * 50, "b"], max_chars=20) == "2 hosts"
    assert compact_hosts(["web01", "web02"], max_chars=30) == "web[01,02]"  # fits: not cut
