"""llama.cpp quantization in a subprocess (progress, type checks) and cancellation that leaves nothing behind."""

from __future__ import annotations

import threading

import gguf
import pytest
from conftest import TINY

from converters import QUANT_TYPES, ConversionCancelled, ConversionError, convert, quantize


def test_quantize_reports_per_tensor_progress(converted, tmp_path):
    source = converted("llama", "f16")
    reports = []
    out = quantize(source, tmp_path / "q6.gguf", "Q6_K", progress=reports.append, nthreads=1)
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.file_type"].contents() == QUANT_TYPES["q6_k"]
    assert {t.tensor_type for t in reader.tensors} >= {gguf.GGMLQuantizationType.Q6_K, gguf.GGMLQuantizationType.F32}
    named = [r for r in reports if r.tensor]
    assert len(named) == len(reader.tensors)
    assert [r.bytes_done for r in reports] == sorted(r.bytes_done for r in reports)
    assert reports[-1].bytes_done == reports[-1].bytes_total and all(r.stage == "quantize" for r in reports)
    assert reader.fields["zootui.converter.version"].contents()  # metadata survives quantization


def test_q4_k_m_conversion_uses_k_quants_where_rows_allow(converted):
    reader = gguf.GGUFReader(converted("llama", "q4_k_m"))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert reader.fields["general.file_type"].contents() == QUANT_TYPES["q4_k_m"]
    assert types["blk.0.ffn_down.weight"] in (gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K)


@pytest.mark.parametrize("qtype", ["iq1_s", "q2_k_s", "IQ2_XXS"])
def test_imatrix_types_are_refused(converted, tmp_path, qtype):
    with pytest.raises(ConversionError, match="importance matrix"):
        quantize(converted("llama", "f16"), tmp_path / "x.gguf", qtype)
    assert list(tmp_path.iterdir()) == []


def _cancel_when(stage: str):
    cancel = threading.Event()

    def progress(report):
        if report.stage == stage and report.bytes_done > 0:
            cancel.set()

    return cancel, progress


@pytest.mark.parametrize("stage", ["convert", "quantize"])
def test_cancel_leaves_nothing(tmp_path, stage):
    cancel, progress = _cancel_when(stage)
    with pytest.raises(ConversionCancelled):
        convert(TINY / "llama", tmp_path / "out.gguf", outtype="q4_k_m", progress=progress, cancel=cancel, nthreads=1)
    assert list(tmp_path.iterdir()) == []


def test_failed_conversion_leaves_previous_output_untouched(copy_fixture, tmp_path):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"previous good file")
    directory = copy_fixture("llama")
    (directory / "tokenizer.model").write_bytes(b"\xff\xff\xff")
    with pytest.raises(ConversionError):
        convert(directory, out, outtype="f16")
    assert out.read_bytes() == b"previous good file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama", "out.gguf"]


def test_quantizer_failure_is_one_clear_error(converted, tmp_path):
    with pytest.raises(ConversionError, match="could not quantize.*requantiz"):
        quantize(converted("llama", "q8_0"), tmp_path / "q4.gguf", "q4_k_m", nthreads=1)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(ConversionError, match="not a readable GGUF"):
        quantize(garbage, tmp_path / "q4.gguf", "q4_k_m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.gguf"]
