"""The import graph keeps the layers of docs/architecture.md: arrows only go down, no package cycles,
and no module reaches into another package's private names.

Every module under src/ is parsed with ``ast``: module-level and function-level imports count, and so
do lazy imports by name (``importlib.import_module("medseg_agent.x")`` and registry strings such as
``"medseg_agent.x.y:factory"``), because a lazy arrow is still an arrow.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "medseg_agent"

#: Package -> layer. A package may import its own layer or lower ones (and no cycle within a layer).
LAYERS = {
    "vocabulary": 0,
    "plugins": 0,
    "io": 0,
    "metrics": 0,
    "runs": 0,
    "tools": 1,
    "protocols": 1,
    "data": 1,
    "environment": 2,
    "policies": 3,
    "rewards": 3,
    "models": 3,
    "experts": 4,
    "evaluation": 4,
    "exports": 4,
    "annotation": 4,
    "serving": 4,
    "training": 4,
    "recipes": 5,
    "cli": 5,
}
_MODULE_STRING = re.compile(rf"^{ROOT}(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_.]*)?$")


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == ROOT and len(parts) > 1 else None


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def dependencies(source: str, module: str, is_package: bool) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every import, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, module, is_package)
            names = [alias.name for alias in node.names]
            if target == ROOT:  # from medseg_agent import serving
                found += [(node.lineno, f"{ROOT}.{name}", []) for name in names]
            else:
                found.append((node.lineno, target, names))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            found.append((node.lineno, node.value.split(":")[0], []))
    return found


def source_modules(src: Path = SRC) -> dict[str, tuple[Path, str]]:
    return {module_name(path, src): (path, path.read_text()) for path in sorted((src / ROOT).rglob("*.py"))}


def layer_violations(modules: dict[str, tuple[Path, str]]) -> tuple[list[str], dict[str, set[str]]]:
    problems: list[str] = []
    edges: dict[str, set[str]] = defaultdict(set)
    for module, (path, source) in modules.items():
        own = package_of(module)
        if own is None:
            continue
        if own not in LAYERS:
            problems.append(f"{module}: package {own!r} has no layer; add it to LAYERS and docs/architecture.md")
            continue
        for line, target, _ in dependencies(source, module, path.name == "__init__.py"):
            other = package_of(target)
            if other is None or other == own:
                continue
            edges[own].add(other)
            if other not in LAYERS:
                problems.append(f"{module}:{line} imports {target}, whose package has no layer")
            elif LAYERS[other] > LAYERS[own]:
                problems.append(
                    f"{module}:{line} imports {target}: layer {LAYERS[own]} ({own}) -> layer {LAYERS[other]} ({other})"
                )
    return problems, edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan): each holds an import loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(set(edges) | {n for targets in edges.values() for n in targets}):
        if node not in index:
            visit(node)
    return cycles


def module_edges(modules: dict[str, tuple[Path, str]]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (``from pkg import module`` counts as the module)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, (path, source) in modules.items():
        for _, target, names in dependencies(source, module, path.name == "__init__.py"):
            for candidate in [target, *(f"{target}.{name}" for name in names)]:
                if candidate in modules and candidate != module:
                    edges[module].add(candidate)
    return edges


def private_attributes_by_package(modules: dict[str, tuple[Path, str]]) -> dict[str, set[str]]:
    """Private attribute names (``self._x = ...`` and class-level ``_x``) each package defines."""
    defined: dict[str, set[str]] = defaultdict(set)
    for module, (_, source) in modules.items():
        own = package_of(module)
        for node in ast.walk(ast.parse(source)):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign | ast.AugAssign):
                targets = [node.target]
            for target in targets:
                on_self = isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self"
                if on_self:
                    name = target.attr
                elif isinstance(target, ast.Name):
                    name = target.id
                else:
                    continue
                if name.startswith("_") and not name.startswith("__"):
                    defined[own or ""].add(name)
    return defined


def private_access(modules: dict[str, tuple[Path, str]]) -> list[str]:
    defined = private_attributes_by_package(modules)
    problems = []
    for module, (_, source) in modules.items():
        own = package_of(module)
        foreign = set().union(*(names for package, names in defined.items() if package != own)) - defined[own or ""]
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and package_of(node.module or "") not in (None, own):
                problems += [
                    f"{module}:{node.lineno} imports private {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            owner_name = ast.unparse(node.value).rsplit(".", 1)[-1]
            if owner_name in ("self", "cls"):
                continue
            if owner_name == "env" and own != "environment":
                problems.append(f"{module}:{node.lineno} reaches into the environment: {ast.unparse(node)}")
            elif node.attr in foreign:
                problems.append(f"{module}:{node.lineno} uses another package's private attribute: {ast.unparse(node)}")
    return problems


@pytest.fixture(scope="module")
def modules() -> dict[str, tuple[Path, str]]:
    return source_modules()


def test_every_import_goes_down_the_layers(modules):
    problems, _ = layer_violations(modules)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_packages_form_no_cycle(modules):
    _, edges = layer_violations(modules)
    assert cycles(edges) == []


def test_modules_form_no_import_loop(modules):
    assert cycles(module_edges(modules)) == []


def test_no_module_reaches_into_another_packages_private_names(modules):
    problems = private_access(modules)
    assert not problems, "\n".join(problems)


def test_the_vocabulary_imports_nothing_of_ours(modules):
    for module, (path, source) in modules.items():
        if package_of(module) == "vocabulary":
            ours = [t for _, t, _ in dependencies(source, module, path.name == "__init__.py") if package_of(t)]
            assert all(package_of(t) == "vocabulary" for t in ours), (module, ours)


def test_the_checks_catch_bad_code(tmp_path):
    """The checks themselves: an upward import (even lazy), a cycle, a private reach-in are all found."""
    tree = tmp_path / ROOT
    files = {
        "vocabulary/bad.py": "def f():\n    from medseg_agent.cli.app import main\n",
        "tools/lazy.py": 'FACTORY = "medseg_agent.serving.client:HttpSegmentationTool"\n',
        "tools/a.py": "from medseg_agent.protocols import b\n",
        "protocols/b.py": "from medseg_agent.tools import a\n",
        "environment/episode.py": "class E:\n    def __init__(self):\n        self._secret = 1\n",
        "training/t.py": "def g(env, other):\n    env._finish('x')\n    return other._secret\n",
        "policies/p.py": "from medseg_agent.environment.episode import _hidden\n",
        "evaluation/run.py": "def f():\n    from medseg_agent.evaluation.ray import g\n",
        "evaluation/ray.py": "from medseg_agent.evaluation.run import f\n",
    }
    for name, text in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    bad = source_modules(tmp_path)
    problems, edges = layer_violations(bad)
    private = private_access(bad)
    assert any("medseg_agent.vocabulary.bad:2 imports medseg_agent.cli.app" in p for p in problems)
    assert any("medseg_agent.tools.lazy:1 imports medseg_agent.serving.client" in p for p in problems)
    assert cycles(edges) == [["protocols", "tools"]]
    assert cycles(module_edges(bad)) == [
        ["medseg_agent.evaluation.ray", "medseg_agent.evaluation.run"],
        ["medseg_agent.protocols.b", "medseg_agent.tools.a"],
    ]
    assert any("env._finish" in p for p in private)
    assert any("other._secret" in p for p in private)
    assert any("imports private medseg_agent.environment.episode._hidden" in p for p in private)
