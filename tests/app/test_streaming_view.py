"""A streaming reply's view: it shows every batch of text and grows with it, a few lines at a time, laying the
screen out only when a batch changes its height, and once for each such change; it fits its text once the reply
ends."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import make_app
from textual.app import App, ComposeResult
from textual.content import Content, Span
from textual.geometry import Region
from textual.screen import Screen

import tui.app
from tui.app import GIL_SWITCH_INTERVAL
from tui.store import MessageState
from tui.widgets.message import GROWTH_STEP, GrowingParagraph, MessageView, extends
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


def lines_in_steps(lines: int) -> int:
    return -(-lines // GROWTH_STEP) * GROWTH_STEP


async def test_a_streaming_paragraph_grows_a_few_lines_at_a_time_each_growth_one_layout():
    app = StreamApp()
    async with app.run_test(size=(WIDTH, 20)) as pilot:
        view = await streaming_view(app, pilot)
        paragraph = view.query_one(GrowingParagraph)
        width = paragraph.content_size.width
        per_line = (width + 1) // len(WORD)
        layouts = Layouts(app)
        words, growths = 1, 0
        for _ in range(7 * per_line // 2):  # two words a batch
            lines_before = paragraph.size.height
            before = layouts.count
            await view.append(WORD * 2)
            words += 2
            await pilot.pause()
            await pilot.pause()
            grew = paragraph.size.height != lines_before
            growths += grew
            assert layouts.count - before == (1 if grew else 0), (words, paragraph.size.height)
            assert paragraph.size.height == lines_in_steps(-(-words // per_line)), words
        # Seven lines of text: the paragraph grew from three lines to six and then nine, one layout each.
        assert growths == 2 and layouts.count == 2
        assert app.screen.get_widget_at(2, 20 - 2)[0] is paragraph  # the log follows its end
        assert app.export_screenshot().count("zebra") == words

        await view.finish()
        await pilot.pause()
        paragraph = view.query_one(GrowingParagraph)  # the whole reply is shown again at its end
        assert paragraph.size.height == -(-words // per_line), "no blank lines once the reply is over"
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
        assert view.query_one(GrowingParagraph).size.height == GROWTH_STEP
        await view.finish()
        await pilot.pause()
        assert view.query_one(GrowingParagraph).size.height == 1


async def test_only_the_paragraph_the_text_goes_into_keeps_blank_lines():
    app = StreamApp()
    async with app.run_test(size=(WIDTH, 20)) as pilot:
        view = await streaming_view(app, pilot)
        await view.append("the first paragraph")
        await pilot.pause()
        await pilot.pause()
        assert view.query_one(GrowingParagraph).size.height == GROWTH_STEP
        await view.append(" ends here\n\nand the next one")
        await pilot.pause()
        await pilot.pause()
        first, second = view.query(GrowingParagraph)
        assert (first.size.height, second.size.height) == (1, GROWTH_STEP)


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (Content("zebra is", spans=[Span(0, 5, "bold")]), True),  # text added
        (Content("zebra is", spans=[Span(0, 8, "bold")]), True),  # and the last style runs on over it
        (Content("zebra is", spans=[Span(0, 5, "bold"), Span(6, 8, "italic")]), True),  # a style of its own
        (Content("zebra is", spans=[Span(0, 5, "italic")]), False),  # the old text restyled
        (Content("zebra is", spans=[Span(0, 3, "bold")]), False),
        (Content("zebra is", spans=[]), False),
        (Content("zebras", spans=[Span(0, 5, "bold")]), True),
        (Content("Zebra is", spans=[Span(0, 5, "bold")]), False),  # the old text changed
        (Content("zebr", spans=[Span(0, 4, "bold")]), False),
    ],
)
def test_a_batch_extends_the_text_only_when_what_was_there_stays_as_it_was(new, expected):
    assert extends(Content("zebra", spans=[Span(0, 5, "bold")]), new) is expected


async def test_a_paragraph_fits_its_text_once_the_next_one_starts(fast_settings, isolated_dirs):
    # In the app's own log, which a long conversation has scrolled: Textual keeps the size a widget had at the
    # same container size, and the log's came back as the reply grew.
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        log = app.active_chat.log
        await log.mount(MessageView("user", "a line\n" * 30))
        view = MessageView("assistant", state=MessageState.STREAMING)
        await log.mount(view)
        log.anchor()
        await pilot.pause()
        # Paragraphs of five and four lines: each keeps blank lines while the text goes into it.
        for words in (50, 40, 30):
            for _ in range(words // 5):
                await view.append(WORD * 5)
                await pilot.pause()
            await view.append("end.")
            await pilot.pause()
            await view.append("\n\n")
            await pilot.pause()
        *earlier, last = view.query(GrowingParagraph)
        assert [paragraph.size.height for paragraph in earlier] == [5, 4]
        assert last.size.height == GROWTH_STEP


def shown(paragraph: GrowingParagraph) -> list[str]:
    """Its lines as the screen is drawn from them: lines a repaint left out come from the widget's cache."""
    return [strip.text.rstrip() for strip in paragraph.render_lines(Region(0, 0, *paragraph.size))]


async def test_a_word_that_no_longer_fits_its_line_moves_down_and_leaves_it():
    app = StreamApp()
    async with app.run_test(size=(WIDTH, 20)) as pilot:
        view = await streaming_view(app, pilot)
        paragraph = view.query_one(GrowingParagraph)
        width = paragraph.content_size.width
        filler = "a" * (width - len(WORD) - 5)
        await view.append(f"{filler} bcd")  # one column short of the line's end
        await pilot.pause()
        await pilot.pause()
        assert shown(paragraph)[:2] == [f"zebra {filler} bcd", ""]
        await view.append("efgh")  # the word is now too long for the first line
        await pilot.pause()
        await pilot.pause()
        assert shown(paragraph)[:2] == [f"zebra {filler}", "bcdefgh"]


async def test_a_batch_that_restyles_earlier_lines_repaints_them():
    app = StreamApp()
    async with app.run_test(size=(WIDTH, 20)) as pilot:
        view = await streaming_view(app, pilot)
        paragraph = view.query_one(GrowingParagraph)
        zebras = " zebra" * 9  # the text goes on to a second line
        await view.append("is **striped" + zebras)
        await pilot.pause()
        await pilot.pause()
        lines = [line for line in shown(paragraph) if line]
        assert len(lines) == 2 and "**" in lines[0]
        await view.append("**")  # the markers go: the first line is shorter, and takes a zebra back
        await pilot.pause()
        await pilot.pause()
        lines = [line for line in shown(paragraph) if line]
        assert " ".join(lines) == "zebra is striped" + zebras


async def test_the_app_hands_the_gil_to_the_generation_thread_within_a_millisecond(fast_settings, isolated_dirs):
    before = sys.getswitchinterval()
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before  # put back when the app ends


async def test_the_status_line_says_what_happens_without_laying_the_screen_out(fast_settings, isolated_dirs):
    # It changes as the model loads, as the prompt is read (many times for a long one) and as the reply starts.
    app = make_app(fast_settings, isolated_dirs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        chat = app.active_chat
        status = chat.query_one(".status")
        layouts = Layouts(app)
        for note in ("reading the prompt: 10/400 tokens", "reading the prompt: 20/400 tokens", "writing…"):
            chat._say(note)
            await pilot.pause()
            assert note in str(status.render())
        assert layouts.count == 0
