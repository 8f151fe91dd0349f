"""The scrolling list of a conversation's messages, which mounts only the few screens of them around the view.

Every mounted widget costs on every frame: Textual lays out the whole screen each time a streaming reply
grows, so a log holding all 500 messages of a long conversation re-arranges thousands of widgets ten
times a second (and takes seconds to open). The log therefore mounts a window of about ``WINDOW_SCREENS``
screens of messages: the newest ones while it follows the conversation. Scrolling near either edge of the
window mounts the next screen of messages there and unmounts as much at the far edge, keeping what is in
view where it is, so the widgets mounted stay about the same however far one scrolls. The window reaches
``AHEAD_SCREENS`` beyond the view, so a page key only scrolls; the move follows once that frame is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.cells import cell_len
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.layout import DockArrangeResult
from textual.widget import Widget

from tui.store import Message as StoredMessage
from tui.widgets.message import MessageView, size_without_relayout

WINDOW_SCREENS = 2
"""Screens of messages a conversation opens with: the one in view and one above it (fewer views, a faster
open; the first page key mounts the rest of AHEAD_SCREENS once its frame is drawn)."""
AHEAD_SCREENS = 2
"""Screens of messages kept mounted ahead of the view, the way it scrolls: a page key only scrolls, and the
next screen is mounted once that frame is drawn (mounting one is 50-150 ms of the UI thread)."""
BEHIND_SCREENS = 1
"""Screens of messages kept mounted behind the view, the other way."""
MIN_MESSAGES = 4
"""Messages a window always holds, however long: the last exchange stays reachable by the pane's keys."""
CHROME_LINES = 3
"""Lines a message takes besides its text: the margin above it, its role line and its footer."""


