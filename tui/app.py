"""The full-screen app: conversation tabs, search, themes, command palette."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from textual import events, on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import TabbedContent, TabPane

from tui.arena import RANDOM
from tui.chat import ChatService, interrupted_notice
from tui.collector import COLLECTOR, IDLE_SECONDS
from tui.config import Settings, data_dir
from tui.engine import Engines
from tui.export import export
from tui.files import write_atomically
from tui.store import Conversation, Store, StoreError
from tui.theming import load_themes
from tui.widgets.chat_pane import ChatPane
from tui.widgets.footer import KeysFooter
from tui.widgets.prompt import PromptArea
from tui.zoo.library import LibraryModel, library_models

THEME_PREFERENCE = "theme"
ACTIVE_TAB_PREFERENCE = "active_tab"
TAB_TITLE_LENGTH = 24
# Quitting waits this long for running replies to stop and save what they generated.
QUIT_GRACE_SECONDS = 1.0
GIL_SWITCH_INTERVAL = 0.001
"""Seconds a thread holding the GIL keeps it while another waits (Python's default is 0.005)."""


def _pane_id(conversation_id: int) -> str:
    return f"chat-{conversation_id}"


def _tab_label(conversation: Conversation) -> Content:
    # Content, not a str: a title is the user's text, and a str label would be read as markup.
    title = conversation.title
    return Content(title if len(title) <= TAB_TITLE_LENGTH else title[: TAB_TITLE_LENGTH - 1] + "…")


class ChatTabs(TabbedContent):
    """The conversation tabs, where the tab the user chose stays in front.

    Textual's TabbedContent brings a tab to the front when a widget in it takes the focus, but that focus
    arrives after the events queued before it: a tab shown and then left at once (ctrl+n, a tab switch, a
    dialog closing and giving the focus back) came back to the front by itself. Here the focus follows the
    front tab instead: a focus that lands in another tab moves to the front tab's prompt.
    """

    @on(TabPane.Focused)
    def _keep_the_chosen_tab_in_front(self, event: TabPane.Focused) -> None:
        event.prevent_default()  # Textual's own handler would make the focused pane the active one
        event.stop()
        front = self.active_pane
        if front is not None and event.tab_pane is not front:
            front.query_one(ChatPane).focus_prompt_now()


class ZooApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "zootui"
    # Short footer labels: at 80 columns every key shown must fit on one line (F1 lists them all).
    BINDINGS = [
        Binding("ctrl+n", "new_chat", "New", tooltip="Open a new conversation tab"),
        # Priority: the prompt box would take ctrl+w as delete-word (alt+backspace still does that).
        Binding("ctrl+w", "close_chat", "Close", priority=True, tooltip="Close this tab (the chat is kept)"),
        Binding("f2", "rename_chat", "Rename", show=False),
        Binding("ctrl+f", "search", "Search", tooltip="Search every conversation"),
        Binding("ctrl+b", "browse_models", "Models", tooltip="The model zoo and your library"),
        # Out of the footer to fit 80 columns; the first screen of a tab and F1 name it.
        Binding("f3", "arena", "Arena", show=False, tooltip="Two hidden models answer the same prompt; vote"),
        Binding("f1", "toggle_keys", "Keys", tooltip="Show or hide every key"),
        Binding("ctrl+pageup,alt+left", "previous_chat", "Previous tab", show=False),
        Binding("ctrl+pagedown,alt+right", "next_chat", "Next tab", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        new_chat_model: str | None = None,
        config_warnings: Iterable[str] = (),
        engines: Engines | None = None,
        arena: tuple[str, str] | None = None,
        typed_ahead: str = "",
    ):
        super().__init__()
        self.settings = settings
        self.store = store
        self.engines = engines or Engines(settings, data_dir())
        self.service = ChatService(store, settings, self.engines)
        self._new_chat_model = new_chat_model
        self._open_arena = arena  # `zootui arena`: start on the arena with this pair choice
        self._startup_warnings = list(config_warnings)
        self._jobs = None
        self._switch_interval = sys.getswitchinterval()  # the same
        self._typed_ahead = typed_ahead

    def compose(self) -> ComposeResult:
        yield ChatTabs(id="chats")
        # Every key is listed by F1 and the palette by ctrl+p, so the footer leaves out the palette hint.
        yield KeysFooter(compact=True, show_command_palette=False)

    async def on_mount(self) -> None:
        COLLECTOR.apply()
        self.set_interval(IDLE_SECONDS / 2, COLLECTOR.collect_when_idle, name="collect when idle")
        # The generation thread lets go of the GIL at every call into llama.cpp (several a token); while
        # the UI thread draws, Python's default 5 ms switch interval left it waiting that long to take
        # it back each time, with llama.cpp's threads idle meanwhile.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        themes, theme_warnings = load_themes()
        for theme in themes:
            self.register_theme(theme)
        self._startup_warnings += theme_warnings
        self._apply_remembered_theme()
        self.theme_changed_signal.subscribe(self, lambda theme: self.store.set_preference(THEME_PREFERENCE, theme.name))
        interrupted = self.store.mark_interrupted_replies()
        if interrupted:
            self._startup_warnings.append(f"{interrupted_notice(interrupted)} (ctrl+r regenerates).")
        conversations = self.store.conversations(open_only=True)
        models = self._chat_models()  # one scan of the library for every tab restored at start
        for conversation in conversations:
            await self._add_tab(conversation, models)
        if not conversations or self._new_chat_model:
            await self.action_new_chat(model=self._new_chat_model)
        else:
            self._restore_active_tab()
        # Keys typed while zootui starts wait in the app's queue until now: focus the prompt before they are
        # read, so they reach it in order instead of falling on an app with nothing focused.
        chat = self.active_chat
        if chat is not None:
            self.set_focus(chat.prompt)
            self._replay_typed_ahead(chat.prompt)
        self.watch(self.tabs, "active", self._remember_active_tab, init=False)
        for warning in self._startup_warnings:
            # Warnings quote files and settings ("[engine] n_threads"): plain text, never markup.
            self.notify(warning, severity="warning", timeout=15, markup=False)
        if self._open_arena is not None:
            self.action_arena(*self._open_arena)

    def _replay_typed_ahead(self, prompt: PromptArea) -> None:
        """Keys typed before the terminal left line mode (see tui.terminal), ahead of any typed since."""
        if not self._typed_ahead:
            return
        # Textual's own decoder for terminal input, so they become the same key events as if read now.
        from textual._xterm_parser import XTermParser

        for event in XTermParser().feed(self._typed_ahead):
            if isinstance(event, events.Key):
                prompt.post_message(event)
        self._typed_ahead = ""

    def _restore_active_tab(self) -> None:
        remembered = self.store.preference(ACTIVE_TAB_PREFERENCE)
        if remembered is not None and remembered.isdigit() and int(remembered) in self._open_tab_ids():
            self.tabs.active = _pane_id(int(remembered))

    def _remember_active_tab(self, active: str) -> None:
        if active.startswith("chat-"):
            with self._unless_the_store_fails("Active tab not remembered"):
                self.store.set_preference(ACTIVE_TAB_PREFERENCE, active.removeprefix("chat-"))

    def _apply_remembered_theme(self) -> None:
        wanted = self.store.preference(THEME_PREFERENCE) or self.settings.ui.theme
        if wanted in self.available_themes:
            self.theme = wanted
        else:
            self._startup_warnings.append(f"theme {wanted!r} does not exist; pick one with ctrl+p → Theme.")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Over a dialog, the chat keys go to the dialog (ctrl+w deletes a word in its input).
        if action == "close_chat":
            return len(self.screen_stack) == 1
        if action == "browse_models":
            return type(self.screen).__name__ != "ModelBrowser"  # the browser is imported when first opened
        return True

    def action_toggle_keys(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    async def action_quit(self) -> None:
        """Stop every reply (each saves what it generated, marked stopped), wait a moment for them, exit.

        Textual's own quit would wait for the reply threads to finish on their own: a whole reply.
        """
        stopping = [chat.stop_generation() for chat in self.query(ChatPane)]
        if any(stopping):
            replies = [worker for worker in self.workers if worker.group == "reply" and not worker.is_finished]
            try:
                await asyncio.wait_for(self.workers.wait_for_complete(replies), QUIT_GRACE_SECONDS)
            except asyncio.TimeoutError:
                pass  # a model still loading cannot be stopped; its reply is marked interrupted next time
        self.exit()

    @property
    def tabs(self) -> TabbedContent:
        return self.query_one("#chats", TabbedContent)

    @property
    def active_chat(self) -> ChatPane | None:
        pane = self.tabs.active_pane
        return pane.query_one(ChatPane) if pane is not None else None

    def _chat_models(self) -> list[LibraryModel]:
        return library_models(self.engines.data_dir)

    async def _add_tab(self, conversation: Conversation, models: list[LibraryModel] | None = None) -> None:
        """A tab for the conversation; models (the library) may be given to spare a rescan."""
        pane = TabPane(
            _tab_label(conversation),
            ChatPane(conversation, self.service, models or self._chat_models()),
            id=_pane_id(conversation.id),
        )
        await self.tabs.add_pane(pane)

    def _open_tab_ids(self) -> list[int]:
        return [int(pane.id.removeprefix("chat-")) for pane in self.tabs.query(TabPane)]

    @contextmanager
    def _unless_the_store_fails(self, title: str) -> Iterator[None]:
        """Run a change that writes the database; when the write fails (a full disk) the rest of the change
        is skipped and the store's one line is shown, instead of the error closing the app."""
        try:
            yield
        except StoreError as error:
            self.notify(str(error), title=title, severity="error", timeout=10, markup=False)

    async def action_new_chat(self, model: str | None = None) -> None:
        with self._unless_the_store_fails("No new chat"):
            conversation = self.service.new_conversation(model=model)
            await self._add_tab(conversation)
            self.tabs.active = _pane_id(conversation.id)

    async def action_close_chat(self) -> None:
        chat = self.active_chat
        if chat is None:
            return
        chat.stop_generation()
        with self._unless_the_store_fails("Tab not closed"):
            # An empty tab leaves nothing behind: a conversation with no message is deleted, not kept.
            deleted = self.service.close_conversation(chat.conversation.id)
            await self.tabs.remove_pane(_pane_id(chat.conversation.id))
            self.service.set_tab_order(self._open_tab_ids())
            if self.tabs.tab_count == 0:
                await self.action_new_chat()
            if not deleted:
                self.notify(f"Closed {chat.conversation.title!r}; ctrl+f finds it again.", timeout=4, markup=False)

    def action_rename_chat(self) -> None:
        from tui.screens.rename import RenameScreen

        chat = self.active_chat
        if chat is None:
            return

        def rename(title: str | None) -> None:
            if title:
                with self._unless_the_store_fails("Not renamed"):
                    chat.conversation = self.service.update(chat.conversation, title=title)
                    self.tabs.get_tab(_pane_id(chat.conversation.id)).label = _tab_label(chat.conversation)

        self.push_screen(RenameScreen(chat.conversation.title), rename)

    def action_browse_models(self) -> None:
        from tui.screens.browser import ModelBrowser

        if not isinstance(self.screen, ModelBrowser):
            self.push_screen(ModelBrowser(self.settings, self.model_jobs()))

    def action_arena(self, first: str = RANDOM, second: str = RANDOM) -> None:
        from tui.arena.service import ArenaService
        from tui.screens.arena import ArenaScreen

        if not isinstance(self.screen, ArenaScreen):
            self.push_screen(ArenaScreen(ArenaService(self.store, self.settings, self.engines), first, second))

    def action_leaderboard(self) -> None:
        from tui.arena.service import ArenaService
        from tui.screens.leaderboard import LeaderboardScreen

        if not isinstance(self.screen, LeaderboardScreen):
            self.push_screen(LeaderboardScreen(ArenaService(self.store, self.settings, self.engines)))

    def model_jobs(self):
        """The service that gets, imports and deletes models (imported when first needed: it is large)."""
        from tui.zoo.jobs import Jobs

        if self._jobs is None:
            self._jobs = Jobs(self.store, self.engines.data_dir)
        return self._jobs

    async def on_model_browser_chat_requested(self, message) -> None:
        """The browser's chat action: a new tab on a library model."""
        await self.action_new_chat(model=message.model)

    def action_search(self) -> None:
        from tui.screens.search import SearchScreen

        async def open_found(conversation_id: int | None) -> None:
            if conversation_id is not None:
                await self.open_conversation(conversation_id)

        self.push_screen(SearchScreen(self.service.search), open_found)

    async def open_conversation(self, conversation_id: int) -> None:
        with self._unless_the_store_fails("Not opened"):
            if conversation_id not in self._open_tab_ids():
                conversation = self.service.open_conversation(conversation_id)
                await self._add_tab(conversation)
                self.service.set_tab_order(self._open_tab_ids())
            self.tabs.active = _pane_id(conversation_id)

    def _switch_tab(self, step: int) -> None:
        ids = [_pane_id(conversation_id) for conversation_id in self._open_tab_ids()]
        if len(ids) > 1:
            self.tabs.active = ids[(ids.index(self.tabs.active) + step) % len(ids)]

    def action_previous_chat(self) -> None:
        self._switch_tab(-1)

    def action_next_chat(self) -> None:
        self._switch_tab(1)

    def export_active_chat(self, format: str) -> None:
        chat = self.active_chat
        if chat is None:
            return
        conversation = self.service.conversation(chat.conversation.id)
        path = Path.cwd() / f"zootui-chat-{conversation.id}.{format}"
        text = export(
            conversation,
            self.service.messages(conversation),
            format,
            self.engines.data_dir,
            self.service.every_version(conversation),
        )
        try:
            write_atomically(path, text)
        except OSError as error:
            self.notify(
                f"Could not write {path}: {error.strerror}; free space or change directory.",
                severity="error",
                markup=False,
            )
            return
        self.notify(f"Exported to {path}", title="Exported", markup=False)

    @on(ChatPane.AttachRequested)
    def ask_for_image(self, event: ChatPane.AttachRequested) -> None:
        from tui.screens.attach import AttachScreen

        self.push_screen(AttachScreen(event.pane.conversation.model), event.pane.image_chosen)

    @on(ChatPane.TitleChanged)
    def retitle_tab(self, event: ChatPane.TitleChanged) -> None:
        self.tabs.get_tab(_pane_id(event.conversation.id)).label = _tab_label(event.conversation)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New chat", "Open a new conversation tab", self.action_new_chat)
        yield SystemCommand("Close chat", "Close this tab (the conversation is kept)", self.action_close_chat)
        yield SystemCommand("Rename chat", "Give this conversation a title", self.action_rename_chat)
        yield SystemCommand("Search conversations", "Find text in every conversation", self.action_search)
        if self.active_chat is not None:
            yield SystemCommand(
                "Attach image",
                "Send a picture with your next message (models that see images)",
                self.active_chat.action_attach_image,
            )
        yield SystemCommand(
            "Model browser", "The seed zoo and your library: get, import, delete, chat", self.action_browse_models
        )
        yield SystemCommand(
            "Arena", "Two hidden models answer the same prompt; vote, then see who they were", self.action_arena
        )
        yield SystemCommand(
            "Leaderboard", "Ratings from your arena votes: Bradley-Terry, Elo, win rates", self.action_leaderboard
        )
        yield SystemCommand(
            "Export chat as Markdown",
            "Write this conversation to a .md file here",
            lambda: self.export_active_chat("md"),
        )
        yield SystemCommand(
            "Export chat as JSON",
            "Write this conversation to a .json file here",
            lambda: self.export_active_chat("json"),
        )
        chat = self.active_chat
        if chat is not None:
            yield SystemCommand("Regenerate reply", "Replace the last reply with a new one", chat.action_regenerate)
            yield SystemCommand("Edit last message", "Edit and resend your last message", chat.action_edit_last)
            yield SystemCommand(
                "Chat settings", "Model, system prompt and sampling of this tab", chat.action_toggle_settings
            )

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.InputEvent):
            COLLECTOR.note_input()  # a full collection waits until the user pauses
        await super().on_event(event)

    def on_unmount(self) -> None:
        for chat in self.query(ChatPane):
            chat.stop_generation()
        self.workers.cancel_all()
        self.engines.close()
        COLLECTOR.restore()
        sys.setswitchinterval(self._switch_interval)
