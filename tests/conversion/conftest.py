"""Shared fixtures: the committed tiny checkpoints, their conversions (made once per session) and llama.cpp runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from converters import convert

TINY = Path(__file__).resolve().parent.parent / "fixtures" / "tiny"
# An f32 KV cache, so that the comparison measures the conversion, not llama.cpp's default f16 cache.
KV_CACHE_F32 = 0  # GGML_TYPE_F32
MODEL_VARIANTS = [
    "llama",
    "llama_gqa",
    "llama_added_tokens",
    "neox_parallel",
    "neox_sequential",
    "bloom",
    "chatglm2",
    "chatglm3",
    "gptj",
]


def reference(variant: str) -> tuple[np.ndarray, np.ndarray, dict]:
    data = np.load(TINY / variant / "reference.npz")
    probes = json.loads((TINY / variant / "reference.json").read_text(encoding="utf-8"))
    return data["ids"], data["logits"], probes


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


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """converted(variant, outtype) -> path of that fixture converted to that type; each made once."""
    cache: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("converted")

    def get(variant: str, outtype: str) -> Path:
        key = (variant, outtype)
        if key not in cache:
            cache[key] = convert(TINY / variant, root / f"{variant}-{outtype}.gguf", outtype=outtype, nthreads=1)
        return cache[key]

    return get


@pytest.fixture
def copy_fixture(tmp_path):
    """copy_fixture(variant) -> a private, writable copy of a tiny checkpoint to damage."""

    def make(variant: str) -> Path:
        target = tmp_path / variant
        shutil.copytree(TINY / variant, target)
        return target

    return make
