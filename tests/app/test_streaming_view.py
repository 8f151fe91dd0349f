"""A streaming reply's view: it shows every batch of text and grows with it, laying the screen out only when a
batch changes its height, and once for each such change."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import make_app
from textual.app import App, ComposeResult
from textual.screen import Screen

import tui.app
from tui.app import GIL_SWITCH_INTERVAL
from tui.store import MessageState
from tui.widgets.message import GrowingParagraph, MessageView
from tui.widgets.message_log import MessageLog

WIDTH = 60
WORD = "zebra "  # six columns: the log's text is 56 columns wide (its padding and the view's), nine words a line


class StreamApp(App):
    CSS_PATH = Path(tui.app.__file__).with_name("app.tcss")  # the app's own rules: views are as tall as their text

    def compose(self) -> ComposeResult:
        yield MessageLog(lambda message: MessageView(message.role, message.content))


class Layouts:
    """Counts the screen's layout passes."""

    def __init__(self, app: App) -> None:
        self.count = 0
        app.screen.screen_layout_refresh_signal.subscribe(app.screen, self._laid_out)

    def _laid_out(self, _screen: Screen) -> None:
        self.count += 1


async def streaming_view(app: App, pilot) -> MessageView:
    log = app.query_one(MessageLog)
    view = MessageView("assistant", state=MessageState.STREAMING)
    await log.mount(view)
    log.anchor()
    await view.append(WORD)
    await pilot.pause()
    return view


async def test_a_batch_that_keeps_the_line_count_repaints_and_one_that_wraps_lays_out_once():
    app = StreamApp()
    async with app.run_test(size=(WIDTH, 20)) as pilot:
        view = await streaming_view(app, pilot)
        paragraph = view.query_one(GrowingParagraph)
        width = paragraph.content_size.width
        layouts = Layouts(app)
        words = 1
        for _ in range(2 * width // len(WORD)):
            lines_before = paragraph.size.height
            before = layouts.count
            await view.append(WORD)
            words += 1
            await pilot.pause()
            await pilot.pause()
            wrapped = paragraph.size.height != lines_before
            assert layouts.count - before == (1 if wrapped else 0), (words, paragraph.size.height)
        # Every word is on the screen, on as many lines as it takes.
        per_line = (width + 1) // len(WORD)
        assert paragraph.size.height == -(-words // per_line)
        assert app.screen.get_widget_at(2, 20 - 2)[0] is paragraph  # the log follows its end
        assert app.export_screenshot().count("zebra") == words


async def test_a_paragraph_that_fits_its_line_still_shows_each_batch():
    app = StreamApp()
    async with app.run_test(size=(WIDTH, 20)) as pilot:
        view = await streaming_view(app, pilot)
        for word in ("lion ", "tiger ", "okapi"):
            await view.append(word)
            await pilot.pause()
            await pilot.pause()
            assert word.strip() in app.export_screenshot()
        assert view.query_one(GrowingParagraph).size.height == 1


async def test_the_app_hands_the_gil_to_the_generation_thread_within_a_millisecond(fast_settings, isolated_dirs):
    before = sys.getswitchinterval()
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before  # put back when the app ends
