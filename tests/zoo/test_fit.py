"""Fit estimates: arithmetic against figures computed here from the published shapes, the real
default GGUF read back through llama.cpp, and GPU layer suggestions for given free memory."""

from __future__ import annotations

import dataclasses
import os
import stat

import llama_cpp
import pytest

from tui.zoo.catalog import Status, load_catalog
from tui.zoo.fit import (
    GPU_RESERVE_BYTES,
    RUNTIME_OVERHEAD_BYTES,
    Resources,
    UnknownShape,
    Verdict,
    available_ram,
    bits_per_weight,
    fit_gguf,
    fit_variant,
    free_disk,
    free_vram,
    gpu_names,
)

GiB = 2**30
PLENTY = Resources(ram_bytes=512 * GiB, disk_bytes=4096 * GiB, vram_bytes=None)

# LLaMA-7B from its config.json: vocab 32000, hidden 4096, intermediate 11008, 32 layers, 32 heads of 128.
LLAMA_7B_EMBEDDING = 32000 * 4096
LLAMA_7B_BLOCK = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096  # q, k, v, o; gate, up, down; two norms
LLAMA_7B_PARAMETERS = 2 * LLAMA_7B_EMBEDDING + 32 * LLAMA_7B_BLOCK + 4096  # untied output, final norm
Q4_K_M_BITS = 4.9  # the converters' figure for llama.cpp's Q4_K_M mix (4.85-4.9 measured on LLaMA-7B)


def variant(variant_id: str):
    return load_catalog().variant(variant_id)[1]


def test_llama_7b_at_q4_k_m_and_2048_tokens():
    estimate = fit_variant(variant("vicuna-7b-v1.3"), quant="q4_k_m", n_ctx=2048, free=PLENTY)

    weights = LLAMA_7B_PARAMETERS * Q4_K_M_BITS / 8
    assert estimate.weights.total_bytes == pytest.approx(weights, abs=64)  # rounding up per tensor group
    assert estimate.kv_cache_bytes == 2 * 32 * 2048 * 32 * 128 * 2 == GiB
    assert estimate.ram_bytes == pytest.approx(weights + GiB + RUNTIME_OVERHEAD_BYTES, abs=64)
    assert (estimate.shape.n_layer, estimate.shape.n_head_kv, estimate.shape.key_length) == (32, 32, 128)
    assert "LLaMA-7B" in estimate.shape.source
    # A full release: its own 13.5 GB download, an f16 GGUF for the quantizer, then the Q4_K_M file.
    assert estimate.disk.download_bytes == 13.5e9
    assert estimate.disk.intermediate_bytes == LLAMA_7B_PARAMETERS * 2
    assert estimate.disk.output_bytes == estimate.weights.total_bytes
    assert estimate.gpu_layers == 0 and estimate.verdict is Verdict.FITS
    assert estimate.summary() == (
        f"fits: needs {(weights + GiB + RUNTIME_OVERHEAD_BYTES) / 1e9:.1f} GB RAM "
        f"of 549.8 free · disk 13.5+13.5+4.1 GB of 4398.0 free · GPU: none"
    )


def test_chatglm_6b_is_written_in_its_type_directly_so_needs_no_f16_file():
    estimate = fit_variant(variant("chatglm-6b"), quant="q4_0", n_ctx=2048, free=PLENTY)
    assert estimate.disk.intermediate_bytes == 0 and estimate.disk.output_bytes == estimate.weights.total_bytes


def test_a_delta_needs_its_base_and_a_recovered_checkpoint_and_q8_0_needs_no_f16_file():
    estimate = fit_variant(variant("vicuna-7b-v1.1"), quant="q8_0", n_ctx=2048, free=PLENTY)
    f16 = LLAMA_7B_PARAMETERS * 2
    assert estimate.disk.download_bytes == 13.5e9 + f16
    assert estimate.disk.intermediate_bytes == f16  # the recovered checkpoint only: q8_0 is written directly
    assert estimate.weights.total_bytes == pytest.approx(LLAMA_7B_PARAMETERS * 8.5 / 8, abs=64)


