import json
import threading

import pytest
from support import collect_reply

from tui.config import with_overrides
from tui.engine import EngineError, Engines, Progress, ReplyStats, SamplingParams, StopScanner


def test_stop_scanner_never_emits_part_of_a_stop_string():
    scanner = StopScanner(["### Human:", "</s>"])
    out = [scanner.feed(piece) for piece in ["Hello ", "there #", "## Hu", "man: ignored"]]
    assert "".join(out) == "Hello there "
    assert scanner.stopped


def test_stop_scanner_releases_held_text_that_was_not_a_stop():
    scanner = StopScanner(["</s>"])
    assert scanner.feed("a <") == "a "
    assert scanner.feed("b") == "<b"
    assert scanner.feed("</") == ""
    assert scanner.flush() == "</"
    assert not scanner.stopped


GREEDY = SamplingParams(temperature=0.0, max_tokens=16, n_ctx=1024, seed=1)


@pytest.mark.slow  # loads the real default model
def test_local_reply_streams_text_and_figures(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    text, stats = collect_reply(
        engine.stream([{"role": "user", "content": "What is the capital of France?"}], GREEDY, threading.Event())
    )
    assert "Paris" in text
    assert stats.completion_tokens > 0 and stats.tokens_per_second > 0
    assert stats.prompt_tokens_evaluated == stats.prompt_tokens
    assert stats.context_size == 1024 and stats.context_used == stats.prompt_tokens + stats.completion_tokens


@pytest.mark.slow  # loads the real default model
def test_greedy_replies_are_reproducible(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    messages = [{"role": "user", "content": "Name three animals."}]
    first, _ = collect_reply(engine.stream(messages, GREEDY, threading.Event()))
    second, _ = collect_reply(engine.stream(messages, GREEDY, threading.Event()))
    assert first == second and first


@pytest.mark.slow  # loads the real default model
def test_max_tokens_limits_the_reply(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    params = SamplingParams(temperature=0.0, max_tokens=3, n_ctx=1024)
    _, stats = collect_reply(
        engine.stream([{"role": "user", "content": "Write a long story."}], params, threading.Event())
    )
    assert stats.completion_tokens == 3 and stats.finish_reason == "length"


@pytest.mark.slow  # loads the real default model
def test_cancel_stops_soon_and_keeps_the_text(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    cancel = threading.Event()
    params = SamplingParams(temperature=0.0, max_tokens=200, n_ctx=1024)
    pieces = []
    stats = None
    for event in engine.stream([{"role": "user", "content": "Write a long story about a zoo."}], params, cancel):
        if isinstance(event, ReplyStats):
            stats = event
        elif isinstance(event, str):
            pieces.append(event)
            if len(pieces) == 5:
                cancel.set()
    assert stats.finish_reason == "cancelled"
    assert 5 <= stats.completion_tokens <= 6
    assert "".join(pieces)


@pytest.mark.slow  # loads the real default model
def test_loading_and_prompt_evaluation_report_progress(fast_settings, isolated_dirs):
    engines = Engines(with_overrides(fast_settings, "engine", n_batch=32), isolated_dirs)
    try:
        engine = engines.for_model("smollm2-135m-instruct")
        long = [{"role": "user", "content": "Count: " + ", ".join(str(i) for i in range(80))}]
        events = list(engine.stream(long, GREEDY, threading.Event()))
        progress = [event for event in events if isinstance(event, Progress)]
        assert progress[0] == Progress("loading")
        evaluated = [event.done for event in progress[1:]]
        assert all(event.stage == "prompt" for event in progress[1:]) and evaluated[0] == 0
        assert evaluated == sorted(evaluated) and len(evaluated) > 3 and evaluated[-1] == progress[-1].total
        assert events.index(progress[-1]) < min(i for i, event in enumerate(events) if isinstance(event, str))
        again = list(engine.stream(long, GREEDY, threading.Event()))
        assert Progress("loading") not in again, "a loaded model is not reported as loading"
    finally:
        engines.close()


@pytest.mark.slow  # loads the real default model
def test_cancel_during_the_prompt_stops_before_the_first_token(fast_settings, isolated_dirs):
    engines = Engines(with_overrides(fast_settings, "engine", n_batch=16), isolated_dirs)
    try:
        engine = engines.for_model("smollm2-135m-instruct")
        cancel = threading.Event()
        long = [{"role": "user", "content": "Count: " + ", ".join(str(i) for i in range(150))}]
        events = []
        for event in engine.stream(long, GREEDY, cancel):
            events.append(event)
            if isinstance(event, Progress) and event.stage == "prompt" and event.done > 0:
                cancel.set()
        stats = events[-1]
        assert stats.finish_reason == "cancelled" and stats.completion_tokens == 0
        assert not any(isinstance(event, str) for event in events)
        assert stats.prompt_tokens_evaluated < stats.prompt_tokens / 2
        cancel = threading.Event()
        cancel.set()  # llama.cpp's abort callback stops the first batch itself
        _, aborted = collect_reply(engine.stream(long + [{"role": "user", "content": "Again."}], GREEDY, cancel))
        assert aborted.finish_reason == "cancelled" and aborted.prompt_tokens_evaluated <= 1
        _, after = collect_reply(engine.stream(long, GREEDY, threading.Event()))
        assert after.finish_reason == "length", "the model is usable after a cancelled prompt"
    finally:
        engines.close()


@pytest.mark.slow  # loads the real default model
def test_second_turn_evaluates_only_the_new_tokens(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    history = [{"role": "user", "content": "Tell me about llamas in one sentence."}]
    reply, first = collect_reply(engine.stream(history, GREEDY, threading.Event()))
    history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And alpacas?"}]
    _, second = collect_reply(engine.stream(history, GREEDY, threading.Event()))
    new_tokens = second.prompt_tokens - (first.prompt_tokens + first.completion_tokens)
    assert second.prompt_tokens_evaluated <= new_tokens + 2
    assert second.prompt_tokens_evaluated < second.prompt_tokens / 2


@pytest.mark.slow  # loads the real default model
def test_switching_back_to_a_conversation_restores_its_history(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    long_a = [{"role": "user", "content": "Remember this list: " + ", ".join(f"item {i}" for i in range(60))}]
    reply_a, _ = collect_reply(engine.stream(long_a, GREEDY, threading.Event()))
    other = [{"role": "user", "content": "Something unrelated: what is 2+2?"}]
    collect_reply(engine.stream(other, GREEDY, threading.Event()))
    back = long_a + [{"role": "assistant", "content": reply_a}, {"role": "user", "content": "Thanks."}]
    _, stats = collect_reply(engine.stream(back, GREEDY, threading.Event()))
    assert stats.prompt_tokens > 150
    assert stats.prompt_tokens_evaluated < 20
    [model] = engines.pool._models.values()
    assert len(model.state_cache) >= 1 and model.state_cache.held_bytes <= model.state_cache.capacity_bytes


def _remember(words: str) -> list[dict]:
    return [{"role": "user", "content": "Remember this list: " + ", ".join(f"{words} {i}" for i in range(60))}]


@pytest.mark.slow  # loads the real default model
def test_the_state_cache_holds_no_more_than_its_bound_and_evicts_the_least_recent(engines):
    import llama_cpp

    from tui.engine.state_cache import StateCache

    engine = engines.for_model("smollm2-135m-instruct")
    first, _ = collect_reply(engine.stream(_remember("apple"), GREEDY, threading.Event()))
    [model] = engines.pool._models.values()
    one_history = llama_cpp.llama_state_get_size(model.llm._ctx.ctx)
    cache = model.state_cache = StateCache(capacity_bytes=int(2.5 * one_history))
    conversations = {"apple": _remember("apple") + [{"role": "assistant", "content": first}]}
    evaluated = {}
    for words in ("pear", "plum", "apple", "plum"):  # apple's saved history is the oldest when plum's is saved
        history = conversations.setdefault(words, _remember(words))
        if history[-1]["role"] == "assistant":
            history.append({"role": "user", "content": "Thanks."})
        reply, stats = collect_reply(engine.stream(history, GREEDY, threading.Event()))
        history.append({"role": "assistant", "content": reply})
        evaluated[words] = stats.prompt_tokens_evaluated, stats.prompt_tokens
        assert 0 < cache.held_bytes <= cache.capacity_bytes and len(cache) <= 2
        assert all(saved.held_bytes >= saved.size >= one_history // 2 for saved in cache._saved.values())
    assert cache.evictions >= 1
    apple_evaluated, apple_tokens = evaluated["apple"]
    assert apple_evaluated > apple_tokens / 2, "apple's history was evicted, so it is evaluated again"
    plum_evaluated, _ = evaluated["plum"]
    assert plum_evaluated < 20, "plum's history was kept and restored"
    cache.clear()
    assert cache.held_bytes == 0 and len(cache) == 0


@pytest.mark.slow  # loads the real default model
def test_a_history_that_grew_replaces_its_saved_beginning(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    history = _remember("apple")
    other = _remember("pear")
    for turn in range(3):  # apple, pear, apple, pear...: each switch saves the one left, longer each time
        reply, _ = collect_reply(engine.stream(history, GREEDY, threading.Event()))
        history += [{"role": "assistant", "content": reply}, {"role": "user", "content": f"Again {turn}."}]
        reply, _ = collect_reply(engine.stream(other, GREEDY, threading.Event()))
        other += [{"role": "assistant", "content": reply}, {"role": "user", "content": f"Again {turn}."}]
    [model] = engines.pool._models.values()
    # Five histories were saved, three of them beginnings of later ones: one per conversation is left.
    assert len(model.state_cache) == 2
    assert model.state_cache.evictions == 0


@pytest.mark.slow  # loads the real default model
def test_state_cache_off_means_full_re_evaluation(fast_settings, isolated_dirs):
    settings = with_overrides(fast_settings, "engine", state_cache_mb=0)
    engines = Engines(settings, isolated_dirs)
    try:
        engine = engines.for_model("smollm2-135m-instruct")
        long_a = [{"role": "user", "content": "Remember: " + ", ".join(f"item {i}" for i in range(60))}]
        reply_a, _ = collect_reply(engine.stream(long_a, GREEDY, threading.Event()))
        collect_reply(engine.stream([{"role": "user", "content": "2+2?"}], GREEDY, threading.Event()))
        back = long_a + [{"role": "assistant", "content": reply_a}, {"role": "user", "content": "Thanks."}]
        _, stats = collect_reply(engine.stream(back, GREEDY, threading.Event()))
        assert stats.prompt_tokens_evaluated > 100
    finally:
        engines.close()


@pytest.mark.slow  # loads the real default model
def test_oldest_turns_give_way_when_the_context_is_full(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    filler = " ".join(["The zoo has many animals."] * 40)
    history = [{"role": "system", "content": "Be brief."}]
    for _ in range(4):
        history += [{"role": "user", "content": filler}, {"role": "assistant", "content": filler}]
    history.append({"role": "user", "content": "Say hi."})
    params = SamplingParams(temperature=0.0, max_tokens=8, n_ctx=512)
    _, stats = collect_reply(engine.stream(history, params, threading.Event()))
    assert stats.dropped_messages >= 2
    assert stats.prompt_tokens + 8 <= 512


@pytest.mark.slow  # loads the real default model
def test_a_long_conversation_leaves_out_just_enough_of_its_oldest_turns(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    system = [{"role": "system", "content": "Be brief."}]
    turns = []
    for i in range(300):
        turns += [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
    turns.append({"role": "user", "content": "Say hi."})
    params = SamplingParams(temperature=0.0, max_tokens=8, n_ctx=512)
    formatted = []
    format_prompt = engine._format
    engine._format = lambda model, messages: formatted.append(len(messages)) or format_prompt(model, messages)
    with engines.pool.hold(engine.path, params.n_ctx) as model:
        prompt = engine._fit_prompt(model, system + turns, params)
        budget = engine._prompt_budget(params)
        one_more = format_prompt(model, system + turns[prompt.dropped_messages - 1 :])
    assert len(prompt.tokens) <= budget < len(one_more.tokens)
    assert prompt.tokens == format_prompt(model, system + turns[prompt.dropped_messages :]).tokens
    # 601 turns are formatted about log2(601) times, not once for each turn left out.
    assert len(formatted) <= 12


@pytest.mark.slow  # loads the real default model
def test_a_message_longer_than_the_context_is_a_clear_error(engines):
    engine = engines.for_model("smollm2-135m-instruct")
    params = SamplingParams(n_ctx=256, max_tokens=8)
    with pytest.raises(EngineError, match="context"):
        collect_reply(engine.stream([{"role": "user", "content": "word " * 400}], params, threading.Event()))


def test_unknown_model_and_corrupt_file_are_clear_errors(engines, tmp_path):
    with pytest.raises(EngineError, match="zootui models"):
        engines.for_model("no-such-model")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    engine = engines.for_model(str(broken))
    with pytest.raises(EngineError, match="could not load"):
        collect_reply(engine.stream([{"role": "user", "content": "hi"}], GREEDY, threading.Event()))


def test_stop_strings_stored_in_the_gguf_end_replies(engines, tmp_path):
    from string import ascii_letters

    from support import ROOT

    from converters import convert

    # A tiny random model: any reply soon contains a letter, and every letter is a stop string.
    gguf_path = convert(
        ROOT / "tests" / "fixtures" / "tiny" / "llama",
        tmp_path / "tiny.gguf",
        outtype="f32",
        stop_strings=list(ascii_letters),
    )
    engine = engines.for_model(str(gguf_path))
    params = SamplingParams(temperature=0.0, max_tokens=64, n_ctx=256)
    text, stats = collect_reply(engine.stream([{"role": "user", "content": "hello"}], params, threading.Event()))
    assert stats.finish_reason == "stop" and stats.completion_tokens < 64
    assert not set(text) & set(ascii_letters)


@pytest.mark.slow
@pytest.mark.parametrize("stored", ['{"a": [1]}', "5" * 10, "[" * 10])
def test_stop_strings_that_are_not_a_list_of_strings_are_ignored(engines, tmp_path, stored):
    """The key is the file's say: a GGUF may come from anywhere (a number once raised TypeError mid-reply)."""
    from support import ROOT

    from converters import convert

    written = json.dumps(["abcdefgh"])  # 12 characters, replaced in the file's bytes by `stored` (padded)
    gguf_path = convert(
        ROOT / "tests" / "fixtures" / "tiny" / "llama", tmp_path / "tiny.gguf", outtype="f32", stop_strings=["abcdefgh"]
    )
    data = gguf_path.read_bytes()
    gguf_path.write_bytes(data.replace(written.encode(), stored.ljust(len(written)).encode()))
    engine = engines.for_model(str(gguf_path))
    params = SamplingParams(temperature=0.0, max_tokens=4, n_ctx=256)
    _text, stats = collect_reply(engine.stream([{"role": "user", "content": "hello"}], params, threading.Event()))
    assert stats.completion_tokens <= 4


def test_a_context_whose_kv_cache_cannot_fit_in_ram_is_refused_before_loading(engines, monkeypatch):
    from tui.zoo import fit

    # A machine with 50 MiB free: SmolLM2-135M's KV cache for its whole 8192-token context is 180 MiB.
    monkeypatch.setattr(fit, "available_ram", lambda: 50 * 2**20)
    params = SamplingParams(temperature=0.0, max_tokens=4, n_ctx=8192, seed=1)
    engine = engines.for_model("smollm2-135m-instruct")
    with pytest.raises(EngineError, match=r"a 8192-token context needs 180\.0 MiB for its KV cache and 50\.0 MiB"):
        list(engine.stream([{"role": "user", "content": "Hi"}], params, threading.Event()))
    assert engines.pool.loaded() == {}


@pytest.mark.slow  # loads the real default model
def test_a_context_longer_than_the_model_was_trained_for_is_cut_to_it(engines):
    params = SamplingParams(temperature=0.0, max_tokens=4, n_ctx=1_048_576, seed=1)
    engine = engines.for_model("smollm2-135m-instruct")
    _, stats = collect_reply(engine.stream([{"role": "user", "content": "Hi"}], params, threading.Event()))
    assert stats.context_size == 8192 and list(engines.pool.loaded().values()) == [8192]
