"""llama.cpp's logits on a GGUF, for comparing a conversion with transformers' reference logits
(a plain module, shared by the conversion and end-to-end tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# An f32 KV cache, so that the comparison measures the conversion, not llama.cpp's default f16 cache.
KV_CACHE_F32 = 0  # GGML_TYPE_F32


def logits_llama(gguf_path: Path, n_ctx: int, **options):
    """A Llama keeping every position's logits, with an f32 cache, on one thread (the machine is shared)."""
    from llama_cpp import Llama

    return Llama(
        model_path=str(gguf_path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        logits_all=True,
        n_threads=1,
        n_threads_batch=1,
        type_k=KV_CACHE_F32,
        type_v=KV_CACHE_F32,
        verbose=False,
        **options,
    )


def llama_logits(gguf_path: Path, ids: np.ndarray) -> np.ndarray:
    """llama.cpp's logits for every position of `ids`."""
    llm = logits_llama(gguf_path, 64)
    try:
        llm.eval([int(i) for i in ids])
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def decoder_logits(gguf_path: Path, encoder_ids: list[int], decoder_ids: list[int]) -> np.ndarray:
    """An encoder-decoder GGUF's logits at every decoder position, after the engine's encoder step."""
    from tui.llama_encoder import encode

    n_ctx = 2 * max(len(encoder_ids), len(decoder_ids))
    llm = logits_llama(gguf_path, n_ctx, n_ubatch=n_ctx)  # the encoder takes its input in one micro-batch
    try:
        encode(llm, encoder_ids)
        llm.eval(decoder_ids)
        return np.array(llm.scores[: len(decoder_ids)], dtype=np.float32)
    finally:
        llm.close()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| over every position and token, relative to the largest expected logit."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


Q8_0_BLOCK_BYTES = 34  # an f16 scale, then 32 int8 values


def q8_0_blocks_differing(ours: np.ndarray, reference: np.ndarray) -> tuple[int, int]:
    """(blocks differing, blocks) between two q8_0 tensors' bytes, asserting what the vectorised rounding
    allows (converters.ggml.quantize_rows): every scale equal, every value at most one step away."""
    mine, theirs = (np.asarray(data, np.uint8).reshape(-1, Q8_0_BLOCK_BYTES) for data in (ours, reference))
    assert np.array_equal(mine[:, :2], theirs[:, :2]), "a block's scale differs"
    steps = np.abs(mine[:, 2:].view(np.int8).astype(np.int16) - theirs[:, 2:].view(np.int8))
    assert steps.max() <= 1, "a value is more than one step away"
    return int(np.count_nonzero(steps.any(axis=1))), len(mine)
