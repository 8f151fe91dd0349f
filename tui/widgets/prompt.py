"""The message box: enter sends, ctrl+j (or shift+enter where the terminal reports it) adds a line.

A paste that is nothing but the path of an image (what terminals paste for a file dropped on them)
attaches that image instead of becoming text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import events
from textual.message import Message
from textual.widgets import TextArea

from tui.images import dropped_path

PLACEHOLDER = "Type a message · enter sends · ctrl+j new line · ctrl+s settings · F1 keys"
NEWLINE_KEYS = ("ctrl+j", "shift+enter")


class PromptArea(TextArea):
    @dataclass
    class Submitted(Message):
        prompt: PromptArea
        text: str

    @dataclass
    class ImageDropped(Message):
        path: Path

    @dataclass
    class PageRequested(Message):
        """Page up (-1) or down (1): the box is a few lines high, so these keys scroll the conversation."""

        step: int

    def __init__(self, **kwargs):
        kwargs.setdefault("placeholder", PLACEHOLDER)
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)

    async def _on_key(self, event: events.Key) -> None:
        # Enter and the new-line keys are handled here, in the order the keys arrived, rather than as
        # (priority) bindings: the app runs a priority binding as soon as it reads the key, while the
        # characters typed before it still wait in this widget's queue. Text and enter pasted or typed in
        # one burst were then sent as an empty message, and the text joined the next one.
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
        elif event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
        else:
            await super()._on_key(event)

    def submit(self) -> None:
        """Send what the box holds now and empty it, so keys that follow start the next message."""
        text = self.text
        if text.strip():
            self.clear()
            self.post_message(self.Submitted(self, text))

    def action_cursor_page_up(self) -> None:
        self.post_message(self.PageRequested(-1))

    def action_cursor_page_down(self) -> None:
        self.post_message(self.PageRequested(1))

    def restore(self, text: str) -> None:
        """Put back a message that could not be sent, ahead of anything typed since."""
        self.insert(text + ("\n" if self.text else ""), (0, 0))

    def _on_paste(self, event: events.Paste) -> None:
        # Textual calls this before TextArea's own paste handler, which prevent_default skips.
        path = dropped_path(event.text)
        if path is not None:
            event.prevent_default()
            self.post_message(self.ImageDropped(path))
