"""Work-arounds for bugs of the Textual release zootui runs on, applied once, when this module is imported (by
tui/widgets/message.py: every screen that shows a conversation has it).

Each one checks that the bug is still there before it changes anything, so a Textual that fixes it is left
alone; tests/app/test_textual_fixes.py fails if a work-around stops working.
"""

from __future__ import annotations

from functools import lru_cache

from textual._styles_cache import StylesCache
from textual.color import Color
from textual.style import Style

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
