"""The import graph shows the architecture: no import points up a layer, and no module imports itself round.

The layers, bottom up, are written down in docs/architecture.md; ``LAYERS`` below is the same table. A module
belongs to the room of the longest prefix that names it. A module may import its own layer and every lower
one; the consumers' rooms (suite, fuzzers, simulator, benchmark) do not import each other. Every import is
counted, also those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[2]
#: the four top-level folders and their import names (one root: gwlbsim)
TOPS = {"gwlbsim": "gwlbsim", "reference": "gwlbsim.reference", "conformance": "gwlbsim.conformance",
        "fuzz": "gwlbsim.fuzz"}
#: bottom up: (layer, its rooms); a room is a module prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("wire", ("gwlbsim", "gwlbsim.wire", "gwlbsim.progress", "gwlbsim.cliargs")),
    ("traffic", ("gwlbsim.traffic",)),
    ("linux I/O", ("gwlbsim.linuxio",)),
    ("fake GWLB", ("gwlbsim.config", "gwlbsim.model", "gwlbsim.live", "gwlbsim.appliance", "gwlbsim.probe")),
    ("reference appliance", ("gwlbsim.reference",)),
    ("consumers", ("gwlbsim.conformance", "gwlbsim.fuzz", "gwlbsim.simulate", "gwlbsim.bench")),
    ("entry points", ("gwlbsim.cli", "gwlbsim.reference.cli", "gwlbsim.conformance.cli", "gwlbsim.fuzz.cli",
                      "gwlbsim.bench.cli", "gwlbsim.bench.__main__")),
]
#: consumer rooms that may import one another: the benchmark measures the simulator
SAME_LAYER_OK = {("gwlbsim.bench", "gwlbsim.simulate")}


def room_of(module: str) -> tuple[int, str]:
    """The layer index and room of a module: the longest room prefix that names it."""
    best: tuple[int, str] | None = None
    for i, (_layer, rooms) in enumerate(LAYERS):
        for r in rooms:
            if (module == r or module.startswith(r + ".")) and (best is None or len(r) > len(best[1])):
                best = (i, r)
    assert best is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return best


def _modules() -> dict[str, Path]:
    out = {}
    for top, name in TOPS.items():
        for p in (ROOT / top).rglob("*.py"):
            parts = [name, *p.relative_to(ROOT / top).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = p
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(t for a in node.names if (t := resolve(a.name)))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    t = resolve(f"{node.module}.{a.name}") or resolve(node.module)
                    if t:
                        targets.add(t)
        targets.discard(name)
        graph[name] = targets
    return graph


def _upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, targets in graph.items():
        lm, rm = room_of(m)
        for t in targets:
            lt, rt = room_of(t)
            sibling = lt == lm and rt != rm and LAYERS[lm][0] == "consumers" and (rm, rt) not in SAME_LAYER_OK
            if lt > lm or sibling:
                bad.append(f"{m} ({LAYERS[lm][0]}: {rm}) imports {t} ({LAYERS[lt][0]}: {rt})")
    return sorted(bad)


def test_every_module_is_in_a_layer() -> None:
    for m in _modules():
        room_of(m)


def test_no_import_points_up_a_layer() -> None:
    bad = _upward(_graph())
    assert not bad, "imports pointing up a layer or across to a sibling room:\n" + "\n".join(bad)


def test_the_checker_sees_an_upward_import() -> None:
    """The checker's own control: an import from the wire layer up to the reference appliance is reported."""
    assert _upward({"gwlbsim.wire.geneve": {"gwlbsim.reference.core"}, "gwlbsim.reference.core": set()})
    assert _upward({"gwlbsim.conformance.environment": {"gwlbsim.fuzz.netfuzz"}, "gwlbsim.fuzz.netfuzz": set()})
    assert not _upward({"gwlbsim.reference.core": {"gwlbsim.wire.geneve"}, "gwlbsim.wire.geneve": set()})


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"modules importing each other round: {cycles}"


def test_the_graph_sees_imports_inside_functions() -> None:
    """The checker's own control: a known import made inside a function is in the graph."""
    assert "gwlbsim.conformance.environment" in _graph()["gwlbsim.conformance.plugin"]
