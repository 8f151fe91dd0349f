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


def test_no_source_file_imports_tui_or_textual():
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "converters").rglob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith(("import tui", "from tui", "import textual", "from textual"))
    ]
    assert offenders == []
