"""The work-arounds of tui/widgets/textual_fixes.py: each one does its job on the Textual installed."""

from __future__ import annotations

import gc
import weakref

from textual._styles_cache import StylesCache
from textual.app import App, ComposeResult
from textual.color import Color
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.widgets import textual_fixes  # noqa: F401 - applies them


class CardsApp(App):
    CSS = "Static { background: $panel; margin: 1 0; }"

    def compose(self) -> ComposeResult:
        yield VerticalScroll()


async def test_the_lines_of_a_removed_widget_are_let_go():
    # Textual's lru_cache on StylesCache.get_inner_outer kept the StylesCache of every widget that drew, and
    # with it the lines it drew, after the widget was removed (Textual issue 6665).
    app = CardsApp()
    async with app.run_test(size=(60, 20)) as pilot:
        log = app.query_one(VerticalScroll)
        cards = [Static(f"card {number}\n" * 3) for number in range(8)]
        await log.mount_all(cards)
        await pilot.pause()
        drawn = [weakref.ref(card._styles_cache) for card in cards if card._styles_cache._cache]
        assert drawn, "no card drew a line"
        await log.remove_children()
        await pilot.pause()
        del cards
    del app, log
    gc.collect()
    assert [ref for ref in drawn if ref() is not None] == []


def test_the_styles_are_those_textual_computes():
    base, background = Color(10, 20, 30), Color(200, 100, 0, 0.5)
    inner, outer = StylesCache().get_inner_outer(base, background)
    assert inner.background == base + background
    assert outer.background == base
    # Cached on the colors alone: another widget's StylesCache gets the same styles back.
    assert StylesCache().get_inner_outer(base, background)[0] is inner
