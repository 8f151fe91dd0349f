"""The work-arounds of tui/widgets/textual_fixes.py: each one does its job on the Textual installed."""

from __future__ import annotations

import gc
import weakref

from rich.segment import Segment
from textual._styles_cache import StylesCache
from textual.app import App, ComposeResult
from textual.cache import LRUCache
from textual.color import Color
from textual.containers import VerticalScroll
from textual.css.styles import Styles
from textual.dom import DOMNode
from textual.geometry import Region
from textual.strip import Strip
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


def _collector_paused() -> None:
    """Nothing is freed behind the test's back: what is freed while this holds went by reference counting."""
    gc.collect()
    gc.disable()


async def test_a_removed_widget_is_freed_without_the_collector():
    # Its Styles referred back to it, its lines cached themselves and its caches kept rings: each one a cycle
    # that kept the view, and everything it drew, waiting for a collection.
    app = CardsApp()
    async with app.run_test(size=(60, 20)) as pilot:
        log = app.query_one(VerticalScroll)
        await log.mount_all([Static("a card\n" * 3), Static("the card that stays")])
        await pilot.pause()
        card = log.children[0]
        gone = weakref.ref(card)
        assert card._styles_cache._cache, "the card drew no line"
        try:
            _collector_paused()
            await card.remove()
            del card
            # The log keeps its last four arrangements, the card's among them, until newer ones replace them.
            for number in range(4):
                await log.mount(Static(f"newer card {number}"))
                await pilot.pause()
            assert gone() is None
        finally:
            gc.enable()


async def test_a_layout_leaves_no_map_in_a_cycle():
    app = CardsApp()
    async with app.run_test(size=(60, 20)) as pilot:
        await app.query_one(VerticalScroll).mount_all([Static(f"card {n}") for n in range(5)])
        await pilot.pause()
        placed, widgets = app.screen._compositor._arrange_root(app.screen, app.screen.size)
        assert len(placed) > 5 and widgets
        # Only this test's names refer to them: no closure cell (the cycle) does.
        for made in (placed, widgets):
            assert [holder for holder in gc.get_referrers(made) if type(holder).__name__ == "cell"] == []


def test_a_cleared_or_dropped_lru_cache_leaves_no_ring():
    try:
        _collector_paused()
        cache = LRUCache(4)
        values = [Marker() for _ in range(3)]
        for key, cached in enumerate(values):
            cache[key] = cached
        watched = [weakref.ref(cached) for cached in values]
        del values, cached
        cache.clear()
        assert [ref for ref in watched if ref() is not None] == []
        cache["again"] = Marker()
        kept = weakref.ref(cache["again"])
        del cache
        assert kept() is None
    finally:
        gc.enable()


class Marker:
    """An object weakly referable and tracked by the collector, as a cached value."""


def test_a_cache_still_caches():
    cache = LRUCache(2)
    cache["a"], cache["b"], cache["c"] = 1, 2, 3
    assert cache.get("a") is None and cache.get("b") == 2 and cache["c"] == 3
    cache.clear()
    assert len(cache) == 0 and cache.get("b") is None


def test_a_whole_strip_divides_into_itself_uncached():
    strip = Strip([Segment("ab"), Segment("cd")], 4)
    assert strip.divide([4]) == [strip]
    assert strip._divide_cache.get((4,)) is None  # it would hold the strip itself: a cycle
    assert [part.text for part in strip.divide(iter([1, 4]))] == ["a", "bcd"]
    assert [part.text for part in strip.divide([2, 4, 9])] == ["ab", "cd"]  # cuts past its end are dropped


def test_styles_refer_to_a_widget_weakly_and_to_a_virtual_node_strongly():
    widget = Static("x")
    assert widget._css_styles.node is widget and widget.styles.node is widget
    virtual = DOMNode(classes="component")
    styles = Styles(node=virtual)
    del virtual
    assert styles.node is not None  # component styles keep their virtual node alive
    assert Styles().node is None
    assert Styles(node=widget) == Styles(node=widget)
    try:
        _collector_paused()
        orphaned = Styles(node=Static("a widget only its styles refer to"))
        assert orphaned.node is None
    finally:
        gc.enable()


async def test_an_update_of_one_line_asks_the_widgets_around_it_for_that_line_alone():
    asked: dict[str, list[int]] = {}

    class Recorded(Static):
        def render_lines(self, crop):
            asked.setdefault(self.id, []).append(crop.height)
            return super().render_lines(crop)

    class PageApp(App):
        def compose(self) -> ComposeResult:
            with Recorded(id="page"):  # a container wholly on screen, around the line that changes
                yield Static("\n".join(f"line {number}" for number in range(10)), id="text")

    app = PageApp()
    async with app.run_test(size=(40, 12)) as pilot:
        await pilot.pause()
        asked.clear()
        text = app.query_one("#text", Static)
        text.refresh(Region(0, 4, text.size.width, 1))
        await pilot.pause()
        assert asked["page"] == [1]
        # A full update still draws every line.
        asked.clear()
        app.screen.refresh()
        await pilot.pause()
        assert asked["page"] == [app.query_one("#page").size.height]
