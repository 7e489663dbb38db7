"""The package's seams: library modules never import command modules, no import cycles, one error base.

Checked on the source (every `import` statement, at module level or inside a function), so a lazy import cannot
hide a cycle or a library -> command dependency.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import fer_lightning
from fer_lightning.errors import FERLightningError

PACKAGE_DIR = Path(fer_lightning.__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
# The command layer: the shells in fer_lightning/cli/ and the `python -m` entry modules that only call them.
COMMAND_MODULES = {"fer_lightning.__main__", "fer_lightning.evaluate", "fer_lightning.predict", "fer_lightning.app",
                   "fer_lightning.export", "fer_lightning.report"}
COMMANDS = ("train", "evaluate", "predict", "export", "report", "app")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_command(module: str) -> bool:
    return module in COMMAND_MODULES or module == "fer_lightning.cli" or module.startswith("fer_lightning.cli.")


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its source (`from a import b` counts a and a.b)."""
    files = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[module] = {target for target in targets if target in files and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_check_sees_the_package() -> None:
    graph = import_graph()
    assert {"fer_lightning.train", "fer_lightning.cli.train", "fer_lightning.inference.classifier"} <= set(graph)
    assert "fer_lightning.inference.base" in graph["fer_lightning.inference.onnx_runtime"]
    assert "fer_lightning.inference.onnx_runtime" in graph["fer_lightning.inference.classifier"]  # a lazy import


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_library_modules_never_import_command_modules() -> None:
    offenders = {module: sorted(filter(is_command, targets)) for module, targets in import_graph().items()
                 if not is_command(module) and any(map(is_command, targets))}
    assert offenders == {}


def test_command_entry_modules_only_delegate_to_the_cli_package() -> None:
    """`python -m fer_lightning.X` keeps working, but its module holds no code of its own."""
    graph = import_graph()
    for module in COMMAND_MODULES:
        assert graph[module] and all(target.startswith("fer_lightning.cli") for target in graph[module]), module
        source = (PACKAGE_DIR / (module.split(".")[-1] + ".py")).read_text()
        assert "def " not in source and "class " not in source, module


def test_every_project_error_derives_from_one_base() -> None:
    errors = []
    for info in pkgutil.walk_packages(fer_lightning.__path__, "fer_lightning."):
        if is_command(info.name) and info.name != "fer_lightning.cli.export":
            continue  # importing a command module runs nothing, but the entry modules add nothing either
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if value.__module__ == info.name and issubclass(value, Exception):
                errors.append(value)
    assert len(errors) >= 14, [error.__name__ for error in errors]
    assert [error.__qualname__ for error in errors if not issubclass(error, FERLightningError)] == []


def test_console_scripts_are_declared_and_print_their_help() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {f"fer-{command}" for command in COMMANDS}
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert module.startswith("fer_lightning.cli."), name
        assert callable(getattr(importlib.import_module(module), function)), name
    installed = Path(sys.executable).parent
    if not (installed / "fer-train").exists():
        pytest.skip(f"console scripts are not installed next to {sys.executable} (pip install -e . installs them)")
    for name in scripts:
        result = subprocess.run([str(installed / name), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (name, result.stderr[-2000:])
        help_text = result.stdout.lower()
        assert any(word in help_text for word in ("ckpt_path", "multirun_dir", "override")), name