def test_shapes_follow_architecture_and_size():
    # GPT-NeoX-20B: 44 layers of 64 heads of 96; ChatGLM2: 28 layers, 2 KV groups of 128; BLOOM-7b1: 30 layers.
    neox = fit_variant(variant("gpt-neoxt-chat-base-20b"), quant="q4_k_m", n_ctx=1000, free=PLENTY)
    assert neox.kv_cache_bytes == 2 * 44 * 1000 * 64 * 96 * 2
    # ChatGLM2 is unsupported until zootui converts it, but its shape is known.
    chatglm2 = dataclasses.replace(variant("chatglm2-6b"), status=Status.SUPPORTED, reason=None)
    glm = fit_variant(chatglm2, quant="q4_k_m", n_ctx=1000, free=PLENTY)
    assert glm.kv_cache_bytes == 2 * 28 * 1000 * 2 * 128 * 2
    bloom = fit_variant(variant("belle-7b-2m"), quant="f16", n_ctx=1000, free=PLENTY)
    assert bloom.shape.n_layer == 30
    # Tied embeddings are stored once: the f16 file is the 7,069,016,064 parameters at two bytes.
    assert bloom.weights.total_bytes == pytest.approx(7_069_016_064 * 2, abs=64)
    # "33B" and "30B" are both the 60-layer LLaMA.
    assert fit_variant(variant("vicuna-33b-v1.3"), quant="q4_k_m", n_ctx=1000, free=PLENTY).shape.n_layer == 60


def test_no_estimate_for_unsupported_or_unknown_shapes():
    with pytest.raises(UnknownShape, match="unsupported"):
        fit_variant(variant("deepspeed-chat-opt-1.3b"), quant="q4_k_m", n_ctx=2048, free=PLENTY)
    odd_size = dataclasses.replace(variant("vicuna-7b-v1.3"), parameters_b=3.0)
    with pytest.raises(UnknownShape, match="near 3B"):
        fit_variant(odd_size, quant="q4_k_m", n_ctx=2048, free=PLENTY)
    with pytest.raises(ValueError, match="unknown weight type 'q9'"):
        fit_variant(variant("vicuna-7b-v1.3"), quant="q9", n_ctx=2048, free=PLENTY)


def test_bits_per_weight():
    assert bits_per_weight("F16") == 16
    assert bits_per_weight("q8_0") == 8.5  # 32 weights in 34 bytes
    assert bits_per_weight("q4_0") == 4.5


def test_verdicts_name_the_short_resource():
    need = fit_variant(variant("vicuna-7b-v1.3"), quant="q4_k_m", n_ctx=2048, free=PLENTY)

    def judged(**free):
        resources = dataclasses.replace(PLENTY, **free)
        return fit_variant(variant("vicuna-7b-v1.3"), quant="q4_k_m", n_ctx=2048, free=resources)

    short = judged(ram_bytes=need.ram_bytes - 1)
    assert short.verdict is Verdict.DOES_NOT_FIT and short.reason.startswith("RAM: needs")
    tight = judged(ram_bytes=int(need.ram_bytes / 0.9))
    assert tight.verdict is Verdict.TIGHT and tight.reason.startswith("RAM:")
    no_disk = judged(disk_bytes=need.disk.total_bytes - 1)
    assert no_disk.verdict is Verdict.DOES_NOT_FIT and no_disk.reason.startswith("disk:")
    unknown_ram = judged(ram_bytes=None)
    assert unknown_ram.verdict is Verdict.FITS and "RAM could not be read" in unknown_ram.reason


