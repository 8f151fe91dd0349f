"""The message box: enter sends, ctrl+j (or shift+enter where the terminal reports it) adds a line.

A paste that is nothing but the path of an image (what terminals paste for a file dropped on them)
attaches that image instead of becoming text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea

from tui.images import dropped_path


class PromptArea(TextArea):
    BINDINGS = [
        Binding("enter", "submit", "Send", priority=True, show=False),
        Binding("ctrl+j,shift+enter", "newline", "New line", show=False, priority=True),
    ]

    @dataclass
    class Submitted(Message):
        prompt: PromptArea
        text: str

    @dataclass
    class ImageDropped(Message):
        path: Path

    def __init__(self, **kwargs):
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus", **kwargs)

    def action_submit(self) -> None:
        text = self.text
        if text.strip():
            self.post_message(self.Submitted(self, text))

    def action_newline(self) -> None:
        self.insert("\n")

    def _on_paste(self, event: events.Paste) -> None:
        # Textual calls this before TextArea's own paste handler, which prevent_default skips.
        path = dropped_path(event.text)
        if path is not None:
            event.prevent_default()
            self.post_message(self.ImageDropped(path))
