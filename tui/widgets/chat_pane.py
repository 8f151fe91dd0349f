"""One conversation tab: its messages, the prompt, its settings, the reply worker, and an image waiting
to go with the next message (ctrl+t, or a path pasted or dropped into the prompt)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Label, Static, TabbedContent

from tui.chat import ChatService, Reply, ReplyHeld
from tui.collector import COLLECTOR
from tui.engine import EngineError, Progress, ReplyStats
from tui.images import ImageError, StoredImage
from tui.moderation import Moderation, moderators
from tui.store import Conversation, MessageState, StoreError
from tui.store import Message as StoredMessage
from tui.widgets.message import MessageView
from tui.widgets.message_log import MessageLog
from tui.widgets.prompt import PromptArea
from tui.widgets.settings_panel import SettingsPanel
from tui.zoo.library import DEFAULT_MODEL_NAME, LibraryModel

# Tokens reach the screen in batches. Each batch costs the UI thread a Markdown re-parse of the last block, a
# layout of the screen and a render: 10-25 ms of Python on a 2-core machine, where it takes a core from
# llama.cpp's threads and the GIL from the generation thread. So the batches come at most ten times a second,
# and less often when drawing one costs more than STREAM_UI_BUDGET of a core allows (measured in
# tests/bench/bench_chat.py: at a fixed ten a second the UI thread used 15% of the generation's CPU).
MIN_BATCH_INTERVAL = 0.1
MAX_BATCH_INTERVAL = 0.5
STREAM_UI_BUDGET = 0.08
"""Share of one core the UI thread may spend drawing a streaming reply (4% of two generating threads)."""
SYSTEM_PROMPT_PREVIEW = 160


class DeltaBatcher:
    """Collects text from the generation thread and hands it on at most every ``interval`` seconds.

    ``pace``, called on the UI thread as each batch arrives, sets the interval from the CPU the UI thread
    used since the batch before: drawing that costs more is done less often.
    """

    def __init__(self, send: Callable[[str], None]):
        self._send = send
        self._parts: list[str] = []
        self._sent_at = 0.0
        self.interval = MIN_BATCH_INTERVAL
        self._ui_cpu_at: float | None = None

    def add(self, text: str) -> None:
        self._parts.append(text)
        now = time.monotonic()
        if now - self._sent_at >= self.interval:
            self.flush()
            self._sent_at = now

    def flush(self) -> None:
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._send(text)

    def pace(self) -> None:
        cpu = time.thread_time()
        if self._ui_cpu_at is not None:
            # Drawing a batch took this much CPU; batches this far apart keep it within budget.
            wanted = (cpu - self._ui_cpu_at) / STREAM_UI_BUDGET
            smoothed = (self.interval + wanted) / 2
            self.interval = min(max(smoothed, MIN_BATCH_INTERVAL), MAX_BATCH_INTERVAL)
        self._ui_cpu_at = cpu


def welcome_text(model: str) -> str:
    """The first screen of an empty tab: what it chats with, and the keys a new user needs."""
    what = f"{model}, the small model zootui installs with" if model == DEFAULT_MODEL_NAME else model
    return "\n".join(
        (
            f"Chatting with {what}.",
            "Type below and press enter · ctrl+j adds a line · escape stops a reply",
            "ctrl+s: this tab's model, system prompt and sampling",
            "ctrl+b: the model zoo (get Vicuna, Alpaca, Dolly… and chat with them)",
            "ctrl+r regenerates a reply (←/→ flips versions) · ctrl+e edits your last",
            "ctrl+n new tab · ctrl+f search all chats · F3 arena · ctrl+p commands · F1 keys",
        )
    )


def system_prompt_line(system_prompt: str) -> str:
    text = " ".join(system_prompt.split())
    if len(text) > SYSTEM_PROMPT_PREVIEW:
        text = text[: SYSTEM_PROMPT_PREVIEW - 1] + "…"
    return f"System prompt: {text}  (ctrl+s changes it)"


class ChatPane(Vertical):
    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("escape", "cancel_edit", "Cancel edit"),
        # Escape closes the open settings panel too: its fields keep the focus, so keys typed after an escape
        # that closed nothing went to them, and a message with its enter was lost.
        Binding("escape", "close_settings", "Close settings", show=False),
        Binding("ctrl+r", "regenerate", "Retry", tooltip="Regenerate the last reply (the old one is kept)"),
        # Priority: in the prompt box ctrl+e would move to the end of the line (the End key still does).
        Binding("ctrl+e", "edit_last", "Edit", priority=True, tooltip="Edit and resend your last message"),
        Binding("ctrl+s", "toggle_settings", "Settings"),
        # Priority, as ctrl+e: the prompt box has the focus when a reply is held.
        Binding("ctrl+o", "send_anyway", "Send anyway", priority=True),
        # Shown for models that see images; for the others ctrl+t explains why not (hidden, to spare the
        # footer at 80 columns).
        Binding("ctrl+t", "attach_image", "Image", priority=True, tooltip="Attach an image to your next message"),
        Binding("ctrl+t", "explain_no_images", "Image", priority=True, show=False),
        Binding("ctrl+end", "follow", "Follow", show=False, tooltip="Jump to the newest output and follow it"),
    ]

    @dataclass
    class ReplyDelta(Message):
        text: str

    @dataclass
    class ReplyProgress(Message):
        progress: Progress

    @dataclass
    class ReplyDone(Message):
        reply: Reply

    @dataclass
    class Moderated(Message):
        moderation: Moderation

    @dataclass
    class Held(Message):
        moderation: Moderation

    @dataclass
    class ReplyFailed(Message):
        error: str

    @dataclass
    class AttachRequested(Message):
        """Ask for an image path (the app opens its dialog) and hand it to ``image_chosen``."""

        pane: ChatPane

    @dataclass
    class ImageAttached(Message):
        image: StoredImage

    @dataclass
    class ImageRefused(Message):
        error: str

    @dataclass
    class TitleChanged(Message):
        pane: ChatPane
        conversation: Conversation

    def __init__(self, conversation: Conversation, service: ChatService, models: list[LibraryModel], **kwargs):
        super().__init__(**kwargs)
        self.conversation = conversation
        self.service = service
        self._models = [model.name for model in models]
        self._moderators = moderators(models)
        self._held: Moderation | None = None  # the moderation label that holds the reply to the last message
        self._loaded = False
        self._cancel: threading.Event | None = None
        self._reply_view: MessageView | None = None
        self._batcher: DeltaBatcher | None = None
        self._editing = False
        self._draft: str | None = None
        self._phase = ""  # while a reply runs: moderating, loading, prompt, writing, stopping
        self._phase_started = 0.0
        self._progress: Progress | None = None
        self._note = ""  # shown while idle, until the next reply
        self._last_stats: ReplyStats | None = None
        self._has_own_message = False
        self._ticker = None
        self._close_refused = False  # closing the settings was refused once over an invalid value
        self._pending_image: StoredImage | None = None
        self._sees_images = self.service.accepts_images(conversation.model)

    @property
    def generating(self) -> bool:
        return self._cancel is not None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="columns"):
            with Vertical(classes="conversation"):
                with MessageLog(self._view, classes="messages"):
                    yield Static("", classes="system-prompt", markup=False)
                    yield Static(welcome_text(self.conversation.model), classes="welcome", markup=False)
                yield Label("↓ new output below · ctrl+end or click to follow", classes="new-output", markup=False)
                yield Label("", classes="status", markup=False)
                yield Label("", classes="attachment", markup=False)
                yield PromptArea(classes="prompt")

    def _new_settings_panel(self) -> SettingsPanel:
        return SettingsPanel(
            self.conversation.model,
            self._models,
            self.conversation.system_prompt,
            self.service.params(self.conversation),
            self.conversation.moderation_model,
            self._moderators,
            threads=self.service.threads().summary(),
            classes="settings visible",
        )

    @property
    def _settings(self) -> SettingsPanel | None:
        """The settings panel, once it was first opened: a third of a tab's widgets, mounted only when
        asked for, so each restored tab costs the first frame less."""
        panels = self.query(SettingsPanel)
        return panels.first() if panels else None

    def on_mount(self) -> None:
        self.query_one(".new-output").display = False
        self._show_system_prompt()
        self._render_status()

    @property
    def log(self) -> MessageLog:
        return self.query_one(MessageLog)

    @property
    def prompt(self) -> PromptArea:
        return self.query_one(PromptArea)

    async def on_show(self) -> None:
        # Focus first: focusing after the await below could land when another tab or a dialog is in front,
        # and a focused widget pulls its tab to the front. For the same reason a tab shown again with its
        # screen (after a dialog) takes the focus only if it is still the active tab: the dialog may have
        # opened another one meanwhile.
        if self._is_active_tab():
            self.focus_prompt_now()
        await self._ensure_loaded()

    def focus_prompt_now(self) -> None:
        """Focus the prompt at once. Textual's focus() lands after the events already queued, by which time
        the user may have opened or switched to another tab, and the focus would pull this one back."""
        self.screen.set_focus(self.prompt)

    def _is_active_tab(self) -> bool:
        tabs = next((node for node in self.ancestors if isinstance(node, TabbedContent)), None)
        return tabs is None or tabs.active == self.parent.id

    async def _ensure_loaded(self) -> None:
        """Mount the past messages; done when the tab is first shown (so many open tabs start fast), or
        earlier when keys typed during start-up send a message before that."""
        if self._loaded:
            return
        self._loaded = True
        stored = self.service.messages(self.conversation)
        await self._show_branch(stored, follow=True)
        self.log.scroll_end(animate=False)
        self._last_stats = next((stats for message in reversed(stored) if (stats := _stats(message.stats))), None)
        held = self.service.held(self.conversation)
        if held is not None:
            self._hold(held)
        self._render_status()

    # What the pane shows

    def _views(self) -> list[MessageView]:
        return list(self.query(MessageView))

    async def _show_branch(self, messages: list[StoredMessage], *, follow: bool = False) -> None:
        """Make the views match the branch: the log keeps those already right and replaces the rest, in the
        window of messages it mounts (the newest ones with ``follow``, else the ones being read)."""
        await self.log.show(messages, follow=follow)
        by_id = {message.id: message for message in messages}
        for view in self.log.views:
            if (message := by_id.get(view.message_id)) is not None:
                view.set_versions(message.version, message.versions)
        self._has_own_message = any(message.role == "user" for message in messages)
        self._show_welcome()
        self.refresh_bindings()

    def _show_welcome(self) -> None:
        self.query_one(".welcome", Static).display = not self._views()

    def _show_system_prompt(self) -> None:
        line = self.query_one(".system-prompt", Static)
        line.update(system_prompt_line(self.conversation.system_prompt))
        line.display = bool(self.conversation.system_prompt.strip())

    def _render_status(self) -> None:
        parts = [self.conversation.model]
        elapsed = int(time.monotonic() - self._phase_started)
        if self._phase == "moderating":
            parts.append("the moderation model reads your message… (escape stops)")
        elif self._phase == "loading":
            parts.append(f"loading the model… {elapsed}s (escape stops)")
        elif self._phase == "prompt" and self._progress is not None:
            parts.append(f"reading the prompt: {self._progress.done}/{self._progress.total} tokens (escape stops)")
        elif self._phase == "writing":
            parts.append("writing… (escape stops)")
        elif self._phase == "stopping":
            parts.append("stopping…")
        elif self._held is not None:
            parts.append(f"reply held: {self._held.label} · ctrl+o sends it anyway")
        elif self._note:
            parts.append(self._note)
        elif self._last_stats is not None:
            stats = self._last_stats
            parts.append(
                f"context {stats.context_used}/{stats.context_size} · last reply {stats.tokens_per_second:.1f} tok/s"
            )
        # One line whatever it says (app.tcss): a new text needs no layout of the screen, which a prompt's
        # progress or the first words of a reply would otherwise cost at each change.
        self.query_one(".status", Label).update(" · ".join(parts), layout=False)

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._phase_started = time.monotonic()
        # Loading a model or reading a long prompt can take a while: the status counts the seconds.
        if phase in ("loading", "prompt") and self._ticker is None:
            self._ticker = self.set_interval(1.0, self._render_status)
        elif phase not in ("loading", "prompt") and self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        self._render_status()

    def _say(self, note: str) -> None:
        self._note = note
        self._render_status()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.generating
        if action == "attach_image":
            return self._sees_images
        if action == "explain_no_images":
            return not self._sees_images
        if action == "send_anyway":
            return self._held is not None and not self.generating
        if action == "cancel_edit":
            return self._editing and not self.generating
        if action == "close_settings":
            return self._settings is not None and self._settings.has_class("visible")
        if action in ("regenerate", "edit_last"):
            return not self.generating and self._has_own_message
        return True

    # Sending

    @on(PromptArea.Submitted)
    async def send(self, event: PromptArea.Submitted) -> None:
        event.stop()
        if self.generating:
            event.prompt.restore(event.text)
            self.notify("A reply is still streaming: wait for it or press escape to stop it.", severity="warning")
            return
        text = event.text
        image = None if self._editing else self._pending_image
        if image is not None:  # the model may have changed since the image was attached
            try:
                self.service.check_accepts_images(self.conversation.model)
            except EngineError as error:
                event.prompt.restore(text)
                self.notify(str(error), title="Image not sent", severity="error", markup=False)
                return
        self._claim_reply()
        await self._ensure_loaded()
        self._held = None
        try:
            if self._editing:
                self.service.edit_last_user_message(self.conversation, text)
            else:
                self.service.add_user_message(self.conversation, text, image)
        except StoreError as error:  # a full disk: nothing was saved, so the message waits in the box
            self._end_reply()
            event.prompt.restore(text)
            self.notify(str(error), title="Message not sent", severity="error", timeout=10, markup=False)
            return
        if self._editing:
            self._end_edit(sent=True)
        else:
            self._refresh_title()
            self._set_pending_image(None)
        # While following the end, the oldest views the log holds beyond a few screens go.
        await self._show_branch(self.service.messages(self.conversation), follow=True)
        await self._start_reply()

    # Images

    def action_attach_image(self) -> None:
        if self._sees_images:
            self.post_message(self.AttachRequested(self))
        else:
            self.action_explain_no_images()

    def action_explain_no_images(self) -> None:
        try:
            self.service.check_accepts_images(self.conversation.model)
        except EngineError as error:
            self.notify(str(error), title="Cannot attach an image", severity="error", markup=False)
            return
        self._sees_images = True  # the library changed under this tab: its model sees images now
        self.refresh_bindings()
        self.post_message(self.AttachRequested(self))

    def image_chosen(self, path: str | None) -> None:
        """The path typed in the attach dialog: attach it; "" drops the waiting image; None changes nothing."""
        if path == "":
            self._set_pending_image(None)
        elif path is not None:
            self._attach_image_file(Path(path))

    @on(PromptArea.ImageDropped)
    def image_dropped(self, event: PromptArea.ImageDropped) -> None:
        event.stop()
        self._attach_image_file(event.path)

    @work(thread=True, exit_on_error=False, group="attach", description="Checking an image")
    def _attach_image_file(self, path: Path) -> None:
        """Check and keep the image (decoding a large one takes a moment) off the UI thread."""
        try:
            image = self.service.attach_image(self.conversation.model, path)
        except (EngineError, ImageError) as error:
            self.post_message(self.ImageRefused(str(error)))
            return
        except Exception as error:  # a failure here must still reach the user
            self.post_message(self.ImageRefused(f"the image could not be attached: {error!r}"))
            raise
        self.post_message(self.ImageAttached(image))

    def on_chat_pane_image_attached(self, event: ImageAttached) -> None:
        self._set_pending_image(event.image)

    def on_chat_pane_image_refused(self, event: ImageRefused) -> None:
        self.notify(event.error, title="Image not attached", severity="error", timeout=10, markup=False)

    def _set_pending_image(self, image: StoredImage | None) -> None:
        self._pending_image = image
        label = self.query_one(".attachment", Label)
        label.set_class(image is not None, "pending")
        label.update(f"image {image.name} goes with your next message · ctrl+t changes it" if image else "")

    def _refresh_title(self) -> None:
        updated = self.service.conversation(self.conversation.id)
        if updated.title != self.conversation.title:
            self.conversation = updated
            self.post_message(self.TitleChanged(self, updated))

    def _claim_reply(self) -> None:
        """The tab is generating from the moment a reply is decided, before anything is awaited: a second
        enter, ctrl+r or ctrl+o arriving meanwhile must not start a second reply."""
        self._cancel = threading.Event()
        self._note = ""
        self._set_phase("moderating" if self.conversation.moderation_model else "writing")
        self.refresh_bindings()

    async def _start_reply(self) -> None:
        """Show the reply's view and start generating it (after ``_claim_reply``)."""
        self._reply_view = MessageView("assistant", state=MessageState.STREAMING)
        await self.log.mount(self._reply_view)
        self._show_welcome()
        self.log.anchor()
        # Each blink of the prompt's cursor was a frame of its own, a fifth of the frames drawn while a
        # reply streams: the cursor stays lit until the reply ends.
        self.query_one(PromptArea).cursor_blink = False
        self._batcher = DeltaBatcher(lambda text: self.post_message(self.ReplyDelta(text)))
        self._generate(self._cancel, self._batcher)

    @work(thread=True, exit_on_error=False, group="reply", description="Generating a reply")
    def _generate(self, cancel: threading.Event, batcher: DeltaBatcher) -> None:
        try:
            with COLLECTOR.streaming():
                reply = self.service.reply(
                    self.conversation,
                    cancel,
                    batcher.add,
                    on_moderated=lambda moderation: self.post_message(self.Moderated(moderation)),
                    on_progress=lambda progress: self.post_message(self.ReplyProgress(progress)),
                )
        except ReplyHeld as held:
            self.post_message(self.Held(held.moderation))
            return
        except (EngineError, StoreError) as error:
            batcher.flush()
            self.post_message(self.ReplyFailed(str(error)))
            return
        except Exception as error:  # an engine bug must not leave the tab stuck in "generating"
            batcher.flush()
            self.post_message(self.ReplyFailed(f"the reply failed unexpectedly: {error!r}"))
            raise
        batcher.flush()
        self.post_message(self.ReplyDone(reply))

    def on_chat_pane_reply_progress(self, event: ReplyProgress) -> None:
        if self._phase == "stopping":
            return
        self._progress = event.progress
        if self._phase != event.progress.stage:
            self._set_phase(event.progress.stage)
        else:
            self._render_status()

    def on_chat_pane_moderated(self, event: Moderated) -> None:
        user = self._last_view("user")
        if user is not None:
            user.set_footer(event.moderation.summary())
        if not event.moderation.held and self._phase == "moderating":
            self._set_phase("writing")

    async def on_chat_pane_held(self, event: Held) -> None:
        view, self._reply_view = self._reply_view, None
        self._end_reply()
        if view is not None:
            await view.remove()
        self._show_welcome()
        self._hold(event.moderation)
        self.notify(
            f"The moderation model labelled your message {event.moderation.label!r}: the reply is held. "
            "ctrl+o sends it anyway; ctrl+e edits your message.",
            title="Reply held",
            severity="warning",
            timeout=10,
            markup=False,
        )

    def _hold(self, moderation: Moderation) -> None:
        self._held = moderation
        self._render_status()
        self.refresh_bindings()

    async def action_send_anyway(self) -> None:
        try:
            self.service.send_anyway(self.conversation)
        except EngineError as error:
            self.notify(str(error), severity="warning", markup=False)
            return
        self._held = None
        self._claim_reply()
        user = self._last_view("user")
        message = self.service.last_user_message(self.conversation.id)
        if user is not None and message is not None:
            user.set_footer(_footer(message, None))
        await self._start_reply()

    def _last_view(self, role: str) -> MessageView | None:
        """The view of the newest message of ``role``, if the log's window holds the newest messages (a view
        further up is another message: the next show draws the newest from the store anyway)."""
        if not self.log.holds_newest:
            return None
        return next((view for view in reversed(self._views()) if view.role == role), None)

    async def on_chat_pane_reply_delta(self, event: ReplyDelta) -> None:
        if self._reply_view is None:
            return
        if self._phase in ("loading", "prompt"):
            self._set_phase("writing")
        self._batcher.pace()
        await self._reply_view.append(event.text)
        self._show_new_output_marker()

    async def on_chat_pane_reply_done(self, event: ReplyDone) -> None:
        view, self._reply_view = self._reply_view, None
        self._end_reply()
        reply = event.reply
        if view is not None and reply.message.content:
            view.message_id = reply.message.id
            await view.finish()
            view.set_footer(reply.stats.summary() if reply.stats else "", state=reply.message.state)
        # The branch may have changed under the view (a version number, or an empty stopped reply gone).
        await self._show_branch(self.service.messages(self.conversation))
        self._last_stats = reply.stats if reply.message.content else self._last_stats
        self._render_status()

    async def on_chat_pane_reply_failed(self, event: ReplyFailed) -> None:
        view, self._reply_view = self._reply_view, None
        self._end_reply()
        if view is not None and view.content:
            await view.finish()
            view.set_footer("", state=MessageState.ERROR)
        await self._show_branch(self.service.messages(self.conversation))
        self._say(f"error: {event.error}")
        self.notify(event.error, title="Reply failed", severity="error", timeout=10, markup=False)

    def _end_reply(self) -> None:
        self._cancel = None
        self._progress = None
        self._set_phase("")
        self.query_one(".new-output").display = False
        self.query_one(PromptArea).cursor_blink = True
        self.refresh_bindings()

    # Scrolling: the log follows a streaming reply until the user scrolls up (Textual's anchor)

    def _show_new_output_marker(self) -> None:
        # Not from the scroll position alone: a log that follows is a line short of its end from the
        # moment its reply grows until the layout scrolls it, which flashed the marker (and laid the screen
        # out twice for it).
        log = self.log
        self.query_one(".new-output").display = (
            self.generating and not log.follows_end and log.max_scroll_y - log.scroll_y > 1
        )

    def action_follow(self) -> None:
        self.log.anchor()
        self.query_one(".new-output").display = False

    @on(PromptArea.PageRequested)
    def scroll_log(self, event: PromptArea.PageRequested) -> None:
        event.stop()
        if event.step < 0:
            self.log.scroll_page_up()
        else:
            self.log.scroll_page_down()

    def on_click(self, event) -> None:
        if event.widget is self.query_one(".new-output"):
            self.action_follow()

    # Stop, regenerate, edit, versions

    def action_stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._set_phase("stopping")

    def action_cancel_edit(self) -> None:
        if self._editing:
            self._end_edit()
            self._say("edit cancelled")

    def _end_edit(self, *, sent: bool = False) -> None:
        """Leave editing; the draft that was in the box before ctrl+e comes back.

        Once sent, the box already holds only what was typed after enter, which stays after the draft.
        """
        self._editing = False
        if not sent:
            self.prompt.clear()
        if self._draft:
            self.prompt.restore(self._draft)
        self._draft = None
        self.refresh_bindings()

    async def action_regenerate(self) -> None:
        if self.generating:  # the palette runs this without the binding's check
            return
        try:
            self.service.prepare_regenerate(self.conversation)
        except EngineError as error:
            self.notify(str(error), severity="warning", markup=False)
            return
        self._claim_reply()
        await self._show_branch(self.service.messages(self.conversation), follow=True)
        await self._start_reply()

    def action_edit_last(self) -> None:
        last_user = self.service.last_user_message(self.conversation.id)
        if last_user is None:
            self.notify("There is no message of yours to edit yet.", severity="warning")
            return
        prompt = self.prompt
        if not self._editing:
            self._draft = prompt.text
        prompt.text = last_user.content
        prompt.move_cursor(prompt.document.end)
        prompt.focus()
        self._editing = True
        self._say("editing your last message: enter resends it (the old one is kept), escape cancels")
        self.refresh_bindings()

    @on(MessageView.VersionRequested)
    async def switch_version(self, event: MessageView.VersionRequested) -> None:
        event.stop()
        if self.generating:
            self.notify("Wait for the reply, or stop it, before switching versions.", severity="warning")
            return
        branch = self.service.switch_version(self.conversation, event.view.message_id, event.step)
        if branch is None:
            return
        index = self.log.position_of(event.view)
        await self._show_branch(branch)
        if (view := self.log.view_at(index)) is not None:
            view.focus()
        self._say(f"showing version {branch[index].version} of {branch[index].versions}; the chat continues from it")

    # Settings

    async def action_toggle_settings(self) -> None:
        panel = self._settings
        if panel is None:
            panel = self._new_settings_panel()
            await self.query_one(".columns", Horizontal).mount(panel)
            panel.focus()
            return
        if not panel.has_class("visible"):
            panel.add_class("visible")
            panel.focus()
            return
        reason = panel.invalid_reason
        if reason is not None and not self._close_refused:
            # An invalid value is never saved; say so rather than close over it.
            self._close_refused = True
            field = panel.first_invalid_field()
            if field is not None:
                field.focus()
            self.notify(
                f"Not saved: {reason}. Fix it, or press ctrl+s again to keep the saved value.",
                severity="warning",
                markup=False,
            )
            return
        if reason is not None:
            panel.revert_invalid()
            self._say("the invalid value was put back to the saved one")
        self._close_refused = False
        panel.remove_class("visible")
        self.prompt.focus()

    async def action_close_settings(self) -> None:
        if self._settings is not None and self._settings.has_class("visible"):
            await self.action_toggle_settings()

    @on(SettingsPanel.Changed)
    def save_settings(self, event: SettingsPanel.Changed) -> None:
        event.stop()
        self.conversation = self.service.update(self.conversation, **event.changes)
        self._show_system_prompt()
        if "model" in event.changes:
            self.query_one(".welcome", Static).update(welcome_text(self.conversation.model))
            self._sees_images = self.service.accepts_images(self.conversation.model)
            self.refresh_bindings()
        self._say("model changed" if "model" in event.changes else "settings saved")

    @on(SettingsPanel.ValidityChanged)
    def show_validity(self, event: SettingsPanel.ValidityChanged) -> None:
        event.stop()
        self._close_refused = False
        self._say(f"not saved: {event.reason}" if event.reason else "settings saved")

    def _view(self, message: StoredMessage) -> MessageView:
        image = message.image
        return MessageView(
            message.role,
            message.content,
            state=message.state,
            message_id=message.id,
            footer=_footer(message, _stats(message.stats)),
            version=message.version,
            versions=message.versions,
            image=self.service.image_path(image) if image else None,
            image_name=image.name if image else "",
        )

    def stop_generation(self) -> threading.Event | None:
        """Ask a running reply to stop; returns its cancel event (None when idle)."""
        cancel = self._cancel
        if cancel is not None:
            cancel.set()
        return cancel

    def on_unmount(self) -> None:
        self.stop_generation()


def _footer(message: StoredMessage, stats: ReplyStats | None) -> str:
    """What shows under a message: a reply's figures, or a user message's moderation label."""
    if stats is not None:
        return stats.summary()
    moderation = Moderation.from_dict(message.moderation)
    return moderation.summary() if moderation is not None else ""


def _stats(saved: dict | None) -> ReplyStats | None:
    """A saved reply's figures, or None when it has none (or they were written by another version)."""
    if not saved:
        return None
    known = {field: saved[field] for field in ReplyStats.__dataclass_fields__ if field in saved}
    try:
        return ReplyStats(**known)
    except TypeError:
        return None
