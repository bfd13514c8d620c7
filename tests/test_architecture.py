"""The package's shape: no modules importing each other in a circle, and no overloaded files.

The import graph is read from the source (scripts/import_graph.py), imports inside functions included: a circle
hidden in a function is still a circle a newcomer has to untangle.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 800


@pytest.fixture(scope="module")
def graph_module():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_circle_finder_finds_a_circle(graph_module, tmp_path):
    pkg = tmp_path / "metahmr_cli"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import x\n")  # a package re-exporting: not a circle
    (pkg / "sub" / "a.py").write_text("from metahmr_cli.sub import b\nx = 1\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .c import y\n")
    (pkg / "sub" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
                                      "def g():\n    from metahmr_cli.sub.a import x\n")
    (pkg / "d.py").write_text("import metahmr_cli.sub.c\n")
    graph = graph_module.import_graph(tmp_path, nested=True)
    assert graph["metahmr_cli.sub.a"] == {"metahmr_cli.sub.b"}
    assert graph["metahmr_cli.sub.c"] == {"metahmr_cli.sub.a"}  # the TYPE_CHECKING import does not count
    assert graph["metahmr_cli.d"] == {"metahmr_cli.sub.c", "metahmr_cli.sub"}  # importing sub.c runs sub/__init__
    assert graph_module.circles(graph) == [["metahmr_cli.sub.a", "metahmr_cli.sub.b", "metahmr_cli.sub.c"]]
    assert graph_module.circles(graph_module.import_graph(tmp_path, nested=False)) == []


def test_no_import_circles(graph_module):
    assert graph_module.circles(graph_module.import_graph(ROOT, nested=True)) == []


def test_no_file_above_the_size_limit():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
             for p in (ROOT / "metahmr_cli").rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
