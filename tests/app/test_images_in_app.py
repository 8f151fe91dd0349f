"""Images in the app: attach with ctrl+t or by pasting (or dropping) a path, refusals in one line, the picture inline."""

from __future__ import annotations

import pytest
from PIL import Image
from support import SIZE, send, views, wait_until
from textual import events
from textual_image.widget import Image as ImageWidget
from tinyminigpt4 import GRADIENT, build_model_pair

from tui.app import ZooApp
from tui.screens.attach import AttachScreen, PathInput
from tui.store import DATABASE_NAME, Store
from tui.widgets.prompt import PromptArea


@pytest.fixture(scope="module")
def vision_model(tmp_path_factory):
    return build_model_pair(tmp_path_factory.mktemp("models"))


def notes(app) -> list[str]:
    return [notification.message for notification in app._notifications]


async def started(app, pilot):
    await wait_until(pilot, lambda: app.active_chat is not None and app.active_chat.query(PromptArea))
    chat = app.active_chat
    await pilot.click(chat.query_one(PromptArea))
    return chat


async def open_attach_dialog(app, pilot) -> PathInput:
    """The dialog's path field, focused."""
    await pilot.press("ctrl+t")
    await wait_until(pilot, lambda: isinstance(app.screen, AttachScreen))
    return app.screen.query_one("#path", PathInput)


async def test_a_pasted_path_attaches_the_image_and_it_shows_with_the_message(
    vision_model, fast_settings, isolated_dirs, tmp_path
):
    dropped = tmp_path / "my pictures" / "a cat.png"
    dropped.parent.mkdir()
    dropped.write_bytes(GRADIENT.read_bytes())
    store = Store(isolated_dirs / DATABASE_NAME)
    app = ZooApp(fast_settings, store, new_chat_model=str(vision_model))
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(app, pilot)
        prompt = chat.query_one(PromptArea)
        # What terminals paste for a dropped file: the path with its spaces escaped (the app hands a paste to the focus).
        app.post_message(events.Paste(str(dropped).replace(" ", "\\ ")))
        await wait_until(pilot, lambda: chat._pending_image is not None)
        assert prompt.text == "" and "a cat.png" in str(chat.query_one(".attachment").render())
        # Other pastes stay text.
        app.post_message(events.Paste("What is this?"))
        await wait_until(pilot, lambda: prompt.text == "What is this?")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(views(chat)) == 2 and views(chat)[1].state != "streaming")
        assert views(chat)[0].query(ImageWidget)
    [conversation] = store.conversations()
    assert store.messages(conversation.id)[0].image.name == "a cat.png"
    store.close()


async def test_a_text_only_model_refuses_an_image_in_one_line(fast_settings, isolated_dirs):
    store = Store(isolated_dirs / DATABASE_NAME)
    app = ZooApp(fast_settings, store)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(app, pilot)
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: any("text-only model" in note for note in notes(app)))
        assert not isinstance(app.screen, AttachScreen)
        app.post_message(events.Paste(str(GRADIENT)))
        await wait_until(pilot, lambda: len([n for n in notes(app) if "text-only model" in n]) == 2)
        assert chat._pending_image is None
        [refusal, *_] = [n for n in notes(app) if "text-only model" in n]
        assert "\n" not in refusal
    store.close()


async def test_a_bad_image_is_refused_and_the_tab_still_chats(vision_model, fast_settings, isolated_dirs, tmp_path):
    animated = tmp_path / "moving.gif"
    Image.new("RGB", (8, 8), "red").save(animated, save_all=True, append_images=[Image.new("RGB", (8, 8), "blue")])
    store = Store(isolated_dirs / DATABASE_NAME)
    app = ZooApp(fast_settings, store, new_chat_model=str(vision_model))
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(app, pilot)
        field = await open_attach_dialog(app, pilot)
        # The path goes in as typed characters do, at once: pressing its ~90 keys one by one takes seconds.
        field.insert_text_at_cursor(str(animated))
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("animated" in note for note in notes(app)))
        assert chat._pending_image is None
        await send(pilot, "Hello?")
        assert views(chat)[1].state == "done" and not views(chat)[0].query(ImageWidget)
    store.close()


async def test_the_attach_dialog_completes_paths_and_an_empty_path_drops_the_image(
    vision_model, fast_settings, isolated_dirs, tmp_path
):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "zebra.png").write_bytes(GRADIENT.read_bytes())
    (folder / "notes.txt").write_text("not offered")
    store = Store(isolated_dirs / DATABASE_NAME)
    app = ZooApp(fast_settings, store, new_chat_model=str(vision_model))
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(app, pilot)
        field = await open_attach_dialog(app, pilot)
        # The folder's path at once (typed characters go in the same way), then keys: tab completes what they spell.
        field.insert_text_at_cursor(f"{tmp_path}/")
        await pilot.press(*"pho", "tab")
        assert field.value == f"{folder}/"
        await pilot.press("tab", "enter")
        await wait_until(pilot, lambda: chat._pending_image is not None)
        assert chat._pending_image.name == "zebra.png"
        await open_attach_dialog(app, pilot)
        await pilot.press("enter")
        await wait_until(pilot, lambda: chat._pending_image is None)
    store.close()
