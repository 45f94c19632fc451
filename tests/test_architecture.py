"""The layering of docs/ARCHITECTURE.md, checked on the source: imports go downwards only, and never in a circle.

Every import counts, those inside functions too: a lazy import still ties the modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted([*ROOT.glob("text4d/**/*.py"), *ROOT.glob("viewer/**/*.py"), ROOT / "cli.py"]):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


def import_edges() -> set[tuple[str, str]]:
    """(importer, imported) between this project's modules."""
    mods = modules()
    edges = set()
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add((name, target))
    return edges


def layer(module: str) -> str:
    if module == "cli":
        return "cli"
    if module == "text4d.app" or module.startswith("text4d.app."):
        return "app"
    if module == "viewer" or module.startswith("viewer."):
        return "viewer"
    return "core"


ALLOWED = {"cli": {"cli", "app", "viewer", "core"}, "app": {"app", "viewer", "core"}, "viewer": {"viewer", "core"}, "core": {"core"}}


def test_imports_go_downwards_only() -> None:
    upward = sorted((a, b) for a, b in import_edges() if layer(b) not in ALLOWED[layer(a)])
    assert upward == [], "imports against the layering (see docs/ARCHITECTURE.md):\n" + "\n".join(f"  {a} -> {b}" for a, b in upward)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for a, b in import_edges():
        graph.setdefault(a, set()).add(b)
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in modules():
        if v not in index:
            visit(v)
    assert cycles == [], f"modules that import each other (directly or round a loop): {cycles}"


def test_the_checks_see_the_layers() -> None:
    """Guard the guard: the edge list holds real imports of each layer (a parsing slip would make both tests pass vacuously)."""
    edges = import_edges()
    assert ("cli", "text4d.app.kinds") in edges and ("text4d.app.sample", "text4d.stages.dynamic") in edges
    assert ("viewer.viser_app", "text4d.session") in edges and ("text4d.session", "text4d.recording") in edges


def test_no_test_imports_another_test_file() -> None:
    """Shared test code lives in tests/support/: importing a test file runs its module-level skips and fixtures."""
    offenders = []
    for path in sorted(ROOT.glob("tests/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)} imports {n}" for n in names if n.startswith("tests.test_") or n.startswith("test_")]
    assert offenders == [], "\n".join(offenders)


def test_front_ends_reach_the_run_only_through_the_session() -> None:
    """Viewers use the Session's typed surface; ``session.stage`` (the training internals) is the core's alone."""
    reaches = []
    for path in sorted(ROOT.glob("viewer/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "stage":
                owner = node.value
                name = owner.attr if isinstance(owner, ast.Attribute) else owner.id if isinstance(owner, ast.Name) else ""
                if name == "session":
                    reaches.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert reaches == [], "front ends reaching into session.stage:\n" + "\n".join(reaches)
