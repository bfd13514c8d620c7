"""The package's import graph: circles between its modules and the files above the size limit.

    python scripts/import_graph.py            # exit 1 when modules import each other in a circle
    python scripts/import_graph.py --all      # also count imports made inside functions

Imports under ``if TYPE_CHECKING:`` are not imports at run time and do not count. A package's ``__init__`` that
re-exports its modules is an edge like any other. Used by tests/test_architecture.py.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "metahmr_cli"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, *, nested: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements at module level (and, with ``nested``, inside functions), outside TYPE_CHECKING."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            if nested:
                stack.extend(ast.iter_child_nodes(node))
        else:
            stack.extend(ast.iter_child_nodes(node))


def _resolve(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path = ROOT, *, nested: bool = False) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(p, root): p for p in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in _imports(tree, nested=nested):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(node, name, path.name == "__init__.py")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith(PACKAGE):
                    graph[name].add(target)
                    # importing a.b.c runs a/__init__ and a/b/__init__ first: those are imports too, except the
                    # packages the importer itself sits in (already being imported)
                    parent = target.rpartition(".")[0]
                    while parent and parent != PACKAGE:
                        if parent in modules and not _is_parent_package(parent, name):
                            graph[name].add(parent)
                        parent = parent.rpartition(".")[0]
    return graph


def _is_parent_package(a: str, b: str) -> bool:
    return b.startswith(a + ".")


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan). A submodule importing its own package's
    ``__init__`` (already being imported when the submodule runs) does not count; a package's ``__init__``
    importing its submodules does."""
    edges = {m: {t for t in ts if not _is_parent_package(t, m)} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(groups)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="count imports inside functions too")
    args = ap.parse_args(argv)
    found = circles(import_graph(nested=args.all))
    for group in found:
        print("circle: " + " <-> ".join(group))
    print(f"{len(found)} circle(s)" if found else "no import circles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
