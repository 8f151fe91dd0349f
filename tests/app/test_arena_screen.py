"""The arena and leaderboard screens, driven with real keys on the real default model and its copy."""

from __future__ import annotations

import threading

import pytest
from support import SIZE, wait_until
from textual.widgets import DataTable, Label, Static

from tui.app import ZooApp
from tui.arena.service import ArenaService
from tui.engine import Engines
from tui.engine.residency import Residency
from tui.screens.arena import ArenaScreen
from tui.screens.leaderboard import LeaderboardScreen
from tui.store import DATABASE_NAME, Store
from tui.widgets.message import MessageView
from tui.widgets.prompt import PromptArea
from tui.zoo.fit import Resources

pytestmark = pytest.mark.slow  # the real default model answers


def make_app(settings, data_dir, free_ram=None, **kwargs) -> ZooApp:
    free = Resources(ram_bytes=free_ram, disk_bytes=10**12, vram_bytes=None)
    engines = Engines(settings, data_dir, residency=Residency(settings.engine, lambda: free))
    return ZooApp(settings, Store(data_dir / DATABASE_NAME), engines=engines, **kwargs)


def side_views(screen: ArenaScreen, side: str) -> list[MessageView]:
    return list(screen.query_one(f"#messages-{side}").query(MessageView))


def title(screen: ArenaScreen, side: str) -> str:
    return str(screen.query_one(f"#title-{side}", Label).render())


async def ask(pilot, screen: ArenaScreen, text: str) -> str:
    """Send a prompt, wait for both answers; returns the status line then."""
    before = len(side_views(screen, "a"))
    await pilot.click(screen.query_one(PromptArea))
    await pilot.press(*text)
    await pilot.press("enter")
    await wait_until(pilot, lambda: len(side_views(screen, "a")) == before + 2 and not screen.generating)
    await pilot.pause()
    return str(screen.query_one(".status").render())


async def test_a_battle_streams_both_sides_hidden_then_the_vote_names_them(fast_settings, isolated_dirs, two_models):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, ArenaScreen))
        screen = app.screen
        assert (await ask(pilot, screen, "Name a colour.")).startswith("Both answer at once. Vote with 1 to 4")
        for side in "ab":
            user, answer = side_views(screen, side)
            assert user.content == "Name a colour." and answer.content
            assert not any(name in title(screen, side) for name in two_models), "names stay hidden before the vote"
            assert answer._footer() == "", "speed and length could give the model away"
        await ask(pilot, screen, "And another one?")  # a follow-up goes to both sides
        assert [len(side_views(screen, side)) for side in "ab"] == [4, 4]
        assert not screen.query_one("#vote-2").disabled
        await pilot.press("2")
        await wait_until(pilot, lambda: screen.battle.winner is not None)
        battle = screen.battle
        assert title(screen, "a") == f"Model A: {battle.model_a}"
        assert title(screen, "b") == f"★ Model B: {battle.model_b}"
        assert "tok/s" in side_views(screen, "b")[-1]._footer()
        assert screen.query_one("#vote-1").disabled
    store = Store(isolated_dirs / DATABASE_NAME)
    [saved] = store.battles()
    store.close()
    assert saved.winner == "model_b" and saved.turns == 2 and {saved.model_a, saved.model_b} == set(two_models)


async def test_models_that_do_not_fit_together_answer_in_turn_and_the_screen_says_so(
    fast_settings, isolated_dirs, two_models
):
    app = make_app(fast_settings, isolated_dirs, free_ram=600 * 2**20, arena=two_models)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ArenaScreen))
        screen = app.screen
        status = await ask(pilot, screen, "Hi")
        assert status.startswith("They answer one after the other: the two models do not fit in memory together")
        assert all(view.content for side in "ab" for view in side_views(screen, side))


async def test_a_waiting_battle_is_voted_on_later(fast_settings, isolated_dirs, two_models):
    store = Store(isolated_dirs / DATABASE_NAME)
    engines = Engines(fast_settings, isolated_dirs)
    service = ArenaService(store, fast_settings, engines)
    waiting, _ = service.answer(service.start(*two_models, source="unattended"), "Name a tree.", threading.Event())
    service.close()
    engines.close()
    store.close()
    app = make_app(fast_settings, isolated_dirs, arena=("random", "random"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ArenaScreen))
        screen = app.screen
        assert "1 battle(s) wait for your vote" in str(screen.query_one(".status").render())
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: len(side_views(screen, "b")) == 2)
        assert side_views(screen, "b")[1].content == waiting.conversation_b[1]["content"]
        await pilot.press("3")
        await wait_until(pilot, lambda: screen.battle.winner == "tie")


async def test_leaderboard_shows_table_bars_and_matrix(fast_settings, isolated_dirs):
    store = Store(isolated_dirs / DATABASE_NAME)
    for number, winner in enumerate(["model_a", "model_a", "tie (bothbad)", "model_b", "model_a"] * 3):
        battle = store.create_battle("vicuna-7b", "alpaca-7b", {}, question_id=str(number))
        store.save_battle_conversations(
            battle.id, [{"role": "user", "content": "q"}], [{"role": "user", "content": "q"}]
        )
        store.vote_battle(battle.id, winner)
    store.close()
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await wait_until(pilot, lambda: isinstance(app.screen, ArenaScreen))
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, LeaderboardScreen))
        screen = app.screen
        table = screen.query_one("#standings", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        assert [table.get_row_at(i)[1] for i in range(2)] == ["vicuna-7b", "alpaca-7b"]
        assert "█" in str(screen.query_one("#bars", Static).render())
        assert "0.75" in str(screen.query_one("#matrix", Static).render())  # 9 of 12 decided votes
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ArenaScreen))
