"""What the converter writes besides weights: hyper-parameters, tokenizer keys, special ids, template, provenance."""

from __future__ import annotations

import hashlib
import shutil

import gguf
import numpy as np
import pytest
from conftest import TINY

from converters import __version__, convert, open_checkpoint
from converters.archs.chatglm import COMMAND_TOKENS


def fields(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}


def test_llama_keys_and_sentencepiece_vocab(converted):
    kv = fields(converted("llama", "f16"))
    assert kv["general.architecture"] == "llama"
    assert kv["llama.block_count"] == 2 and kv["llama.embedding_length"] == 128
    assert kv["llama.attention.head_count_kv"] == 4 and kv["llama.rope.dimension_count"] == 32
    assert kv["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert kv["tokenizer.ggml.model"] == "llama" and kv["tokenizer.ggml.pre"] == "default"
    assert (
        kv["tokenizer.ggml.bos_token_id"],
        kv["tokenizer.ggml.eos_token_id"],
        kv["tokenizer.ggml.unknown_token_id"],
    ) == (1, 2, 0)
    assert kv["tokenizer.ggml.add_bos_token"] is True and kv["tokenizer.ggml.add_space_prefix"] is True
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert tokens[3] == "<0x00>" and types[3] == gguf.TokenType.BYTE
    assert types[1] == gguf.TokenType.CONTROL
    assert kv["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16


def test_added_token_and_stale_config_ids(converted):
    """Alpaca's added [PAD] is appended; Baize-style wrong ids in config.json (bos 0, eos 1) are not trusted."""
    kv = fields(converted("llama_added_tokens", "f16"))
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert len(tokens) == kv["llama.vocab_size"] and tokens[-1] == "[PAD]"
    assert types[-1] == gguf.TokenType.USER_DEFINED
    assert kv["tokenizer.ggml.bos_token_id"] == 1 and kv["tokenizer.ggml.eos_token_id"] == 2
    assert kv["tokenizer.ggml.padding_token_id"] == len(tokens) - 1


def test_neox_keys_from_legacy_config(converted):
    parallel, sequential = fields(converted("neox_parallel", "f16")), fields(converted("neox_sequential", "f16"))
    assert parallel["gptneox.use_parallel_residual"] is True  # absent from config.json: transformers' default
    assert sequential["gptneox.use_parallel_residual"] is False
    assert parallel["gptneox.rope.dimension_count"] == 8  # rotary_pct 0.25 of head_dim 32
    assert parallel["tokenizer.ggml.pre"] == "gpt-2" and parallel["tokenizer.ggml.model"] == "gpt2"
    assert parallel["tokenizer.ggml.bos_token_id"] == parallel["tokenizer.ggml.eos_token_id"] == 0
    assert parallel["tokenizer.ggml.add_bos_token"] is False
    assert len(parallel["tokenizer.ggml.merges"]) > 100
    end = parallel["tokenizer.ggml.tokens"].index("### End")
    assert parallel["tokenizer.ggml.token_type"][end] == gguf.TokenType.CONTROL


def test_bloom_keys(converted):
    kv = fields(converted("bloom", "f16"))
    assert kv["general.architecture"] == "bloom" and kv["bloom.block_count"] == 2
    assert kv["tokenizer.ggml.pre"] == "bloom"
    ids = [kv[f"tokenizer.ggml.{k}_token_id"] for k in ("unknown", "bos", "eos", "padding")]
    assert ids == [0, 1, 2, 3]
    names = {t.name for t in gguf.GGUFReader(converted("bloom", "f16")).tensors}
    assert "token_embd_norm.weight" in names and "output.weight" not in names  # tied: llama.cpp reuses token_embd


def test_chat_template_eos_override_and_provenance(tmp_path):
    template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}### Response:\n"
    out = convert(
        TINY / "neox_parallel",
        tmp_path / "dolly.gguf",
        outtype="f16",
        chat_template=template,
        provenance={"repo": "databricks/dolly-v2-3b", "revision": "f6c9be08f16fe4d3a719bee0a4a7c7415b5c65df"},
        eos_token="### End",
    )
    kv = fields(out)
    assert kv["tokenizer.chat_template"] == template
    assert kv["tokenizer.ggml.tokens"][kv["tokenizer.ggml.eos_token_id"]] == "### End"
    assert kv["zootui.source.repo"] == "databricks/dolly-v2-3b"
    assert kv["zootui.source.revision"] == "f6c9be08f16fe4d3a719bee0a4a7c7415b5c65df"
    assert kv["general.source.repo_url"] == "https://huggingface.co/databricks/dolly-v2-3b"
    assert kv["zootui.converter.version"] == __version__
    recorded = dict(reversed(line.split("  ", 1)) for line in kv["zootui.source.sha256"])
    for name in (
        "config.json",
        "pytorch_model.bin",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ):
        assert recorded[name] == hashlib.sha256((TINY / "neox_parallel" / name).read_bytes()).hexdigest(), name
    assert not [p for p in tmp_path.iterdir() if p.name != "dolly.gguf"]  # no temporary files left


def test_q8_0_is_written_directly_with_f32_norms(converted):
    reader = gguf.GGUFReader(converted("llama", "q8_0"))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert fields(converted("llama", "q8_0"))["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0


def test_bf16_checkpoint_to_bf16_copies_the_bits(converted):
    reader = gguf.GGUFReader(converted("llama_gqa", "bf16"))
    tensors = {t.name: t for t in reader.tensors}
    down = tensors["blk.1.ffn_down.weight"]
    assert down.tensor_type == gguf.GGMLQuantizationType.BF16
    with open_checkpoint(TINY / "llama_gqa") as ckpt:
        source = ckpt.load_raw("model.layers.1.mlp.down_proj.weight")
        assert np.array_equal(np.asarray(down.data).view(np.uint16).reshape(source.shape), source)


def test_provenance_is_inferred_from_a_hub_cache_snapshot(tmp_path):
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--lmsys--vicuna-7b-v1.3" / "snapshots" / revision
    shutil.copytree(TINY / "bloom", snapshot)
    kv = fields(convert(snapshot, tmp_path / "out.gguf", outtype="f16"))
    assert (kv["zootui.source.repo"], kv["zootui.source.revision"]) == ("lmsys/vicuna-7b-v1.3", revision)
    assert kv["general.name"] == "vicuna-7b-v1.3"


@pytest.mark.parametrize("variant", ["chatglm2", "chatglm3"])
def test_chatglm_keys_split_qkv_and_command_tokens(converted, variant):
    path = converted(variant, "f16")
    kv = fields(path)
    assert kv["general.architecture"] == "chatglm"
    assert kv["chatglm.attention.head_count"] == 4 and kv["chatglm.attention.head_count_kv"] == 2
    assert kv["chatglm.rope.dimension_count"] == 16  # half of kv_channels 32
    assert kv["chatglm.feed_forward_length"] == 256 and kv["chatglm.context_length"] == 256
    assert kv["chatglm.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    # ChatGLM3's fixture has rope_ratio 2 and a local fine-tune's _name_or_path, which changes nothing else.
    assert kv["chatglm.rope.freq_base"] == (20000.0 if variant == "chatglm3" else 10000.0)
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert kv["tokenizer.ggml.model"] == "llama" and len(tokens) == 768 == kv["chatglm.vocab_size"]
    assert tokens[700:709] == list(COMMAND_TOKENS)  # right after the 700 SentencePiece pieces
    assert (tokens[701], tokens[703]) == ("[gMASK]", "sop")  # 64790 and 64792 in the release
    assert all(t == gguf.TokenType.CONTROL for t in types[700:709])
    assert tokens[709] == "[PAD709]" and types[709] == gguf.TokenType.UNUSED
    assert kv["tokenizer.ggml.add_bos_token"] is False and kv["tokenizer.ggml.eos_token_id"] == 2
    assert kv["tokenizer.ggml.eot_token_id"] == 706 and kv["tokenizer.ggml.eom_token_id"] == 708
    names = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert "blk.0.attn_qkv.weight" not in names
    with open_checkpoint(TINY / variant) as checkpoint:
        fused = checkpoint.load("transformer.encoder.layers.1.self_attention.query_key_value.bias")
        np.testing.assert_array_equal(names["blk.1.attn_q.bias"].data, fused[:128])
        np.testing.assert_array_equal(names["blk.1.attn_k.bias"].data, fused[128:192])
        np.testing.assert_array_equal(names["blk.1.attn_v.bias"].data, fused[192:])
        gate_up = checkpoint.load("transformer.encoder.layers.0.mlp.dense_h_to_4h.weight")
        # Kept fused, [gate | up], as llama.cpp's chatglm graph reads it.
        np.testing.assert_array_equal(names["blk.0.ffn_up.weight"].data, gate_up)


def test_gptj_is_written_as_phi2_with_zero_biases_and_neox_rotary_rows(converted):
    path = converted("gptj", "f32")
    kv = fields(path)
    assert kv["general.architecture"] == "phi2"
    assert kv["phi2.rope.dimension_count"] == 16 and kv["phi2.attention.head_count"] == 4
    assert kv["phi2.feed_forward_length"] == 512 and kv["phi2.context_length"] == 256
    tokens = kv["tokenizer.ggml.tokens"]
    assert len(tokens) == 640 and tokens[600:604] == ["<|endoftext|>", "### End", "### Instruction:", "### Response:"]
    assert tokens[604] == "[PAD604]" and kv["tokenizer.ggml.pre"] == "gpt-2"
    assert kv["tokenizer.ggml.bos_token_id"] == kv["tokenizer.ggml.eos_token_id"] == 600
    names = {t.name: t for t in gguf.GGUFReader(path).tensors}
    for zero in ("blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias", "blk.1.attn_output.bias"):
        assert not names[zero].data.any(), zero
    with open_checkpoint(TINY / "gptj") as checkpoint:
        np.testing.assert_array_equal(names["output.bias"].data, checkpoint.load("lm_head.bias"))
        q = checkpoint.load("transformer.h.0.attn.q_proj.weight").astype(np.float32)
        v = checkpoint.load("transformer.h.0.attn.v_proj.weight").astype(np.float32)
    head = names["blk.0.attn_q.weight"].data[32:64]  # the second head (head_dim 32, rotary_dim 16)
    np.testing.assert_array_equal(head[:8], q[32:48:2])  # even rotary rows first …
    np.testing.assert_array_equal(head[8:16], q[33:48:2])  # … then the odd ones
    np.testing.assert_array_equal(head[16:], q[48:64])  # the rest of the head as it was
    np.testing.assert_array_equal(names["blk.0.attn_v.weight"].data, v)
    assert not any(name.endswith(("attn.bias", "masked_bias")) for name in names)
