"""Search every conversation; choosing a result opens its conversation."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from tui.store import SearchHit, Store


class SearchScreen(ModalScreen[int | None]):
    """Dismisses with the chosen conversation's id, or None."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def __init__(self, store: Store):
        super().__init__()
        self.store = store
        self._hits: list[SearchHit] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Search all conversations", classes="dialog-title")
            yield Input(placeholder="Text to find (any language)", id="query")
            yield OptionList(id="results")
            yield Label("", id="summary")

    @on(Input.Changed, "#query")
    def query_changed(self, event: Input.Changed) -> None:
        self._search(event.value)

    @work(exclusive=True, thread=True, group="search")
    def _search(self, text: str) -> None:
        hits = self.store.search(text)
        self.app.call_from_thread(self._show, text, hits)

    def _show(self, text: str, hits: list[SearchHit]) -> None:
        if text != self.query_one("#query", Input).value:
            return  # an older search finishing late; a newer one is on its way
        self._hits = hits
        results = self.query_one(OptionList)
        results.clear_options()
        results.add_options(
            [Option(f"[b]{_escape(hit.conversation_title)}[/b] · {hit.role}\n  {_escape(hit.snippet)}") for hit in hits]
        )
        summary = "" if not text.strip() else f"{len(hits)} message(s) found" if hits else "Nothing found"
        self.query_one("#summary", Label).update(summary)

    @on(Input.Submitted, "#query")
    def focus_results(self) -> None:
        if self._hits:
            results = self.query_one(OptionList)
            results.highlighted = 0
            results.focus()

    @on(OptionList.OptionSelected)
    def open_result(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._hits[event.option_index].conversation_id)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")
