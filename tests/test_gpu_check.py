"""tests/bench/gpu_check.py keeps working: on this machine (no GPU, a CPU build of llama-cpp-python)
it converts a tiny random LLaMA, runs the 0-layer column through zootui's engine and a bare
llama-cpp-python loop, and says that the other columns need a GPU."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import llama_cpp
import pytest
from support import ROOT

SCRIPT = ROOT / "tests" / "bench" / "gpu_check.py"


def gpu_check_module():
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))  # a script beside bench_convert, which it imports
    return importlib.import_module("gpu_check")


@pytest.mark.parametrize(
    ("name", "gb_s"),
    [
        ("NVIDIA H200", 4800),
        ("NVIDIA GH200 480GB", 4000),
        ("NVIDIA H100 80GB HBM3", 3350),
        ("NVIDIA H100 PCIe", 2000),
        ("NVIDIA A100-SXM4-80GB", 2039),
        ("NVIDIA A100-PCIE-40GB", 1555),
        ("NVIDIA L4", 300),
        ("NVIDIA A10G", 600),
        ("NVIDIA Quadro RTX 8000", None),
    ],
)
def test_bandwidth_follows_the_device_name_most_specific_first(name, gb_s):
    assert gpu_check_module().bandwidth_for(name) == gb_s


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
