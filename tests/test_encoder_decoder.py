"""The encoder-decoder path (T5: ChatYuan-large) on the tiny T5 fixtures, converted as zootui converts them."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from support import ROOT
from support import collect_reply as collect

from converters import convert
from tui.config import with_overrides
from tui.engine import EngineError, Engines, SamplingParams
from tui.engine.encdec import EncoderDecoderEngine
from tui.zoo.templates import prompt_format

TINY = ROOT / "tests" / "fixtures" / "tiny"
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=16, n_ctx=256, seed=1)
QUESTION = [{"role": "user", "content": "动物园几点开门？"}]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chatyuan_gguf(tmp_path_factory):
    """The ChatYuan-shaped fixture (gated GELU, own head) in f32, with ChatYuan's prompt format."""
    chatyuan = prompt_format("chatyuan")
    return convert(
        TINY / "t5_gated",
        tmp_path_factory.mktemp("t5") / "chatyuan-tiny.gguf",
        outtype="f32",
        chat_template=chatyuan.template,
        prompt_format=chatyuan.family,
    )


def test_a_t5_gguf_gets_the_encoder_decoder_engine(engines, chatyuan_gguf):
    engine = engines.for_model(str(chatyuan_gguf))
    assert isinstance(engine, EncoderDecoderEngine) and "encoder-decoder" in engine.description


def test_greedy_reply_is_transformers_greedy_continuation(engines, tmp_path):
    """Encoder input and 16 greedy tokens from the fixture script: the engine streams the same tokens."""
    from llama_cpp import Llama

    reference = np.load(TINY / "t5_relu" / "reference.npz")
    text = json.loads((TINY / "t5_relu" / "reference.json").read_text("utf-8"))["encoder_text"]
    # A template that sends the text as it is, so that the encoder input is the fixture's own.
    path = convert(
        TINY / "t5_relu",
        tmp_path / "t5-plain.gguf",
        outtype="f32",
        chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}",
    )
    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        expected = vocab.detokenize(reference["greedy_ids"].tolist()).decode("utf-8", "replace").lstrip()
    finally:
        vocab.close()
    engine = engines.for_model(str(path))
    reply, stats = collect(engine.stream([{"role": "user", "content": text}], GREEDY, threading.Event()))
    assert reply == expected
    assert stats.completion_tokens == 16 and stats.finish_reason == "length"
    assert stats.encoded_tokens == stats.prompt_tokens == len(reference["encoder_ids"])


def test_every_turn_encodes_the_whole_dialog(engines, chatyuan_gguf):
    engine = engines.for_model(str(chatyuan_gguf))
    reply, first = collect(engine.stream(QUESTION, GREEDY, threading.Event()))
    history = [*QUESTION, {"role": "assistant", "content": reply}, {"role": "user", "content": "谢谢"}]
    _, second = collect(engine.stream(history, GREEDY, threading.Event()))
    assert second.encoded_tokens == second.prompt_tokens_evaluated == second.prompt_tokens > first.prompt_tokens
    assert f"{second.encoded_tokens} prompt tokens encoded" in second.summary()
    again, _ = collect(engine.stream(QUESTION, GREEDY, threading.Event()))
    assert again == reply  # nothing of the other turn's encoding or reply is left over


def test_sampling_is_seeded_and_cancel_stops_soon(engines, chatyuan_gguf):
    engine = engines.for_model(str(chatyuan_gguf))
    warm = SamplingParams(temperature=1.0, max_tokens=24, n_ctx=256, seed=11)
    first, _ = collect(engine.stream(QUESTION, warm, threading.Event()))
    second, _ = collect(engine.stream(QUESTION, warm, threading.Event()))
    assert first == second
    cancel = threading.Event()
    count = 0
    for event in engine.stream(QUESTION, SamplingParams(temperature=0.0, max_tokens=200, n_ctx=256), cancel):
        if isinstance(event, str):
            count += 1
            if count == 3:
                cancel.set()
        else:
            stats = event
    assert stats.finish_reason == "cancelled" and stats.completion_tokens <= 5


def test_stop_strings_end_replies(engines, tmp_path):
    from string import ascii_letters, digits

    path = convert(TINY / "t5_relu", tmp_path / "t5.gguf", outtype="f32", stop_strings=list(ascii_letters + digits))
    params = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=64, n_ctx=256)
    text, stats = collect(engines.for_model(str(path)).stream(QUESTION, params, threading.Event()))
    assert stats.finish_reason == "stop" and stats.completion_tokens < 64
    assert not set(text) & set(ascii_letters + digits)


def test_the_prompt_format_recorded_in_the_gguf_rewrites_replies(engines, chatyuan_gguf):
    engine = engines.for_model(str(chatyuan_gguf))
    collect(engine.stream(QUESTION, GREEDY, threading.Event()))
    [model] = engines.pool._models.values()
    rewriter = model.reply_rewriter()
    assert rewriter.feed("一\\") + rewriter.feed("n二%2") + rewriter.feed("0三") + rewriter.flush() == "一\n二  三"


def test_a_dialog_longer_than_the_context_drops_old_turns_and_never_overflows_the_encoder(
    fast_settings, isolated_dirs, chatyuan_gguf
):
    engines = Engines(with_overrides(fast_settings, "engine", n_ctx=128), isolated_dirs)
    try:
        engine = engines.for_model(str(chatyuan_gguf))
        turn = "熊猫喜欢吃竹子，它每天要吃很多很多竹子。"
        history = []
        for _ in range(6):
            history += [{"role": "user", "content": turn}, {"role": "assistant", "content": turn}]
        params = SamplingParams(temperature=0.0, max_tokens=8, n_ctx=128)
        _, stats = collect(engine.stream([*history, *QUESTION], params, threading.Event()))
        assert stats.dropped_messages >= 2 and stats.encoded_tokens <= 128
        with pytest.raises(EngineError, match="context"):
            collect(engine.stream([{"role": "user", "content": turn * 20}], params, threading.Event()))
    finally:
        engines.close()
