"""The core (converters, and tui's cli/config/store/engine/zoo/chat) must work without Textual."""

import ast
import subprocess
import sys
from pathlib import Path

from support import ROOT

UI_MODULES = {"app.py", "theming.py"}
UI_PACKAGES = {"screens", "widgets"}


def core_files():
    for path in sorted((ROOT / "converters").rglob("*.py")):
        yield path
    for path in sorted((ROOT / "tui").rglob("*.py")):
        relative = path.relative_to(ROOT / "tui")
        if relative.parts[0] in UI_PACKAGES or str(relative) in UI_MODULES:
            continue
        yield path


def imported_modules(path: Path, *, module_level_only: bool = False):
    """Modules a file imports; module_level_only skips imports inside functions (done on demand)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = ast.walk(tree)
    if module_level_only:
        nodes = (
            node
            for statement in tree.body
            if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            for node in ast.walk(statement)
        )
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def is_ui(module: str) -> bool:
    return (
        module.split(".")[0] in ("textual", "rich")
        or module in ("tui.app", "tui.theming")
        or module.startswith(("tui.widgets", "tui.screens"))
    )


def test_core_modules_never_import_textual():
    # The CLI may import the app inside the one command that opens it; nothing else may.
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in core_files()
        for module in imported_modules(path, module_level_only=path.name == "cli.py" and path.parent.name == "tui")
        if is_ui(module)
    ]
    assert offenders == []


def test_converters_never_import_tui():
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for path in sorted((ROOT / "converters").rglob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] == "tui"
    ]
    assert offenders == []


def test_headless_paths_load_no_textual_at_run_time(cli_env):
    script = (
        "import sys, importlib, pkgutil, tui, converters\n"
        "from tui.cli import build_parser\n"
        "build_parser()\n"
        "for package in (tui, converters):\n"
        "    for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        name = info.name\n"
        "        if name.split('.')[1] in ('app', 'theming', 'widgets', 'screens', '__main__'):\n"
        "            continue\n"
        "        importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=cli_env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_no_test_directory_shadows_a_project_package():
    # tests/ is on sys.path during the run: a tests/converters folder once became the `converters`
    # namespace package for code importing it late (from a worker thread, after a chdir).
    packages = {"tui", "converters", "themes"}
    shadowing = [
        path.relative_to(ROOT) for path in (ROOT / "tests").rglob("*") if path.is_dir() and path.name in packages
    ]
    assert shadowing == []
