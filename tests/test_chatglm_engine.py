"""ChatGLM-6B v1 chat through chatglm.cpp (the `glm` extra) behind the engine protocol, on the tiny GLM fixture."""

from __future__ import annotations

import importlib.util
import json
import threading

import numpy as np
import pytest
from support import ROOT, needs_glm_extra
from support import collect_reply as collect

from converters import convert_chatglm
from tui.engine import ContextOverflow, EngineError, FinishReason, SamplingParams
from tui.engine.chatglm import ChatGLMEngine, GLMText, settled
from tui.glm_runtime import load_pipeline
from tui.zoo.templates import render_prompt

GLM = ROOT / "tests" / "fixtures" / "tiny" / "glm6b"
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=12, n_ctx=256)
QUESTION = [{"role": "user", "content": "动物园几点开门？"}]

pytestmark = [pytest.mark.slow, pytest.mark.cpu_to_itself]  # tests/conftest.py: chatglm.cpp's threads spin


@pytest.fixture(scope="module")
def glm_file(tmp_path_factory):
    return convert_chatglm(GLM, tmp_path_factory.mktemp("glm") / "chatglm-6b-tiny-f32.ggml", "f32")


@needs_glm_extra
def test_a_chatglm_cpp_file_gets_the_chatglm_engine(engines, glm_file):
    engine = engines.for_model(str(glm_file))
    assert isinstance(engine, ChatGLMEngine) and "chatglm.cpp" in engine.description


@needs_glm_extra
def test_the_pool_holds_one_model_at_a_time(glm_file, tmp_path):
    from tui.engine.chatglm import ChatGLMPool

    other = convert_chatglm(GLM, tmp_path / "chatglm-6b-tiny-q8_0.ggml", "q8_0")
    pool = ChatGLMPool()
    first = pool.get(glm_file)
    assert pool.get(glm_file) is first
    pool.get(other)
    assert list(pool._loaded) == [other.resolve()]
    assert pool.get(glm_file) is not first


@needs_glm_extra
def test_greedy_reply_is_the_reference_continuation(engines, glm_file):
    """A lone question is sent as it is (ChatGLM-6B's chat()); the reply is the reference's greedy tokens."""
    reference = np.load(GLM / "reference.npz")
    prompt = json.loads((GLM / "reference.json").read_text("utf-8"))["prompt"]
    expected = load_pipeline(glm_file).tokenizer.decode(reference["greedy_ids"].tolist()).strip()
    reply, stats = collect(
        engines.for_model(str(glm_file)).stream([{"role": "user", "content": prompt}], GREEDY, threading.Event())
    )
    assert reply == expected
    assert stats.prompt_tokens == len(reference["prompt_ids"]) and stats.completion_tokens == 12
    assert stats.finish_reason is FinishReason.LENGTH


@needs_glm_extra
def test_turns_follow_chatglm_6bs_rounds_and_are_evaluated_whole(engines, glm_file):
    engine = engines.for_model(str(glm_file))
    reply, first = collect(engine.stream(QUESTION, GREEDY, threading.Event()))
    history = [*QUESTION, {"role": "assistant", "content": reply}, {"role": "user", "content": "谢谢"}]
    _, second = collect(engine.stream(history, GREEDY, threading.Event()))
    text = render_prompt("chatglm", history, "", "")
    assert text.startswith("[Round 0]\n问：动物园几点开门？\n答：") and text.endswith("[Round 1]\n问：谢谢\n答：")
    assert second.prompt_tokens == len(load_pipeline(glm_file).tokenizer.encode(text, 1024))
    assert second.prompt_tokens_evaluated == second.prompt_tokens > first.prompt_tokens


