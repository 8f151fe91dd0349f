"""Weight recovery on small synthetic checkpoints; every expected result is plain numpy or bytes."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest

from converters import ConversionCancelled, ConversionError, convert, open_checkpoint
from converters.recover import (
    OutputTensor,
    SafetensorsWriter,
    apply_delta,
    decrypt_keystream,
    merge_lora,
    write_lora_gguf,
    xor_files,
)

RNG = np.random.default_rng(7)
CONFIG = {"architectures": ["LlamaForCausalLM"], "marker": "config"}
CODES = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32"}


def write_checkpoint(directory: Path, tensors: dict[str, np.ndarray], config: dict = CONFIG, **files: str) -> Path:
    directory.mkdir(parents=True)
    writer = SafetensorsWriter(directory, [OutputTensor(n, a.shape, CODES[a.dtype]) for n, a in tensors.items()])
    for name, array in tensors.items():
        writer.write(name, array)
    writer.finish()
    (directory / "config.json").write_text(json.dumps(config))
    for name, text in files.items():
        (directory / name.replace("__", ".")).write_text(text)
    return directory


def read_all(directory: Path) -> dict[str, np.ndarray]:
    with open_checkpoint(directory) as checkpoint:
        return {name: np.array(checkpoint.load(name)) for name in checkpoint.names()}


def tensors(dtype, vocab: int = 8) -> dict[str, np.ndarray]:
    return {
        "model.embed_tokens.weight": RNG.standard_normal((vocab, 4)).astype(dtype),
        "model.layers.0.self_attn.q_proj.weight": RNG.standard_normal((4, 4)).astype(dtype),
        "model.norm.weight": RNG.standard_normal(4).astype(dtype),
        "lm_head.weight": RNG.standard_normal((vocab, 4)).astype(dtype),
    }


def test_safetensors_writer_shards_and_round_trips_through_the_checkpoint_reader(tmp_path: Path):
    values = {f"t{i}": RNG.standard_normal((3, 5)).astype(np.float32) for i in range(5)}
    plan = [OutputTensor(n, (3, 5), "F32") for n in values]
    plan[1] = OutputTensor("t1", (3, 5), "F16")
    plan[2] = OutputTensor("t2", (3, 5), "BF16")
    (tmp_path / "ckpt").mkdir()
    writer = SafetensorsWriter(tmp_path / "ckpt", plan, max_shard_bytes=100)  # 60 + 30 | 30 + 60 | 60 bytes
    for name, value in values.items():
        writer.write(name, value)
    writer.finish()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    shards = sorted(p.name for p in (tmp_path / "ckpt").glob("*.safetensors"))
    assert shards == [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ]
    read = read_all(tmp_path / "ckpt")
    np.testing.assert_array_equal(read["t0"], values["t0"])
    np.testing.assert_array_equal(read["t1"], values["t1"].astype(np.float16))
    # bfloat16 keeps float32's top 16 bits, rounded to nearest even: within 2**-8 relative.
    np.testing.assert_allclose(read["t2"], values["t2"], rtol=2**-8)
    assert read["t2"].view(np.uint32).__and__(0xFFFF).max() == 0


def test_additive_delta_is_base_plus_delta_in_float16(tmp_path: Path):
    base, delta = tensors(np.float16), tensors(np.float16)
    write_checkpoint(tmp_path / "base", base, {**CONFIG, "marker": "base"}, tokenizer__model="base-spm")
    write_checkpoint(tmp_path / "delta", delta, {**CONFIG, "marker": "delta"}, tokenizer__model="delta-spm")
    out = apply_delta(tmp_path / "base", tmp_path / "delta", tmp_path / "out")
    recovered = read_all(out)
    for name in base:
        expected = (base[name].astype(np.float32) + delta[name].astype(np.float32)).astype(np.float16)
        np.testing.assert_array_equal(recovered[name], expected, err_msg=name)
        assert recovered[name].dtype == np.float16
    # FastChat takes the tokenizer from the delta; the delta's config describes the target model.
    assert (out / "tokenizer.model").read_text() == "delta-spm"
    assert json.loads((out / "config.json").read_text())["marker"] == "delta"


def test_delta_after_zero_pad_rows(tmp_path: Path):
    base, delta = tensors(np.float16, vocab=8), tensors(np.float16, vocab=9)
    write_checkpoint(tmp_path / "base", base)
    write_checkpoint(tmp_path / "delta", delta)
    recovered = read_all(apply_delta(tmp_path / "base", tmp_path / "delta", tmp_path / "out", pad_rows="zero"))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        padded = np.vstack([base[name].astype(np.float32), np.zeros((1, 4), np.float32)])
        expected = (padded + delta[name].astype(np.float32)).astype(np.float16)
        np.testing.assert_array_equal(recovered[name], expected)


def test_alpaca_mean_pad_rows_with_its_checksum(tmp_path: Path):
    base, delta = tensors(np.float32, vocab=8), tensors(np.float32, vocab=9)
    write_checkpoint(tmp_path / "base", base)
    write_checkpoint(tmp_path / "delta", delta)
    expected = {}
    for name in base:
        raw = base[name]
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            raw = np.vstack([raw, raw.mean(axis=0, keepdims=True)])
        expected[name] = raw + delta[name]
    checksum = float(sum(float(v.sum()) for v in expected.values()))
    out = apply_delta(
        tmp_path / "base",
        tmp_path / "delta",
        tmp_path / "out",
        pad_rows="mean",
        dtype=np.float32,
        expected_sum=checksum,
    )
    recovered = read_all(out)
    for name, value in expected.items():
        np.testing.assert_allclose(recovered[name], value, rtol=1e-6, err_msg=name)
        assert recovered[name].dtype == np.float32

    with pytest.raises(ConversionError, match=r"recovered weights sum to .*, expected"):
        apply_delta(tmp_path / "base", tmp_path / "delta", tmp_path / "bad", pad_rows="mean", expected_sum=checksum + 1)
    assert not (tmp_path / "bad").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_delta_against_another_base_is_refused(tmp_path: Path):
    write_checkpoint(tmp_path / "base", tensors(np.float16, vocab=8))
    write_checkpoint(tmp_path / "delta", tensors(np.float16, vocab=9))
    with pytest.raises(ConversionError, match="model.embed_tokens.weight has 9 rows in the delta but 8 in the base"):
        apply_delta(tmp_path / "base", tmp_path / "delta", tmp_path / "out")
    base = tensors(np.float16)
    base["model.extra.weight"] = base.pop("model.norm.weight")
    write_checkpoint(tmp_path / "other", base)
    with pytest.raises(ConversionError, match="tensor model.extra.weight is only in the base"):
        apply_delta(tmp_path / "other", tmp_path / "base", tmp_path / "out")


def test_cancel_leaves_no_output(tmp_path: Path):
    write_checkpoint(tmp_path / "base", tensors(np.float16))
    write_checkpoint(tmp_path / "delta", tensors(np.float16))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ConversionCancelled):
        apply_delta(tmp_path / "base", tmp_path / "delta", tmp_path / "out", cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "delta"]


def xor_bytes(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=False))


def test_open_assistant_xor_restores_files_byte_for_byte(tmp_path: Path):
    plain = {"pytorch_model.bin": RNG.bytes(5000), "config.json": b'{"vocab_size": 32016}'}
    base = {"pytorch_model.bin": RNG.bytes(3000), "config.json": RNG.bytes(100)}  # shorter, and longer
    payload_dir, base_dir = tmp_path / "payload", tmp_path / "llama30b_hf"
    payload_dir.mkdir()
    base_dir.mkdir()
    for name in plain:
        (base_dir / name).write_bytes(base[name])
    # The codec zero-pads a shorter base, so the payload's tail is the plain text itself.
    (payload_dir / "pytorch_model.bin").write_bytes(
        xor_bytes(plain["pytorch_model.bin"][:3000], base["pytorch_model.bin"]) + plain["pytorch_model.bin"][3000:]
    )
    (payload_dir / "config.json").write_bytes(xor_bytes(plain["config.json"], base["config.json"]))
    (payload_dir / "added_tokens.json").write_bytes(b'{"<|prompter|>": 32000}')
    out = xor_files(payload_dir, base_dir, tmp_path / "out")
    for name, content in plain.items():
        assert (out / name).read_bytes() == content, name
    assert (out / "added_tokens.json").read_bytes() == b'{"<|prompter|>": 32000}'


def test_xor_needs_every_base_file(tmp_path: Path):
    (tmp_path / "payload").mkdir()
    (tmp_path / "base").mkdir()
    (tmp_path / "payload" / "pytorch_model-00001-of-00007.bin").write_bytes(b"x")
    with pytest.raises(ConversionError, match="has no pytorch_model-00001-of-00007.bin"):
        xor_files(tmp_path / "payload", tmp_path / "base", tmp_path / "out")


def belle_keystream(key: bytes, chunk: int, length: int) -> bytes:
    """decrypt.py's keystream, spelled out: sequential key reads, rewound at end of file, short reads repeated."""
    stream, position = b"", 0
    while len(stream) < length:
        piece = key[position : position + chunk]
        if not piece:
            position = 0
            piece = key[:chunk]
        position += len(piece)
        need = min(chunk, length - len(stream))
        stream += (piece * (need // len(piece) + 1))[:need]
    return stream


def test_belle_keystream_decrypts_and_checks_sha256(tmp_path: Path):
    key = RNG.bytes(17)  # 7-byte chunks: reads of 7, 7, 3 (repeated cyclically), then a rewind
    plain = RNG.bytes(60)
    digest = hashlib.sha256(plain).digest()
    (tmp_path / "enc").mkdir()
    encrypted = tmp_path / "enc" / f"pytorch_model.bin.{digest.hex()}.enc"
    encrypted.write_bytes(digest + xor_bytes(plain, belle_keystream(key, 7, len(plain))))
    (tmp_path / "consolidated.00.pth").write_bytes(key)
    out = decrypt_keystream(tmp_path / "enc", tmp_path / "consolidated.00.pth", tmp_path / "out", chunk_size=7)
    assert (out / "pytorch_model.bin").read_bytes() == plain

    (tmp_path / "wrong.pth").write_bytes(RNG.bytes(17))
    with pytest.raises(ConversionError, match="pytorch_model.bin decrypts to the wrong SHA-256"):
        decrypt_keystream(tmp_path / "enc", tmp_path / "wrong.pth", tmp_path / "out2", chunk_size=7)
    assert not (tmp_path / "out2").exists()


def write_adapter(directory: Path, r: int, alpha: float, pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    directory.mkdir(parents=True)
    names = {}
    for module, (a, b) in pairs.items():
        names[f"base_model.model.{module}.lora_A.weight"] = a
        names[f"base_model.model.{module}.lora_B.weight"] = b
    writer = SafetensorsWriter(directory, [OutputTensor(n, v.shape, "F32") for n, v in names.items()])
    for name, value in names.items():
        writer.write(name, value)
    writer.finish()
    (directory / "model.safetensors").rename(directory / "adapter_model.safetensors")
    config = {
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "fan_in_fan_out": False,
        "target_modules": ["q_proj", "v_proj"],
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


def lora(r: int, out: int = 4, inputs: int = 4) -> tuple[np.ndarray, np.ndarray]:
    return RNG.standard_normal((r, inputs)).astype(np.float32), RNG.standard_normal((out, r)).astype(np.float32)


def test_lora_chain_merges_in_order(tmp_path: Path):
    base = tensors(np.float16)
    base["model.layers.0.self_attn.v_proj.weight"] = RNG.standard_normal((4, 4)).astype(np.float16)
    write_checkpoint(tmp_path / "base", base, tokenizer__model="spm")
    q1, v1, q2 = lora(2), lora(2), lora(4)
    write_adapter(
        tmp_path / "sft", 2, 4, {"model.layers.0.self_attn.q_proj": q1, "model.layers.0.self_attn.v_proj": v1}
    )
    write_adapter(tmp_path / "rl", 4, 4, {"model.layers.0.self_attn.q_proj": q2})
    out = merge_lora(tmp_path / "base", [tmp_path / "sft", tmp_path / "rl"], tmp_path / "out")
    merged = read_all(out)
    q = "model.layers.0.self_attn.q_proj.weight"
    v = "model.layers.0.self_attn.v_proj.weight"
    expected_q = base[q].astype(np.float32) + 2.0 * (q1[1] @ q1[0]) + 1.0 * (q2[1] @ q2[0])
    expected_v = base[v].astype(np.float32) + 2.0 * (v1[1] @ v1[0])
    np.testing.assert_allclose(merged[q], expected_q.astype(np.float16), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(merged[v], expected_v.astype(np.float16), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(merged["lm_head.weight"], base["lm_head.weight"])
    assert merged[q].dtype == np.float16
    assert (out / "tokenizer.model").read_text() == "spm"


def test_lora_for_another_base_is_refused(tmp_path: Path):
    write_checkpoint(tmp_path / "base", tensors(np.float16))
    write_adapter(tmp_path / "adapter", 2, 4, {"model.layers.0.self_attn.q_proj": lora(2, out=8)})
    with pytest.raises(ConversionError, match=r"changes model.layers.0.self_attn.q_proj.weight by \[8, 4\]"):
        merge_lora(tmp_path / "base", [tmp_path / "adapter"], tmp_path / "out")


TINY_LLAMA = Path(__file__).resolve().parents[1] / "fixtures" / "tiny" / "llama"


def tiny_llama_adapter(directory: Path, r: int = 4) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    config = json.loads((TINY_LLAMA / "config.json").read_text())
    hidden = config["hidden_size"]
    pairs = {f"model.layers.{i}.self_attn.{p}": lora(r, hidden, hidden) for i in range(2) for p in ("q_proj", "v_proj")}
    pairs = {k: (a * 0.05, b * 0.05) for k, (a, b) in pairs.items()}
    return write_adapter(directory, r, 8, pairs), pairs


def rotary_rows(rows: int, heads: int) -> list[int]:
    """GGUF row i of a LLaMA Q/K weight is HF row order[i]: each head's two halves interleaved."""
    half = rows // heads // 2
    return [h * 2 * half + part * half + i for h in range(heads) for i in range(half) for part in (0, 1)]


def test_lora_gguf_keeps_peft_layout_with_the_base_row_order(tmp_path: Path):
    config = json.loads((TINY_LLAMA / "config.json").read_text())
    adapter, pairs = tiny_llama_adapter(tmp_path / "adapter")
    path = write_lora_gguf(adapter, config, tmp_path / "adapter.gguf")
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert fields["general.architecture"] == "llama"
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 8.0
    found = {t.name: t for t in reader.tensors}
    assert len(found) == 8
    a, b = pairs["model.layers.1.self_attn.q_proj"]
    np.testing.assert_array_equal(found["blk.1.attn_q.weight.lora_a"].data, a)
    np.testing.assert_array_equal(
        found["blk.1.attn_q.weight.lora_b"].data, b[rotary_rows(b.shape[0], config["num_attention_heads"])]
    )
    assert list(found["blk.1.attn_q.weight.lora_a"].shape) == [a.shape[1], a.shape[0]]  # ggml ne = (in, r)
    np.testing.assert_array_equal(found["blk.0.attn_v.weight.lora_b"].data, pairs["model.layers.0.self_attn.v_proj"][1])


def logits(model: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    """llama.cpp's logits at every position, on one thread, with an f32 KV cache (type 0)."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model),
        lora_path=None if lora is None else str(lora),
        n_ctx=64,
        n_batch=64,
        logits_all=True,
        n_threads=1,
        n_threads_batch=1,
        type_k=0,
        type_v=0,
        verbose=False,
    )
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def test_llama_cpp_applies_the_gguf_lora_like_the_merged_weights(tmp_path: Path):
    config = json.loads((TINY_LLAMA / "config.json").read_text())
    adapter, _ = tiny_llama_adapter(tmp_path / "adapter")
    merged = merge_lora(TINY_LLAMA, [adapter], tmp_path / "merged")
    base_gguf = convert(TINY_LLAMA, tmp_path / "base.gguf", outtype="f32")
    merged_gguf = convert(merged, tmp_path / "merged.gguf", outtype="f32")
    lora_gguf = write_lora_gguf(adapter, config, tmp_path / "adapter.gguf")
    ids = [1, 5, 9, 42, 7, 300, 12]
    adapted = logits(base_gguf, ids, lora=lora_gguf)
    expected = logits(merged_gguf, ids)
    plain = logits(base_gguf, ids)
    # The merged weights were rounded to the base's float16; the adapter runs in float32.
    assert np.abs(adapted - expected).max() < 5e-3
    assert np.abs(plain - expected).max() > 10 * np.abs(adapted - expected).max()
