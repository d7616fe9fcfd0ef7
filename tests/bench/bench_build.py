"""Benchmark: first build of the example (cold Go build cache) vs a forced rebuild (warm cache) vs a rebuild of
unchanged inputs (artifact reused). Run: .venv/bin/python tests/bench/bench_build.py [--json]"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fleetctl.artifacts.build import build_go
from fleetctl.config.playbook import GoBuild


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleetctl-bench-") as tmp:
        # A private, empty Go build cache makes the first build a true cold build.
        os.environ["GOCACHE"] = str(Path(tmp) / "gocache")
        spec = GoBuild(dir=str(REPO / "playbooks" / "hello" / "src"))
        dist = Path(tmp) / "dist"
        timings: dict[str, float] = {}
        for label, force in (("first build (cold Go cache)", False), ("forced rebuild (warm Go cache)", True),
                             ("rebuild, unchanged inputs (reused)", False)):
            started = time.perf_counter()
            m = build_go(spec, name="hello", version="0.0.0-bench", base_dir=REPO, dist_dir=dist, force=force)
            timings[label] = time.perf_counter() - started
        result = {"artifact_bytes": m.size, "go": m.go_version, "cpus": os.cpu_count(),
                  "seconds": {k: round(v, 3) for k, v in timings.items()},
                  "reuse_fraction_of_first": round(timings["rebuild, unchanged inputs (reused)"]
                                                   / timings["first build (cold Go cache)"], 4)}
    if "--json" in sys.argv:
        print(json.dumps(result, indent=2))
        return
    for label, seconds in result["seconds"].items():  # type: ignore[union-attr]
        print(f"{label:40s} {seconds:8.3f} s")
    print(f"reuse takes {result['reuse_fraction_of_first']:.2%} of the first build; artifact {m.size:,} bytes")


if __name__ == "__main__":
    main()