@needs_glm_extra
def test_cancel_stop_strings_and_the_context(engines, glm_file):
    engine = engines.for_model(str(glm_file))
    cancel = threading.Event()
    events = []
    for event in engine.stream(QUESTION, SamplingParams(temperature=0.9, max_tokens=100, n_ctx=256), cancel):
        events.append(event)
        if isinstance(event, str):
            cancel.set()  # stop after the first text
    stats = events[-1]
    assert isinstance(events[0], str) and stats.finish_reason is FinishReason.CANCELLED
    assert stats.completion_tokens < 100
    stopped, stats = collect(
        engine.stream(
            QUESTION, SamplingParams(temperature=0.0, max_tokens=12, n_ctx=256, stop=("<",)), threading.Event()
        )
    )
    assert stats.finish_reason is FinishReason.STOP and "<" not in stopped
    filler = [{"role": "user", "content": "熊猫喜欢吃竹子。" * 6}, {"role": "assistant", "content": "好的。" * 6}] * 6
    _, stats = collect(
        engine.stream([*filler, *QUESTION], SamplingParams(temperature=0.0, max_tokens=8, n_ctx=128), threading.Event())
    )
    assert stats.dropped_messages >= 2 and stats.prompt_tokens + 8 <= 128


@needs_glm_extra
def test_the_oldest_turns_left_out_are_just_enough_and_a_lone_system_message_overflows_cleanly(engines, glm_file):
    engine = engines.for_model(str(glm_file))
    pipeline = load_pipeline(glm_file)
    system = [{"role": "system", "content": "请简短回答。"}]
    turns = [
        {"role": "user", "content": f"第{i}个问题？"} if i % 2 == 0 else {"role": "assistant", "content": "好的。"}
        for i in range(60)
    ]
    params = SamplingParams(temperature=0.0, max_tokens=8, n_ctx=128)
    tokens, dropped = engine._fit_prompt(pipeline, [*system, *turns, *QUESTION], params, 128)
    one_more = render_prompt("chatglm", [*system, *turns[dropped - 1 :], *QUESTION], "", "")
    assert len(tokens) <= 128 - 8 < len(pipeline.tokenizer.encode(one_more, 256))
    # Only a system message, longer than the context: no turn to leave out, so ContextOverflow (it was an
    # UnboundLocalError when the loop over turns never ran).
    with pytest.raises(ContextOverflow) as overflow:
        collect(engine.stream([{"role": "system", "content": "熊猫喜欢吃竹子。" * 40}], params, threading.Event()))
    assert overflow.value.prompt_tokens > 128 - 8 and overflow.value.context_size == 128


@needs_glm_extra
def test_a_long_replys_streamed_text_is_its_whole_decode(glm_file):
    """Each line is decoded on its own (behind the newline before it); the pieces add up to the decode of
    the whole reply, with its rewritten blanks, tabs and punctuation and the space after each newline."""
    tokenizer = load_pipeline(glm_file).tokenizer
    lines = ["你好,世界!", " Hello  world:\tok?", "", "中,文;abc", "熊猫 喜欢吃竹子。", "  end,"]
    reply = tokenizer.encode("\n".join(lines * 20), 100_000)[:-2]  # without the [gMASK] <sop> encode adds
    decoder = GLMText(load_pipeline(glm_file))
    streamed = ""
    for count, token in enumerate(reply, 1):
        streamed += decoder.text(token)
        assert tokenizer.decode(reply[:count]).startswith(streamed)
    streamed += decoder.rest()
    assert streamed == tokenizer.decode(reply).rstrip() and streamed.count("\n") == 6 * 20 - 1
    assert decoder.anchor and len(decoder.line) < 10  # the last line is all it decodes again


def test_settled_text_holds_back_what_the_next_token_may_change():
    assert settled("你好,") == "你好" and settled("好\ufffd") == "好" and settled("ok.") == "ok."


def test_without_the_extra_the_engine_says_what_to_install(engines, glm_file, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "chatglm_cpp" else find_spec(name, *a)
    )
    with pytest.raises(EngineError, match=r"pip install 'zootui\[glm\]'") as error:
        collect(engines.for_model(str(glm_file)).stream(QUESTION, GREEDY, threading.Event()))
    assert "\n" not in str(error.value)
