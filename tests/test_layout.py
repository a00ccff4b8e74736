"""The package's shape: imports point downwards only, no cycles, a light CLI, one source of defaults."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hesig

PACKAGE = Path(hesig.__file__).parent
#: Layers from the bottom up; a module may import its own layer or lower ones, never higher.
LAYERS = {"core": 0, "evaluation": 1, "data": 2, "models": 3, "oracles": 4,
          "signature": 5, "attacks": 5, "defenses": 5, "jobs": 6, "service": 7, "cli": 8, "__main__": 8}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every hesig module ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # "from . import viz" imports the module hesig.viz
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "hesig" or m.startswith("hesig.")}


def _exists(module: str) -> bool:
    path = PACKAGE.parent / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


GRAPH = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_the_tree_has_the_designed_packages():
    for sub in ("core", "models", "oracles", "signature", "attacks", "defenses", "evaluation", "jobs", "service"):
        assert (PACKAGE / sub / "__init__.py").exists(), sub
    for old in ("workflows", "attack_jobs", "vicious_jobs", "study", "search", "fingerprints", "metrics", "io"):
        assert not (PACKAGE / f"{old}.py").exists(), f"hesig/{old}.py belongs in a sub-package"
    assert all(_layer(m) is not None for m in GRAPH if m.count(".") >= 1), \
        [m for m in GRAPH if m.count(".") >= 1 and _layer(m) is None]


def test_imports_point_downwards_only():
    upward = [(m, t) for m, targets in GRAPH.items() for t in targets
              if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m)]
    assert not upward, upward


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in GRAPH.get(module, ()):
            if target not in GRAPH or target == "hesig":
                continue
            if state.get(target) == 1:
                pytest.fail(f"import cycle: {' -> '.join(stack[stack.index(target):] + [target])}")
            if target not in state:
                visit(target, stack + [target])
        state[module] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [module])


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen or m not in GRAPH:
            continue
        seen.add(m)
        todo.extend(GRAPH[m])
        parts = m.split(".")  # importing a.b.c runs a/__init__ and a.b/__init__ first
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))
    return seen


def test_the_server_side_never_imports_code_that_holds_a_secret_key():
    """hesig serve's modules and the server-side oracle reach neither the CKKS client nor the victim."""
    secret_side = {"hesig.oracles.ckks.client", "hesig.oracles.ckks.oracle", "hesig.service.victim",
                   "hesig.attacks.key_recovery"}
    for module in ("hesig.service.app", "hesig.service.hub", "hesig.service.remote", "hesig.oracles.ckks.channel"):
        reached = _closure(module)
        assert not reached & secret_side, (module, reached & secret_side)


def test_importing_the_cli_loads_no_heavy_library():
    code = "import sys, hesig.cli; print(' '.join(m for m in ('torch', 'tenseal', 'matplotlib', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_registries_list_the_names_of_core_defaults():
    from hesig.core import defaults
    from hesig.data import DATASETS
    from hesig.models import ARCHITECTURES
    from hesig.signature.directions import FAMILIES
    assert tuple(ARCHITECTURES) == defaults.ARCHITECTURES
    assert tuple(FAMILIES) == defaults.FAMILIES
    assert DATASETS is defaults.DATASETS
    from hesig.jobs.executor import EXECUTORS
    assert tuple(EXECUTORS) == defaults.EXECUTORS


def test_test_files_do_not_import_each_other():
    for path in set(Path(__file__).parent.glob("test_*.py")) - {Path(__file__)}:
        assert "from test_" not in path.read_text() and "import test_" not in path.read_text(), path.name
