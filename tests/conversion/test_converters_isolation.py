"""converters/ stands alone: it converts with tui, Textual, torch, transformers, safetensors,
sentencepiece and tokenizers all unimportable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("tui", "textual", "torch", "transformers", "safetensors", "sentencepiece", "tokenizers")

BLOCKER = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FORBIDDEN!r}:
            raise ModuleNotFoundError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
"""


def test_converts_with_the_forbidden_packages_blocked(tmp_path):
    code = BLOCKER + (
        "from converters import convert\n"
        f"for variant in ('llama_added_tokens', 'neox_parallel'):\n"
        f"    convert({str(TINY)!r} + '/' + variant, {str(tmp_path)!r} + '/' + variant + '.gguf', outtype='f16')\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r})))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama_added_tokens.gguf", "neox_parallel.gguf"]


def test_the_package_loads_each_export_when_it_is_first_used():
    code = (
        "import sys\n"
        "import converters\n"
        "from converters import CHATGLM_CPP_SUFFIX, EXIT_USER_ERROR, human_size\n"
        "print(sorted({'numpy', 'gguf'} & set(sys.modules)))\n"
        # Importing the submodules named like the functions leaves the package's names on the functions.
        "from converters.convert import STOP_STRINGS_KEY\n"
        "import converters.quantize\n"
        "from converters import convert\n"
        "print(convert.__module__, converters.quantize.__module__, callable(converters.quantize))\n"
        "print(sorted({'numpy', 'gguf'} & set(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "converters.convert converters.quantize True", "['gguf', 'numpy']"]


def test_every_export_is_there():
    import converters

    for name in converters.__all__:
        assert getattr(converters, name) is not None, name
    assert set(converters.__all__) <= set(dir(converters))


def test_no_source_file_imports_tui_or_textual():
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "converters").rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith(("import tui", "from tui", "import textual", "from textual"))
    ]
    assert offenders == []
