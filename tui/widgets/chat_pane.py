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
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Label

from tui.chat import ChatService, Reply, ReplyHeld
from tui.engine import EngineError, ReplyStats
from tui.images import ImageError, StoredImage
from tui.moderation import Moderation, moderators
from tui.store import Conversation, MessageState
from tui.store import Message as StoredMessage
from tui.widgets.message import MessageView
from tui.widgets.prompt import PromptArea
from tui.widgets.settings_panel import SettingsPanel
from tui.zoo.library import LibraryModel

# Tokens reach the screen in batches, ten a second: each batch costs a Markdown re-parse of the last block
# and a layout pass, and on a 2-core machine the UI thread competes with llama.cpp's threads (measured in
# tests/bench/bench_chat.py: 30 batches a second took about 5 tok/s more from decoding than ten).
BATCH_INTERVAL = 0.1


class DeltaBatcher:
    """Collects text from the generation thread and hands it on at most every BATCH_INTERVAL."""

    def __init__(self, send: Callable[[str], None]):
        self._send = send
        self._parts: list[str] = []
        self._sent_at = 0.0

    def add(self, text: str) -> None:
        self._parts.append(text)
        now = time.monotonic()
        if now - self._sent_at >= BATCH_INTERVAL:
            self.flush()
            self._sent_at = now

    def flush(self) -> None:
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._send(text)


