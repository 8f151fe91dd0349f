"""What re-encoding the dialog costs an encoder-decoder model (ChatYuan-large, T5) every turn.

    .venv/bin/python tests/bench/bench_encoder_decoder.py [--threads 2] [--size chatyuan|small] [--reply 64]

A random checkpoint in ChatYuan-large's shape (d_model 1024, d_ff 2816, 16 heads, 24 + 24 blocks, gated
GELU, own head, vocabulary 32128; --size small for a quick look) is converted to q8_0 with zootui's
converter and chatted with through zootui's encoder-decoder engine, greedily, with dialogs whose
prompts are about 1k and 2k tokens. For each it prints the encoder's time over the whole dialog (what
every turn pays again), the time to the first reply token and the reply's decode speed, and ratios
against references measured in the same run on the same model: the encode time of the new turn alone
(what a decoder-only model with its history cached evaluates), the time to decode the reply, and the
decode speed after that short prompt (llama.cpp's T5 decoder projects the encoder output to the
cross-attention keys and values again for every token, so a long dialog slows every reply token too).
Not part of the test run: timings on shared machines are noisy, so read the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from converters import convert  # noqa: E402
from converters.recover import OutputTensor, SafetensorsWriter  # noqa: E402
from tui.config import Settings, with_overrides  # noqa: E402
from tui.engine import Engines, ReplyStats, SamplingParams  # noqa: E402
from tui.llama_encoder import encode, encoder_input  # noqa: E402
from tui.zoo.templates import prompt_format  # noqa: E402

TOKENIZER = ROOT / "tests" / "fixtures" / "tiny" / "t5_gated"
SHAPES = {
    # ChatYuan-large v1/v2's config.json
    "chatyuan": {"d_model": 1024, "d_ff": 2816, "d_kv": 64, "num_heads": 16, "num_layers": 24, "vocab_size": 32128},
    "small": {"d_model": 256, "d_ff": 704, "d_kv": 32, "num_heads": 8, "num_layers": 4, "vocab_size": 32128},
}
HISTORY_TOKENS = (1024, 2048)
TURN = "熊猫喜欢吃竹子，它每天要吃很多很多竹子。大象慢慢地走到河边，那里的水又凉又清。"
QUESTION = "动物园早上九点开门吗？"


def write_checkpoint(directory: Path, shape: dict[str, int]) -> None:
    """Random float16 weights with T5's names and ChatYuan's config (gated GELU, untied head)."""
    d, ff, inner, n_layer = shape["d_model"], shape["d_ff"], shape["d_kv"] * shape["num_heads"], shape["num_layers"]
    tensors: dict[str, tuple[int, ...]] = {"shared.weight": (shape["vocab_size"], d)}
    tensors["lm_head.weight"] = (shape["vocab_size"], d)
    for stack in ("encoder", "decoder"):
        tensors[f"{stack}.final_layer_norm.weight"] = (d,)
        for b in range(n_layer):
            attention = ["SelfAttention"] + (["EncDecAttention"] if stack == "decoder" else [])
            for i, kind in enumerate(attention):
                prefix = f"{stack}.block.{b}.layer.{i}"
                tensors[f"{prefix}.layer_norm.weight"] = (d,)
                for part in "qkv":
                    tensors[f"{prefix}.{kind}.{part}.weight"] = (inner, d)
                tensors[f"{prefix}.{kind}.o.weight"] = (d, inner)
            if b == 0:
                tensors[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
                    32,
                    shape["num_heads"],
                )
            ffn = f"{stack}.block.{b}.layer.{len(attention)}"
            tensors[f"{ffn}.layer_norm.weight"] = (d,)
            tensors[f"{ffn}.DenseReluDense.wi_0.weight"] = (ff, d)
            tensors[f"{ffn}.DenseReluDense.wi_1.weight"] = (ff, d)
            tensors[f"{ffn}.DenseReluDense.wo.weight"] = (d, ff)
    rng = np.random.default_rng(0)
    plan = [OutputTensor(name, shape_, "F16") for name, shape_ in tensors.items()]
    with SafetensorsWriter(directory, plan) as writer:
        for name, shape_ in tensors.items():
            scale = (
                1.0 if len(shape_) == 1 or name.endswith(("shared.weight", "lm_head.weight")) else shape_[-1] ** -0.5
            )
            values = rng.standard_normal(shape_, dtype=np.float32) * scale
            writer.write(name, (np.abs(values) + 0.5 if len(shape_) == 1 else values).astype(np.float16))
        writer.finish()
    config = {
        "architectures": ["T5ForConditionalGeneration"],
        **{k: v for k, v in shape.items()},
        "num_decoder_layers": shape["num_layers"],
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6,
        "decoder_start_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "n_positions": 512,
    }
    (directory / "config.json").write_text(json.dumps(config))
    for name in ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TOKENIZER / name, directory / name)


def dialog_of(tokens: int, count) -> list[dict[str, str]]:
    """A dialog whose prompt is about ``tokens`` long (``count`` gives a dialog's prompt length)."""
    history: list[dict[str, str]] = []
    while True:
        candidate = [*history, {"role": "user", "content": TURN}, {"role": "assistant", "content": TURN}]
        if count([*candidate, {"role": "user", "content": QUESTION}]) > tokens:
            return [*history, {"role": "user", "content": QUESTION}]
        history = candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", choices=sorted(SHAPES), default="chatyuan")
    parser.add_argument("--reply", type=int, default=64, help="reply tokens decoded per turn")
    args = parser.parse_args()
    shape = SHAPES[args.size]
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(scratch) / "checkpoint"
        checkpoint.mkdir()
        started = time.perf_counter()
        write_checkpoint(checkpoint, shape)
        chatyuan = prompt_format("chatyuan")
        gguf_path = convert(
            checkpoint,
            Path(scratch) / "chatyuan-shaped-q8_0.gguf",
            outtype="q8_0",
            chat_template=chatyuan.template,
            prompt_format=chatyuan.family,
        )
        shutil.rmtree(checkpoint)
        print(
            f"{args.size} T5 ({gguf_path.stat().st_size / 2**20:.0f} MiB q8_0) ready in {time.perf_counter() - started:.0f} s"
        )
        n_ctx = max(HISTORY_TOKENS) + 256
        settings = with_overrides(Settings(), "engine", n_ctx=n_ctx, n_threads=args.threads)
        engines = Engines(settings, Path(scratch) / "data")
        engine = engines.for_model(str(gguf_path))
        params = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=args.reply, n_ctx=n_ctx)
        # Warm up: the first turn also maps the weights.
        list(engine.stream([{"role": "user", "content": QUESTION}], params, threading.Event()))
        model = next(iter(engines.pool._models.values()))
        llm = model.llm

        def count(messages) -> int:
            return len(encoder_input(llm, engine._format(model, messages).tokens))

        def encode_seconds(messages) -> float:
            tokens = encoder_input(llm, engine._format(model, messages).tokens)
            with model.lock:
                start = time.perf_counter()
                encode(llm, tokens)
                return time.perf_counter() - start

        new_turn = [{"role": "user", "content": TURN + QUESTION}]
        reference_encode = min(encode_seconds(new_turn) for _ in range(3))
        short = next(e for e in engine.stream(new_turn, params, threading.Event()) if isinstance(e, ReplyStats))
        print(
            f"reference: the new turn alone ({count(new_turn)} tokens) encodes in {reference_encode * 1000:.0f} ms;"
            f" its reply decodes at {short.tokens_per_second:.1f} tok/s"
        )
        print()
        print(
            "| history | encoded tokens | encode | first token | decode tok/s | reply decode"
            " | encode / new turn | encode / reply decode | decode speed / short prompt's |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for target in HISTORY_TOKENS:
            messages = dialog_of(target, count)
            seconds = min(encode_seconds(messages) for _ in range(3))
            stats = next(e for e in engine.stream(messages, params, threading.Event()) if isinstance(e, ReplyStats))
            reply_seconds = stats.decode_seconds * stats.completion_tokens / max(stats.completion_tokens - 1, 1)
            print(
                f"| {target} | {stats.encoded_tokens} | {seconds:.2f} s | {stats.seconds_to_first_token:.2f} s"
                f" | {stats.tokens_per_second:.1f} | {reply_seconds:.2f} s ({stats.completion_tokens} tokens)"
                f" | {seconds / reference_encode:.1f}x | {seconds / reply_seconds:.2f}x"
                f" | {stats.tokens_per_second / short.tokens_per_second:.2f}x |"
            )
        engines.close()


if __name__ == "__main__":
    main()
