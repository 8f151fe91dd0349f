"""Search every conversation; choosing a result opens its conversation.

The query box keeps the focus: up and down move through the results, enter opens the highlighted one.
"""

from __future__ import annotations

from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from tui.store import SearchHit


class SearchScreen(ModalScreen[int | None]):
    """Dismisses with the chosen conversation's id, or None."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("down", "move(1)", "Next result", show=False),
        Binding("up", "move(-1)", "Previous result", show=False),
    ]

    def __init__(self, search: Callable[[str], list[SearchHit]]):
        super().__init__()
        self._search_for = search
        self._hits: list[SearchHit] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Search all conversations (↑/↓ pick, enter opens)", classes="dialog-title")
            yield Input(placeholder="Text to find (any language)", id="query")
            yield OptionList(id="results")
            yield Label("", id="summary", markup=False)

    @property
    def results(self) -> OptionList:
        return self.query_one("#results", OptionList)

    @on(Input.Changed, "#query")
    def query_changed(self, event: Input.Changed) -> None:
        self._search(event.value)

    @work(exclusive=True, thread=True, group="search")
    def _search(self, text: str) -> None:
        hits = self._search_for(text)
        self.app.call_from_thread(self._show, text, hits)

    def _show(self, text: str, hits: list[SearchHit]) -> None:
        if text != self.query_one("#query", Input).value:
            return  # an older search finishing late; a newer one is on its way
        results = self.results
        # Results of a longer query replace these as the user types: the highlight stays on its message.
        highlighted = self._hits[results.highlighted].message_id if results.highlighted is not None else None
        self._hits = hits
        results.clear_options()
        # Content, not markup: titles and snippets are the user's and the model's text.
        results.add_options(
            [
                Option(Content.assemble((hit.conversation_title, "bold"), f" · {hit.role}\n  {hit.snippet}"))
                for hit in hits
            ]
        )
        if hits:
            ids = [hit.message_id for hit in hits]
            results.highlighted = ids.index(highlighted) if highlighted in ids else 0
        found = "1 message found" if len(hits) == 1 else f"{len(hits)} messages found"
        summary = "" if not text.strip() else found if hits else "Nothing found"
        self.query_one("#summary", Label).update(summary)

    def action_move(self, step: int) -> None:
        results = self.results
        if results.option_count:
            current = results.highlighted if results.highlighted is not None else -1
            results.highlighted = max(0, min(results.option_count - 1, current + step))

    @on(Input.Submitted, "#query")
    def open_highlighted(self) -> None:
        highlighted = self.results.highlighted
        if self._hits and highlighted is not None:
            self.dismiss(self._hits[highlighted].conversation_id)

    @on(OptionList.OptionSelected)
    def open_result(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._hits[event.option_index].conversation_id)
