"""ChatGLM-6B (GLM v1) to chatglm.cpp's model file, run by chatglm.cpp (the `glm` extra).

The tiny fixtures are ChatGLM-6B checkpoints in THUDM's layout (ice_text.model, two pickle shards with the
tied head stored twice and the rotary caches, transformers-4.x config) and its -int8/-int4 releases; the
reference outputs come from a float64 forward written from THUDM's published modeling_chatglm.py
(tests/fixtures/make_tiny.py, glm_reference_forward). chatglm.cpp's Python binding exposes no logits, so
the comparison is of tokens: its greedy continuation of the prompt, and its choice after the prompt and
after each token of a fixed answer (teacher forcing, one token at a time as chatglm.cpp generates).
"""

from __future__ import annotations

import json
import struct

import gguf
import numpy as np
import pytest
from conftest import TINY
from logits import q8_0_blocks_differing

from converters import ConversionError, convert_chatglm, open_checkpoint
from converters.chatglm_cpp import ALIGNMENT, CONFIG_VERSION, MODEL_TYPE_CHATGLM
from converters.chatglm_cpp_file import CHATGLM_CPP_MAGIC as MAGIC
from tui.glm_runtime import Sampling, load_pipeline, next_tokens

# chatglm.cpp runs the converted files: without the glm extra these tests have nothing to run them on.
chatglm_cpp = pytest.importorskip(
    "chatglm_cpp", reason="needs chatglm-cpp, the glm extra: pip install -e '.[test,glm]'"
)

pytestmark = pytest.mark.cpu_to_itself  # tests/conftest.py: chatglm.cpp's threads spin

GLM_VARIANTS = ["glm6b", "glm6b_int8", "glm6b_int4"]
# Share of teacher-forced choices equal to the reference's, by type (measured on glm6b: f32, f16 and q8_0
# 25 of 25, q4_0 22 of 25; the smallest top-1 margin of the reference is 0.17 for logits ~3.5 apart).
AGREEMENT = {"f32": 1.0, "f16": 1.0, "q8_0": 1.0, "q4_0": 0.75}


@pytest.fixture(scope="module")
def chatglm_file(tmp_path_factory):
    cache = {}
    root = tmp_path_factory.mktemp("chatglm")

    def get(variant: str, outtype: str):
        if (variant, outtype) not in cache:
            cache[variant, outtype] = convert_chatglm(TINY / variant, root / f"{variant}-{outtype}.ggml", outtype)
        return cache[variant, outtype]

    return get


def reference(variant: str):
    data = np.load(TINY / variant / "reference.npz")
    meta = json.loads((TINY / variant / "reference.json").read_text("utf-8"))
    return meta, data["prompt_ids"].tolist(), data["greedy_ids"].tolist(), data["answer_ids"].tolist(), data


def greedy(pipeline, prompt: list[int], count: int) -> list[int]:
    tokens = next_tokens(pipeline, prompt, Sampling())
    return [next(tokens) for _ in range(count)]


def forced_choices(pipeline, prompt: list[int], answer: list[int]) -> list[int]:
    """chatglm.cpp's greedy choice after the prompt and after each answer token, fed one at a time."""
    config = chatglm_cpp._C.GenerationConfig(max_length=256, max_context_length=256, do_sample=False)
    ids, n_past, choices = list(prompt), 0, []
    for token in [*answer, None]:
        choices.append(pipeline.model.generate_next_token(ids, None, config, n_past, len(prompt)))
        n_past = len(ids)
        if token is not None:
            ids.append(token)
    return choices


@pytest.mark.parametrize("variant", GLM_VARIANTS)
def test_greedy_continuation_equals_the_reference_token_for_token(chatglm_file, variant):
    meta, prompt, expected, _, _ = reference(variant)
    pipeline = load_pipeline(chatglm_file(variant, "f32"))
    assert pipeline.tokenizer.encode(meta["prompt"], 256) == prompt  # chatglm.cpp tokenizes as THUDM's code
    assert greedy(pipeline, prompt, len(expected)) == expected


@pytest.mark.parametrize("outtype", list(AGREEMENT))
def test_choices_after_each_answer_token_agree_with_the_reference(chatglm_file, outtype):
    _, prompt, _, answer, data = reference("glm6b")
    choices = forced_choices(load_pipeline(chatglm_file("glm6b", outtype)), prompt, answer)
    agreement = float(np.mean(np.array(choices) == data["forced_logits"].argmax(-1)))
    assert agreement >= AGREEMENT[outtype], f"{outtype}: {agreement:.0%} of {len(choices)} choices agree"


@pytest.mark.parametrize("variant", ["glm6b_int8", "glm6b_int4"])
def test_int8_and_int4_releases_are_widened_as_published(chatglm_file, variant):
    _, prompt, _, answer, data = reference(variant)
    choices = forced_choices(load_pipeline(chatglm_file(variant, "f32")), prompt, answer)
    assert choices == data["forced_logits"].argmax(-1).tolist()


