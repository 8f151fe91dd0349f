"""Work-arounds for bugs of the Textual release zootui runs on, applied once, when this module is imported (by
tui/widgets/message.py: every screen that shows a conversation has it).

Each one checks that the bug is still there before it changes anything, so a Textual that fixes it is left
alone; tests/app/test_textual_fixes.py fails if a work-around stops working.

Most are about objects caught in reference cycles. Python frees an object the moment nothing refers to it,
unless it sits in a cycle: then it waits for the cycle collector, which holds the UI thread for as long as
it takes to walk and free them all. Paging through a 500-message conversation let go of about 14,000 such
objects a press (the views that left the log's window, every layout's map, every line a widget drew), and one
collection took up to 0.7 s of a key press (tests/bench/bench_chat.py's history phase). With the fixes below,
about 1,500 a press are left (the styles Textual makes for a widget's component classes, below).
"""

from __future__ import annotations

import weakref
from functools import lru_cache

from textual._compositor import Compositor
from textual._styles_cache import StylesCache
from textual.cache import LRUCache
from textual.color import Color
from textual.css.styles import Styles
from textual.geometry import Region
from textual.strip import Strip
from textual.style import Style
from textual.widget import Widget

INNER_OUTER_STYLES_CACHED = 1024
"""Pairs of background colors whose inner and outer styles are kept (what Textual keeps)."""


def _styles_caches_are_let_go() -> None:
    """Textual 8.2 caches ``StylesCache.get_inner_outer`` with ``functools.lru_cache`` on the method, so the key
    holds the widget's ``StylesCache``, and with it every line that widget last drew, after the widget is gone
    (Textual issue 6665). In a long conversation paged through, up to 1024 message views' lines stayed alive:
    about 200,000 objects that every full garbage collection walked again. The styles depend on the two colors
    only, so the cache is keyed on them."""
    cached = StylesCache.__dict__.get("get_inner_outer")
    styles_for = getattr(cached, "__wrapped__", None)
    if styles_for is None:  # not wrapped by lru_cache: fixed upstream
        return

    @lru_cache(INNER_OUTER_STYLES_CACHED)
    def inner_outer(base_background: Color, background: Color) -> tuple[Style, Style]:
        return styles_for(StylesCache, base_background, background)

    def get_inner_outer(_styles_cache: StylesCache, base_background: Color, background: Color):
        return inner_outer(base_background, background)

    StylesCache.get_inner_outer = get_inner_outer


_styles_caches_are_let_go()


def _layout_maps_are_let_go() -> None:
    """``Compositor._arrange_root`` places widgets with a recursive inner function, which refers to itself
    through its closure, and so do the map and the set of widgets it fills: every layout left both in a cycle,
    with a geometry for each widget laid out (a streaming reply is laid out ten times a second). The map and
    set returned are copies, and the closure's own are emptied."""
    if not {"add_widget", "map", "widgets"} <= set(Compositor._arrange_root.__code__.co_cellvars):
        return  # no recursive closure over the map any more
    arrange_root = Compositor._arrange_root

    def _arrange_root(compositor: Compositor, root: Widget, size, visible_only: bool = True):
        placed, widgets = arrange_root(compositor, root, size, visible_only)
        own_placed, own_widgets = dict(placed), set(widgets)
        placed.clear()
        widgets.clear()
        return own_placed, own_widgets

    Compositor._arrange_root = _arrange_root


_layout_maps_are_let_go()


class _WeakWidget:
    """A ``Styles.node`` that refers to a widget weakly (and to a virtual node of component styles strongly:
    nothing else keeps that one alive)."""

    def __get__(self, styles: Styles | None, owner: type | None = None):
        if styles is None:
            return None  # the dataclass's default
        node = styles.__dict__.get("_node_ref")
        return node() if isinstance(node, weakref.ref) else node

    def __set__(self, styles: Styles, node) -> None:
        styles.__dict__["_node_ref"] = weakref.ref(node) if isinstance(node, Widget) else node


def _styles_let_go_of_their_widget() -> None:
    """A widget's two ``Styles`` (from its CSS, and set inline) refer back to it through ``node``, so every
    widget is in a cycle with them, and with it all it holds: a removed message view, its Markdown's blocks and
    every line they drew waited for the collector. Textual's ``RenderStyles`` already refers to its node weakly;
    this makes ``Styles`` do the same for widgets."""
    if Styles.__dict__.get("node", ...) is not None:
        return  # no longer a plain dataclass field
    Styles.node = _WeakWidget()


_styles_let_go_of_their_widget()


def _unlink(cache: LRUCache) -> None:
    for link in getattr(cache, "_cache", {}).values():
        link.clear()


def _lru_rings_are_unlinked() -> None:
    """Textual's ``LRUCache`` keeps its entries in a ring of lists that refer to each other, so a cache that is
    cleared or let go leaves its ring, and every value in it, to the collector. Every widget has several (the
    lines it rendered, its query results). The ring's links are emptied when the cache is cleared or freed."""
    if "__del__" in vars(LRUCache):
        return
    clear = LRUCache.clear

    def clear_unlinked(cache: LRUCache) -> None:
        _unlink(cache)
        clear(cache)

    LRUCache.clear = clear_unlinked
    LRUCache.__del__ = _unlink


_lru_rings_are_unlinked()


def _strips_do_not_cache_themselves() -> None:
    """``Strip.divide`` at the strip's own length returns ``[strip]`` and caches that list in the strip itself,
    a cycle: most lines on screen are divided so, and every one of them waited for the collector when it was
    let go. That division is returned uncached (it costs nothing to make)."""
    probe = Strip([], 0)
    probe.divide([0])
    cached = probe._divide_cache.get((0,))
    if not (cached and cached[0] is probe):
        return
    divide = Strip.divide

    def divide_uncached_whole(strip: Strip, cuts):
        cell_length = strip.cell_length
        cuts = [cut for cut in cuts if cut <= cell_length]
        if cuts == [cell_length]:
            return [strip]
        return divide(strip, cuts)

    Strip.divide = divide_uncached_whole


_strips_do_not_cache_themselves()


def _updates_draw_only_their_lines() -> None:
    """A partial update (a streaming paragraph's last line, a cursor) asks each widget under it for lines to
    draw. Textual 8.2 asks a widget that is wholly on screen for all of its lines, whatever the update covers:
    the screen and each container around the conversation went through all of theirs at every frame: about
    half of the 2.5-3.5 ms that a frame changing one line took on the 2-core machine, up to ten times a second
    while a reply streams. Each widget is asked for the lines the update covers (a full update covers them
    all)."""
    get_renders = Compositor._get_renders
    if "contains_region" not in get_renders.__code__.co_varnames:
        return  # no whole-widget shortcut any more

    def _get_renders(compositor: Compositor, crop: Region | None = None):
        if not crop:
            yield from get_renders(compositor, crop)
            return
        for widget, (region, clip) in compositor.visible_widgets.items():
            if not crop.overlaps(clip):
                continue
            rows = clip.intersection(Region(clip.x, crop.y, clip.width, crop.height))
            x, y, width, height = region.intersection(rows)
            if width and height:
                yield region, rows, widget.render_lines(Region(x - region.x, y - region.y, width, height))

    Compositor._get_renders = _get_renders


_updates_draw_only_their_lines()
