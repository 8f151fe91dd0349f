"""T5 (ChatYuan-large's architecture) to GGUF `t5`: llama.cpp's decoder logits for an encoder input and
a decoder prefix agree with transformers', and its Unigram tokenizer gives the T5 tokenizer's ids.

The fixtures cover T5 v1.1 (gated GELU) and v1.0 (ReLU), each with its own head and with a tied one
(which Hugging Face scales by d_model**-0.5), and a model with more encoder than decoder blocks.
Error is max |llama.cpp - transformers| / max |transformers| over every decoder position and token.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
from conftest import TINY
from logits import decoder_logits, relative_error

from converters import ConversionError, convert
from tui.zoo.gguf_header import read_header

T5_VARIANTS = ["t5_gated", "t5_gated_tied", "t5_relu_tied", "t5_relu"]
# f32: llama.cpp's GELU goes through an f16 table (measured up to 3e-4; ReLU models ~4e-7).
# q8_0: 8-bit weight blocks and activations (measured 1.2e-2 .. 2.9e-2).
TOLERANCE = {"f32": 1e-3, "q8_0": 6e-2}
# Share of decoder positions whose top token is transformers': a random model's near-ties flip with the
# rounding of a few q8_0 blocks (t5_relu: one position in q8_0).
TOP_AGREEMENT = {"f32": 1.0, "q8_0": 0.9}


def reference(variant: str):
    data = np.load(TINY / variant / "reference.npz")
    return data["encoder_ids"].tolist(), data["decoder_ids"].tolist(), data["logits"]


@pytest.mark.parametrize("outtype", list(TOLERANCE))
@pytest.mark.parametrize("variant", T5_VARIANTS)
def test_decoder_logits_match_transformers(converted, variant, outtype):
    encoder_ids, decoder_ids, expected = reference(variant)
    actual = decoder_logits(converted(variant, outtype), encoder_ids, decoder_ids)
    error = relative_error(actual, expected)
    assert error < TOLERANCE[outtype], f"{variant} {outtype}: relative error {error:.2e}"
    agreement = (actual.argmax(-1) == expected.argmax(-1)).mean()
    assert agreement >= TOP_AGREEMENT[outtype], f"{variant} {outtype}: top token agrees at {agreement:.0%}"


def test_the_encoder_output_matters(converted):
    """The same decoder prefix after another encoder input gives other logits (cross-attention is live):
    by far more than the conversion's own error (a random model's cross-attention moves them ~5%)."""
    encoder_ids, decoder_ids, expected = reference("t5_gated")
    other = decoder_logits(converted("t5_gated", "f32"), encoder_ids[::-1], decoder_ids)
    assert relative_error(other, expected) > 10 * TOLERANCE["f32"]


@pytest.mark.parametrize("variant", ["t5_gated", "t5_relu_tied"])
def test_llama_cpp_tokenizes_like_the_t5_tokenizer(converted, variant):
    """Chinese with full-width punctuation and digits, English, emoji: the charsmap's NFKC folding included."""
    from llama_cpp import Llama

    probes = json.loads((TINY / variant / "reference.json").read_text(encoding="utf-8"))["probes"]
    llm = Llama(model_path=str(converted(variant, "f32")), vocab_only=True, verbose=False)
    try:
        # add_bos asks for the vocabulary's own specials: for T5, the EOS every input ends with.
        mismatches = [
            (p["text"], ids, p["ids"])
            for p in probes
            if (ids := llm.tokenize(p["text"].encode("utf-8"), add_bos=True, special=False)) != p["ids"]
        ]
        assert not mismatches
    finally:
        llm.close()


def test_t5_keys_and_unigram_vocab(converted):
    # zootui's header reader (checked against the gguf package's in tests/zoo/test_gguf_header.py): the gguf
    # package reads the charsmap byte by byte, 2 s. The charsmap itself is checked by the tokenization test above:
    # without it llama.cpp does not fold full-width text.
    kv = read_header(converted("t5_relu", "f32"), string_arrays=["tokenizer.ggml.tokens"]).metadata
    assert kv["general.architecture"] == "t5"
    assert (kv["t5.block_count"], kv["t5.decoder_block_count"]) == (3, 2)
    assert kv["t5.attention.relative_buckets_count"] == 32 and kv["t5.decoder_start_token_id"] == 0
    assert kv["t5.attention.key_length"] == 16 and kv["t5.context_length"] == 512
    assert kv["tokenizer.ggml.model"] == "t5" and "tokenizer.ggml.bos_token_id" not in kv
    ids = (kv["tokenizer.ggml.eos_token_id"], kv["tokenizer.ggml.unknown_token_id"])
    assert ids + (kv["tokenizer.ggml.padding_token_id"],) == (1, 2, 0)
    assert kv["tokenizer.ggml.add_bos_token"] is False and kv["tokenizer.ggml.add_eos_token"] is True
    assert kv["tokenizer.ggml.add_space_prefix"] is True and kv["tokenizer.ggml.remove_extra_whitespaces"] is True
    tokens = kv["tokenizer.ggml.tokens"]
    assert len(tokens) == kv["t5.vocab_size"] and tokens[-1].startswith("[PAD")


@pytest.mark.slow  # over 2 CPU-seconds: gguf.GGUFReader reads the charsmap byte by byte
def test_a_tied_head_is_the_embedding_scaled(converted):
    from converters import open_checkpoint

    tensors = {t.name: t for t in gguf.GGUFReader(converted("t5_relu_tied", "f32")).tensors}
    with open_checkpoint(TINY / "t5_relu_tied") as checkpoint:
        shared = checkpoint.load("shared.weight").astype(np.float32)
    np.testing.assert_array_equal(tensors["token_embd.weight"].data, shared)
    np.testing.assert_allclose(tensors["output.weight"].data, shared * 64**-0.5, rtol=1e-6)


def test_the_pickled_copies_of_the_embedding_become_one_tensor(converted):
    # zootui's header reader (checked against the gguf package's): gguf.GGUFReader takes 2 s on the vocabulary.
    names = [t.name for t in read_header(converted("t5_gated", "f32")).tensors]
    assert names.count("token_embd.weight") == 1 and "output.weight" in names
    assert "enc.blk.0.attn_rel_b.weight" in names and "enc.blk.1.attn_rel_b.weight" not in names
    assert "enc.blk.1.ffn_gate.weight" in names and "dec.blk.1.cross_attn_o.weight" in names


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_decoder_layers": 4}, "more decoder than encoder blocks"),
        ({"relative_attention_max_distance": 256}, "relative_attention_max_distance is 256"),
        ({"feed_forward_proj": "gated-silu"}, "feed_forward_proj is 'gated-silu'"),
    ],
)
def test_configs_llama_cpp_cannot_run_are_refused(copy_fixture, tmp_path, change, message):
    directory = copy_fixture("t5_relu")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConversionError, match=message):
        convert(directory, tmp_path / "out.gguf", outtype="f32")
