"""The package's layers: `import dlbook` is cheap and the service loads no training code."""

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import dlbook

PACKAGE = Path(dlbook.__file__).parent
TRAINING_SIDE = (
    "dlbook.training",
    "dlbook.zoo",
    "dlbook.plotting",
    "dlbook.scratch",
    "dlbook.metrics",
    "dlbook.chapter",
    "matplotlib",
    "pandas",
    "sklearn",
)


def _new_modules(code: str) -> set[str]:
    """Modules a fresh interpreter imports for `code` beyond those `import torch` imports."""
    probe = (
        "import sys, json, torch; before = set(sys.modules); "
        + code
        + "; print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_dlbook_imports_no_submodule():
    assert {m for m in _new_modules("import dlbook") if m.startswith("dlbook.")} == set()


@pytest.mark.parametrize(
    "module",
    ["dlbook.serve", "dlbook.package", "dlbook.preprocess", "dlbook.vault", "dlbook.access"],
)
def test_the_service_loads_no_training_or_plotting_code(module):
    # tqdm is imported by torch itself (torch.hub), so `import torch` is the baseline.
    loaded = _new_modules(f"import {module}")
    assert not [
        m
        for m in loaded
        if m.split(".")[0] in ("matplotlib", "pandas", "sklearn")
        or m in TRAINING_SIDE
        or m == "tqdm"
    ], sorted(loaded)


def test_reexported_names_are_their_owners_objects():
    for name, module in dlbook._EXPORTS.items():
        owner = importlib.import_module(f"dlbook.{module}")
        assert getattr(dlbook, name) is getattr(owner, name), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dlbook.nope  # noqa: B018


def _imports(path: Path) -> set[str]:
    """The dlbook modules a file imports at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add(node.module or "")
    return found - {""}


def test_the_package_has_no_import_cycle():
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}

    def visit(module: str, path: tuple[str, ...]) -> None:
        for dep in graph.get(module, ()):
            assert dep not in path, f"import cycle: {' -> '.join(path + (dep,))}"
            visit(dep, path + (dep,))

    for module in graph:
        visit(module, (module,))


def test_every_module_is_reachable_from_the_package():
    import dlbook

    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == dlbook._SUBMODULES
