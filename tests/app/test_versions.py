"""Reply versions: regenerate keeps the earlier reply, ←/→ flips between them, the chat goes on from the one shown."""

from __future__ import annotations

import json

import pytest
from support import SIZE, app_with_chat, make_app, send, shown, views, wait_until

from tui.config import with_overrides
from tui.export import export
from tui.store import DATABASE_NAME, Store


@pytest.mark.slow
async def test_regenerate_keeps_the_old_reply_and_arrows_flip_between_versions(fast_settings, isolated_dirs):
    settings = with_overrides(fast_settings, "chat", temperature=1.0, seed=-1, max_tokens=16)
    app = make_app(settings, isolated_dirs)
    async with app.run_test(size=SIZE) as pilot:
        chat = await send(pilot, "Name an animal.")
        first = views(chat)[-1]
        first_id, first_text = first.message_id, first.content
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: views(chat)[-1] is not first and not chat.generating)
        await wait_until(pilot, lambda: views(chat)[-1].message_id is not None)
        second = views(chat)[-1]
        assert (second.version, second.versions) == (2, 2) and "version 2 of 2" in str(
            second.query_one(".role").render()
        )
        second.focus()
        await pilot.press("left")
        await wait_until(pilot, lambda: views(chat)[-1].message_id == first_id)
        assert views(chat)[-1].content == first_text and views(chat)[-1].version == 1
        assert app.focused is views(chat)[-1], "the flipped message keeps the focus, so arrows go on flipping"
        await pilot.press("left")
        await pilot.pause()
        assert views(chat)[-1].message_id == first_id, "there is nothing before the first version"
        await send(pilot, "And another?")
        conversation = app.active_chat.conversation
        history = app.service.history(conversation)
        assert [m["content"] for m in history][:2] == ["Name an animal.", first_text], "it goes on from the one shown"
    store = Store(isolated_dirs / DATABASE_NAME)
    saved = store.conversation(1)
    document = json.loads(export(saved, store.messages(1), "json", isolated_dirs, store.all_messages(1)))
    assert len(document["messages"]) == 5 and len(document["branch"]) == 4
    assert second.message_id in [m["id"] for m in document["messages"]], "the other version is exported too"
    assert "(version 1 of 2)" in export(saved, store.messages(1), "md", isolated_dirs)
    store.close()


async def test_stored_versions_show_after_a_relaunch(fast_settings, isolated_dirs):
    app = app_with_chat(fast_settings, isolated_dirs, ("user", "q"), ("assistant", "first"))
    question = app.store.messages(1)[0]
    app.store.show_until(1, question.id)
    app.store.add_message(1, "assistant", "second")
    async with app.run_test(size=SIZE) as pilot:
        chat = await shown(pilot, 2)
        reply = views(chat)[-1]
        assert (reply.content, reply.version, reply.versions) == ("second", 2, 2)
        reply.focus()
        await pilot.press("left")
        await wait_until(pilot, lambda: views(chat)[-1].content == "first")
        await pilot.press("right")
        await wait_until(pilot, lambda: views(chat)[-1].content == "second")
