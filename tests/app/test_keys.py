"""Keys as a new user sends them: in bursts, during start-up, while a reply streams; what the footer offers."""

from __future__ import annotations

import pytest
from support import SIZE, app_with_chat, footer_actions, make_app, send, shown, views, wait_until
from textual import events
from textual.widgets import Select

from tui.app import ZooApp
from tui.config import with_overrides
from tui.store import DATABASE_NAME, Store
from tui.widgets.prompt import PromptArea
from tui.widgets.settings_panel import SettingsPanel


def burst(app: ZooApp, text: str) -> None:
    """Keys as a terminal delivers a paste or scripted keys: all queued at once, none waited for."""
    for character in text:
        if character == "\r":
            app.post_message(events.Key("enter", "\r"))
        else:
            app.post_message(events.Key(character if character.isalnum() else "space", character))


def user_messages(app: ZooApp) -> list[str]:
    return [m.content for m in app.store.messages(app.active_chat.conversation.id) if m.role == "user"]


@pytest.mark.slow
async def test_text_and_enter_in_one_burst_send_exactly_that_text(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.pause()
        burst(app, "burst number 5\r")
        await wait_until(pilot, lambda: len(views(chat)) == 2 and not chat.generating)
        assert user_messages(app) == ["burst number 5"]
        assert chat.prompt.text == ""
        burst(app, "burst number 6\r")
        await wait_until(pilot, lambda: len(views(chat)) == 4 and not chat.generating)
        assert user_messages(app) == ["burst number 5", "burst number 6"]


@pytest.mark.slow
async def test_a_message_sent_while_a_reply_streams_stays_in_the_box(fast_settings, isolated_dirs):
    settings = with_overrides(fast_settings, "chat", max_tokens=300)
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.pause()
        burst(app, "Write a long story about a zoo.\rsecond message\rthird")
        await wait_until(pilot, lambda: chat.generating and "third" in chat.prompt.text)
        await pilot.pause()
        assert user_messages(app) == ["Write a long story about a zoo."]
        assert chat.prompt.text == "second message\nthird", "nothing typed is lost, in the order typed"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating)


@pytest.mark.slow
async def test_keys_typed_before_the_app_started_are_replayed(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs, typed_ahead="typed early\r")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: len(views(app.active_chat)) == 2 and not app.active_chat.generating)
        assert user_messages(app) == ["typed early"]


@pytest.mark.slow
async def test_ctrl_q_during_a_reply_stops_it_saves_it_and_quits(fast_settings, isolated_dirs):
    settings = with_overrides(fast_settings, "chat", max_tokens=1000)
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.click(PromptArea)
        await pilot.press(*"Write a very long story about a zoo.", "enter")
        await wait_until(pilot, lambda: chat._reply_view is not None and len(chat._reply_view.content) > 20)
        await pilot.press("ctrl+q")
    assert not app.is_running
    store = Store(isolated_dirs / DATABASE_NAME)
    reply = store.messages(1)[-1]
    assert reply.state == "stopped" and reply.content, "what was generated is kept, marked stopped"
    assert reply.stats["completion_tokens"] < 1000
    store.close()


async def test_an_empty_tab_offers_neither_edit_nor_regenerate(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        actions = footer_actions(app)
        assert "edit_last" not in actions and "regenerate" not in actions and "stop" not in actions
        assert {"new_chat", "close_chat", "toggle_settings", "browse_models", "toggle_keys"} <= set(actions)


async def test_the_footer_fits_80_columns(fast_settings, isolated_dirs):
    from textual.widgets._footer import FooterKey

    app = app_with_chat(fast_settings, isolated_dirs, ("user", "hi"), ("assistant", "hello"))
    async with app.run_test(size=(80, 24)) as pilot:
        await shown(pilot, 2)
        # The footer redraws its keys after the bindings change, a few frames after the messages show.
        await wait_until(
            pilot, lambda: {"regenerate", "edit_last"} <= {key.action for key in app.screen.query(FooterKey)}
        )
        keys = list(app.screen.query(FooterKey))
        assert all(key.region.right <= 80 for key in keys), [(key.action, key.region) for key in keys]


async def test_the_footer_is_rebuilt_only_when_the_keys_it_shows_change(fast_settings, isolated_dirs):
    from textual.widgets._footer import FooterKey

    app = app_with_chat(fast_settings, isolated_dirs, ("user", "hi"), ("assistant", "hello"))
    async with app.run_test(size=SIZE) as pilot:
        chat = await shown(pilot, 2)
        await wait_until(pilot, lambda: "edit_last" in footer_actions(app))
        keys = list(app.screen.query(FooterKey))
        for _ in range(3):
            chat.refresh_bindings()
            await pilot.pause()
        assert list(app.screen.query(FooterKey)) == keys, "the same keys: the same widgets"
        await pilot.press("ctrl+e")
        await wait_until(pilot, lambda: "cancel_edit" in footer_actions(app))
        await pilot.press("escape")
        await wait_until(pilot, lambda: "cancel_edit" not in footer_actions(app))
        assert footer_actions(app) == [key.action for key in keys]


@pytest.mark.slow
async def test_status_and_footer_follow_what_the_tab_does(fast_settings, isolated_dirs):
    settings = with_overrides(fast_settings, "chat", max_tokens=300)
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = await send(pilot, "Write a long story about a zoo.")
        status = chat.query_one(".status")
        await pilot.press("ctrl+s")
        chat.query_one("#param-temperature").value = "0.5"
        await pilot.pause()
        assert "settings saved" in str(status.render())
        await pilot.press("ctrl+s")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: chat.generating)
        assert "settings saved" not in str(status.render())
        assert "stop" in footer_actions(app) and "regenerate" not in footer_actions(app)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating)
        assert views(chat)[-1]._footer().count("stopped") == 1, views(chat)[-1]._footer()
        await pilot.press("ctrl+e")
        await pilot.pause()
        assert "cancel_edit" in footer_actions(app) and "stop" not in footer_actions(app)
        await pilot.press("escape")
        await pilot.pause()
        assert "cancel_edit" not in footer_actions(app) and "stop" not in footer_actions(app)


