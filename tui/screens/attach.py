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


class PathInput(Input):
    """An Input whose tab completes the path. The binding is the field's own, not a priority one, so
    a tab typed right after some characters completes what they spell, however fast they arrive."""

    BINDINGS = [Binding("tab", "complete", "Complete", show=False)]

    def __init__(self, **kwargs) -> None:
        super().__init__(suggester=PathSuggester(), **kwargs)

    def action_complete(self) -> None:
        completed = complete_path(self.value)
        if completed is not None:
            self.value = completed
            self.cursor_position = len(completed)


class AttachScreen(ModalScreen[str | None]):
    """Dismisses with the typed path ("" to attach nothing), or None when cancelled."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Attach an image to your next message", classes="dialog-title")
            yield Label(f"for {self._model}", classes="dialog-hint", markup=False)
            yield PathInput(placeholder="Path to a PNG, JPEG, GIF, WebP or BMP file", id="path")
            yield Label("tab completes · enter attaches (empty: none) · esc cancels", classes="dialog-hint")

    @on(Input.Submitted)
    def attach(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())
