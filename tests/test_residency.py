"""Which models stay loaded (the fit estimate against a given amount of free memory), and raw completions."""

import threading

import pytest

from tui.config import with_overrides
from tui.engine import ContextOverflow, Engines, ReplyStats, SamplingParams
from tui.engine.residency import Residency
from tui.zoo.fit import Resources, running_need

pytestmark = pytest.mark.slow  # loads the real default model

N_CTX = 512


def engines_with_free_ram(settings, data_dir, free_ram: int | None) -> Engines:
    free = Resources(ram_bytes=free_ram, disk_bytes=10**12, vram_bytes=None)
    return Engines(settings, data_dir, residency=Residency(settings.engine, lambda: free))


@pytest.fixture
def settings(fast_settings):
    return with_overrides(fast_settings, "engine", n_ctx=N_CTX)


def reply(engine, prompt="Say hi.", **params):
    events = list(
        engine.stream(
            [{"role": "user", "content": prompt}],
            SamplingParams(n_ctx=N_CTX, max_tokens=4, temperature=0, **params),
            threading.Event(),
        )
    )
    return "".join(e for e in events if isinstance(e, str)), events[-1]


def test_models_that_fit_together_stay_loaded(settings, isolated_dirs, two_models):
    engines = engines_with_free_ram(settings, isolated_dirs, free_ram=None)  # unknown: nothing is unloaded
    first, second = (engines.for_model(name) for name in two_models)
    reply(first)
    reply(second)
    assert len(engines.pool.loaded()) == 2
    assert engines.room_for([first, second], N_CTX).fits
    engines.close()


def test_a_model_that_does_not_fit_beside_another_unloads_it(settings, isolated_dirs, two_models, model_path):
    ram, _ = running_need(model_path, n_ctx=N_CTX, gpu_layers=0)
    engines = engines_with_free_ram(settings, isolated_dirs, free_ram=int(1.5 * ram))
    first, second = (engines.for_model(name) for name in two_models)
    room = engines.room_for([first, second], N_CTX)
    assert not room.fits and "GB of RAM together" in room.reason
    reply(first)
    _, stats = reply(second)
    assert stats.completion_tokens > 0
    assert [key[0] for key in engines.pool.loaded()] == [second.path.resolve()]
    reply(first)  # and back: the least recently used goes
    assert [key[0] for key in engines.pool.loaded()] == [first.path.resolve()]
    engines.close()


def test_completion_text_never_becomes_control_tokens(settings, isolated_dirs, model_path):
    engines = Engines(settings, isolated_dirs)
    engine = engines.for_model(str(model_path))
    text = "<|im_start|>assistant\n"
    events = list(engine.complete(text, SamplingParams(n_ctx=N_CTX, max_tokens=3, temperature=0), threading.Event()))
    stats = events[-1]
    assert isinstance(stats, ReplyStats)
    with engines.pool.hold(model_path, N_CTX) as model:
        plain = model.llm.tokenize(text.encode(), add_bos=True, special=False)
        special = model.llm.tokenize(text.encode(), add_bos=True, special=True)
    assert len(plain) != len(special)
    assert stats.prompt_tokens == len(plain)
    engines.close()


def test_server_style_chat_refuses_a_prompt_longer_than_the_context(settings, isolated_dirs, model_path):
    engines = Engines(settings, isolated_dirs)
    engine = engines.for_model(str(model_path))
    long_prompt = "zoo " * 2000
    with pytest.raises(ContextOverflow) as raised:
        list(
            engine.stream(
                [{"role": "user", "content": long_prompt}],
                SamplingParams(n_ctx=N_CTX),
                threading.Event(),
                keep_every_message=True,
            )
        )
    assert raised.value.context_size == N_CTX and raised.value.prompt_tokens > N_CTX
    engines.close()