@pytest.mark.slow
async def test_ctrl_e_keeps_the_unsent_draft_and_escape_brings_it_back(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = await send(pilot, "First question")
        await pilot.press(*"half-typed draft")
        await pilot.press("ctrl+e")
        await pilot.pause()
        assert chat.prompt.text == "First question"
        await pilot.press("escape")
        await pilot.pause()
        assert chat.prompt.text == "half-typed draft"
        await pilot.press("ctrl+e")
        await pilot.pause()
        chat.prompt.text = "Edited question"
        await pilot.press("enter")
        await wait_until(pilot, lambda: not chat.generating and views(chat)[-1].content)
        assert views(chat)[0].content == "Edited question"
        assert chat.prompt.text == "half-typed draft", "the draft comes back after the edit is sent too"


@pytest.mark.slow
async def test_scrolling_up_while_a_reply_streams_holds_and_a_key_jumps_back(fast_settings, isolated_dirs):
    settings = with_overrides(fast_settings, "chat", max_tokens=1000)
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        chat = app.active_chat
        await pilot.click(PromptArea)
        # A long reply of short lines (each shown on its own line) soon outgrows the screen.
        await pilot.press(*"List 100 animals, one per line, numbered.", "enter")
        log = chat.log
        marker = chat.query_one(".new-output")
        shown_while_following = []

        def outgrown() -> bool:
            shown_while_following.append(marker.display)
            return log.max_scroll_y > 5 or not chat.generating

        await wait_until(pilot, outgrown, timeout=120)
        assert chat.generating, "the reply must outgrow the screen while it streams"
        assert not any(shown_while_following), "no marker while the log follows the reply"
        assert not chat.prompt.cursor_blink, "the cursor stays lit while a reply streams"
        await pilot.press("pageup")
        held = log.scroll_y
        await pilot.pause(1.5)
        assert log.scroll_y <= held < log.max_scroll_y, "the view stays where the user scrolled"
        await wait_until(pilot, lambda: marker.display, timeout=10)
        await pilot.press("ctrl+end")
        await pilot.pause(0.5)
        assert not marker.display
        assert log.max_scroll_y - log.scroll_y <= 1, "following again"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating)
        assert chat.prompt.cursor_blink, "and blinks again once it has ended"


@pytest.mark.slow
async def test_the_status_shows_the_model_loading_and_a_long_prompt_being_read(fast_settings, isolated_dirs):
    from tui.widgets.chat_pane import ChatPane

    stages = []
    statuses = []

    def record(message) -> None:
        if isinstance(message, ChatPane.ReplyProgress):
            stages.append(message.progress.stage)

    settings = with_overrides(fast_settings, "engine", n_batch=32)
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=SIZE, message_hook=record) as pilot:
        chat = app.active_chat
        status = chat.query_one(".status")
        chat.prompt.text = "Count: " + ", ".join(str(number) for number in range(120))
        await pilot.press("enter")
        while chat.generating:
            statuses.append(str(status.render()))
            await pilot.pause(0.02)
    assert stages[0] == "loading" and "prompt" in stages
    assert any("reading the prompt:" in line and "tokens (escape stops)" in line for line in statuses)


@pytest.mark.slow  # loads the real default model
async def test_escape_closes_the_settings_and_what_is_typed_next_is_sent(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: chat.query_one(SettingsPanel).has_class("visible"))
        chat.query_one("#model", Select).focus()
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.query_one(SettingsPanel).has_class("visible"))
        await pilot.press(*"Are you there?", "enter")
        await wait_until(pilot, lambda: len(views(chat)) == 2 and not chat.generating)
        assert views(chat)[0].content == "Are you there?"


async def test_rebuilding_the_footer_leaves_no_watchers_of_its_old_keys(fast_settings, isolated_dirs):
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    app = app_with_chat(fast_settings, isolated_dirs, ("user", "hi"), ("assistant", "hello"))
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, 2)
        footer = app.screen.query_one(Footer)
        await wait_until(pilot, lambda: "edit_last" in footer_actions(app))
        for _ in range(5):  # each edit shows other keys, and back: the footer is rebuilt twice
            await pilot.press("ctrl+e")
            await wait_until(pilot, lambda: "cancel_edit" in footer_actions(app))
            await pilot.press("escape")
            await wait_until(pilot, lambda: "cancel_edit" not in footer_actions(app))
        # Each key binds Footer.compact; Textual drops the watchers of removed keys only when compact changes,
        # so every rebuild left a dozen more, each scanned by the next key's binding and keeping its key alive.
        watchers = getattr(footer, "__watchers")["compact"]
        assert len(watchers) == len(app.screen.query(FooterKey))
