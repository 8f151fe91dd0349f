"""Battles on the real default model and its copy: pairs, answers side by side or in turn, follow-ups, votes."""

import random
import threading

import pytest

from tui.arena import RANDOM, ArenaError
from tui.arena.ratings import Winner
from tui.arena.service import ArenaService
from tui.engine import Engines
from tui.engine.residency import Residency
from tui.store import Store
from tui.zoo.fit import Resources

pytestmark = pytest.mark.slow  # loads the real default model


def make_service(settings, data_dir, free_ram=None) -> ArenaService:
    free = Resources(ram_bytes=free_ram, disk_bytes=10**12, vram_bytes=None)
    engines = Engines(settings, data_dir, residency=Residency(settings.engine, lambda: free))
    return ArenaService(Store(data_dir / "zootui.sqlite3"), settings, engines, rng=random.Random(1))


@pytest.fixture
def service(fast_settings, isolated_dirs, two_models):
    service = make_service(fast_settings, isolated_dirs)
    yield service
    service.close()
    service.engines.close()
    service.store.close()


def test_pairs_are_two_different_models_on_random_sides(service, two_models):
    assert set(service.pick_pair()) == set(two_models)
    assert set(service.pick_pair(two_models[0], RANDOM)) == set(two_models)
    sides = {service.pick_pair(*two_models) for _ in range(20)}
    assert sides == {two_models, two_models[::-1]}, "the chooser must not know which side is which"
    with pytest.raises(ArenaError, match="two different models"):
        service.pick_pair(two_models[0], two_models[0])
    with pytest.raises(ArenaError, match="no model named 'nonesuch'"):
        service.pick_pair("nonesuch", RANDOM)


def test_one_model_is_not_enough_for_a_battle(fast_settings, isolated_dirs):
    service = make_service(fast_settings, isolated_dirs)
    with pytest.raises(ArenaError, match="the library has 1; get another one"):
        service.pick_pair()
    service.store.close()


def test_both_sides_answer_at_once_and_follow_ups_go_to_both(service):
    battle = service.start(*service.pick_pair())
    assert service.plan(battle).together
    streamed = {"a": [], "b": []}
    battle, answers = service.answer(
        battle, "Name a colour.", threading.Event(), lambda side, text: streamed[side].append(text)
    )
    for side, conversation in (("a", battle.conversation_a), ("b", battle.conversation_b)):
        assert "".join(streamed[side]) == answers[side].text == conversation[1]["content"] != ""
        assert conversation[1]["state"] == "done" and conversation[1]["stats"]["completion_tokens"] > 0
    battle, _ = service.answer(battle, "And another?", threading.Event())
    for conversation in (battle.conversation_a, battle.conversation_b):
        assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
        assert conversation[2]["content"] == "And another?"
    assert battle.turns == 2 and battle.params["temperature"] == 0.0
    assert [b.id for b in service.waiting()] == [battle.id]


def test_models_that_do_not_fit_together_answer_one_after_the_other(fast_settings, isolated_dirs, two_models):
    service = make_service(fast_settings, isolated_dirs, free_ram=600 * 2**20)
    battle = service.start(*two_models)
    plan = service.plan(battle)
    assert not plan.together
    assert "one after the other" in plan.describe() and "GB of RAM together" in plan.describe()
    order = []
    battle, answers = service.answer(battle, "Hi", threading.Event(), lambda side, text: order.append(side))
    assert order == sorted(order), "all of A's text comes before B's"
    assert all(answer.text for answer in answers.values())
    assert len(service.engines.pool.loaded()) == 1
    service.close()
    service.engines.close()
    service.store.close()


def test_a_vote_ends_the_battle(service):
    battle = service.start(*service.pick_pair())
    with pytest.raises(ArenaError, match="send a prompt first"):
        service.vote(battle, Winner.TIE)
    battle, _ = service.answer(battle, "Hi", threading.Event())
    battle = service.vote(battle, Winner.BOTH_BAD)
    assert battle.winner == "tie (bothbad)" and battle.voted_at is not None
    with pytest.raises(ArenaError, match="voted on already"):
        service.vote(battle, Winner.MODEL_A)
    with pytest.raises(ArenaError, match="start a new one"):
        service.answer(battle, "more?", threading.Event())
    [vote] = service.votes()
    assert (vote.model_a, vote.model_b, vote.winner) == (battle.model_a, battle.model_b, Winner.BOTH_BAD)
    assert service.waiting() == []


def test_stopping_keeps_what_both_sides_said(service):
    battle = service.start(*service.pick_pair())
    cancel = threading.Event()
    cancel.set()
    battle, answers = service.answer(battle, "Write a long story.", cancel)
    assert {answer.state for answer in answers.values()} == {"stopped"}
    assert battle.conversation_a[1]["state"] == battle.conversation_b[1]["state"] == "stopped"