class ChatPane(Vertical):
    BINDINGS = [
        Binding("escape", "stop", "Stop reply"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        # Priority: in the prompt box ctrl+e would move to the end of the line (the End key still does).
        Binding("ctrl+e", "edit_last", "Edit last", priority=True),
        Binding("ctrl+s", "toggle_settings", "Settings"),
        # Priority, as ctrl+e: the prompt box has the focus when a reply is held.
        Binding("ctrl+o", "send_anyway", "Send anyway", priority=True),
        Binding("ctrl+t", "attach_image", "Attach image", priority=True),
    ]

    @dataclass
    class ReplyDelta(Message):
        text: str

    @dataclass
    class ReplyDone(Message):
        reply: Reply

    @dataclass
    class ReplyFailed(Message):
        error: str

    @dataclass
    class Moderated(Message):
        moderation: Moderation

    @dataclass
    class Held(Message):
        moderation: Moderation

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
        self._held: Moderation | None = None
        self._loaded = False
        self._cancel: threading.Event | None = None
        self._reply_view: MessageView | None = None
        self._editing = False
        self._pending_image: StoredImage | None = None

    @property
    def generating(self) -> bool:
        return self._cancel is not None

    def compose(self) -> ComposeResult:
        with Horizontal():
            with Vertical(classes="conversation"):
                yield VerticalScroll(classes="messages")
                yield Label("", classes="status")
                yield Label("", classes="attachment")
                yield PromptArea(classes="prompt")
            yield SettingsPanel(
                self.conversation.model,
                self._models,
                self.conversation.system_prompt,
                self.service.params(self.conversation),
                self.conversation.moderation_model,
                self._moderators,
                classes="settings",
            )

    async def on_show(self) -> None:
        # Focus first: focusing after the await below could land when another tab or a dialog is in front,
        # and a focused widget pulls its tab to the front.
        self.query_one(PromptArea).focus()
        # Past messages are mounted when a tab is first shown, so many open tabs start fast.
        if not self._loaded:
            self._loaded = True
            stored = [(message, _stats(message.stats)) for message in self.service.store.messages(self.conversation.id)]
            views = [
                MessageView(
                    message.role,
                    message.content,
                    state=message.state,
                    message_id=message.id,
                    footer=_footer(message, stats),
                    image=self.service.image_path(message.image) if message.image else None,
                    image_name=message.image.name if message.image else "",
                )
                for message, stats in stored
            ]
            messages = self.query_one(".messages", VerticalScroll)
            await messages.mount_all(views)
            messages.scroll_end(animate=False)
            self._show_reply_status(next((stats for _, stats in reversed(stored) if stats), None))
            held = self.service.held(self.conversation)
            if held is not None:
                self._hold(held)

    def _show_reply_status(self, stats: ReplyStats | None) -> None:
        self._show_status(
            f"context {stats.context_used}/{stats.context_size} · last reply {stats.tokens_per_second:.1f} tok/s"
            if stats
            else ""
        )

    def _show_status(self, note: str = "") -> None:
        parts = [self.conversation.model]
        if note:
            parts.append(note)
        self.query_one(".status", Label).update(" · ".join(parts))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.generating or self._editing
        if action in ("regenerate", "edit_last"):
            return not self.generating
        if action == "send_anyway":
            return self._held is not None and not self.generating
        return True

    @on(PromptArea.Submitted)
    async def send(self, event: PromptArea.Submitted) -> None:
        event.stop()
        if self.generating:
            self.notify("A reply is still streaming: wait for it or press escape to stop it.", severity="warning")
            return
        image = None if self._editing else self._pending_image
        if image is not None:  # the model may have changed since the image was attached
            try:
                self.service.engines.check_accepts_images(self.conversation.model)
            except EngineError as error:
                self.notify(str(error), title="Image not sent", severity="error")
                return
        prompt = event.prompt
        text = prompt.text
        prompt.clear()
        if self._editing:
            self._editing = False
            await self._remove_views_from(self._last_view("user"))
            message = self.service.replace_last_user_message(self.conversation, text)
        else:
            message = self.service.add_user_message(self.conversation, text, image)
            self._refresh_title()
            self._set_pending_image(None)
        self._held = None
        view = MessageView(
            "user",
            text,
            message_id=message.id,
            image=self.service.image_path(message.image) if message.image else None,
            image_name=message.image.name if message.image else "",
        )
        await self.query_one(".messages", VerticalScroll).mount(view)
        await self._start_reply()

    def action_attach_image(self) -> None:
        try:
            self.service.engines.check_accepts_images(self.conversation.model)
        except EngineError as error:
            self.notify(str(error), title="Cannot attach an image", severity="error")
            return

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
        self.notify(event.error, title="Image not attached", severity="error", timeout=10)

    def _set_pending_image(self, image: StoredImage | None) -> None:
        self._pending_image = image
        label = self.query_one(".attachment", Label)
        label.set_class(image is not None, "pending")
        label.update(f"image {image.name} goes with your next message · ctrl+t changes it" if image else "")

    def _refresh_title(self) -> None:
        updated = self.service.store.conversation(self.conversation.id)
        if updated.title != self.conversation.title:
            self.conversation = updated
            self.post_message(self.TitleChanged(self, updated))

    def _last_view(self, role: str) -> MessageView | None:
        return next((view for view in reversed(list(self.query(MessageView))) if view.role == role), None)

    async def _remove_views_from(self, first: MessageView | None) -> None:
        """Remove a message view and every view after it."""
        if first is None:
            return
        views = list(self.query(MessageView))
        await self.query_one(".messages", VerticalScroll).remove_children(views[views.index(first) :])

    async def _start_reply(self) -> None:
        messages = self.query_one(".messages", VerticalScroll)
        self._reply_view = MessageView("assistant", state=MessageState.STREAMING)
        await messages.mount(self._reply_view)
        messages.anchor()
        self._cancel = threading.Event()
        self._show_status("moderating…" if self.conversation.moderation_model else "generating… (escape stops)")
        self.refresh_bindings()
        self._generate(self._cancel)

    @work(thread=True, exit_on_error=False, group="reply", description="Generating a reply")
    def _generate(self, cancel: threading.Event) -> None:
        batcher = DeltaBatcher(lambda text: self.post_message(self.ReplyDelta(text)))
        try:
            reply = self.service.reply(
                self.conversation, cancel, batcher.add, lambda moderation: self.post_message(self.Moderated(moderation))
            )
        except ReplyHeld as held:
            self.post_message(self.Held(held.moderation))
            return
        except EngineError as error:
            batcher.flush()
            self.post_message(self.ReplyFailed(str(error)))
            return
        except Exception as error:  # an engine bug must not leave the tab stuck in "generating"
            batcher.flush()
            self.post_message(self.ReplyFailed(f"the reply failed unexpectedly: {error!r}"))
            raise
        batcher.flush()
        self.post_message(self.ReplyDone(reply))

    async def on_chat_pane_reply_delta(self, event: ReplyDelta) -> None:
        if self._reply_view is not None:
            await self._reply_view.append(event.text)

    def on_chat_pane_moderated(self, event: Moderated) -> None:
        user = self._last_view("user")
        if user is not None:
            user.set_footer(event.moderation.summary())
        if not event.moderation.held:
            self._show_status("generating… (escape stops)")

    async def on_chat_pane_held(self, event: Held) -> None:
        view, self._reply_view, self._cancel = self._reply_view, None, None
        if view is not None:
            await view.remove()
        self._hold(event.moderation)
        self.notify(
            f"The moderation model labelled your message {event.moderation.label!r}: the reply is held. "
            "ctrl+o sends it anyway; ctrl+e edits your message.",
            title="Reply held",
            severity="warning",
            timeout=10,
        )

    def _hold(self, moderation: Moderation) -> None:
        self._held = moderation
        self._show_status(f"reply held: {moderation.label} · ctrl+o sends it anyway")
        self.refresh_bindings()

    async def action_send_anyway(self) -> None:
        try:
            self.service.send_anyway(self.conversation)
        except EngineError as error:
            self.notify(str(error), severity="warning")
            return
        self._held = None
        user = self._last_view("user")
        message = self.service.last_user_message(self.conversation.id)
        if user is not None and message is not None:
            user.set_footer(_footer(message, None))
        await self._start_reply()

    async def on_chat_pane_reply_done(self, event: ReplyDone) -> None:
        view, self._reply_view, self._cancel = self._reply_view, None, None
        reply = event.reply
        if view is not None:
            view.message_id = reply.message.id
            await view.finish()
            view.set_footer(reply.stats.summary() if reply.stats else "", state=reply.message.state)
        self._show_reply_status(reply.stats)
        self.refresh_bindings()

    async def on_chat_pane_reply_failed(self, event: ReplyFailed) -> None:
        view, self._reply_view, self._cancel = self._reply_view, None, None
        if view is not None:
            if view.content:
                await view.finish()
                view.set_footer("", state=MessageState.ERROR)
            else:
                await view.remove()
        self._show_status(f"error: {event.error}")
        self.notify(event.error, title="Reply failed", severity="error", timeout=10)
        self.refresh_bindings()

    def action_stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._show_status("stopping…")
        elif self._editing:
            self._editing = False
            self.query_one(PromptArea).clear()
            self._show_status("edit cancelled")

    async def action_regenerate(self) -> None:
        try:
            self.service.prepare_regenerate(self.conversation)
        except EngineError as error:
            self.notify(str(error), severity="warning")
            return
        views = list(self.query(MessageView))
        last_user = self._last_view("user")
        if last_user is not None and last_user is not views[-1]:
            await self._remove_views_from(views[views.index(last_user) + 1])
        await self._start_reply()

    def action_edit_last(self) -> None:
        last_user = self.service.last_user_message(self.conversation.id)
        if last_user is None:
            self.notify("There is no message of yours to edit yet.", severity="warning")
            return
        prompt = self.query_one(PromptArea)
        prompt.text = last_user.content
        prompt.move_cursor(prompt.document.end)
        prompt.focus()
        self._editing = True
        self._show_status("editing your last message: enter resends it, escape cancels")
        self.refresh_bindings()

    def action_toggle_settings(self) -> None:
        panel = self.query_one(SettingsPanel)
        panel.toggle_class("visible")
        if panel.has_class("visible"):
            panel.focus()
        else:
            self.query_one(PromptArea).focus()

    @on(SettingsPanel.Changed)
    def save_settings(self, event: SettingsPanel.Changed) -> None:
        event.stop()
        self.conversation = self.service.store.update_conversation(self.conversation.id, **event.changes)
        self._show_status("settings saved" if "model" not in event.changes else "model changed")

    def stop_generation(self) -> None:
        if self._cancel is not None:
            self._cancel.set()


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