def test_gpu_layers_for_the_free_vram():
    block = LLAMA_7B_BLOCK * Q4_K_M_BITS / 8
    kv_per_layer = GiB // 32  # 2048 tokens
    vram = GPU_RESERVE_BYTES + int(10.5 * (block + kv_per_layer))
    partial = fit_variant(
        variant("vicuna-7b-v1.3"), quant="q4_k_m", n_ctx=2048, free=dataclasses.replace(PLENTY, vram_bytes=vram)
    )
    assert partial.gpu_layers == 10
    # rel: the estimate spreads the final norm's 4096 weights over the blocks.
    assert partial.vram_bytes == pytest.approx(10 * (block + kv_per_layer), rel=1e-6)
    cpu_only = fit_variant(variant("vicuna-7b-v1.3"), quant="q4_k_m", n_ctx=2048, free=PLENTY)
    assert partial.ram_bytes == pytest.approx(cpu_only.ram_bytes - 10 * (block + kv_per_layer), rel=1e-6)
    assert "GPU: 10 of 33 layers" in partial.summary()

    everything = fit_variant(
        variant("vicuna-7b-v1.3"), quant="q4_k_m", n_ctx=2048, free=dataclasses.replace(PLENTY, vram_bytes=24 * GiB)
    )
    assert everything.gpu_layers == 33  # 32 blocks and the output layer
    # Only the token embeddings stay in RAM.
    assert everything.ram_bytes == pytest.approx(LLAMA_7B_EMBEDDING * Q4_K_M_BITS / 8 + RUNTIME_OVERHEAD_BYTES, abs=8)
    assert "GPU: 33 of 33 layers" in everything.summary()

    too_little = fit_variant(
        variant("vicuna-7b-v1.3"),
        quant="q4_k_m",
        n_ctx=2048,
        free=dataclasses.replace(PLENTY, vram_bytes=GPU_RESERVE_BYTES // 2),
    )
    assert too_little.gpu_layers == 0


@pytest.mark.slow  # loads the real default model
def test_default_gguf_read_from_its_metadata(model_path):
    estimate = fit_gguf(model_path, n_ctx=4096, free=PLENTY)
    # llama.cpp's own reading of the same file.
    llm = llama_cpp.Llama(str(model_path), n_ctx=256, verbose=False)
    metadata = llm.metadata
    assert estimate.shape.n_layer == int(metadata["llama.block_count"]) == 30
    assert estimate.shape.n_head_kv == int(metadata["llama.attention.head_count_kv"]) == 3
    head_dim = int(metadata["llama.embedding_length"]) // int(metadata["llama.attention.head_count"])
    assert estimate.kv_cache_bytes == 2 * 30 * 4096 * 3 * head_dim * 2
    assert estimate.weights.total_bytes == llama_cpp.llama_model_size(llm.model)
    # SmolLM2 ties its output to the token embeddings: offloading it copies them to the GPU.
    assert estimate.weights.output_tied and estimate.weights.output_bytes > 0
    assert estimate.quant == "q4_1" and estimate.disk is None
    assert estimate.summary().startswith("fits: needs ") and "file 0.1 GB · GPU: none" in estimate.summary()

    on_gpu = fit_gguf(model_path, n_ctx=4096, free=dataclasses.replace(PLENTY, vram_bytes=8 * GiB))
    assert on_gpu.gpu_layers == 31
    assert on_gpu.vram_bytes == sum(on_gpu.weights.block_bytes) + on_gpu.weights.output_bytes + on_gpu.kv_cache_bytes


def test_free_memory_readers(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000000 kB\nMemAvailable:   18200000 kB\n")
    assert available_ram(meminfo) == 18_200_000 * 1024
    assert available_ram(tmp_path / "missing") is None
    assert free_disk(tmp_path / "not" / "yet" / "created") == free_disk(tmp_path) > 0

    # A stand-in nvidia-smi on PATH: two GPUs, free memory in MiB.
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '1024\\n2048\\n'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert free_vram() == 3072 * 2**20
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert free_vram() is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty") + os.pathsep)
    assert free_vram() is None


def test_gpu_names_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n[ "$1" = --query-gpu=name ] && printf "NVIDIA H200\\n\\n" || exit 9\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert gpu_names() == ["NVIDIA H200"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty") + os.pathsep)
    assert gpu_names() == []
