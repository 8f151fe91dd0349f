"""The scrolling list of a conversation's messages, which mounts only the newest few screens of them.

Every mounted widget costs on every frame: Textual lays out the whole screen each time the streaming reply
grows, so a log holding all 500 messages of a long conversation re-arranges thousands of widgets ten
times a second (and takes seconds to open). The log therefore mounts the messages that fill the last
``WINDOW_SCREENS`` screens; scrolling up to the oldest mounted one mounts the screen before it, keeping
what is in view where it was, and the next ``show`` while following the newest output unmounts them again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.cells import cell_len
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.layout import DockArrangeResult
from textual.widget import Widget

from tui.store import Message as StoredMessage
from tui.widgets.message import MessageView

WINDOW_SCREENS = 3
"""Screens of the newest messages kept mounted while following the conversation."""
MIN_MESSAGES = 4
"""Messages always mounted, however long: the last exchange stays reachable by the pane's keys."""
CHROME_LINES = 3
"""Lines a message takes besides its text: the margin above it, its role line and its footer."""


def estimated_lines(message: StoredMessage, width: int) -> int:
    """About how many lines a message takes at this width (a code fence or table may take a little more)."""
    width = max(width - 4, 10)  # the log's and the message's padding
    lines = sum(max(1, -(-cell_len(line) // width)) for line in message.content.splitlines())
    return lines + CHROME_LINES


class MessageLog(VerticalScroll):
    """Message views for the newest messages of a conversation; older ones are mounted when scrolled to."""

    def __init__(self, make_view: Callable[[StoredMessage], MessageView], **kwargs):
        super().__init__(**kwargs)
        self._make_view = make_view
        self._messages: list[StoredMessage] = []
        self._start = 0  # messages before this index are not mounted
        self._keep_in_place: tuple[MessageView, int] | None = None  # a view and its distance from the top of the view
        self._revealing = False

    @property
    def views(self) -> list[MessageView]:
        return [child for child in self.children if isinstance(child, MessageView)]

    @property
    def unmounted(self) -> int:
        """How many older messages are not mounted (yet)."""
        return self._start

    def _screen_lines(self) -> int:
        height = self.size.height or (self.app.size.height if self.is_attached else 24)
        return max(height, 10)

    def _width(self) -> int:
        return self.size.width or (self.app.size.width if self.is_attached else 80)

    def _start_for(self, messages: Sequence[StoredMessage], lines: int, end: int) -> int:
        """The index from which ``messages[:end]`` fill about ``lines`` lines."""
        width = self._width()
        start, filled = end, 0
        while start > 0 and (filled < lines or end - start < MIN_MESSAGES):
            start -= 1
            filled += estimated_lines(messages[start], width)
        return start

    def _following(self) -> bool:
        return not self.views or self.scroll_y >= self.max_scroll_y - 1

    async def show(self, messages: Sequence[StoredMessage]) -> None:
        """Show the conversation's messages, in order: views already showing the right message stay, the rest
        are replaced; only the newest few screens are mounted while the log follows the end."""
        messages = list(messages)
        ids = [message.id for message in messages]
        views = self.views
        shown_from = ids.index(views[0].message_id) if views and views[0].message_id in ids else None
        start = self._start_for(messages, WINDOW_SCREENS * self._screen_lines(), len(messages))
        if shown_from is not None and not self._following():
            start = min(start, shown_from)  # never unmount what the user scrolled up to read
        self._messages, self._start = messages, start
        if shown_from is None:
            await self.remove_children(views)
            views, shown_from = [], start
        elif shown_from > start:
            # The window now starts earlier (a long message was replaced by a short one): mount the difference.
            self._keep_views_in_place(views[0])
            await self.mount_all([self._make_view(message) for message in messages[start:shown_from]], before=views[0])
        elif shown_from < start:
            await self.remove_children(views[: start - shown_from])
        views = self.views
        same = 0
        while same < len(views) and start + same < len(ids) and views[same].message_id == ids[start + same]:
            same += 1
        if views[same:]:
            await self.remove_children(views[same:])
        await self.mount_all([self._make_view(message) for message in messages[start + same :]])
        self.call_after_refresh(self._reveal_if_short)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value < old_value:
            self._reveal_if_near_top()

    def _reveal_if_short(self) -> None:
        # Estimates can fall short: a window that does not fill two screens gets the screen before it.
        if self.virtual_size.height < 2 * self._screen_lines():
            self._reveal_older_soon()

    def _reveal_if_near_top(self) -> None:
        if self.scroll_y < self._screen_lines():
            self._reveal_older_soon()

    def _reveal_older_soon(self) -> None:
        if self._start > 0 and not self._revealing:
            self._revealing = True
            self.call_later(self._reveal_older)

    async def _reveal_older(self) -> None:
        """Mount about a screen of the messages before the first mounted one, keeping the view where it is."""
        try:
            views = self.views
            if self._start == 0 or not views:
                return
            start = self._start_for(self._messages, self._screen_lines(), self._start)
            first = views[0]
            self._keep_views_in_place(first)
            older, self._start = self._messages[start : self._start], start
            await self.mount_all([self._make_view(message) for message in older], before=first)
        finally:
            self._revealing = False
        self.call_after_refresh(self._reveal_if_short)

    def _keep_views_in_place(self, first: MessageView) -> None:
        """Keep ``first`` (and what follows it) where it is on screen while views are mounted above it."""
        region = first.virtual_region  # empty until it is laid out: then nothing on screen needs keeping
        self._keep_in_place = (first, region.y - round(self.scroll_y)) if region else None

    def arrange(self, size: Size, optimal: bool = False) -> DockArrangeResult:
        arrangement = super().arrange(size, optimal)
        # Views mounted above move everything down: scroll by as much within the same layout pass, so no
        # frame shows the jump. A pass may arrange at more than one size (a scrollbar coming or going), so
        # each applies it until the pass is over. (A log anchored to its end stays at the end instead.)
        if self._keep_in_place is not None and not (self._anchored and not self._anchor_released):
            view, offset = self._keep_in_place
            for placement in arrangement.placements:
                if placement.widget is view:
                    scroll_y = max(placement.region.y - offset, 0)
                    self.set_reactive(Widget.scroll_y, scroll_y)
                    self.set_reactive(Widget.scroll_target_y, scroll_y)
                    self.vertical_scrollbar.position = scroll_y
                    self.call_after_refresh(self._stop_keeping_in_place)
                    break
        return arrangement

    def _stop_keeping_in_place(self) -> None:
        self._keep_in_place = None
