"""obce_core's module graph, read from the source with ``ast`` (nothing is imported to build it).

Module-level imports point downward only: the graph has no cycle. The command line is the top
floor: only ``python -m obce_core`` imports it, so no subcommand can lean on it and be imported
back. Modules import names from where they are defined, not from the package ``obce_core``.
A package whose ``__init__`` imports its names on first use (``obce_core.lazy``) lists them per
module in a literal ``_EXPORTS`` dict: those modules count as the package's imports.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules(root: Path, package: str) -> dict[str, Path]:
    found = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.Module, *, module_level: bool):
    """Import statements that run: at module level (try blocks included), or anywhere; never TYPE_CHECKING."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.Try) or not module_level:
            todo.extend(ast.iter_child_nodes(node))


def _lazy_exports(tree: ast.Module) -> set[str]:
    """The modules of a module-level ``_EXPORTS = {"module": (names...), ...}`` (obce_core.lazy)."""
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
                and isinstance(node.value, ast.Dict)):
            return {key.value for key in node.value.keys if isinstance(key, ast.Constant)}
    return set()


def import_graph(root: Path, package: str, *, module_level: bool = True) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a.b import c`` counts a.b.c when c is a module)."""
    modules = _modules(root, package)
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name].update(_lazy_exports(tree) & set(modules))
        for node in _statements(tree, module_level=module_level):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
                continue
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in modules:
                    graph[name].add(target)
                elif base in modules:
                    graph[name].add(base)
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_checker_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\nfrom pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
                                      "try:\n    from ..c import thing\nexcept ImportError:\n    pass\n")
    (pkg / "c.py").write_text("def f():\n    from pkg.a import x\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None  # the TYPE_CHECKING and function imports do not run
    graph = import_graph(tmp_path, "pkg", module_level=False)
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_module_level_imports_of_obce_core_have_no_cycle():
    graph = import_graph(ROOT, "obce_core")
    assert len(graph) > 50 and "obce_core.layout" in graph["obce_core.forward"]  # the graph is really read
    assert find_cycle(graph) is None


GROUND = ("obce_core.layout", "obce_core.forward", "obce_core.validation", "obce_core.io", "obce_core.choices",
          "obce_core.lazy")


@pytest.mark.parametrize("floor", GROUND)
def test_the_ground_floor_imports_only_the_ground_floor(floor):
    ground = set(GROUND)
    graph = import_graph(ROOT, "obce_core", module_level=False)
    assert graph[floor] <= ground, graph[floor] - ground


def test_only_the_entry_point_imports_the_command_line():
    graph = import_graph(ROOT, "obce_core", module_level=False)  # function bodies too: that is where the circle hid
    importers = sorted(name for name, targets in graph.items() if "obce_core.cli" in targets)
    assert importers == ["obce_core.__main__"]


def test_names_come_from_their_defining_module_not_the_package():
    modules = _modules(ROOT, "obce_core")
    offenders = []
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue
        for node in _statements(ast.parse(path.read_text(encoding="utf-8")), module_level=True):
            if isinstance(node, ast.ImportFrom) and node.module == "obce_core" and node.level == 0:
                offenders += [f"{name}: {a.name}" for a in node.names if f"obce_core.{a.name}" not in modules]
    assert offenders == []