def test_the_file_is_chatglm_cpps_layout(chatglm_file):
    data = chatglm_file("glm6b", "q8_0").read_bytes()
    config = json.loads((TINY / "glm6b" / "config.json").read_text())
    assert data[:4] == MAGIC and struct.unpack_from("<ii", data, 4) == (MODEL_TYPE_CHATGLM, CONFIG_VERSION)
    record = struct.unpack_from("<iiiiiiififiii", data, 12)
    assert record[0] == gguf.GGMLQuantizationType.Q8_0
    assert record[1:7] == (config["vocab_size"], 32, 2, 2, 28, 128)
    assert record[7] == pytest.approx(1e-5) and record[9] == 10000.0
    assert record[10:] == (config["max_sequence_length"], config["eos_token_id"], config["pad_token_id"])
    proto_size = struct.unpack_from("<i", data, 12 + 52)[0]
    assert data[12 + 56 : 12 + 56 + proto_size] == (TINY / "glm6b" / "ice_text.model").read_bytes()
    offset = 12 + 56 + proto_size
    name_size = struct.unpack_from("<i", data, offset)[0]
    assert data[offset + 4 : offset + 4 + name_size] == b"transformer.word_embeddings.weight"
    dims = struct.unpack_from("<iiii", data, offset + 4 + name_size)
    assert dims == (2, config["vocab_size"], 32, gguf.GGMLQuantizationType.Q8_0)
    start = offset + 4 + name_size + 16
    assert (start + -start % ALIGNMENT) % ALIGNMENT == 0


@pytest.mark.parametrize("outtype", ["q8_0", "q4_0"])
def test_quantized_blocks_are_ggmls_reference_layout(chatglm_file, outtype):
    """chatglm.cpp's vendored ggml and the pinned llama.cpp's have the same q4_0/q4_1/q5_0/q5_1/q8_0 block
    structs and dequantizers (read side by side); the file's blocks are those of gguf-py's reference
    quantizer, which implements that layout, for the checkpoint's own embedding (q8_0's up to the
    vectorised rounding: the same scales, a value at most a step away in a few blocks)."""
    qtype = gguf.GGMLQuantizationType[outtype.upper()]
    with open_checkpoint(TINY / "glm6b") as checkpoint:
        embedding = checkpoint.load("transformer.word_embeddings.weight").astype(np.float32)
    expected = gguf.quants.quantize(embedding, qtype)
    data = chatglm_file("glm6b", outtype).read_bytes()
    proto_size = struct.unpack_from("<i", data, 12 + 52)[0]
    offset = 12 + 56 + proto_size
    start = offset + 4 + struct.unpack_from("<i", data, offset)[0] + 16
    start += -start % ALIGNMENT
    written = np.frombuffer(data, np.uint8, expected.nbytes, start)
    if qtype != gguf.GGMLQuantizationType.Q8_0:
        assert np.array_equal(written, expected.reshape(-1))
        return
    differing, blocks = q8_0_blocks_differing(written, expected)
    assert differing <= 0.01 * blocks


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_layers": 2}, "scales the residuals for 28 blocks"),
        ({"position_encoding_2d": False}, "no ChatGLM-6B"),
        ({"inner_hidden_size": 100}, "4 × hidden_size"),
        ({"eos_token_id": 0}, "<eop> is"),
    ],
)
def test_configs_chatglm_cpp_would_run_wrong_are_refused(copy_fixture, tmp_path, change, message):
    directory = copy_fixture("glm6b")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConversionError, match=message):
        convert_chatglm(directory, tmp_path / "out.ggml", "f16")
    assert not list(tmp_path.glob("*.ggml*"))


def test_a_missing_tokenizer_or_an_unknown_type_is_one_line(copy_fixture, tmp_path):
    directory = copy_fixture("glm6b")
    with pytest.raises(ConversionError, match="choose one of f32, f16, q8_0"):
        convert_chatglm(directory, tmp_path / "out.ggml", "q4_k_m")
    (directory / "ice_text.model").unlink()
    with pytest.raises(ConversionError, match="has no ice_text.model"):
        convert_chatglm(directory, tmp_path / "out.ggml", "q4_0")


@pytest.mark.parametrize("damage", [np.nan, np.inf])
def test_a_weight_that_is_nan_or_inf_is_refused_in_one_line(copy_fixture, tmp_path, damage):
    """A damaged download can hold NaN or inf; chatglm.cpp shows no logits for the smoke test to catch them."""
    directory = copy_fixture("glm6b")
    name = "transformer.layers.0.attention.dense.weight"
    with open_checkpoint(directory) as checkpoint:
        stored = np.asarray(checkpoint.load_raw(name))
    shard = directory / json.loads((directory / "pytorch_model.bin.index.json").read_text())["weight_map"][name]
    data = shard.read_bytes()
    at = data.index(stored.tobytes())  # torch stores each tensor's bytes as they are
    damaged = data[:at] + np.array([damage], stored.dtype).tobytes() + data[at + stored.itemsize :]
    shard.write_bytes(damaged)
    with pytest.raises(ConversionError) as refused:
        convert_chatglm(directory, tmp_path / "out.ggml", "q4_0")
    assert str(refused.value) == f"{name} holds NaN or inf; the checkpoint is damaged: download it again"
    assert not list(tmp_path.glob("*.ggml*"))


def test_the_command_line_writes_chatglm_cpps_file_for_chatglm_6b(tmp_path, monkeypatch):
    from converters.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([str(TINY / "glm6b")]) == 0
    [written] = tmp_path.iterdir()
    assert written.name == "glm6b-q4_0.ggml"  # the default type, with the name the library finds
    assert written.read_bytes()[:4] == MAGIC
    assert struct.unpack_from("<i", written.read_bytes(), 12)[0] == gguf.GGMLQuantizationType.Q4_0


def test_the_gguf_converter_points_chatglm_6b_to_chatglm_cpp(tmp_path):
    from converters import convert

    with pytest.raises(ConversionError, match="ChatGLM-6B v1, which llama.cpp cannot run; convert_chatglm"):
        convert(TINY / "glm6b", tmp_path / "out.gguf", outtype="f16")
