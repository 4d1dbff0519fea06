"""The package's layers, read from its imports: no cycles, no upward imports, no private names.

Layers, lowest first (a module may import its own layer and those below it):

====  ==========================================  =============================================
0     ``scclip_cli.config``, ``scclip_cli.errors``  constants and the exception family
1     ``scclip_cli.files``                          formats read and written
2     ``scclip_cli.maps``                           geometry and arithmetic on score / label maps
3     ``scclip_cli.model``                          CLIP, the calibrated block, text embeddings
4     ``scclip_cli.predict``                        one image to labels (the Segmenter)
5     ``scclip_cli.runs``                           folders of images, engines, segment / evaluate
6     ``scclip_cli.cli``                            the Typer commands
7     ``scclip_cli`` (``__init__``, ``__main__``)   the public facade
====  ==========================================  =============================================

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy import
is still a dependency, and a cycle hidden behind one is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "scclip_cli"
LAYERS = {
    "scclip_cli.config": 0,
    "scclip_cli.errors": 0,
    "scclip_cli.files": 1,
    "scclip_cli.maps": 2,
    "scclip_cli.model": 3,
    "scclip_cli.predict": 4,
    "scclip_cli.runs": 5,
    "scclip_cli.cli": 6,
    "scclip_cli.__main__": 7,
    "scclip_cli": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best = max(
        (prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")),
        key=len,
    )
    return LAYERS[best]


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """``(module, line)`` for every import of a ``scclip_cli`` module in ``path``."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("scclip_cli")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("scclip_cli"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((sub if sub in MODULES else node.module, node.lineno))
    return found


def test_every_module_has_a_layer() -> None:
    assert all(layer_of(name) >= 0 for name in MODULES)
    top_level = {name for name in MODULES if name.count(".") == 1 and "." in name}
    assert top_level - set(LAYERS) == set(), "a top-level module outside the layer folders"


def test_imports_point_down() -> None:
    upward = []
    for name, path in MODULES.items():
        for target, line in imported_modules(path):
            if layer_of(target) > layer_of(name):
                upward.append(f"{path.relative_to(ROOT)}:{line}: {name} imports {target}")
    assert upward == []


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {t for t, _ in imported_modules(path) if t in MODULES and t != name}
        # a package's own __init__ is not a dependency of its modules' import order
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def test_no_import_cycles() -> None:
    assert find_cycles(package_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def private_uses(path: Path) -> list[str]:
    """Imports of another module's ``_name`` and ``module._name`` uses of imported modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    uses = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("scclip_cli")
        ):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    uses.append(f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name}")
                if f"{node.module}.{alias.name}" in MODULES:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.startswith("scclip_cli")}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and ast.unparse(node.value) in modules
        ):
            uses.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return uses


@pytest.mark.parametrize("folder", ["src", "tests", "benchmarks"])
def test_no_module_uses_another_modules_private_names(folder: str) -> None:
    found = [use for path in sorted((ROOT / folder).rglob("*.py")) for use in private_uses(path)]
    assert found == []
