"""Host patterns for --limit: names, groups, globs, ~regex, subscripts, a:b, a:&b, a:!b (Ansible semantics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.config.inventory import Inventory, load_inventory
from fleetctl.config.patterns import split_pattern
from fleetctl.errors import ConfigError

INI = """\
[web]
web[1:4].dc1
web[1:2].dc2
[db]
db1.dc1
db1.dc2
[dc1]
web[1:4].dc1
db1.dc1
[dc2]
web[1:2].dc2
db1.dc2
[canary]
web1.dc2
[prod:children]
web
db
"""


@pytest.fixture()
def inventory(tmp_path: Path) -> Inventory:
    path = tmp_path / "hosts.ini"
    path.write_text(INI)
    return load_inventory([path])


def names(inventory: Inventory, pattern: str | None) -> list[str]:
    return [h.name for h in inventory.select(pattern)]


@pytest.mark.parametrize("pattern, expected", [
    ("web:db", ["web", "db"]),
    ("web,db", ["web", "db"]),
    ("web:&dc1:!web2.dc1", ["web", "&dc1", "!web2.dc1"]),
    ("web[0:2]:db", ["web[0:2]", "db"]),
    ("web1.dc1:5986", ["web1.dc1:5986"]),
    ("~web[0-9]+", ["~web[0-9]+"]),
    (" web , db ", ["web", "db"]),
])
def test_split_pattern(pattern: str, expected: list[str]) -> None:
    assert split_pattern(pattern) == expected


@pytest.mark.parametrize("pattern, expected", [
    (None, ["web1.dc1", "web2.dc1", "web3.dc1", "web4.dc1", "web1.dc2", "web2.dc2", "db1.dc1", "db1.dc2"]),
    ("all", ["web1.dc1", "web2.dc1", "web3.dc1", "web4.dc1", "web1.dc2", "web2.dc2", "db1.dc1", "db1.dc2"]),
    ("web2.dc1", ["web2.dc1"]),
    ("db", ["db1.dc1", "db1.dc2"]),
    ("prod:!web", ["db1.dc1", "db1.dc2"]),
    ("web:&dc2", ["web1.dc2", "web2.dc2"]),
    ("web:&dc1:!web2.dc1", ["web1.dc1", "web3.dc1", "web4.dc1"]),
    ("!web:&dc1", ["db1.dc1"]),  # exclusions and intersections apply after unions, in any written order
    ("db1.dc2:canary", ["web1.dc2", "db1.dc2"]),  # inventory order, not pattern order
    ("*.dc2", ["web1.dc2", "web2.dc2", "db1.dc2"]),
    ("web?.dc1", ["web1.dc1", "web2.dc1", "web3.dc1", "web4.dc1"]),
    ("d*", ["web1.dc1", "web2.dc1", "web3.dc1", "web4.dc1", "web1.dc2", "web2.dc2", "db1.dc1", "db1.dc2"]),
    ("~web[13]\\.dc1", ["web1.dc1", "web3.dc1"]),
    ("~^db", ["db1.dc1", "db1.dc2"]),
    ("web[0]", ["web1.dc1"]),
    ("web[1:2]", ["web2.dc1", "web3.dc1"]),  # Ansible subscripts include the end
    ("web[-1]", ["web2.dc2"]),
    ("web[4:]", ["web1.dc2", "web2.dc2"]),
    ("web,db1.dc1", ["web1.dc1", "web2.dc1", "web3.dc1", "web4.dc1", "web1.dc2", "web2.dc2", "db1.dc1"]),
])
def test_select(inventory: Inventory, pattern: str | None, expected: list[str]) -> None:
    assert names(inventory, pattern) == expected


def test_group_name_wins_over_host_name(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("same:\n  hosts:\n    a:\n    b:\nother:\n  hosts:\n    same:\n")
    assert names(load_inventory([path]), "same") == ["a", "b"]


@pytest.mark.parametrize("pattern", ["nope", "web:nope", "web:!nope", "dc1:&canary", "web[10]", "!web:!db",
                                     "web:&"])
def test_patterns_that_select_nothing_or_contain_a_dead_term_are_errors(inventory: Inventory,
                                                                        pattern: str) -> None:
    with pytest.raises(ConfigError) as err:
        inventory.select(pattern)
    assert err.value.key == "--limit"


def test_empty_inventory_selects_nothing(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text("[web]\n")
    with pytest.raises(ConfigError, match="no hosts"):
        load_inventory([path]).select(None)
