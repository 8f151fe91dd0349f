"""The moderation model in the app: chosen in the settings panel; a message's label shows under it;
a reply to a message that needs intervention waits behind a notice until ctrl+o sends it anyway,
also after a restart. Models: tests/moderator.py (tiny GPT-J-shaped moderators run by llama.cpp)."""

from __future__ import annotations

from pathlib import Path

import pytest
from moderator import SAMPLE_MESSAGE, install_chat_model, install_moderator
from support import SIZE, views, wait_until

from tui.app import ZooApp
from tui.store import DATABASE_NAME, Store
from tui.widgets.prompt import PromptArea
from tui.widgets.settings_panel import SettingsPanel


async def type_message(pilot, text: str) -> None:
    chat = pilot.app.active_chat
    await pilot.click(chat.query_one(PromptArea))
    await pilot.press(*text, "enter")
    await wait_until(pilot, lambda: views(chat)[-1].role == "user" and not chat.generating)
    await pilot.pause()


def status(chat) -> str:
    return str(chat.query_one(".status").render())


@pytest.mark.slow
async def test_a_held_reply_waits_for_ctrl_o_and_the_label_stays(tmp_path: Path, isolated_dirs: Path, fast_settings):
    moderator = install_moderator(isolated_dirs, "needs intervention", tmp_path)
    casual = install_moderator(isolated_dirs, "casual", tmp_path)
    chat_model = install_chat_model(isolated_dirs)
    store = Store(isolated_dirs / DATABASE_NAME)
    app = ZooApp(fast_settings, store, new_chat_model=chat_model)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.press("ctrl+s")
        panel = chat.query_one(SettingsPanel)
        choices = panel.query_one("#moderation-model")
        assert [value for _, value in choices._options] == ["", casual, moderator]  # moderators only, and "off"
        choices.value = moderator
        await wait_until(pilot, lambda: store.conversation(chat.conversation.id).moderation_model == moderator)
        await pilot.press("ctrl+s")

        await type_message(pilot, SAMPLE_MESSAGE)
        [user] = views(chat)  # no reply was generated
        assert "moderation: needs intervention · reply held" in str(user.query_one(".figures").render())
        assert "reply held: needs intervention · ctrl+o sends it anyway" in status(chat)
        assert chat.check_action("send_anyway", ()) is True
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: len(views(chat)) == 2 and not chat.generating)
        await pilot.pause()
        user, reply = views(chat)
        assert reply.state == "done" and str(user.query_one(".figures").render()) == "moderation: needs intervention"
        assert chat.check_action("send_anyway", ()) is False

        await type_message(pilot, "And the pandas?")  # held again: each message is classified
        assert len(views(chat)) == 3
    conversation_id = chat.conversation.id

    reopened = ZooApp(fast_settings, store)  # a restart keeps the hold and the key that lifts it
    async with reopened.run_test(size=SIZE) as pilot:
        chat = reopened.active_chat
        await wait_until(pilot, lambda: "ctrl+o sends it anyway" in status(chat))
        assert len(views(chat)) == 3
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: len(views(chat)) == 4 and not chat.generating)
    saved = store.messages(conversation_id)
    assert [m.role for m in saved] == ["user", "assistant", "user", "assistant"]
    assert [m.moderation["label"] for m in saved if m.role == "user"] == ["needs intervention"] * 2
    store.close()
