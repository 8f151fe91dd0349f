"""The message log mounts the newest few screens of a long conversation and the rest as it is scrolled to."""

from __future__ import annotations

from pathlib import Path

import pytest
from stored_conversations import stored_conversation
from textual.app import App, ComposeResult

import tui.app
from tui.store import DATABASE_NAME, Store
from tui.widgets.message import MessageView
from tui.widgets.message_log import AHEAD_SCREENS, BEHIND_SCREENS, WINDOW_SCREENS, MessageLog

APP_CSS = Path(tui.app.__file__).with_name("app.tcss")


class LogApp(App):
    CSS_PATH = APP_CSS  # the app's own rules: message views are as tall as their text

    def __init__(self) -> None:
        super().__init__()
        # Textual's animations, which tests/conftest.py turns off: a page key must jump, not glide, and with
        # them off a glide would be a jump too.
        self.animation_level = "full"

    def compose(self) -> ComposeResult:
        yield MessageLog(lambda message: MessageView(message.role, message.content, message_id=message.id))

    @property
    def log_widget(self) -> MessageLog:
        return self.query_one(MessageLog)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / DATABASE_NAME)


async def settle(pilot) -> None:
    """Let the log mount what it mounts after a layout (more messages when the first screens fell short)."""
    for _ in range(3):
        await pilot.pause()


async def showing(app: LogApp, pilot, messages) -> MessageLog:
    log = app.log_widget
    await log.show(messages)
    log.scroll_end(animate=False)
    await settle(pilot)
    return log


def drawn_at(log: MessageLog, view: MessageView) -> int:
    """How far below the top of the log's window a view is drawn."""
    return view.virtual_region.y - round(log.scroll_y)


async def test_a_long_conversation_mounts_its_newest_screens_only(store):
    messages = store.messages(stored_conversation(store, 500).id)
    app = LogApp()
    async with app.run_test(size=(100, 30)) as pilot:
        log = await showing(app, pilot, messages)
        views = log.views
        assert views[-1].message_id == messages[-1].id
        assert [view.message_id for view in views] == [message.id for message in messages[-len(views) :]]
        assert len(views) < 60 and log.unmounted == 500 - len(views)
        # Enough to fill the window's screens, so scrolling up has somewhere to go before more is needed.
        assert log.virtual_size.height >= (WINDOW_SCREENS - 1) * log.size.height


@pytest.mark.slow  # 8-14 CPU-seconds: a screen of messages mounted and laid out at each of its many scroll steps
async def test_scrolling_moves_the_window_without_moving_what_is_in_view(store):
    messages = store.messages(stored_conversation(store, 80).id)
    app = LogApp()
    async with app.run_test(size=(100, 30)) as pilot:
        log = await showing(app, pilot, messages)
        # What the window reaches: the screens ahead and behind, the one in view, and a message at each end.
        window = AHEAD_SCREENS + 1 + BEHIND_SCREENS + 1
        log.scroll_to(y=2, animate=False, immediate=True)
        # In view now, before the messages above it are mounted:
        view = next(view for view in log.views if view.virtual_region.bottom > log.scroll_y)
        offset, first = drawn_at(log, view), log.views[0].message_id
        await settle(pilot)
        assert log.views[0].message_id < first
        assert drawn_at(log, view) == offset
        most = 0
        for _ in range(200):
            if log.views[0].message_id == messages[0].id and log.scroll_y == 0:
                break
            log.scroll_to(y=0, animate=False, immediate=True)
            await settle(pilot)
            most = max(most, log.virtual_size.height)
        assert log.views[0].message_id == messages[0].id
        # The views below went as the ones above came: the log holds about as many screens as it reaches.
        assert most <= window * log.size.height and log.views[-1].message_id != messages[-1].id
        for _ in range(200):
            if log.views[-1].message_id == messages[-1].id and log.scroll_y == log.max_scroll_y:
                break
            log.scroll_to(y=log.max_scroll_y, animate=False, immediate=True)
            await settle(pilot)
        assert log.views[-1].message_id == messages[-1].id
        assert log.virtual_size.height <= window * log.size.height


@pytest.mark.slow  # over 2 CPU-seconds: many moves of the window through a 200-message conversation
async def test_a_show_keeps_the_window_on_what_is_read_unless_it_follows(store):
    conversation = stored_conversation(store, 200)
    app = LogApp()
    async with app.run_test(size=(100, 30)) as pilot:
        log = await showing(app, pilot, store.messages(conversation.id))
        window = len(log.views)
        for _ in range(8):  # read further up
            log.scroll_to(y=0, animate=False, immediate=True)
            await settle(pilot)
        reading = [view.message_id for view in log.views]
        store.add_message(conversation.id, "assistant", "One more answer.")
        await log.show(store.messages(conversation.id))
        await pilot.pause()
        assert [view.message_id for view in log.views] == reading
        await log.show(store.messages(conversation.id), follow=True)
        log.scroll_end(animate=False)
        await settle(pilot)
        assert log.views[-1].content == "One more answer."
        assert len(log.views) <= window + 2


async def test_views_that_show_the_right_message_are_kept_and_the_rest_replaced(store):
    conversation = stored_conversation(store, 6)
    app = LogApp()
    async with app.run_test(size=(100, 30)) as pilot:
        log = app.log_widget
        messages = store.messages(conversation.id)
        await log.show(messages)
        kept = log.views[:4]
        # A new version of the fifth message: the branch shown ends with it.
        store.add_message(conversation.id, "assistant", "A new last reply.", parent_id=messages[4].parent_id)
        await log.show(store.messages(conversation.id))
        await pilot.pause()
        assert log.views[:4] == kept
        assert [view.content for view in log.views[4:]] == ["A new last reply."]


