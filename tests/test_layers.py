"""The package's layers and its one namespace, checked from the source.

The halves live in top-level folders of the repository but install inside ``scalefinder`` (see
``[tool.setuptools]`` in pyproject.toml). The layers, each importing only from those below it:

    scalefinder.cli, scalefinder.demo,           the command line
    scalefinder.validate
    scalefinder.loadgen | scalefinder.analysis   the two halves, independent of each other
    scalefinder.core, scalefinder.profiles       the foundation

import-linter would read the same rules from the installed package, but in a checkout the halves
are not below ``scalefinder/`` on disk, where it looks; the imports are read with ``ast`` instead,
function-level imports included.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]

# What each layer may import from scalefinder (itself always allowed).
ALLOWED = {
    "scalefinder.core": {"scalefinder.core", "scalefinder"},
    "scalefinder.profiles": {"scalefinder"},
    "scalefinder.loadgen": {"scalefinder.core", "scalefinder.profiles", "scalefinder"},
    "scalefinder.analysis": {"scalefinder.core", "scalefinder.profiles", "scalefinder"},
}


def _modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, from the package-dir mapping."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            relative = path.relative_to(base).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def _imports(path: Path, module: str) -> set[str]:
    """The scalefinder modules ``path`` imports, relative imports resolved."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            # ``from scalefinder import __version__`` names an attribute of the root package
            found.update(f"{name}.{alias.name}" for alias in node.names if not alias.name.startswith("__"))
    return {name for name in found if name == "scalefinder" or name.startswith("scalefinder.")}


def _layer(module: str) -> str | None:
    for layer in ALLOWED:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def test_every_package_folder_is_installed():
    """A package folder missing from pyproject's list would be left out of the wheel."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = set()
    for package, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            parts = init.parent.relative_to(base).parts
            on_disk.add(".".join([package, *parts]))
    assert on_disk == listed


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_from_below(layer):
    modules = _modules()
    assert any(_layer(name) == layer for name in modules), f"no module found for {layer}"
    wrong = []
    for name, path in sorted(modules.items()):
        if _layer(name) != layer:
            continue
        for imported in sorted(_imports(path, name)):
            target = _layer(imported)
            if imported == "scalefinder" or target in ALLOWED[layer] or target == layer:
                continue
            wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(wrong)


def test_no_generic_top_level_names_are_imported():
    """``import analysis`` or ``from loadgen import ...`` would work in a checkout (the folders are
    on sys.path there) and fail once installed, or load a second copy of a module."""
    wrong = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if ".venv" in path.parts or "reports" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            wrong += [f"{path.relative_to(ROOT)}: {n}" for n in names
                      if n.split(".")[0] in {"analysis", "loadgen", "profiles"}]
    assert not wrong, "\n".join(wrong)
