"""The embeddings-input path: MiniGPT-4's prompt with image vectors, through llama.cpp's embedding batch."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support import collect_reply
from tinyminigpt4 import GRADIENT, NOISE, QUESTION, build_model_pair, reference

from tui.config import EngineSettings
from tui.engine import FinishReason, SamplingParams
from tui.engine.embeddings import EmbeddingsEngine, VisionEncoders, placeholder_ids
from tui.engine.local import LoadedModel, ModelPool

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, n_ctx=256, seed=1)
F32_CACHE = 0  # GGML_TYPE_F32: the comparison measures the embedding path, not llama.cpp's f16 KV cache


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    path = build_model_pair(tmp_path_factory.mktemp("minigpt4"))
    return path, path.with_name(path.stem + ".vision.gguf")


@pytest.fixture
def engine(model_files):
    path, vision_path = model_files
    pool = ModelPool(EngineSettings(n_ctx=256, n_threads=1, state_cache_mb=64))
    encoders = VisionEncoders()
    yield EmbeddingsEngine(path, vision_path, pool, encoders)
    pool.close()
    encoders.close()


def asking(question: str = QUESTION, image=GRADIENT) -> dict[str, str]:
    return {"role": "user", "content": question, "image": str(image)}


def test_prompt_is_cut_and_tokenized_as_minigpt4_does(engine, model_files):
    """Text before <ImageHere> with BOS, the image's 32 positions, then the rest tokenized on its own."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_files[0]), n_ctx=256, verbose=False)
    try:
        prompt = engine._format(LoadedModel(model_files[0], llm, 256), [asking()])
    finally:
        llm.close()
    ref = reference()
    before = len(ref["ids_before"])
    assert prompt.tokens[:before] == ref["ids_before"].tolist()
    assert prompt.tokens[before + 32 :] == ref["ids_after"].tolist()
    (run,) = prompt.embedded
    assert (run.start, run.length) == (before, 32)
    assert prompt.tokens[before : before + 32] == placeholder_ids(run.source.digest, 32)


def test_logits_with_image_vectors_match_transformers(engine, model_files):
    """The tiny LLaMA fed the encoder's vectors through the embedding batch, against LlamaForCausalLM(inputs_embeds=...)."""
    from llama_cpp import Llama

    path = model_files[0]
    llm = Llama(
        model_path=str(path),
        n_ctx=256,
        n_batch=256,
        logits_all=True,
        n_threads=1,
        n_threads_batch=1,
        type_k=F32_CACHE,
        type_v=F32_CACHE,
        verbose=False,
    )
    try:
        loaded = LoadedModel(path, llm, 256)
        prompt = engine._format(loaded, [asking()])
        rest = engine._evaluate_embedded(loaded, prompt, prompt.tokens, threading.Event())
        llm.eval(rest)
        ref = reference()
        start = len(ref["ids_before"])
        actual = np.array(llm.scores[start : llm.n_tokens], dtype=np.float32)
    finally:
        llm.close()
    expected = ref["logits_from_image"]
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max() / np.abs(expected).max()
    assert error < 1e-3, f"relative error {error:.2e}"


def test_reply_streams_and_a_second_turn_reuses_the_image(engine):
    first = [asking()]
    text, stats = collect_reply(engine.stream(first, GREEDY, threading.Event()))
    assert stats.completion_tokens > 0 and stats.finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
    assert stats.prompt_tokens_evaluated == stats.prompt_tokens
    assert engine.encoders.images_encoded == 1
    second = [*first, {"role": "assistant", "content": text}, {"role": "user", "content": "And its colour?"}]
    _, again = collect_reply(engine.stream(second, GREEDY, threading.Event()))
    assert again.prompt_tokens > stats.prompt_tokens + 32
    # Only the reply's and the new question's tokens are evaluated; the image is neither encoded nor evaluated.
    assert again.prompt_tokens_evaluated < again.prompt_tokens - stats.prompt_tokens + 32
    assert engine.encoders.images_encoded == 1


def test_another_image_is_encoded_and_evaluated(engine):
    collect_reply(engine.stream([asking()], GREEDY, threading.Event()))
    _, stats = collect_reply(engine.stream([asking(image=NOISE)], GREEDY, threading.Event()))
    assert engine.encoders.images_encoded == 2
    assert stats.prompt_tokens_evaluated > 32


def test_greedy_replies_with_an_image_are_reproducible(engine, model_files):
    first, _ = collect_reply(engine.stream([asking()], GREEDY, threading.Event()))
    # A different conversation in between, then the first again: state cache or re-evaluation, same reply.
    collect_reply(engine.stream([asking("Something else entirely?", NOISE)], GREEDY, threading.Event()))
    again, _ = collect_reply(engine.stream([asking()], GREEDY, threading.Event()))
    assert first == again


def test_cancel_before_the_image_is_encoded_ends_the_reply(engine):
    cancel = threading.Event()
    cancel.set()
    text, stats = collect_reply(engine.stream([asking()], GREEDY, cancel))
    assert text == "" and stats.finish_reason is FinishReason.CANCELLED and stats.completion_tokens == 0
    assert engine.encoders.images_encoded == 0
    # The model is left in a usable state.
    _, after = collect_reply(engine.stream([asking()], GREEDY, threading.Event()))
    assert after.completion_tokens > 0


def test_text_only_turns_work_on_a_vision_model(engine):
    _, stats = collect_reply(engine.stream([{"role": "user", "content": "Hello?"}], GREEDY, threading.Event()))
    assert stats.completion_tokens > 0 and engine.encoders.images_encoded == 0


def test_placeholder_ids_identify_the_image():
    one, other = bytes(range(32)), bytes([0] * 31 + [1])
    assert all(i < 0 for i in placeholder_ids(one, 32))
    assert len(set(placeholder_ids(one, 32))) == 32
    assert placeholder_ids(one, 32) != placeholder_ids(other, 32)


def test_placeholder_text_typed_by_a_user_stays_text(engine, model_files):
    from llama_cpp import Llama

    llm = Llama(model_path=str(model_files[0]), n_ctx=256, verbose=False)
    try:
        prompt = engine._format(LoadedModel(model_files[0], llm, 256), [{"role": "user", "content": "<ImageHere>?"}])
    finally:
        llm.close()
    assert prompt.embedded == () and all(token >= 0 for token in prompt.tokens)


def test_the_engine_is_chosen_by_what_the_model_is(model_files, fast_settings, isolated_dirs):
    from tui.engine import EngineError, Engines
    from tui.engine.local import LocalEngine

    engines = Engines(fast_settings, isolated_dirs)
    try:
        assert isinstance(engines.for_model(str(model_files[0])), EmbeddingsEngine)
        engines.check_accepts_images(str(model_files[0]))
        text_only = engines.for_model("smollm2-135m-instruct")
        assert isinstance(text_only, LocalEngine) and not isinstance(text_only, EmbeddingsEngine)
        with pytest.raises(EngineError, match="smollm2-135m-instruct is a text-only model and cannot see images"):
            engines.check_accepts_images("smollm2-135m-instruct")
    finally:
        engines.close()
