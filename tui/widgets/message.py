"""One message of a conversation: its role, its picture, its Markdown body, and its figures.

A picture shows through textual-image: Kitty's graphics protocol, Sixel or iTerm's where the terminal
has one (detected when this module is imported, before the app takes the terminal), coloured
half-blocks otherwise, so it shows over SSH and in tmux too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import Reactive
from textual.visual import visualize
from textual.widget import AwaitMount, Widget
from textual.widgets import Label, Markdown
from textual.widgets._markdown import MarkdownFence, MarkdownParagraph, MarkdownStream
from textual_image.widget import Image

from tui.store import MessageState
from tui.widgets import textual_fixes  # noqa: F401 - message views come and go by the thousand: see its first fix

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}
STATE_NOTES = {
    MessageState.STOPPED: "stopped",
    MessageState.INTERRUPTED: "interrupted before it finished",
    MessageState.ERROR: "failed",
}


def _line_breaks_as_written(state: StateCore) -> None:
    """A single newline inside a paragraph, list item or quote ends the line, as the model wrote it.

    CommonMark joins such lines into one (a "soft break"), which turns a poem or an address into one
    paragraph. Code blocks and tables never contain soft breaks, so they are left as they are.
    """
    for token in state.tokens:
        for child in token.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"


@cache
def markdown_parser() -> MarkdownIt:
    """The parser every message is shown with; one instance, since the stream re-parses ten times a second."""
    parser = MarkdownIt("gfm-like")
    parser.core.ruler.push("line_breaks_as_written", _line_breaks_as_written)
    return parser


def size_without_relayout() -> Reactive[Size]:
    """A ``virtual_size`` that does not lay the screen out again when it changes.

    Textual sets a widget's virtual size while it lays the screen out, and a change of it asks for a second
    layout of the whole screen. Where nothing depends on that size (a message, its text, the log, which
    follows its end within the same layout pass), each line a streaming reply grows by cost two layouts.
    """
    return Reactive(Size(0, 0), layout=False, repaint=False)


# A streaming reply's last paragraph is this many lines taller at a time (see GrowingParagraph).
GROWTH_STEP = 3


def extends(old: Content, new: Content) -> bool:
    """``new`` is ``old`` with text added at its end, and ``old``'s text styled as it was (its last span may run on).

    Markdown is parsed again with each batch, and a batch can restyle what came before it: a closing ``**``
    or backtick takes its markers out of the text, a finished link becomes one.
    """
    end = len(old.plain)
    if not new.plain.startswith(old.plain):
        return False
    before = [span for span in new.spans if span.start < end]
    return len(before) == len(old.spans) and all(
        was == now or (was.start == now.start and was.style == now.style and was.end == end <= now.end)
        for was, now in zip(old.spans, before, strict=True)
    )


class GrowingParagraph(MarkdownParagraph):
    """A paragraph that asks for a layout only when its new text changes its height, and repaints only the
    lines that changed.

    A streaming reply updates its last paragraph with every batch of text. Textual lays out the whole
    screen for each update of a text widget, and a log that follows its end then repaints every line it
    shows, one line higher: more than half of the UI thread's work while a reply streamed. Most
    batches only lengthen the last line, and a repaint of that line shows them. The paragraph that ends a
    streaming reply also grows GROWTH_STEP lines at a time, the rest of them blank until the text fills
    them, so a layout comes once every few lines instead of at each; it fits its text again as soon as a
    block follows it or the reply ends.
    """

    virtual_size = size_without_relayout()
    _text_lines = 0  # the lines its text took at the last update
    _repaint: Region | None = None  # while an update repaints only part of it

    def _lines(self, text_lines: int) -> int:
        """The height for text of this many lines."""
        markdown = self.parent
        growing = isinstance(markdown, MessageMarkdown) and markdown.streaming and markdown.children[-1] is self
        return -(-text_lines // GROWTH_STEP) * GROWTH_STEP if growing else text_lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self._lines(super().get_content_height(container, viewport, width))

    def set_content(self, content: Content) -> None:
        width, height = self.content_size
        text_lines = visualize(self, content).get_height(self.styles, width) if width else 0  # 0: not laid out yet
        same_height = width > 0 and self._lines(text_lines) == height
        if same_height and extends(self._content, content):
            # Word wrapping puts each line's words by those before them: lines above the last one are as
            # they were, while the last one's unfinished word may now go on to the next.
            first = max(self._text_lines - 1, 0)
            self._repaint = Region(0, first, width, max(text_lines - first, 1))
        self._content, self._text_lines = content, text_lines
        try:
            self.update(content, layout=not same_height)
        finally:
            self._repaint = None

    def refresh(
        self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False
    ) -> GrowingParagraph:
        if self._repaint is not None and not regions:
            regions = (self._repaint,)
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)


class MessageMarkdown(Markdown):
    """A message's Markdown: its paragraphs grow without a layout while they keep their height."""

    BLOCKS = {**Markdown.BLOCKS, "paragraph_open": GrowingParagraph}
    virtual_size = size_without_relayout()
    streaming = False
    """Text is being appended to it (a reply is streaming into it)."""

    def mount(
        self, *widgets: Widget, before: int | str | Widget | None = None, after: int | str | Widget | None = None
    ) -> AwaitMount:
        # The paragraph that ended the text stops keeping lines in hand once a block follows it. Textual caches
        # a widget's size for each size of its container until the widget asks for a layout: without this, its
        # blank lines stayed between it and the new block until it next grew or the reply ended.
        last = self.children[-1] if self.children else None
        if self.streaming and before is None and after is None and isinstance(last, GrowingParagraph):
            last.refresh(layout=True)
        return super().mount(*widgets, before=before, after=after)


