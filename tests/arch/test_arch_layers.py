"""The layout is the architecture: a lower layer never imports a higher one, and no module
imports itself back through others (docs/ARCHITECTURE.md, "Layers")."""
from __future__ import annotations

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "sampan"

# Rank of each top-level part of the package; an import may only go to an equal-or-lower
# rank, and between different parts of the same rank only where listed in PEERS.
RANK = {
    "": 0, "errors": 0, "timefmt": 0, "units": 0, "paths": 0, "fastjson": 0, "statedb": 0, "stdcopy": 0,
    "linux": 1, "oci": 2, "runtime": 3, "logs": 3,
    "image": 4, "network": 4, "build": 5, "supervisor": 4,
    "engine": 6, "api": 7, "cli": 7, "compose": 8, "dashboard": 8,
}
PEERS: set[tuple[str, str]] = set()


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["sampan", *parts])] = path
    return out


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Every sampan module `name` imports, at the top or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t in known:
                found.add(t)
    found.discard(name)
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_every_part_has_a_rank():
    assert {_part(m) for m in _modules()} <= set(RANK)


def test_lower_layers_never_import_higher_ones():
    bad = []
    for mod, deps in _graph().items():
        a = _part(mod)
        for dep in deps:
            b = _part(dep)
            if a == b or b == "":
                continue
            if RANK[b] > RANK[a] or (RANK[b] == RANK[a] and (a, b) not in PEERS):
                bad.append(f"{mod} imports {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_circles():
    graph = _graph()
    # a package's __init__ re-exporting its modules is not a circle of logic
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and (SRC / "/".join(d.split(".")[1:]) / "__init__.py").exists())}
             for m, deps in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif not state.get(dep):
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
