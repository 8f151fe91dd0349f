"""llama.cpp's logits on each converted fixture agree with transformers' logits on the source checkpoint.

Error is max |llama.cpp - transformers| / max |transformers| over every position and token. The
fixtures are random models, which amplify small weight errors far more than trained ones, so the
quantized bounds are loose; q8_0 is compared separately with llama.cpp's own quantizer, block by block.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from conftest import MODEL_VARIANTS, reference
from logits import llama_logits, q8_0_blocks_differing, relative_error

from converters import quantize

# outtype -> (max relative error, min share of positions with the same top token), and why.
TOLERANCE = {
    # Same weights (fp16/bf16 sources widen exactly) and f32 arithmetic: only summation order differs
    # (measured ~1e-6). GELU models see more, see GELU_F32_TOLERANCE.
    "f32": (1e-4, 1.0),
    # Exact weights, but llama.cpp rounds activations to f16 for f16 matrix products (measured <= 1.1e-3).
    "f16": (5e-3, 0.95),
    # 8-bit weight blocks and 8-bit activations (measured 1e-2 .. 5e-2). Top tokens agree at 0.89 .. 1.0 of
    # 37-43 positions: on these random models a near-tie flips with the rounding of a few blocks (the
    # vectorised q8_0 rounding gives chatglm3 0.895 where llama.cpp's quantizer gives it 0.921).
    "q8_0": (8e-2, 0.85),
    # 4-6 bit k-quant mix; rows too short for k-quant blocks fall back to q5_0/q8_0 (measured 0.04 .. 0.27).
    "q4_k_m": (0.4, 0.5),
}
# llama.cpp evaluates GELU through an f16 lookup table: ~4e-4 on these models; simulating that table
# in transformers brings the difference down to ~1.5e-4, the remainder being summation order.
GELU_F32_TOLERANCE = 1e-3
GELU_VARIANTS = ("neox_parallel", "neox_sequential", "bloom", "gptj")
# ChatGLM2/3 and GPT-J (written as phi2) count as supported only within these bounds (issue 7);
# measured: f32 1.3e-6 / 9.3e-7 / 4.0e-4, q8_0 3.6e-2 / 4.7e-2 / 2.3e-2.
Q8_0_TOLERANCE = {"chatglm2": 6e-2, "chatglm3": 6e-2, "gptj": 6e-2}


@pytest.mark.parametrize("outtype", list(TOLERANCE))
@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_logits_match_transformers(converted, variant, outtype):
    ids, expected, _ = reference(variant)
    actual = llama_logits(converted(variant, outtype), ids)
    max_error, min_top_agreement = TOLERANCE[outtype]
    if outtype == "f32" and variant in GELU_VARIANTS:
        max_error = GELU_F32_TOLERANCE
    if outtype == "q8_0":
        max_error = Q8_0_TOLERANCE.get(variant, max_error)
    error = relative_error(actual, expected)
    top_agreement = (actual.argmax(-1) == expected.argmax(-1)).mean()
    assert error < max_error, f"{variant} {outtype}: relative error {error:.2e}"
    assert top_agreement >= min_top_agreement, f"{variant} {outtype}: top token agrees at {top_agreement:.0%}"


@pytest.mark.parametrize("variant", ["llama", "bloom", "chatglm2", "gptj"])
def test_direct_q8_0_is_llama_cpp_quantizer_up_to_rounding(converted, tmp_path, variant):
    """Every block has the scale llama.cpp's quantizer writes, and its values at most one step away from
    that quantizer's, in a few blocks only (the vectorised rounding; see converters.ggml.quantize_rows)."""
    ours = {t.name: t for t in gguf.GGUFReader(converted(variant, "q8_0")).tensors}
    theirs = {
        t.name: t
        for t in gguf.GGUFReader(
            quantize(converted(variant, "f32"), tmp_path / "q8_0.gguf", "q8_0", nthreads=1)
        ).tensors
    }
    assert sorted(ours) == sorted(theirs)
    blocks = differing = 0
    for name, tensor in ours.items():
        assert tensor.tensor_type == theirs[name].tensor_type, name
        if tensor.tensor_type != gguf.GGMLQuantizationType.Q8_0:
            assert np.array_equal(tensor.data, theirs[name].data), name
            continue
        tensor_differing, tensor_blocks = q8_0_blocks_differing(tensor.data, theirs[name].data)
        differing += tensor_differing
        blocks += tensor_blocks
    assert differing <= 0.01 * blocks, f"{differing} of {blocks} blocks differ"


@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0])
def test_rows_that_do_not_split_into_blocks_are_refused_before_any_write(qtype):
    from converters.ggml import quantize_rows

    with pytest.raises(ValueError, match="do not split into"):
        quantize_rows(np.ones((2, 48), np.float32), qtype)
