"""The package's shape: no import cycles (module level and inside functions), imports inside functions only for
optional extras, modules of a readable size. Built from the source with ast, so it needs nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
# Imports that may stay inside functions: optional extras (ray, mlflow) and matplotlib, which costs a second at import
# and is needed only when a figure is drawn.
LAZY_ALLOWED = ("ray", "matplotlib", "mlflow")
# (module, import) pairs that stay inside a function on purpose, each with its reason
LAZY_EXCEPTIONS = {
    # the public API's check_model: harness/__init__.py runs on every `import harness.<module>`, and harness.check
    # loads torch and the whole pipeline (`harness --version` and `harness doctor` must run without torch)
    ("harness", "harness.check"),
}
MAX_LINES = 520  # "under ~500 lines" as formatted by ruff (line length 120)


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package is its __init__.py)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The package modules an import statement loads (the deepest known module of each imported name)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != module:
            out.append(name)
    return out


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """(module -> modules of the package it imports anywhere in its file, [(module, line, imported name)] of the
    imports that sit inside a function or class rather than at module level)."""
    known = module_names(package)
    edges: dict[str, set[str]] = {m: set() for m in known}
    inner: list[tuple[str, int, str]] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            edges[module].update(_targets(node, module, path.name == "__init__.py", known))
            if id(node) not in top_level and not _guarded_top_level(tree, node):
                name = node.names[0].name if isinstance(node, ast.Import) else (node.module or "")
                inner.append((module, node.lineno, name))
    return edges, inner


def _guarded_top_level(tree: ast.Module, node: ast.AST) -> bool:
    """An import under a module-level `if TYPE_CHECKING:` or `try:` is still a module-level import."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.If, ast.Try)) and any(n is node for n in ast.walk(stmt)):
            return True
    return False


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted; self-imports are ignored."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_known_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": {"g"}, "g": {"f"}}
    assert sorted(cycles(edges)) == [["a", "b", "c"], ["f", "g"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_reader_sees_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "harness"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from harness import top\n    import ray\n")
    (pkg / "top.py").write_text("from harness.sub.leaf import f\n")
    edges, inner = import_graph(pkg)
    assert edges["harness.sub"] == {"harness.sub.leaf"}
    assert edges["harness.sub.leaf"] == {"harness.top"}
    assert edges["harness.top"] == {"harness.sub.leaf"}
    assert cycles(edges) == [["harness.sub.leaf", "harness.top"]]
    assert [(m, name) for m, _, name in inner] == [("harness.sub.leaf", "harness"), ("harness.sub.leaf", "ray")]


def test_no_import_cycles():
    edges, _ = import_graph()
    found = cycles(edges)
    assert not found, "import cycles in harness/ (module or function level):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_imports_inside_functions_only_for_optional_extras():
    _, inner = import_graph()
    bad = [
        f"{m}:{line} imports {name}"
        for m, line, name in inner
        if name.split(".")[0] not in LAZY_ALLOWED and (m, name) not in LAZY_EXCEPTIONS
    ]
    assert not bad, "imports inside functions (move them to the module's top):\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(module_names()))
def test_module_is_of_a_readable_size(module):
    lines = module_names()[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it by job (under ~500)"
