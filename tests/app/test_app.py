"""The app, driven through Textual's Pilot with real keys, the real default model and a real SQLite file."""

from __future__ import annotations

import pytest
from support import SIZE, app_with_chat, fill_disk, footer_key, make_app, send, shown, views, wait_until
from textual.widgets import Input

from tui.store import DATABASE_NAME, Store
from tui.widgets.prompt import PromptArea


@pytest.mark.slow  # loads the real default model
async def test_first_launch_chats_at_once_and_saves(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        assert app.tabs.tab_count == 1
        chat = await send(pilot, "What is the capital of France?")
        user, reply = views(chat)
        assert user.content == "What is the capital of France?"
        assert "Paris" in reply.content
        assert "tok/s" in str(chat.query_one(".status").render())
        assert "context" in reply._footer()
        assert app.tabs.get_tab(app.tabs.active).label.plain.startswith("What is the capital")
    store = Store(isolated_dirs / DATABASE_NAME)
    [conversation] = store.conversations()
    assert [m.content for m in store.messages(conversation.id)] == [user.content, reply.content]
    store.close()


@pytest.mark.slow  # loads the real default model
async def test_tabs_are_created_renamed_closed_and_restored(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Hello there")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.tabs.tab_count == 2 and app.active_chat.conversation.id == 2)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.focused, Input))
        app.focused.value = ""
        await pilot.press(*"Second", "enter")
        await wait_until(pilot, lambda: app.tabs.get_tab(app.tabs.active).label.plain == "Second")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.tabs.tab_count == 3 and app.active_chat.conversation.id == 3)
        await pilot.press("ctrl+w")
        await wait_until(pilot, lambda: app.tabs.tab_count == 2)
        assert 3 not in [conversation.id for conversation in app.store.conversations(open_only=True)]
        await pilot.press("ctrl+pageup")
        await wait_until(pilot, lambda: app.active_chat.conversation.title == "Hello there")
    restarted = make_app(fast_settings, isolated_dirs)
    async with restarted.run_test(size=SIZE) as pilot:
        await pilot.pause()
        titles = [restarted.tabs.get_tab(pane).label.plain for pane in restarted.tabs.query("TabPane")]
        assert titles == ["Hello there", "Second"]
        chat = restarted.active_chat
        await wait_until(pilot, lambda: len(views(chat)) == 2)
        assert views(chat)[0].content == "Hello there"


async def test_tabs_switch_by_mouse(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        first = app.tabs.active
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.tabs.tab_count == 2 and app.tabs.active != first)
        await pilot.click(f"#--content-tab-{first}")
        await wait_until(pilot, lambda: app.tabs.active == first)


async def test_a_tab_left_right_after_it_was_shown_stays_behind(fast_settings, isolated_dirs):
    # A shown tab's prompt takes the focus at once: a focus that lands after the queued events (Textual's
    # focus() waits for them) would pull the tab back to the front when the user has already left it.
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        first = app.active_chat
        await app.action_new_chat()
        await pilot.pause()
        second = app.tabs.active
        app.tabs.active = first.parent.id
        await first.on_show()
        app.tabs.active = second
        await pilot.pause()
        await pilot.pause()
        assert app.tabs.active == second


async def test_tabs_are_opened_and_closed_from_the_footer_by_mouse(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=(160, 36)) as pilot:
        await pilot.pause()  # the footer lays its keys out after the first frame
        await pilot.click(footer_key(app, "new_chat"))
        await wait_until(pilot, lambda: app.tabs.tab_count == 2)
        await pilot.click(footer_key(app, "close_chat"))
        await wait_until(pilot, lambda: app.tabs.tab_count == 1)


@pytest.mark.slow  # loads the real default model
async def test_escape_stops_a_reply_and_keeps_it(fast_settings, isolated_dirs):
    from tui.config import with_overrides

    settings = with_overrides(fast_settings, "chat", max_tokens=400)
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.click(PromptArea)
        await pilot.press(*"Write a long story about a zoo.", "enter")
        await wait_until(pilot, lambda: chat._reply_view is not None and len(chat._reply_view.content) > 20)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not chat.generating)
        reply = views(chat)[-1]
        assert reply.state == "stopped" and "stopped" in reply._footer()
    store = Store(isolated_dirs / DATABASE_NAME)
    saved = store.messages(1)[-1]
    assert saved.state == "stopped" and saved.content == reply.content and saved.stats["completion_tokens"] < 400
    store.close()


