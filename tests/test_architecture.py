"""The layout rules of docs/architecture.md, checked on the source: no import cycle among hf_mha modules (in-function
imports included), the attention package on its own, one place that swaps attention, modules of a readable size."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_mha"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(name: str, path: Path) -> set[str]:
    """The hf_mha modules `name` imports anywhere in its source (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = "open", stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return stack[stack.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node], _ = "done", stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_in_function_and_relative_imports():
    assert "hf_mha.data" in GRAPH["hf_mha.tasks.text_classification"]  # `from ..data import require_columns`
    assert "hf_mha.attention.importance" in GRAPH["hf_mha.heads"]  # inside importance()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_hf_mha_modules():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_attention_stands_on_its_own():
    """`hf_mha.attention` needs only torch, transformers and the UserError type: `swap_attention(model)` on any model."""
    for name, imports in GRAPH.items():
        if name.startswith("hf_mha.attention"):
            outside = {m for m in imports if not m.startswith("hf_mha.attention")} - {"hf_mha.errors"}
            assert not outside, f"{name} imports {outside}"


def test_only_models_swaps_attention_outside_the_attention_package():
    callers = set()
    for name, path in MODULES.items():
        if name.startswith("hf_mha.attention"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            called = node.func if isinstance(node, ast.Call) else None
            called_name = getattr(called, "id", None) or getattr(called, "attr", None)
            if called_name in ("swap_attention", "restore_attention"):
                callers.add(name)
    assert callers == {"hf_mha.models"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_readable_in_one_sitting(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines; split it along a seam (docs/architecture.md)"


def test_every_package_is_installed():
    """pyproject lists packages by name (cli/ and recipes/ install under other names): a new subpackage must be
    listed too, or a wheel install lacks it while the editable install used for development still works."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
