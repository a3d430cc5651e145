"""The import graph of the package and of the benchmarks is acyclic, and every module imports.

An edge is any import a module makes: at the top, or inside a function (it runs when that
code does; a cycle hidden in a function is still a cycle), but not under
``if TYPE_CHECKING:`` (type checkers only). ``from package import name`` is an edge to the
module ``package.name`` where that is a module, else to ``package``.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules(folder: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file, for every module of ``package`` (the folder ``folder``)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        parts = [package, *path.relative_to(folder).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` (file ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for stmt in child.orelse:
                    visit_one(stmt)
            else:
                visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    out.add(target)
                elif base in known:
                    out.add(base)
        visit(node)

    visit(ast.parse(path.read_text(), filename=str(path)))
    out.discard(name)
    return out


def import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    found = modules(folder, package)
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (``[a, b, ..., a]``), or ``None``."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


@pytest.mark.parametrize(("folder", "package"), [(ROOT / "src" / "emergence", "emergence"),
                                                 (ROOT / "bench", "bench")])
def test_no_import_cycle(folder: Path, package: str) -> None:
    graph = import_graph(folder, package)
    assert len(graph) > 5, graph  # the walk found the package
    found = cycle(graph)
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_a_cycle_through_a_function_is_found_and_type_checking_is_not(tmp_path: Path) -> None:
    """The check can fail: ``a`` imports ``b`` inside a function, ``b`` imports ``a`` at the
    top; ``c`` names ``a`` for type checkers only."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.b import g\n    return g\n")
    (pkg / "b.py").write_text("from . import a\n\ndef g():\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from pkg.a import f\nelse:\n    import pkg.b\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.b"}}
    assert sorted(set(cycle(graph) or [])) == ["pkg.a", "pkg.b"]
    (pkg / "a.py").write_text("def f():\n    return 1\n")
    assert cycle(import_graph(pkg, "pkg")) is None


def test_every_module_of_the_package_imports() -> None:
    """In one fresh interpreter, in sorted order (``__main__`` runs the CLI: left out)."""
    names = sorted(n for n in modules(ROOT / "src" / "emergence", "emergence")
                   if not n.endswith("__main__"))
    code = f"import importlib\nfor m in {names!r}:\n    importlib.import_module(m)\nprint('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == ["ok"], proc.stderr[-3000:]