@pytest.mark.slow  # loads the real default model
async def test_regenerate_and_edit_last_message(fast_settings, isolated_dirs):
    from tui.config import with_overrides

    settings = with_overrides(fast_settings, "chat", temperature=1.0, seed=-1)
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = await send(pilot, "Tell me a fact about llamas.")
        first_reply = views(chat)[-1]
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: not chat.generating and views(chat)[-1] is not first_reply)
        await wait_until(pilot, lambda: not chat.generating)
        assert len(views(chat)) == 2 and views(chat)[-1].content
        await pilot.press("ctrl+e")
        await pilot.pause()
        prompt = chat.query_one(PromptArea)
        assert prompt.text == "Tell me a fact about llamas."
        prompt.text = "Tell me a fact about alpacas."
        await pilot.press("enter")
        await wait_until(pilot, lambda: not chat.generating and len(views(chat)) == 2 and views(chat)[-1].content)
        assert views(chat)[0].content == "Tell me a fact about alpacas."
    store = Store(isolated_dirs / DATABASE_NAME)
    assert [m.role for m in store.messages(1)] == ["user", "assistant"]
    assert store.messages(1)[0].content == "Tell me a fact about alpacas."
    store.close()


async def test_copy_message_and_code_block(fast_settings, isolated_dirs):
    code = "Here:\n\n```python\nprint('zoo')\n```\n\nand\n\n```\nls\n```\n"
    app = app_with_chat(fast_settings, isolated_dirs, ("user", "show code"), ("assistant", code))
    async with app.run_test(size=SIZE) as pilot:
        chat = await shown(pilot, 2)
        reply = views(chat)[-1]
        reply.focus()
        await pilot.pause()
        await pilot.press("c")
        assert app.clipboard == reply.content
        await pilot.press("b")
        assert app.clipboard == "print('zoo')"
        await pilot.press("b")
        assert app.clipboard == "ls"
        notices = [notification.message for notification in app._notifications]
        assert any("OSC 52" in notice and "14 characters" not in notice for notice in notices)
        await pilot.click("MarkdownFence")
        assert app.clipboard == "print('zoo')"


async def test_search_opens_a_closed_conversation(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    store = app.store
    old = store.create_conversation("Old talk about pandas", "smollm2-135m-instruct")
    store.add_message(old.id, "user", "Giant pandas eat bamboo all day.")
    store.update_conversation(old.id, is_open=False)
    async with app.run_test(size=SIZE) as pilot:
        assert app.tabs.tab_count == 1
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.focused, Input))
        app.focused.value = "bamboo"
        await wait_until(pilot, lambda: app.screen.query_one("OptionList").option_count == 1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.tabs.tab_count == 2)
        await wait_until(pilot, lambda: app.active_chat.conversation.id == old.id, timeout=5)
        assert len(app.screen_stack) == 1


async def test_down_in_search_moves_through_the_results_and_enter_opens_one(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    store = app.store
    ids = []
    for title in ("Pandas", "Koalas", "Lions"):
        conversation = store.create_conversation(title, "smollm2-135m-instruct")
        store.add_message(conversation.id, "user", f"{title} at the zoo")
        store.update_conversation(conversation.id, is_open=False)
        ids.append(conversation.id)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(app.focused, Input))
        app.focused.insert_text_at_cursor("at the zoo")
        results = app.screen.query_one("OptionList")
        await wait_until(pilot, lambda: results.option_count == 3)
        await pilot.press("down", "down", "up")
        assert results.highlighted == 1 and isinstance(app.focused, Input), "the query keeps the focus"
        chosen = app.screen._hits[1].conversation_id
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.active_chat.conversation.id == chosen)


async def test_settings_panel_saves_per_conversation(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.press("ctrl+s")
        await pilot.pause()
        temperature = chat.query_one("#param-temperature", Input)
        temperature.value = ""
        await pilot.click("#param-temperature")
        await pilot.press(*"0.25")
        await pilot.pause()
        max_tokens = chat.query_one("#param-max_tokens", Input)
        max_tokens.value = "-5"
        await pilot.pause()
        system = chat.query_one("#system-prompt")
        system.text = "You are a zoo keeper."
        await pilot.pause()
    store = Store(isolated_dirs / DATABASE_NAME)
    conversation = store.conversation(1)
    assert conversation.params["temperature"] == 0.25
    assert conversation.params["max_tokens"] == fast_settings.chat.max_tokens, "invalid values are not saved"
    assert conversation.system_prompt == "You are a zoo keeper."
    store.close()


async def test_the_settings_panel_is_mounted_when_first_opened_with_the_tabs_values(fast_settings, isolated_dirs):
    from tui.widgets.settings_panel import SettingsPanel

    app = app_with_chat(fast_settings, isolated_dirs, ("user", "hi"), ("assistant", "hello"))
    conversation = app.store.conversations()[0]
    app.store.update_conversation(conversation.id, system_prompt="You are a zoo keeper.")
    async with app.run_test(size=SIZE) as pilot:
        chat = await shown(pilot, 2)
        assert not chat.query(SettingsPanel), "a tab's settings cost nothing until they are opened"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: bool(chat.query(SettingsPanel)))
        [panel] = chat.query(SettingsPanel)
        assert panel.has_class("visible") and panel.has_focus_within
        assert chat.query_one("#system-prompt").text == "You are a zoo keeper."
        assert chat.query_one("#param-temperature", Input).value == str(fast_settings.chat.temperature)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not panel.has_class("visible"))
        assert chat.prompt.has_focus
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: panel.has_class("visible"))
        assert list(chat.query(SettingsPanel)) == [panel], "opened again, the same panel"


