"""Benchmark (not a test): `fleetctl inventory list --json` vs `ansible-inventory --list` on 10,000 hosts.

Generates an inventory of ranges (YAML and INI) with group_vars/ and host_vars/ in a temporary directory, runs
both tools on the same files in the same run (best of N wall-clock), checks they agree, prints the ratio.

    .venv/bin/python tests/bench/bench_inventory.py [--hosts 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "config"))
from test_inventory_differential import ansible_view

BIN = Path(sys.executable).parent


def generate(root: Path, hosts: int) -> list[str]:
    """Four datacenters x 2 roles of range-expanded hosts, group_vars per group, a few host_vars."""
    per_group = hosts // 8
    yaml_lines = ["all:", "  vars:", "    ansible_connection: winrm", "    ansible_port: 5986", "  children:"]
    ini_lines = []
    for dc in range(1, 5):
        yaml_lines += [f"    dc{dc}:", "      vars:", f"        datacenter: dc{dc}", "      hosts:",
                       f"        web-dc{dc}-[00001:{per_group:05d}].corp.example:", "          role: web"]
        ini_lines += [f"[app_dc{dc}]", f"app-dc{dc}-[00001:{per_group:05d}].corp.example role=app tier=2",
                      f"[app_dc{dc}:vars]", f"datacenter=dc{dc}", "", f"[dc{dc}_all:children]", f"app_dc{dc}",
                      f"dc{dc}", ""]
    (root / "10-web.yml").write_text("\n".join(yaml_lines) + "\n")
    (root / "20-app.ini").write_text("\n".join(ini_lines) + "\n")
    (root / "group_vars").mkdir()
    (root / "host_vars").mkdir()
    (root / "group_vars" / "all.yml").write_text("ntp: [ntp1.corp.example, ntp2.corp.example]\nowner: ops\n")
    for dc in range(1, 5):
        (root / "group_vars" / f"dc{dc}.yml").write_text(f"lb_pool: pool-{dc}\nweight: {dc}\n")
        (root / "group_vars" / f"app_dc{dc}").write_text(f"service_account: svc-app-{dc}\n")
    for i in range(1, 51):
        (root / "host_vars" / f"web-dc1-{i:05d}.corp.example.yml").write_text(f"maintenance_slot: {i % 7}\n")
    return [str(root)]


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root, cwd = Path(tmp) / "inventory", Path(tmp) / "cwd"
        root.mkdir()
        cwd.mkdir()
        sources = generate(root, opts.hosts)
        env = dict(os.environ, ANSIBLE_HOME=str(cwd / ".ansible"), ANSIBLE_LOCAL_TEMP=str(cwd / ".tmp"))
        ours = [str(BIN / "fleetctl"), "inventory", "list", "--json", *[a for s in sources for a in ("-i", s)]]
        theirs = [str(BIN / "ansible-inventory"), "--list", *[a for s in sources for a in ("-i", s)]]
        fleet_times, ansible_times = [], []
        fleet_out = ansible_out = ""
        for _ in range(opts.repeat):
            t, fleet_out = timed(ours, cwd, env)
            fleet_times.append(t)
            t, ansible_out = timed(theirs, cwd, env)
            ansible_times.append(t)
        fleet_doc, ansible_doc = json.loads(fleet_out), ansible_view(json.loads(ansible_out))
        agree = fleet_doc == ansible_doc
        count = len(fleet_doc["hostvars"])
    best_f, best_a = min(fleet_times), min(ansible_times)
    print(f"hosts: {count}  outputs agree: {agree}")
    print(f"fleetctl inventory list --json: best {best_f:.2f} s of {opts.repeat} ({', '.join(f'{t:.2f}' for t in fleet_times)})")
    print(f"ansible-inventory --list:       best {best_a:.2f} s of {opts.repeat} ({', '.join(f'{t:.2f}' for t in ansible_times)})")
    print(f"ratio: fleetctl is {best_a / best_f:.1f}x faster")
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
