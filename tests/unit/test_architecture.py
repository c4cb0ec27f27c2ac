"""The shape of the package: layers whose imports point only down (the order `raycl/__init__.py` declares),
no import cycle among modules or among packages, an analysis package that stays pure, and a contract
layer that stays light.

Every check reads the source with `ast`, imports inside functions and `TYPE_CHECKING` blocks included.
Each check is a function of the graph, so a test below also plants a violation of each and sees it caught.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import raycl

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "raycl"
HEAVY = ("torch", "ray", "transformers", "lm_eval", "mlflow", "optuna", "peft", "galore_torch", "datasets")
# What the analysis package may not reach, directly or through any raycl module it imports.
IMPURE = ("mlflow", "optuna", "ray", "raycl.sweep")
NOTES = "PROBES" + ".md"  # spelled apart, so that this file does not cite the notes itself


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """`raycl.a.b` -> `a`; a top-level module `raycl.cli` is its own package `cli`; `raycl` itself is `raycl`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported_names(source: str, package: str) -> set[str]:
    """Every module an import statement of `source` (a module of `package`) names, anywhere in it.

    `from a import b` names `a` and `a.b` (b may be a submodule); relative imports are resolved.
    """
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def all_imports() -> dict[str, set[str]]:
    """Module -> every module name it imports (raycl's and other libraries')."""
    imports = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        imports[name] = imported_names(
            path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0]
        )
    return imports


def import_graph(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module -> the raycl modules it imports.

    Importing `raycl.a.b` from outside package `raycl.a` also runs `raycl/a/__init__.py`, so that counts
    as an import of `raycl.a` too; so does `from raycl.a import b` anywhere (b is reached through the
    package, even from inside it).
    """
    graph: dict[str, set[str]] = {}
    for module, names in imports.items():
        is_package = any(other.startswith(module + ".") for other in imports)
        package = module if is_package else module.rpartition(".")[0]
        targets = {name for name in names if name in imports and name != module}
        for target in list(targets):
            parts = target.split(".")
            targets |= {
                ancestor
                for ancestor in (".".join(parts[:i]) for i in range(2, len(parts)))
                if not (package == ancestor or package.startswith(ancestor + "."))
            }
        graph[module] = targets
    return graph


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(package_of(module), set()).update(package_of(t) for t in targets)
    return {package: targets - {package} for package, targets in packages.items()}


def declared_layers() -> list[str]:
    """The packages `raycl/__init__.py` lists, bottom layer first (its indented `name  description` lines)."""
    return re.findall(r"^    ([a-z_]+)  ", raycl.__doc__ or "", re.MULTILINE)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path of nodes, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def upward_imports(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """Each import from a package into one declared after it (or undeclared), as `module -> module`.

    `raycl/__init__.py` runs before every raycl import, so it may import nothing from raycl.
    """
    rank = {"raycl": -1} | {package: index for index, package in enumerate(layers)}
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if package_of(target) != package_of(module)
        and rank.get(package_of(target), len(layers)) >= rank.get(package_of(module), len(layers))
    )


def impure_imports(imports: dict[str, set[str]], graph: dict[str, set[str]], package: str) -> list[str]:
    """Each import of `IMPURE` by a module of `package` or by any raycl module it reaches, as `module: name`."""
    reached = {module for module in graph if package_of(module) == package}
    frontier = list(reached)
    while frontier:
        for target in graph[frontier.pop()] - reached:
            reached.add(target)
            frontier.append(target)
    return sorted(
        f"{module}: {name}"
        for module in reached
        for name in imports[module]
        if any(name == banned or name.startswith(banned + ".") for banned in IMPURE)
    )


def notes_citations(paths: list[Path]) -> list[str]:
    """`path:line` of every line that cites the shared probe notes instead of stating the fact."""
    return [
        f"{path}:{number}"
        for path in paths
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if NOTES in line
    ]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_package_is_a_declared_layer() -> None:
    layers = declared_layers()
    assert layers[0] == "config" and layers[-1] == "cli" and len(set(layers)) == len(layers), layers
    packages = set(package_graph(import_graph(all_imports()))) - {"raycl"}
    assert sorted(packages - set(layers)) == []


def test_no_import_cycle_among_raycls_modules() -> None:
    graph = import_graph(all_imports())
    assert "raycl.config.space" in graph["raycl.sweep.service"]  # the graph sees real edges
    assert "raycl.artifacts.hub" in graph["raycl.reporting.checkpoints"]  # including those inside functions
    assert find_cycle(graph) is None


def test_no_import_cycle_among_raycls_packages() -> None:
    packages = package_graph(import_graph(all_imports()))
    assert {"config", "analysis", "training"} <= packages["sweep"]  # the graph sees real edges
    assert find_cycle(packages) is None


def test_imports_point_only_down_the_layers() -> None:
    assert upward_imports(import_graph(all_imports()), declared_layers()) == []


def test_the_analysis_package_reaches_no_mlflow_optuna_ray_or_sweep() -> None:
    imports = all_imports()
    assert impure_imports(imports, import_graph(imports), "analysis") == []


def test_no_code_cites_the_probe_notes() -> None:
    paths = [path for folder in ("raycl", "tests", "bench") for path in sorted((ROOT / folder).rglob("*.py"))]
    assert len(paths) > 50 and notes_citations(paths) == []


def test_the_checks_catch_planted_violations(tmp_path: Path) -> None:
    """Each check, on the real graph with one violation added, reports that violation (and only it)."""
    imports = all_imports()
    graph = import_graph(imports)
    layers = declared_layers()

    def added(check, planted_imports):  # what `check` finds with the planted imports and not without
        return sorted(set(check(planted_imports, import_graph(planted_imports))) - set(check(imports, graph)))

    # data/check.py once imported the benchmark checks from evaluation: up a layer, and a package cycle.
    upward = imports | {"raycl.data.check": imports["raycl.data.check"] | {"raycl.evaluation.harness"}}
    assert added(lambda _, g: upward_imports(g, layers), upward) == [
        "raycl.data.check -> raycl.evaluation",  # its __init__ runs first
        "raycl.data.check -> raycl.evaluation.harness",
    ]
    assert {"data", "evaluation"} <= set(find_cycle(package_graph(import_graph(upward))) or ())
    # A module that imports a sibling through its own package, whose __init__ imports that module.
    through_package = {
        "raycl.p": {"raycl.p.a"},
        "raycl.p.a": imported_names("def f():\n    from raycl.p import b\n", "raycl.p"),
        "raycl.p.b": set(),
    }
    assert find_cycle(import_graph(through_package)) == ["raycl.p", "raycl.p.a", "raycl.p"]
    # The sweep imported inside a function of analysis, and Optuna reached from analysis through config.
    inside = imported_names("def f():\n    from raycl.sweep.study import completed_metrics\n", "raycl.analysis")
    impure = lambda i, g: impure_imports(i, g, "analysis")  # noqa: E731
    assert "raycl.analysis.planted: raycl.sweep.study" in added(impure, imports | {"raycl.analysis.planted": inside})
    optuna = imports | {"raycl.config.base": imports["raycl.config.base"] | {"optuna"}}
    assert added(impure, optuna) == ["raycl.config.base: optuna"]
    cited = tmp_path / "cited.py"
    cited.write_text(f"x = 1  # measured, see {NOTES}\n")
    assert notes_citations([cited]) == [f"{cited}:1"]


def test_the_contract_layer_imports_only_raycl_config() -> None:
    graph = import_graph(all_imports())
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
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert len(names) > 20 and sorted(name for name in set(names) if names.count(name) > 1) == []
