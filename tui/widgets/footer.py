"""The footer of key bindings, rebuilt only when the keys it shows change.

Textual's Footer recomposes (a dozen widgets, each styled and laid out) after every ``refresh_bindings``
anywhere on the screen, once per call: opening a tab, focusing a widget or finishing a reply each call it
several times, and three tab opens cost 122 recomposes, a third of a second of the UI thread on a 2-core
machine (profiled in tests/bench/bench_chat.py's history phase). The bindings usually come out the same.
"""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._shown: tuple | None = None  # what the footer was last composed from
        self._pending = False  # a rebuild is already waiting for the next refresh

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen or self._pending:
            return
        self._pending = True
        self.call_after_refresh(self._rebuild_if_changed)

    async def _rebuild_if_changed(self) -> None:
        self._pending = False
        shown = self._shown_bindings()
        if shown != self._shown:
            self._shown = shown
            await self.recompose()
            # Every key binds Footer.compact, and Textual drops the watchers of removed keys only when compact
            # changes: each rebuild left a dozen, each scanned by every later key's binding and keeping its key
            # alive (at turn 180 of the soak, 86% of the UI thread was that scan). A mutation call prunes them.
            self.mutate_reactive(Footer.compact)

    def _shown_bindings(self) -> tuple:
        """Everything of the active bindings that the footer draws."""
        return tuple(
            (binding.key, self.app.get_key_display(binding), binding.description, binding.action, binding.group)
            + (enabled, tooltip)
            for key, (_, binding, enabled, tooltip) in self.screen.active_bindings.items()
            if binding.show or key == self.app.COMMAND_PALETTE_BINDING
        )
