"""tests/bench/gpu_check.py keeps working: on this machine (no GPU, a CPU build of llama-cpp-python)
it converts a tiny random LLaMA, runs the 0-layer column through zootui's engine and a bare
llama-cpp-python loop, and says that the other columns need a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import llama_cpp
import pytest
from support import ROOT

SCRIPT = ROOT / "tests" / "bench" / "gpu_check.py"


@pytest.mark.slow
@pytest.mark.skipif(
    bool(llama_cpp.llama_supports_gpu_offload()), reason="checks the CPU mode; a GPU build runs all columns"
)
def test_gpu_check_runs_its_cpu_column_and_says_the_rest_needs_a_gpu(tmp_path, cli_env):
    report = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--size", "tiny", "--prompt-tokens", "48", "--decode-tokens", "12"]
    command += ["--threads", "1", "--repeat", "1", "--workdir", str(tmp_path), "--json", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Half, suggested and all layers need a GPU: this llama-cpp-python is built for the CPU only" in result.stdout
    [row] = [line for line in result.stdout.splitlines() if line.startswith("| 0 (CPU) |")]
    assert row.endswith("| n/a (CPU) |")

    figures = json.loads(report.read_text())
    assert figures["gpu_offload"] is False and figures["suggested_gpu_layers"] == 0
    assert figures["offloadable_layers"] == 3  # two blocks and the output projection
    [column] = figures["columns"]
    assert column["n_gpu_layers"] == 0
    for side in ("zootui", "bare"):
        assert column[side]["prompt_tokens"] >= 48 and column[side]["prompt_tok_s"] > 0
        assert column[side]["decode_tokens"] > 1 and column[side]["decode_tok_s"] > 0
