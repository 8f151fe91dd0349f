"""llama.cpp's logits on a GGUF, for comparing a conversion with transformers' reference logits
(a plain module, shared by the conversion and end-to-end tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# An f32 KV cache, so that the comparison measures the conversion, not llama.cpp's default f16 cache.
KV_CACHE_F32 = 0  # GGML_TYPE_F32


def llama_logits(gguf_path: Path, ids: np.ndarray) -> np.ndarray:
    """llama.cpp's logits for every position of `ids` (one thread: the machine is shared)."""
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(gguf_path),
        n_ctx=64,
        n_batch=64,
        logits_all=True,
        n_threads=1,
        n_threads_batch=1,
        type_k=KV_CACHE_F32,
        type_v=KV_CACHE_F32,
        verbose=False,
    )
    try:
        llm.eval([int(i) for i in ids])
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| over every position and token, relative to the largest expected logit."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())
