"""Ask for the image to attach to the next message: a path, completed as it is typed."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Input, Label

from tui.images import complete_path


class PathSuggester(Suggester):
    """Suggests the rest of a path to a folder or an image (→ or tab accepts it)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value)


class AttachScreen(ModalScreen[str | None]):
    """Dismisses with the typed path ("" to attach nothing), or None when cancelled."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("tab", "complete", "Complete", priority=True, show=False),
    ]

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Attach an image for {self._model} to your next message", classes="dialog-title")
            yield Input(placeholder="Path to a PNG, JPEG, GIF, WebP or BMP file", id="path", suggester=PathSuggester())
            yield Label("tab or → completes · enter attaches (empty: none) · escape cancels", classes="dialog-hint")

    def action_complete(self) -> None:
        field = self.query_one("#path", Input)
        completed = complete_path(field.value)
        if completed is not None:
            field.value = completed
            field.cursor_position = len(completed)

    @on(Input.Submitted)
    def attach(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())
