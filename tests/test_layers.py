"""The layers of design.md: converters without tui, the core without Textual, the UI above the services."""

import subprocess
import sys
from pathlib import Path

from support import ROOT


def test_the_import_contracts_hold():
    # The contracts live in pyproject.toml ([tool.importlinter]); import-linter reads every import in
    # the packages, those inside functions too, and follows indirect chains.
    linter = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(linter), "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


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