def estimated_lines(message: StoredMessage, width: int) -> int:
    """About how many lines a message takes at this width (a code fence or table may take a little more)."""
    width = max(width - 4, 10)  # the log's and the message's padding
    lines = sum(max(1, -(-cell_len(line) // width)) for line in message.content.splitlines())
    return lines + CHROME_LINES


class MessageLog(VerticalScroll):
    """Views of a window of a conversation's messages, moved as the log is scrolled.

    The pane may mount one more view at the end, with no message id yet: the reply that is streaming.
    """

    # Its scrollbar follows a new virtual size at once, and following the end happens within the layout.
    virtual_size = size_without_relayout()

    def __init__(self, make_view: Callable[[StoredMessage], MessageView], **kwargs):
        super().__init__(**kwargs)
        self._make_view = make_view
        self._messages: list[StoredMessage] = []
        # The views show self._messages[self._start:self._end].
        self._start = self._end = 0
        self._keep_in_place: tuple[MessageView, int] | None = None  # a view and how far below the top it is drawn
        self._moving = False
        self._shown = 0  # counts shows: a move of the window planned before the latest show is dropped
        self._settling = False  # views were replaced: scrolling until the next layout is no user's doing

    @property
    def views(self) -> list[MessageView]:
        return [child for child in self.children if isinstance(child, MessageView)]

    @property
    def follows_end(self) -> bool:
        """It keeps its end in view as that grows: anchored, and not scrolled away from it since."""
        return self._anchored and not self._anchor_released

    @property
    def holds_newest(self) -> bool:
        """Whether the window reaches the conversation's newest message."""
        return self._end >= len(self._messages)

    def position_of(self, view: MessageView) -> int:
        """Where the message ``view`` shows stands in the conversation."""
        return self._start + self.views.index(view)

    def view_at(self, position: int) -> MessageView | None:
        """The view of the conversation's message at ``position``, if the window holds it."""
        views = self.views
        return views[position - self._start] if self._start <= position < self._start + len(views) else None

    @property
    def unmounted(self) -> int:
        """How many of the conversation's messages have no view now (above or below the window)."""
        return self._start + len(self._messages) - self._end

    def _screen_lines(self) -> int:
        height = self.size.height or (self.app.size.height if self.is_attached else 24)
        return max(height, 10)

    def _width(self) -> int:
        return self.size.width or (self.app.size.width if self.is_attached else 80)

    def _start_for(self, end: int, lines: int) -> int:
        """The index from which the messages before ``end`` fill about ``lines`` lines."""
        width = self._width()
        start, filled = end, 0
        while start > 0 and (filled < lines or end - start < MIN_MESSAGES):
            start -= 1
            filled += estimated_lines(self._messages[start], width)
        return start

    def _end_for(self, start: int, lines: int) -> int:
        """The index up to which the messages from ``start`` fill about ``lines`` lines."""
        width = self._width()
        end, filled = start, 0
        while end < len(self._messages) and filled < lines:
            filled += estimated_lines(self._messages[end], width)
            end += 1
        return end

    def _at_end(self) -> bool:
        return not self.views or self.scroll_y >= self.max_scroll_y - 1

    async def show(self, messages: Sequence[StoredMessage], *, follow: bool = False) -> None:
        """Show the conversation's messages, in order: views already showing the right message stay, the rest
        are replaced. With ``follow`` (or while the log is at its end) the window moves to the newest
        messages; otherwise it stays on what is in view."""
        window_reached_end = self._end >= len(self._messages)
        self._shown += 1
        self._settling = True
        self._messages = list(messages)
        ids = [message.id for message in self._messages]
        views = [view for view in self.views if view.message_id is not None]
        # Where the window stood: from the first view whose message is still there (a switched version
        # replaces the messages from one view on, which should not move the window away from it).
        index = {message_id: position for position, message_id in enumerate(ids)}
        shown_from = next(
            (max(index[view.message_id] - offset, 0) for offset, view in enumerate(views) if view.message_id in index),
            None,
        )
        if shown_from is None and views and self._start < len(ids):
            shown_from = self._start  # none of their messages is left (replaced from the window's top): stay
        to_end = follow or shown_from is None or (window_reached_end and self._at_end())
        if to_end:
            end = len(ids)
            start = self._start_for(end, WINDOW_SCREENS * self._screen_lines())
        else:
            start = shown_from
            end = len(ids) if window_reached_end else min(shown_from + len(views), len(ids))
        self._start, self._end = start, end
        with self.app.batch_update():  # one layout and one frame for all the views that come and go
            await self._replace_views(views, shown_from, ids)
        if to_end:
            self.scroll_end(animate=False)  # after the next layout, and before the call below
        self.call_after_refresh(self._settled)
        self._after_layout(self._fill)

    async def _replace_views(self, views: list[MessageView], shown_from: int | None, ids: list[int]) -> None:
        """Make the views those of the window's messages; ``views`` show the messages from ``shown_from`` on."""
        start, end = self._start, self._end
        if shown_from is None or shown_from >= end or shown_from + len(views) <= start:
            await self.remove_children(self.views)
            views, shown_from = [], start
        elif shown_from > start:
            self._keep_views_in_place(views[0])
            await self.mount_all(
                [self._make_view(message) for message in self._messages[start:shown_from]], before=views[0]
            )
        elif shown_from < start:
            await self.remove_children(views[: start - shown_from])
        views = self.views
        same = 0
        while same < len(views) and start + same < end and views[same].message_id == ids[start + same]:
            same += 1
        if views[same:]:
            await self.remove_children(views[same:])
        await self.mount_all([self._make_view(message) for message in self._messages[start + same : end]])

    def _settled(self) -> None:
        self._settling = False

    # A page key jumps rather than glides: an animated page is a dozen frames of the whole log, each a
    # layout and render of 20-40 ms of the UI thread on a 2-core machine (measured in tests/bench/bench_chat.py:
    # 760 ms from page-up to its last frame in a 500-message conversation).

    def scroll_page_up(self, *, animate: bool = False, **kwargs) -> None:
        super().scroll_page_up(animate=animate, **kwargs)

    def scroll_page_down(self, *, animate: bool = False, **kwargs) -> None:
        super().scroll_page_down(animate=animate, **kwargs)

    # Moving the window as the log scrolls

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._settling:
            return
        ahead = AHEAD_SCREENS * self._screen_lines()
        if new_value < old_value and new_value < ahead and self._start > 0:
            self._move(self._mount_older)
        elif new_value > old_value and new_value > self.max_scroll_y - ahead:
            if self._end < len(self._messages):
                self._move(self._mount_newer)

    async def _fill(self) -> None:
        # Estimates can fall short: a window that does not fill two screens gets the screen before it, and
        # so does one still scrolled near its top after a move (a scroll that went past what was mounted).
        screen = self._screen_lines()
        if self._start > 0 and (self.virtual_size.height < 2 * screen or self.scroll_y < screen):
            self._move(self._mount_older)

    def _move(self, step: Callable) -> None:
        """Move the window once the frame in the making is drawn: what scrolled into view shows first."""
        if not self._moving:
            self._moving = True
            self.call_after_refresh(self._run_move, step, self._shown)

    async def _run_move(self, step: Callable, shown: int) -> None:
        try:
            if shown == self._shown:
                await step()
        finally:
            self._moving = False

    def _after_layout(self, step: Callable) -> None:
        """Run a step of a move once the views it mounted are laid out (unless a show came first)."""
        self.call_after_refresh(self._run_move_part, step, self._shown)

    async def _run_move_part(self, step: Callable, shown: int) -> None:
        if shown == self._shown:
            await step()

    def _in_step(self) -> bool:
        """Whether the views are exactly the window's messages: not while a reply streams (a view with no id
        yet) or when the pane changed views since the last show (a finished reply); the next show resyncs."""
        window = self._messages[self._start : self._end]
        views = self.views
        return len(views) == len(window) and all(
            view.message_id == message.id for view, message in zip(views, window, strict=True)
        )

    async def _mount_older(self) -> None:
        """Mount the messages before the window up to AHEAD_SCREENS above the view (a screen at least), and let
        what is more than BEHIND_SCREENS below it go."""
        views = self.views
        if self._start == 0 or not views:
            return
        screen = self._screen_lines()
        start = self._start_for(self._start, max(screen, AHEAD_SCREENS * screen - round(self.scroll_y)))
        older = self._messages[start : self._start]
        # A streaming reply stays mounted, and so do the views above it.
        keep_to = self.scroll_y + (1 + BEHIND_SCREENS) * self._screen_lines()
        below = self._views_past(keep_to) if self._in_step() else []
        if len(views) + len(older) - len(below) < MIN_MESSAGES:
            below = []
        self._keep_views_in_place(views[0])
        self._start, self._end = start, self._end - len(below)
        with self.app.batch_update():
            await self.mount_all([self._make_view(message) for message in older], before=views[0])
            await self.remove_children(below)
        self._after_layout(self._fill)

    async def _mount_newer(self) -> None:
        """Mount about a screen of the messages after the window, and let as much go at its top."""
        if not self._in_step():
            return
        views = self.views
        end = self._end_for(self._end, self._screen_lines())
        newer = self._messages[self._end : end]
        above = self._views_before(self.scroll_y - BEHIND_SCREENS * self._screen_lines())
        if len(views) + len(newer) - len(above) < MIN_MESSAGES or len(above) == len(views):
            above = []
        if above:
            self._keep_views_in_place(views[len(above)])
        self._start, self._end = self._start + len(above), end
        with self.app.batch_update():
            await self.mount_all([self._make_view(message) for message in newer])
            await self.remove_children(above)

    # A move mounts and unmounts in one batch: one layout and one frame. Which views go is read from the
    # layout before it, since views mounted above move both them and the scroll position by as much.

    def _views_past(self, y: float) -> list[MessageView]:
        return [view for view in self.views if view.virtual_region and view.virtual_region.y > y]

    def _views_before(self, y: float) -> list[MessageView]:
        return [view for view in self.views if view.virtual_region and view.virtual_region.bottom < y]

    # Keeping what is in view where it is

    def _keep_views_in_place(self, view: MessageView) -> None:
        """Keep ``view`` (and what follows it) where it is on screen while views above it come or go."""
        region = view.virtual_region  # empty until it is laid out: then nothing on screen needs keeping
        if not region:
            self._keep_in_place = None
            return
        # A scroll under way (page up is animated) ends at once where it was going, and is kept from there.
        self.app.animator.force_stop_animation(self, "scroll_y")
        self._keep_in_place = (view, region.y - round(self.scroll_y))

    def arrange(self, size: Size, optimal: bool = False) -> DockArrangeResult:
        arrangement = super().arrange(size, optimal)
        # Views mounted or removed above move everything: scroll by as much within the same layout pass, so
        # no frame shows the jump. A pass may arrange at more than one size (a scrollbar coming or going), so
        # each applies it until the pass is over. (A log anchored to its end stays at the end instead.)
        if self._keep_in_place is not None and not self.follows_end:
            view, offset = self._keep_in_place
            for placement in arrangement.placements:
                if placement.widget is view:
                    scroll_y = max(placement.region.y - offset, 0)
                    self.set_reactive(Widget.scroll_y, scroll_y)
                    self.set_reactive(Widget.scroll_target_y, scroll_y)
                    self.vertical_scrollbar.position = scroll_y
                    self.call_after_refresh(self._stop_keeping_in_place, self._keep_in_place)
                    break
        return arrangement

    def _stop_keeping_in_place(self, kept: tuple[MessageView, int]) -> None:
        # Only what this pass kept: a move may have started since, whose views are not laid out yet.
        if self._keep_in_place is kept:
            self._keep_in_place = None
