"""The structure the code keeps: the layer order written in docs/architecture.md (read from there, so the
doc and the code cannot drift apart) for modules and for folders, no import cycle, no Ray in the pure
layers, short functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "l2ray"
MAX_FUNCTION_LINES = 60
PURE = ("l2ray.text", "l2ray.decode", "l2ray.grading", "l2ray.thinking", "l2ray.languages")
"""Pure logic: never imports Ray (docs/architecture.md)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top, inside functions and under TYPE_CHECKING alike."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: {d for d in imports_of(p) if d in MODULES and d != m} for m, p in MODULES.items()}


def documented_layers() -> list[list[str]]:
    """The module patterns of each row of the layer table in docs/architecture.md, lowest first."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"^\| \d ", line)]
    return [re.findall(r"`(l2ray[\w.]*)`", row.split("|")[2]) for row in rows]


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """The layer of the longest name in the table that is ``module`` or a package holding it."""
    best: tuple[int, int] | None = None
    for index, patterns in enumerate(layers):
        for pattern in patterns:
            below = "" if pattern == "l2ray" else r"(\..+)?"  # the root names itself, not all of l2ray
            longer = best is None or len(pattern) > best[0]
            if longer and re.fullmatch(re.escape(pattern) + below, module):
                best = (len(pattern), index)
    return None if best is None else best[1]


def folder_of(module: str) -> str:
    """The folder of a module (``l2ray.train.loop`` → ``l2ray.train``); a top-level module is its own."""
    return ".".join(module.split(".")[:2])


def test_the_documented_layers_cover_every_module():
    layers = documented_layers()
    assert len(layers) >= 5, "docs/architecture.md lost its layer table"
    unplaced = sorted(m for m in MODULES if layer_of(m, layers) is None)
    assert not unplaced, f"place these modules in the layer table of docs/architecture.md: {unplaced}"


def test_no_import_goes_against_the_layer_order():
    layers = documented_layers()
    upward = [
        f"{m} (layer {layer_of(m, layers)}) imports {d} (layer {layer_of(d, layers)})"
        for m, deps in GRAPH.items()
        for d in sorted(deps)
        if layer_of(d, layers) > layer_of(m, layers)
    ]
    assert not upward, "\n".join(upward)


def test_no_module_imports_from_a_folder_of_a_higher_layer():
    layers = documented_layers()
    upward = [
        f"{m} (folder {folder_of(m)}, layer {layer_of(folder_of(m), layers)}) imports {d} "
        f"(folder {folder_of(d)}, layer {layer_of(folder_of(d), layers)})"
        for m, deps in GRAPH.items()
        for d in sorted(deps)
        if layer_of(folder_of(d), layers) > layer_of(folder_of(m), layers)
    ]
    assert not upward, "\n".join(upward)


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules_or_packages():
    assert cycle_in(GRAPH) is None, f"module cycle: {' -> '.join(cycle_in(GRAPH))}"
    packages: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        packages.setdefault(folder_of(module), set()).update(
            folder_of(d) for d in deps if folder_of(d) != folder_of(module)
        )
    cycle = cycle_in(packages)
    assert cycle is None, f"package cycle: {' -> '.join(cycle)}"


def test_the_cycle_finder_finds_cycles():
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(PURE)))
def test_pure_logic_never_imports_ray(module):
    rays = sorted(d for d in imports_of(MODULES[module]) if d == "ray" or d.startswith("ray."))
    assert not rays, f"{module} imports {rays}"


def test_functions_stay_short():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, f"cut these into named steps (at most {MAX_FUNCTION_LINES} lines): {long}"


def test_every_package_declares_its_public_api():
    missing = [m for m, p in MODULES.items() if p.name == "__init__.py" and "__all__" not in p.read_text()]
    assert not missing, f"packages without __all__: {missing}"