def code_blocks(markdown: str) -> list[str]:
    """The code blocks the screen shows, in order, including one a cut-off reply never closed."""
    return [
        token.content.rstrip("\n")
        for token in markdown_parser().parse(markdown)
        if token.type in ("fence", "code_block")
    ]


def copy_notice(what: str, text: str) -> str:
    # OSC 52 cannot report success, so say what was sent rather than claim it arrived.
    return (
        f"Sent {what} ({len(text)} characters) to your terminal's clipboard (OSC 52). "
        f"If pasting gives nothing, allow clipboard access in your terminal or tmux (set-clipboard on)."
    )


class MessageView(Vertical, can_focus=True):
    """A message; focus it and press c to copy it, b to copy its code (or click a code block)."""

    BINDINGS = [
        Binding("c", "copy_message", "Copy"),
        Binding("b", "copy_code", "Copy code"),
        Binding("left", "version(-1)", "Older version", key_display="←"),
        Binding("right", "version(1)", "Newer version", key_display="→"),
    ]
    virtual_size = size_without_relayout()

    @dataclass
    class VersionRequested(Message):
        view: MessageView
        step: int

    def __init__(
        self,
        role: str,
        content: str = "",
        *,
        state: MessageState = MessageState.DONE,
        footer: str = "",
        message_id: int | None = None,
        version: int = 1,
        versions: int = 1,
        image: Path | None = None,
        image_name: str = "",
    ):
        super().__init__(classes=f"message {role}")
        self.role = role
        self.content = content
        self.state = state
        self.message_id = message_id
        self.version = version
        self.versions = versions
        self._figures = footer
        self.image = image
        self._image_name = image_name or (image.name if image else "")
        self._stream: MarkdownStream | None = None
        self._code_index = 0

    def compose(self) -> ComposeResult:
        yield Label(self._role_line(), classes="role", markup=False)
        if self.image is not None:
            yield self._picture(self.image)
        yield MessageMarkdown(self.content, classes="body", parser_factory=markdown_parser)
        yield Label(self._footer(), classes="figures", markup=False)

    def _picture(self, path: Path):
        """The image, or a line saying why it cannot be shown (the file went missing or is damaged)."""
        try:
            return Image(path, classes="picture")
        except (OSError, ValueError) as error:  # Pillow's errors for a missing, unreadable or damaged file
            reason = "its file is missing" if not path.is_file() else f"it cannot be read ({error})"
            return Label(f"[image {self._image_name}: {reason}]", classes="picture-missing", markup=False)

    def _role_line(self) -> str:
        label = ROLE_LABELS.get(self.role, self.role)
        if self.versions > 1:
            label += f"  ‹ version {self.version} of {self.versions} ›"
        return label

    def _footer(self) -> str:
        note = STATE_NOTES.get(self.state)
        parts = [part for part in (self._figures, note) if part]
        return " · ".join(parts)

    def on_mount(self) -> None:
        self.query_one(".figures", Label).display = bool(self._footer())

    def set_footer(self, text: str, state: MessageState | None = None) -> None:
        self._figures = text
        if state is not None:
            self.state = state
        figures = self.query_one(".figures", Label)
        figures.update(self._footer())
        figures.display = bool(self._footer())

    def set_versions(self, version: int, versions: int) -> None:
        self.version, self.versions = version, versions
        self.query_one(".role", Label).update(self._role_line())
        self.refresh_bindings()

    async def append(self, text: str) -> None:
        """Add streamed text; the Markdown widget re-parses only its last block."""
        self.content += text
        if self._stream is None:
            body = self.query_one(".body", MessageMarkdown)
            body.streaming = True
            self._stream = Markdown.get_stream(body)
        await self._stream.write(text)

    async def finish(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        body = self.query_one(".body", MessageMarkdown)
        body.streaming = False
        # One full render at the end: a streamed code fence can keep the highlighting of
        # its first fragment (Textual#6518), which a complete update corrects.
        await body.update(self.content)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "version":
            return self.versions > 1 and self.message_id is not None
        return True

    def action_version(self, step: int) -> None:
        # The conversation pane owns the branch: it swaps this message and everything after it.
        self.post_message(self.VersionRequested(self, step))

    def action_copy_message(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify(copy_notice("the message", self.content), title="Copied", markup=False)

    def action_copy_code(self) -> None:
        blocks = code_blocks(self.content)
        if not blocks:
            self.notify("This message has no code block.", severity="warning")
            return
        index = self._code_index % len(blocks)
        self._code_index += 1
        self.app.copy_to_clipboard(blocks[index])
        what = "the code block" if len(blocks) == 1 else f"code block {index + 1} of {len(blocks)}"
        self.notify(copy_notice(what, blocks[index]), title="Copied", markup=False)

    def on_click(self, event) -> None:
        fence = (
            event.widget
            if isinstance(event.widget, MarkdownFence)
            else next((ancestor for ancestor in event.widget.ancestors if isinstance(ancestor, MarkdownFence)), None)
        )
        if fence is not None:
            self.app.copy_to_clipboard(fence.code)
            self.notify(copy_notice("the code block", fence.code), title="Copied", markup=False)
