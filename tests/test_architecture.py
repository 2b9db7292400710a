"""The package's layering (docs/architecture.md): no import circle, and each part imports only what it may.

The imports are read from the source (every ``import`` and ``from … import``, also those inside
functions), so a lazy import that dodges a circle at run time still counts as an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vllm_slo_guard

PACKAGE = Path(vllm_slo_guard.__file__).resolve().parent
ROOT = "vllm_slo_guard"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (a name imported from a package counts as its module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


GRAPH = _graph()


def _short(name: str) -> str:
    return name.removeprefix(f"{ROOT}.")


def test_the_walk_sees_the_package() -> None:
    assert f"{ROOT}.vllm_rules.startup" in GRAPH and f"{ROOT}.vllm_rules.config" in GRAPH[f"{ROOT}.vllm_rules.startup"]


def test_no_import_circle_anywhere() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                circles.append([_short(m) for m in stack[stack.index(dep) :]] + [_short(dep)])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not circles, " | ".join(" → ".join(c) for c in circles)


def test_only_the_simulated_engine_imports_the_simulator() -> None:
    allowed = (f"{ROOT}.sim", f"{ROOT}.engine.sim")
    offenders = {
        _short(m): sorted(_short(d) for d in deps if d == f"{ROOT}.sim" or d.startswith(f"{ROOT}.sim."))
        for m, deps in GRAPH.items()
        if not (m == allowed[1] or m == allowed[0] or m.startswith(f"{allowed[0]}."))
    }
    assert not {m: d for m, d in offenders.items() if d}


def test_the_result_types_are_a_leaf_of_the_search() -> None:
    """Export, progress, report and serve read results without importing the loop (or Optuna)."""
    result = f"{ROOT}.search.result"
    assert not {d for d in GRAPH[result] if d.startswith(f"{ROOT}.search.") and d != f"{ROOT}.search.objective"}
    for reader in (f"{ROOT}.export", f"{ROOT}.progress", f"{ROOT}.cache"):
        assert f"{ROOT}.search.loop" not in GRAPH[reader] and f"{ROOT}.search.tuner" not in GRAPH[reader]


ALLOWED = {  # part → the parts it may import (docs/architecture.md, "The parts")
    "vllm_rules": {"vllm_rules", "errors", "units", "hf_cache"},
    "bench": {"bench", "errors", "units", "hf_cache"},
    "sim": {"sim", "vllm_rules", "bench", "errors", "units"},
    "engine": {"engine", "vllm_rules", "sim", "spec", "errors"},
}


def _part(module: str) -> str:
    return module.removeprefix(f"{ROOT}.").split(".")[0]


def test_each_lower_part_imports_only_what_it_may() -> None:
    offenders = {
        _short(m): sorted(_short(d) for d in deps if _part(d) not in ALLOWED[_part(m)])
        for m, deps in GRAPH.items()
        if _part(m) in ALLOWED
    }
    assert not {m: d for m, d in offenders.items() if d}


def test_nothing_but_the_command_line_imports_it() -> None:
    offenders = sorted(
        _short(m) for m, deps in GRAPH.items() if _part(m) != "cli" and any(_part(d) == "cli" for d in deps)
    )
    assert not offenders