async def test_the_app_sets_its_garbage_collection_thresholds_while_it_runs(fast_settings, isolated_dirs):
    import gc

    from tui.collector import MIDDLE_GENERATION_THRESHOLD, OLD_GENERATION_THRESHOLD, YOUNG_GENERATION_THRESHOLD

    before = gc.get_threshold()
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, MIDDLE_GENERATION_THRESHOLD, OLD_GENERATION_THRESHOLD)
    assert gc.get_threshold() == before, "Python's thresholds are back once the app ends"


async def test_the_app_collects_the_whole_heap_once_the_user_pauses(fast_settings, isolated_dirs):
    import gc

    from tui.collector import FULL_COLLECTION_DUE, IDLE_SECONDS

    def make_due() -> None:
        for _ in range(FULL_COLLECTION_DUE):
            gc.collect(1)

    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        gc.collect()
        make_due()
        for _ in range(4):  # typing: no full collection meanwhile
            await pilot.press("a")
            await pilot.pause(IDLE_SECONDS / 3)
        assert gc.get_count()[2] >= FULL_COLLECTION_DUE, "a full collection came while the user typed"
        await wait_until(pilot, lambda: gc.get_count()[2] < FULL_COLLECTION_DUE, timeout=3 * IDLE_SECONDS)


async def test_theme_is_remembered(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        assert "zoo-savanna" in app.available_themes
        app.theme = "zoo-savanna"
        await pilot.pause()
    restarted = make_app(fast_settings, isolated_dirs)
    async with restarted.run_test(size=SIZE) as pilot:
        assert restarted.theme == "zoo-savanna"


async def test_config_warnings_and_interrupted_replies_are_shown(fast_settings, isolated_dirs):
    store = Store(isolated_dirs / DATABASE_NAME)
    conversation = store.create_conversation("cut", "smollm2-135m-instruct")
    store.add_message(conversation.id, "assistant", "half", state="streaming")
    store.close()
    app = make_app(fast_settings, isolated_dirs, config_warnings=["config.toml: [chat] temperature is bad"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        notices = [notification.message for notification in app._notifications]
        assert "config.toml: [chat] temperature is bad" in notices
        assert any("cut off" in notice for notice in notices)
        await wait_until(pilot, lambda: len(views(app.active_chat)) == 1)
        assert views(app.active_chat)[0].state == "interrupted"


@pytest.mark.slow  # loads the real default model
async def test_export_from_the_app(fast_settings, isolated_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Hi")
        app.export_active_chat("md")
        app.export_active_chat("json")
    assert (tmp_path / "zootui-chat-1.md").read_text().startswith('---\ntitle: "Hi"')
    assert (tmp_path / "zootui-chat-1.json").exists()


async def test_engine_error_is_shown_and_the_tab_recovers(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        chat.conversation = app.store.update_conversation(chat.conversation.id, model="remote:x")
        await pilot.click(PromptArea)
        await pilot.press(*"hi", "enter")
        await wait_until(pilot, lambda: not chat.generating and "error" in str(chat.query_one(".status").render()))
        assert [view.role for view in views(chat)] == ["user"]
        assert any(n.severity == "error" for n in app._notifications)


async def test_invalid_settings_are_never_saved_and_the_panel_says_why(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.press("ctrl+s")
        await pilot.pause()
        temperature = chat.query_one("#param-temperature", Input)
        temperature.value = "0"
        await pilot.pause()
        for text in ("", "-", "-5"):
            temperature.value = text
            await pilot.pause()
        status = str(chat.query_one(".status").render())
        assert "not saved" in status and "Temperature '-5'" in status
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert chat.query_one("SettingsPanel").has_class("visible"), "closing over an invalid value is refused"
        assert any("Not saved" in n.message for n in app._notifications)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not chat.query_one("SettingsPanel").has_class("visible")
        assert temperature.value == "0.0", "the field shows the saved value again"
    store = Store(isolated_dirs / DATABASE_NAME)
    assert store.conversation(1).params["temperature"] == 0.0
    store.close()


async def test_text_from_files_and_users_is_never_read_as_markup(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs, config_warnings=["config.toml: [engine] n_threads = 'lots' is bad"])
    store = app.store
    conversation = store.create_conversation("[b]not bold[/b] [engine]", "smollm2-135m-instruct")
    store.add_message(conversation.id, "user", "[red]plain[/red]")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: len(views(app.active_chat)) == 1)
        [warning] = [n for n in app._notifications if "n_threads" in n.message]
        assert warning.message == "config.toml: [engine] n_threads = 'lots' is bad" and not warning.markup
        assert app.tabs.get_tab(app.tabs.active).label.plain == "[b]not bold[/b] [engine]"


async def test_the_active_tab_comes_back_after_a_relaunch(fast_settings, isolated_dirs):
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.tabs.tab_count == 3)
        await pilot.press("ctrl+pageup")
        await wait_until(pilot, lambda: app.active_chat.conversation.id == 2)
    restarted = make_app(fast_settings, isolated_dirs)
    async with restarted.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert restarted.active_chat.conversation.id == 2
        assert restarted.focused is restarted.active_chat.prompt


async def test_a_new_tab_teaches_the_keys_and_shows_model_and_system_prompt(fast_settings, isolated_dirs):
    from tui.config import with_overrides

    settings = with_overrides(fast_settings, "chat", system_prompt="You are a zoo keeper.")
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        chat = app.active_chat
        await pilot.pause()
        welcome = str(chat.query_one(".welcome").render())
        assert "smollm2-135m-instruct" in welcome and "ctrl+s" in welcome and "ctrl+b" in welcome
        assert "System prompt: You are a zoo keeper." in str(chat.query_one(".system-prompt").render())
        assert chat.prompt.placeholder.startswith("Type a message")
        assert "smollm2-135m-instruct" in str(chat.query_one(".status").render())
        await pilot.press("f1")
        await pilot.pause()
        assert app.screen.query("HelpPanel")
        await pilot.press("f1")
        await pilot.pause()
        assert not app.screen.query("HelpPanel")


async def test_b_copies_a_code_block_that_never_closes(fast_settings, isolated_dirs):
    cut_off = "Sure:\n\n```python\nfor animal in zoo:\n    feed(animal)\n"
    app = app_with_chat(fast_settings, isolated_dirs, ("user", "code please"), ("assistant", cut_off))
    async with app.run_test(size=SIZE) as pilot:
        chat = await shown(pilot, 2)
        views(chat)[-1].focus()
        await pilot.press("b")
        assert app.clipboard == "for animal in zoo:\n    feed(animal)"


async def test_line_breaks_in_a_reply_are_shown_as_written(fast_settings, isolated_dirs):
    from textual.widgets._markdown import MarkdownParagraph

    poem = "Hear the call,\nTo those who roam,\nThe zoo is home."
    app = app_with_chat(fast_settings, isolated_dirs, ("user", "a poem"), ("assistant", poem))
    async with app.run_test(size=SIZE) as pilot:
        chat = await shown(pilot, 2)
        [paragraph] = views(chat)[-1].query(MarkdownParagraph)
        assert paragraph.size.height == 3


async def test_closing_an_empty_tab_leaves_no_conversation_behind(fast_settings, isolated_dirs):
    app = app_with_chat(fast_settings, isolated_dirs, ("user", "kept"), ("assistant", "yes"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: app.tabs.tab_count == 2)
        empty = app.active_chat.conversation.id
        await pilot.press("ctrl+w")
        await wait_until(pilot, lambda: app.tabs.tab_count == 1)
        assert [conversation.id for conversation in app.store.conversations()] == [1] and empty != 1
        assert not any("finds it again" in n.message for n in app._notifications)


@pytest.mark.slow  # loads the real default model
async def test_a_full_disk_is_said_and_the_message_waits_in_the_box(fast_settings, small_disk):
    app = make_app(fast_settings, small_disk)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.click(chat.query_one(PromptArea))
        filler = fill_disk(small_disk)
        await pilot.press(*"Are you there?", "enter")
        await wait_until(pilot, lambda: any("the disk is full" in n.message for n in app._notifications))
        assert chat.query_one(PromptArea).text == "Are you there?" and not chat.generating
        assert views(chat) == []
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: any(n.title == "No new chat" for n in app._notifications))
        assert app.tabs.tab_count == 1 and app.active_chat is chat
        await pilot.press("ctrl+w")
        await wait_until(pilot, lambda: any(n.title == "Tab not closed" for n in app._notifications))
        assert app.tabs.tab_count == 1 and app.active_chat is chat
        filler.unlink()
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(views(chat)) == 2 and not chat.generating)
        assert views(chat)[0].content == "Are you there?" and views(chat)[1].content
    store = Store(small_disk / DATABASE_NAME)
    question, answer = store.messages(chat.conversation.id)
    assert question.content == "Are you there?" and answer.content
    store.close()
