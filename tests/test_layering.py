"""The package's dependencies point one way (docs/architecture in STYLE terms: cli → rollout → node → transport →
protocol; config and plan are used by all and use none) and no module imports form a circle.

Every `import` in `fleetctl/` counts, including those inside functions and under `TYPE_CHECKING`: a lazy import is
still an arrow a reader has to follow.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fleetctl"

# Lower rank = lower layer. A module may import only from packages of a strictly lower rank (or its own); the
# base layer (rank 0: errors, config, plan, pki) may use each other, the import-cycle test keeps that honest.
RANKS: dict[str, int] = {
    "errors": 0, "config": 0, "plan": 0, "pki": 0, "targets": 1, "__init__": 0,
    "protocol": 2,
    "transport": 3,
    "artifacts": 4,
    "node": 5, "traffic": 5,
    "rollout": 6,
    "state": 7, "notify": 7, "status": 7,  # each subscribes to or reads the engine's results; none needs another
    "ui": 8,
    "cli": 9, "__main__": 10,
}
# The lab is a simulated node: it speaks the protocol and knows nothing of the controller.
LAB_MAY_IMPORT = {"errors", "config", "pki", "protocol", "__init__"}
# One way to reach a host: everything above `node/` goes through NodeClient, never to a transport directly.
TRANSPORT_USERS = {"node", "artifacts", "traffic"}  # traffic: the balancers' Linux hosts, over SSH
# Arrows still to be removed (each names the work that removes it); the test fails when one is gone, so the list
# only shrinks.
KNOWN_ARROWS: set[str] = set()  # an upward arrow is a bug; none is known


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the fleetctl modules it imports (anywhere in the file)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    stem = package[: len(package) - (node.level - 1)]
                    base = ".".join(stem + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    for name in modules:
        graph.setdefault(name, set())
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        source = _layer(module)
        for target in targets:
            dest = _layer(target)
            if source == dest:
                continue
            if source == "lab" or dest == "lab":
                if source == "lab" and dest not in LAB_MAY_IMPORT:
                    bad.append(f"{module} -> {target} (the lab imports only {sorted(LAB_MAY_IMPORT)})")
                if dest == "lab" and source != "cli":
                    bad.append(f"{module} -> {target} (only the CLI starts the lab)")
                continue
            assert source in RANKS and dest in RANKS, f"give the new package a rank: {source} / {dest}"
            if dest == "transport" and source not in TRANSPORT_USERS:
                bad.append(f"{module} -> {target} (only {sorted(TRANSPORT_USERS)} use transports)")
                continue
            if RANKS[dest] > RANKS[source] or (RANKS[dest] == RANKS[source] and RANKS[source] > 0):
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_dependencies_point_one_way() -> None:
    arrows = upward_arrows(import_graph())
    assert [a for a in arrows if a.split(" (")[0] not in KNOWN_ARROWS] == []
    assert {a.split(" (")[0] for a in arrows} == KNOWN_ARROWS, "an arrow is gone: remove it from KNOWN_ARROWS"


def test_the_checks_catch_a_cycle_and_an_upward_arrow() -> None:
    graph = {"fleetctl.node.client": {"fleetctl.rollout.engine"}, "fleetctl.rollout.engine": {"fleetctl.node.client"}}
    assert cycles(graph) == [["fleetctl.node.client", "fleetctl.rollout.engine"]]
    assert upward_arrows(graph) == ["fleetctl.node.client -> fleetctl.rollout.engine"]
    assert upward_arrows({"fleetctl.lab.node": {"fleetctl.transport.winrm"}})