def ids_in_order(log: MessageLog, messages) -> bool:
    """Whether the views show consecutive messages of the conversation, each once."""
    ids = [message.id for message in messages]
    shown = [view.message_id for view in log.views]
    return bool(shown) and shown[0] in ids and shown == ids[ids.index(shown[0]) : ids.index(shown[0]) + len(shown)]


@pytest.mark.slow  # 8-14 CPU-seconds: a screen of messages mounted and laid out at each of its many scroll steps
async def test_a_reply_the_pane_mounted_is_counted_once_the_log_is_shown_it(store):
    conversation = stored_conversation(store, 60)
    app = LogApp()
    async with app.run_test(size=(100, 30)) as pilot:
        log = await showing(app, pilot, store.messages(conversation.id))
        # As the chat pane does: a view with no id streams at the end, then gets the stored reply's id.
        reply_view = MessageView("assistant", "Streamed.")
        await log.mount(reply_view)
        reply_view.message_id = store.add_message(conversation.id, "assistant", "Streamed.").id
        for _ in range(4):  # scrolling before the log is told moves nothing at the bottom
            log.scroll_to(y=0, animate=False, immediate=True)
            await settle(pilot)
        assert log.views[-1] is reply_view
        messages = store.messages(conversation.id)
        await log.show(messages)
        await settle(pilot)
        for to_top in (True, False, True, False):
            for _ in range(200):
                edge_view, edge_message = (log.views[0], messages[0]) if to_top else (log.views[-1], messages[-1])
                y = 0 if to_top else log.max_scroll_y
                if edge_view.message_id == edge_message.id and log.scroll_y == y:
                    break
                log.scroll_to(y=y, animate=False, immediate=True)
                await settle(pilot)
            assert ids_in_order(log, messages)
        assert log.views[-1].message_id == messages[-1].id


@pytest.mark.slow  # over 2 CPU-seconds: many moves of the window through a 200-message conversation
async def test_messages_replaced_from_the_top_of_the_window_keep_it_where_it_stood(store):
    # As when the version of the first message in view is switched: it and every message after it change.
    conversation = stored_conversation(store, 200)
    app = LogApp()
    async with app.run_test(size=(100, 30)) as pilot:
        log = await showing(app, pilot, store.messages(conversation.id))
        for _ in range(6):
            log.scroll_to(y=0, animate=False, immediate=True)
            await settle(pilot)
        first = log.views[0]
        position = log.position_of(first)
        assert position > 0 and not log.holds_newest
        parent_id = store.messages(conversation.id)[position].parent_id
        store.add_message(conversation.id, log.views[0].role, "Other branch 0.", parent_id=parent_id)
        for number in range(1, 30):
            store.add_message(conversation.id, "user" if number % 2 == 0 else "assistant", f"Other branch {number}.")
        messages = store.messages(conversation.id)
        await log.show(messages)
        await settle(pilot)
        assert log.view_at(position).content == "Other branch 0."
        assert ids_in_order(log, messages)


@pytest.mark.slow  # over 2 CPU-seconds: many moves of the window through a 200-message conversation
async def test_a_move_of_the_window_mounts_and_lets_go_in_one_layout(store):
    """Each layout is of the whole screen: the views mounted above and those let go below change it once."""
    messages = store.messages(stored_conversation(store, 200).id)
    app = LogApp()
    async with app.run_test(size=(100, 30)) as pilot:
        log = await showing(app, pilot, messages)
        laid_out: list[set[int]] = []  # the messages each layout found views of
        layout = app.screen._refresh_layout

        def recorded(*args, **kwargs):
            laid_out.append({view.message_id for view in log.views})
            return layout(*args, **kwargs)

        app.screen._refresh_layout = recorded
        moves = 0
        for _ in range(12):
            before = {view.message_id for view in log.views}
            laid_out.clear()
            log.scroll_page_up()
            await settle(pilot)
            after = {view.message_id for view in log.views}
            if after - before and before - after:
                moves += 1
                half_done = [shown for shown in laid_out if shown - before and shown & (before - after)]
                assert not half_done, "no layout has the views that came and the views that went"
        assert moves >= 3


@pytest.mark.slow  # over 2 CPU-seconds: many moves of the window through a 200-message conversation
async def test_a_page_key_only_scrolls_and_the_screen_ahead_is_mounted_after_that_frame(store):
    messages = store.messages(stored_conversation(store, 200).id)
    app = LogApp()
    async with app.run_test(size=(100, 30)) as pilot:
        log = await showing(app, pilot, messages)
        log.focus()
        frames: list[tuple[float, list[int]]] = []  # the scroll position and the views each frame drew
        draw = app.screen._compositor_refresh

        def recorded(*args, **kwargs):
            frames.append((log.scroll_y, [view.message_id for view in log.views]))
            return draw(*args, **kwargs)

        app.screen._compositor_refresh = recorded
        for _ in range(8):
            scrolled_from, views = log.scroll_y, [view.message_id for view in log.views]
            frames.clear()
            await pilot.press("pageup")
            await settle(pilot)
            scrolled = next(frame for frame in frames if frame[0] != scrolled_from)
            assert scrolled == (scrolled_from - log.size.height, views), "the key's frame: scrolled, nothing mounted"
            assert log.scroll_y >= AHEAD_SCREENS * log.size.height, "then the screens above it mounted"
