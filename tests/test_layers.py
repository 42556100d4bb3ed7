"""The repository's shape: the entry points and the recipe's modules at the top, the package in four
layers whose imports only go down, the torch-free layer free of torch, no module too long to read,
and every layer in what pip installs."""
import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO

TOP = {"train_fastai", "customresnet", "augment", "predict", "compare"}
LAYERS = ["core", "data", "training", "experiments"]  # each imports only those before it
MAX_LINES = 450


def tracked_python():
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / name for name in listed.split()]


def imported_modules(path):
    """Every module `path` imports, at its top or inside a function, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def layer_of(module):
    parts = module.split(".")
    if parts[0] in TOP:
        return "top"
    if parts[0] == "cifar10_fast" and len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    return None


def test_the_top_holds_the_entry_points_and_the_recipe_alone():
    assert {path.stem for path in REPO.glob("*.py")} == TOP


def test_pip_installs_every_layer_and_the_top():
    """An install that is not editable holds only what pyproject.toml lists."""
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(listed["packages"]) == {"cifar10_fast", *(f"cifar10_fast.{layer}" for layer in LAYERS)}
    assert {path.parent.name for path in (REPO / "cifar10_fast").glob("*/__init__.py")} == set(LAYERS)
    assert set(listed["py-modules"]) == TOP


def test_imports_only_go_down_the_layers():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = []
    for path in (REPO / "cifar10_fast").rglob("*.py"):
        own = path.relative_to(REPO / "cifar10_fast").parts[0]
        for module in imported_modules(path):
            target = layer_of(module)
            if target == "top" or (target in rank and own in rank and rank[target] > rank[own]):
                upward.append(f"{path.relative_to(REPO)} imports {module}")
    assert upward == []


def test_no_module_imports_itself_through_a_cycle():
    graph = {}
    for path in (REPO / "cifar10_fast").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {module for module in imported_modules(path) if module in graph or module.startswith(
            "cifar10_fast.")}
    graph = {name: {m for m in imports if m in graph and m != name} for name, imports in graph.items()}

    def reaches(start, goal, seen):
        return any(m == goal or (m not in seen and reaches(m, goal, seen | {m})) for m in graph[start])

    assert [name for name in graph if reaches(name, name, {name})] == []


def test_the_torch_free_layer_imports_no_torch():
    modules = sorted(path.stem for path in (REPO / "cifar10_fast" / "core").glob("*.py"))
    probe = (f"import sys\nfrom cifar10_fast.core import {', '.join(modules)}\n"
             "print(sorted(m for m in ('torch', 'fastai', 'numpy', 'pandas', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert done.stdout.strip() == "[]", done.stderr


def test_no_module_is_over_450_lines():
    long = [f"{path.relative_to(REPO)}: {n}" for path in tracked_python()
            if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert long == []


def test_no_file_edits_the_import_path():
    edits = [str(path.relative_to(REPO)) for path in tracked_python()
             if path != Path(__file__) and "sys.path." in path.read_text()]
    assert edits == []
