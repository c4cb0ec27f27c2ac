"""The shape of the package: no import cycles, and a contract layer that stays light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "raycl"
HEAVY = ("torch", "ray", "transformers", "lm_eval", "mlflow", "optuna", "peft", "galore_torch", "datasets")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the raycl modules it imports, anywhere in its source (function-level imports included).

    Importing `raycl.a.b` from outside package `raycl.a` also runs `raycl/a/__init__.py`, so that
    counts as an import of `raycl.a` too.
    """
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raycl"):
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t if t in modules else node.module for t in targets]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("raycl")]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                parents = {".".join(parts[:i]) for i in range(2, len(parts))}
                graph[name] |= {target} | {p for p in parents if not package.startswith(p)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path of modules, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_raycls_modules() -> None:
    graph = import_graph()
    assert "raycl.config.space" in graph["raycl.sweep.service"]  # the graph sees real edges
    assert find_cycle(graph) is None


def test_the_contract_layer_imports_only_raycl_config() -> None:
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("raycl.config"):
            assert {t for t in targets if not t.startswith("raycl.config")} == set(), name


def test_importing_the_contract_layer_loads_no_heavy_library() -> None:
    code = (
        "import sys, json; import raycl.config, raycl.config.space, raycl.config.records, raycl.config.result; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert loaded == []


def test_test_modules_have_unique_basenames() -> None:
    """The test folders are not packages: pytest refuses to collect two test modules of the same name."""
    names = [path.name for path in (PACKAGE.parent / "tests").rglob("test_*.py")]
    assert len(names) > 20 and sorted(name for name in set(names) if names.count(name) > 1) == []
