"""Differential test: `fleetctl inventory list --json` agrees with `ansible-inventory --list` on the corpus.

Each directory under corpus/ holds inventories and a SOURCES file listing the `-i` arguments (relative to the
case directory). Both tools run from an empty working directory, because ansible-inventory also reads
group_vars/ from its working directory (the playbook directory), which fleetctl does not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p for p in CORPUS.iterdir() if (p / "SOURCES").is_file())
VENV_BIN = Path(sys.executable).parent
ANSIBLE_INVENTORY = shutil.which("ansible-inventory", path=str(VENV_BIN)) or shutil.which("ansible-inventory")


def sources_of(case: Path) -> list[str]:
    return [str(case / line.strip()) for line in (case / "SOURCES").read_text().splitlines() if line.strip()]


def _unwrap(value: Any) -> Any:
    # ansible-inventory prints `!unsafe` values as {"__ansible_unsafe": text}; fleetctl prints the text.
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


def ansible_view(doc: dict[str, Any]) -> dict[str, Any]:
    """ansible-inventory's tree -> fleetctl's {"hostvars", "groups"} (hosts of a group include descendants)."""
    meta = doc.get("_meta", {})
    tree = {name: body for name, body in doc.items() if name != "_meta"}
    names = set(tree)
    for body in tree.values():
        names.update(body.get("children", []))  # Ansible omits empty groups but still lists them as children

    def members(group: str, seen: frozenset[str] = frozenset()) -> set[str]:
        body = tree.get(group, {})
        found = set(body.get("hosts", []))
        for child in body.get("children", []):
            if child not in seen:
                found |= members(child, seen | {group})
        return found

    groups = {name: sorted(members(name)) for name in names}
    groups["all"] = sorted(set().union(*(set(g) for g in groups.values())))
    hostvars = {host: _unwrap(meta.get("hostvars", {}).get(host, {})) for host in groups["all"]}
    return {"hostvars": hostvars, "groups": groups}


def run_ansible(sources: list[str], cwd: Path) -> dict[str, Any]:
    assert ANSIBLE_INVENTORY, "ansible-core (a test dependency) provides ansible-inventory"
    env = dict(os.environ, ANSIBLE_HOME=str(cwd / ".ansible"), ANSIBLE_LOCAL_TEMP=str(cwd / ".tmp"),
               ANSIBLE_INVENTORY_UNPARSED_FAILED="true", ANSIBLE_NOCOLOR="1", ANSIBLE_CONFIG=str(cwd / "none.cfg"))
    args = [ANSIBLE_INVENTORY, "--list"]
    for source in sources:
        args += ["-i", source]
    out = subprocess.run(args, cwd=cwd, env=env, check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return ansible_view(json.loads(out.stdout))


def run_fleetctl(sources: list[str], cwd: Path) -> dict[str, Any]:
    args = [str(VENV_BIN / "fleetctl"), "inventory", "list", "--json"]
    for source in sources:
        args += ["-i", source]
    out = subprocess.run(args, cwd=cwd, check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fleetctl_agrees_with_ansible(case: Path, tmp_path: Path) -> None:
    sources = sources_of(case)
    expected = run_ansible(sources, tmp_path)
    actual = run_fleetctl(sources, tmp_path)
    assert sorted(actual["groups"]) == sorted(expected["groups"]), "same group names"
    for group, hosts in expected["groups"].items():
        assert actual["groups"][group] == hosts, f"members of group {group}"
    assert sorted(actual["hostvars"]) == sorted(expected["hostvars"]), "same hosts"
    for host, variables in expected["hostvars"].items():
        assert actual["hostvars"][host] == variables, f"variables of host {host}"
        # JSON compares 1 == 1.0 == True; the types must match too, as Ansible resolves them.
        for key, value in variables.items():
            assert type(actual["hostvars"][host][key]) is type(value), f"type of {host}.{key}"
