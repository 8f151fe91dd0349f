"""Shared fixtures: the committed tiny checkpoints, their conversions (made once per session) and llama.cpp runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from logits import llama_logits  # noqa: F401 - the conversion tests take it from here

from converters import convert

TINY = Path(__file__).resolve().parent.parent / "fixtures" / "tiny"
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
