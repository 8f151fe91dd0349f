"""llama.cpp's tokenizer, reading each converted GGUF, gives exactly the source tokenizer's ids."""

from __future__ import annotations

import pytest
from conftest import MODEL_VARIANTS, reference


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_llama_cpp_tokenizes_like_the_source_tokenizer(converted, variant):
    from llama_cpp import Llama

    _, _, probes = reference(variant)
    llm = Llama(model_path=str(converted(variant, "f16")), vocab_only=True, verbose=False)
    try:
        mismatches = []
        for probe in probes["probes"]:
            ids = llm.tokenize(probe["text"].encode("utf-8"), add_bos=probes["add_bos"], special=False)
            if ids != probe["ids"]:
                mismatches.append((probe["text"], ids, probe["ids"]))
        assert not mismatches
    finally:
        llm.close()
