"""Inventory loading: the public API (Host, Inventory, load_inventory), formats, precedence and merging."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetctl.config.inventory import load_inventory
from fleetctl.config.inventory_ranges import HostRangeError, expand_host_entry
from fleetctl.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("entry, names, port", [
    ("web[01:03].corp", ["web01.corp", "web02.corp", "web03.corp"], None),
    ("node[a:c]", ["nodea", "nodeb", "nodec"], None),
    ("n[0:10:5]", ["n0", "n5", "n10"], None),
    ("db[1:2]-[a:b]", ["db1-a", "db1-b", "db2-a", "db2-b"], None),
    ("web1:2222", ["web1"], 2222),
    ("web[1:2]:5986", ["web1", "web2"], 5986),
    ("10.0.0.[1:2]", ["10.0.0.1", "10.0.0.2"], None),
    ("[::1]:22", ["::1"], 22),
    ("fe80::1", ["fe80::1"], None),
    ("w[:2]", ["w0", "w1", "w2"], None),
])
def test_expand_host_entry(entry: str, names: list[str], port: int | None) -> None:
    assert expand_host_entry(entry) == (names, port)


@pytest.mark.parametrize("entry", ["w[1:x]", "w[3:1]", "w[01:5]", "w[1]", "w[1:2:0]", "w[1:2", "w[c:a]"])
def test_bad_ranges(entry: str) -> None:
    with pytest.raises(HostRangeError):
        expand_host_entry(entry)


def test_host_groups_and_merged_vars(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.yml", """\
all:
  vars: {v: all, only_all: 1}
  children:
    windows:
      vars: {v: windows}
      children:
        web:
          vars: {v: web}
          hosts:
            web1: {own: 1}
            web2:
    canary:
      vars: {v: canary}
      hosts:
        web2:
""")
    write(tmp_path / "group_vars" / "windows.yml", "v: windows_file\nfile_only: yes\n")
    inventory = load_inventory([inv])
    assert list(inventory.hosts) == ["web1", "web2"]
    web1, web2 = inventory.host("web1"), inventory.host("web2")
    # group_vars files outrank every inline group var, even a deeper group's
    assert web1.vars == {"v": "windows_file", "only_all": 1, "own": 1, "file_only": True}
    assert web1.groups == ("all", "windows", "web")
    assert web2.groups == ("all", "canary", "windows", "web")  # depth 1 before depth 2; names within a depth
    assert inventory.groups["windows"] == ("web1", "web2")
    assert inventory.groups["ungrouped"] == ()
    assert web1.address == "web1"


def test_to_json_is_exactly_hostvars_and_groups(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.ini", "b ansible_host=10.0.0.2\n[g]\nz\na\n")
    doc = load_inventory([inv]).to_json()
    assert doc == {
        "hostvars": {"b": {"ansible_host": "10.0.0.2"}, "z": {}, "a": {}},
        "groups": {"all": ["a", "b", "z"], "ungrouped": ["b"], "g": ["a", "z"]},
    }


def test_directory_source_reads_inventories_and_skips_ignored_files(tmp_path: Path) -> None:
    root = tmp_path / "inventory"
    write(root / "10-web.yml", "web:\n  hosts:\n    web1:\n")
    write(root / "20-db", "[db]\ndb1\n")
    write(root / "notes.md", "[bogus]\nnot-a-host\n")
    write(root / "hosts.bak", "[bogus]\nnot-a-host\n")
    write(root / "group_vars" / "all.yml", "from_dir: 1\n")
    inventory = load_inventory([root])
    assert list(inventory.hosts) == ["web1", "db1"]
    assert inventory.host("db1").vars == {"from_dir": 1}
    assert inventory.sources == (root,)


def test_several_sources_merge_in_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "hosts.yml", "web:\n  hosts:\n    web1: {x: a, only_a: 1}\n")
    b = write(tmp_path / "b" / "hosts.ini", "[web]\nweb1 x=b\nweb2\n")
    write(tmp_path / "a" / "host_vars" / "web1.yml", "hv: a\n")
    write(tmp_path / "b" / "host_vars" / "web1.yml", "hv: b\n")
    inventory = load_inventory([a, b])
    assert inventory.host("web1").vars == {"x": "b", "only_a": 1, "hv": "b"}
    assert list(inventory.hosts) == ["web1", "web2"]


def test_ports_from_host_entries_count_where_the_host_first_appears(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.ini", "[a]\nmulti:2201\n[b]\nmulti:2300\n")
    assert load_inventory([inv]).host("multi").vars == {"ansible_port": 2201}


def test_unknown_host_is_a_config_error(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.ini", "[a]\nx\n")
    with pytest.raises(ConfigError, match="'nope' is not in the inventory"):
        load_inventory([inv]).host("nope")


def test_no_paths_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="-i"):
        load_inventory([])


def test_ten_thousand_hosts_from_ranges(tmp_path: Path) -> None:
    inv = write(tmp_path / "hosts.ini", "[web]\nweb[00001:10000] role=web\n[web:vars]\nport=5986\n")
    inventory = load_inventory([inv])
    assert len(inventory.hosts) == 10_000
    assert inventory.host("web10000").vars == {"port": 5986, "role": "web"}
    assert [h.name for h in inventory.select("web[9998:]")] == ["web09999", "web10000"]
