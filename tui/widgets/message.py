"""One message of a conversation: its role, its picture, its Markdown body, and its figures.

A picture shows through textual-image: Kitty's graphics protocol, Sixel or iTerm's where the terminal
has one (detected when this module is imported, before the app takes the terminal), coloured
half-blocks otherwise, so it shows over SSH and in tmux too.
"""

from __future__ import annotations

import re
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, Markdown
from textual.widgets._markdown import MarkdownFence, MarkdownStream
from textual_image.widget import Image

from tui.store import MessageState

ROLE_LABELS = {"user": "You", "assistant": "Assistant", "system": "System"}
STATE_NOTES = {
    MessageState.STOPPED: "stopped",
    MessageState.INTERRUPTED: "interrupted before it finished",
    MessageState.ERROR: "failed",
}
CODE_BLOCK = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.DOTALL | re.MULTILINE)


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks in a Markdown text, in order."""
    return [match.group(2).rstrip("\n") for match in CODE_BLOCK.finditer(markdown)]


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
    ]

    def __init__(
        self,
        role: str,
        content: str = "",
        *,
        state: MessageState = MessageState.DONE,
        footer: str = "",
        message_id: int | None = None,
        image: Path | None = None,
        image_name: str = "",
    ):
        super().__init__(classes=f"message {role}")
        self.role = role
        self.content = content
        self.state = state
        self.message_id = message_id
        self._figures = footer
        self.image = image
        self._image_name = image_name or (image.name if image else "")
        self._stream: MarkdownStream | None = None
        self._code_index = 0

    def compose(self) -> ComposeResult:
        yield Label(ROLE_LABELS.get(self.role, self.role), classes="role")
        if self.image is not None:
            yield self._picture(self.image)
        yield Markdown(self.content, classes="body")
        yield Label(self._footer(), classes="figures")

    def _picture(self, path: Path):
        """The image, or a line saying why it cannot be shown (the file went missing or is damaged)."""
        try:
            return Image(path, classes="picture")
        except (OSError, ValueError) as error:  # Pillow's errors for a missing, unreadable or damaged file
            reason = "its file is missing" if not path.is_file() else f"it cannot be read ({error})"
            return Label(f"[image {self._image_name}: {reason}]", classes="picture-missing", markup=False)

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

    async def append(self, text: str) -> None:
        """Add streamed text; the Markdown widget re-parses only its last block."""
        self.content += text
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(".body", Markdown))
        await self._stream.write(text)

    async def finish(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        # One full render at the end: a streamed code fence can keep the highlighting of
        # its first fragment (Textual#6518), which a complete update corrects.
        await self.query_one(".body", Markdown).update(self.content)

    def action_copy_message(self) -> None:
        self.app.copy_to_clipboard(self.content)
        self.notify(copy_notice("the message", self.content), title="Copied")

    def action_copy_code(self) -> None:
        blocks = code_blocks(self.content)
        if not blocks:
            self.notify("This message has no code block.", severity="warning")
            return
        index = self._code_index % len(blocks)
        self._code_index += 1
        self.app.copy_to_clipboard(blocks[index])
        what = "the code block" if len(blocks) == 1 else f"code block {index + 1} of {len(blocks)}"
        self.notify(copy_notice(what, blocks[index]), title="Copied")

    def on_click(self, event) -> None:
        fence = (
            event.widget
            if isinstance(event.widget, MarkdownFence)
            else next((ancestor for ancestor in event.widget.ancestors if isinstance(ancestor, MarkdownFence)), None)
        )
        if fence is not None:
            self.app.copy_to_clipboard(fence.code)
            self.notify(copy_notice("the code block", fence.code), title="Copied")
