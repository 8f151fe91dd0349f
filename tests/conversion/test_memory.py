"""Peak RSS of a conversion does not grow with model size: tensors stream through in slices."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_convert.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_convert", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # writes and converts a checkpoint of real size (100M parameters)
def test_peak_rss_is_flat_from_small_to_large_checkpoint(tmp_path):
    bench = _bench_module()
    peaks = {}
    for shape in ("tiny", "100m"):
        source = tmp_path / shape
        bench.write_llama_checkpoint(source, shape)
        _, peaks[shape], _ = bench.measure(*bench.zootui_command(source, tmp_path / f"{shape}.gguf", "q8_0"))
    weights_100m = sum(p.stat().st_size for p in (tmp_path / "100m").glob("*.safetensors"))
    growth = peaks["100m"] - peaks["tiny"]
    # ~200 MB more weights (including a 49 MB embedding) may cost one 8 MiB slice and its q8_0 encoding, not the model.
    assert weights_100m > 180e6
    assert growth < 48e6, f"peak RSS grew by {growth / 1e6:.0f} MB for {weights_100m / 1e6:.0f} MB more weights"
