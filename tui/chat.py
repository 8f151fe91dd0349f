"""Conversations as the CLI and the TUI both use them: send, stream, save, regenerate, edit.

A streamed reply is written to the store while it grows (at most every
``SAVE_INTERVAL`` seconds), so a killed process loses at most that much of it.

A conversation may have a moderation model (``tui.moderation``): before a reply, the user's last
message is classified with it, once, and the label saved with the message; a label that needs
intervention holds the reply (``ReplyHeld``) until the user sends it anyway (``send_anyway``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tui.config import Settings
from tui.engine import ChatMessage, EngineError, Engines, FinishReason, Progress, ReplyStats, SamplingParams
from tui.engine.threads import ThreadPlan, thread_plan
from tui.images import StoredImage, store_image
from tui.moderation import CLASSIFY_PARAMS, Moderation, scheme_for
from tui.store import Conversation, Message, MessageState, SearchHit, Store, StoreError
from tui.zoo.library import ModelNotFound, resolve_model

SAVE_INTERVAL = 0.5
DEFAULT_TITLE = "New chat"
TITLE_LENGTH = 48


@dataclass(frozen=True)
class Reply:
    message: Message
    stats: ReplyStats | None


class ReplyHeld(EngineError):
    """The moderation model labelled the last user message as needing intervention: no reply until it is sent anyway."""

    def __init__(self, moderation: Moderation):
        super().__init__(
            f"the reply is held: the moderation model {moderation.model} labelled your message "
            f"{moderation.label!r}; send it anyway or edit your message."
        )
        self.moderation = moderation


def default_params(settings: Settings) -> SamplingParams:
    chat = settings.chat
    return SamplingParams(
        temperature=chat.temperature,
        top_p=chat.top_p,
        top_k=chat.top_k,
        repeat_penalty=chat.repeat_penalty,
        max_tokens=chat.max_tokens,
        n_ctx=settings.engine.n_ctx,
        seed=chat.seed,
    )


def interrupted_notice(count: int) -> str:
    """What to tell the user when ``Store.mark_interrupted_replies`` found replies a dead process left."""
    replies = "1 reply was" if count == 1 else f"{count} replies were"
    return f"{replies} cut off when zootui last stopped; what was generated is kept"


def title_from(text: str) -> str:
    words = " ".join(text.split())
    return words if len(words) <= TITLE_LENGTH else words[: TITLE_LENGTH - 1].rstrip() + "…"


class ChatService:
    def __init__(self, store: Store, settings: Settings, engines: Engines):
        self.store = store
        self.settings = settings
        self.engines = engines

    def new_conversation(
        self,
        *,
        model: str | None = None,
        system_prompt: str | None = None,
        params: SamplingParams | None = None,
        title: str = DEFAULT_TITLE,
    ) -> Conversation:
        return self.store.create_conversation(
            title=title,
            model=model or self.settings.chat.default_model,
            system_prompt=self.settings.chat.system_prompt if system_prompt is None else system_prompt,
            params=(params or default_params(self.settings)).to_dict(),
        )

    def params(self, conversation: Conversation) -> SamplingParams:
        return SamplingParams.from_dict(conversation.params, default_params(self.settings))

    def history(self, conversation: Conversation) -> list[ChatMessage]:
        """What the model sees: the system prompt, then every kept turn (failed replies are left out)."""
        messages: list[ChatMessage] = []
        if conversation.system_prompt.strip():
            messages.append({"role": "system", "content": conversation.system_prompt})
        for message in self.store.messages(conversation.id):
            if message.state is not MessageState.ERROR and message.content:
                turn: ChatMessage = {"role": message.role, "content": message.content}
                if message.image is not None:
                    turn["image"] = str(self.image_path(message.image))
                messages.append(turn)
        return messages

    def image_path(self, image: StoredImage) -> Path:
        return image.path(self.engines.data_dir)

    def check_accepts_images(self, model: str) -> None:
        """EngineError (one line) unless the model can see images."""
        self.engines.check_accepts_images(model)

    def accepts_images(self, model: str) -> bool:
        try:
            self.engines.check_accepts_images(model)
        except EngineError:
            return False
        return True

    def attach_image(self, model: str, path: Path) -> StoredImage:
        """Keep ``path`` for a message to ``model``: EngineError if the model cannot see images,
        ImageError if the file is not an image it can read (each one line)."""
        self.engines.check_accepts_images(model)
        return store_image(self.engines.data_dir, path)

    def forget_request(self, conversation: Conversation, request: Message, before: Conversation | None) -> bool:
        """Undo a request that never reached a model (nothing came back): ``request`` goes, and the
        conversation goes too when this request created it (``before`` is None), or is put back as it was.
        Returns False, undoing nothing, when a reply was saved after it."""
        if any(message.id > request.id for message in self.store.messages(conversation.id)):
            return False
        if before is None:
            self.store.delete_conversation(conversation.id)
            return True
        self.store.delete_message(request.id)
        self.store.update_conversation(
            before.id, title=before.title, model=before.model, system_prompt=before.system_prompt, params=before.params
        )
        return True

    def close_conversation(self, conversation_id: int) -> bool:
        """Close a conversation's tab. One without a single message is deleted instead of kept (an
        empty "New chat" is nothing to come back to); returns True when it was."""
        if not self.store.messages(conversation_id):
            self.store.delete_conversation(conversation_id)
            return True
        self.store.update_conversation(conversation_id, is_open=False)
        return False

    def threads(self) -> ThreadPlan:
        """The CPU threads local models run with."""
        engine = self.settings.engine
        return thread_plan(engine.n_threads, engine.n_threads_batch)

    def conversation(self, conversation_id: int) -> Conversation:
        return self.store.conversation(conversation_id)

    def messages(self, conversation: Conversation) -> list[Message]:
        """The messages shown: the branch the conversation is on."""
        return self.store.messages(conversation.id)

    def every_version(self, conversation: Conversation) -> list[Message]:
        """Every message of every branch (for an export that keeps them)."""
        return self.store.all_messages(conversation.id)

    def search(self, text: str) -> list[SearchHit]:
        return self.store.search(text)

    def open_conversation(self, conversation_id: int) -> Conversation:
        """Reopen a conversation as a tab."""
        return self.store.update_conversation(conversation_id, is_open=True)

    def set_tab_order(self, conversation_ids: list[int]) -> None:
        self.store.set_tab_order(conversation_ids)

    def update(self, conversation: Conversation, **changes) -> Conversation:
        """Change a conversation's title, model, system prompt or sampling parameters."""
        return self.store.update_conversation(conversation.id, **changes)

    def add_user_message(self, conversation: Conversation, text: str, image: StoredImage | None = None) -> Message:
        if conversation.title == DEFAULT_TITLE:
            self.store.update_conversation(conversation.id, title=title_from(text))
        return self.store.add_message(conversation.id, "user", text, image=image)

    def last_user_message(self, conversation_id: int) -> Message | None:
        return next((m for m in reversed(self.store.messages(conversation_id)) if m.role == "user"), None)

    def prepare_regenerate(self, conversation: Conversation) -> None:
        """End the branch at the last user message, so the next reply becomes a new version of the last one
        (the earlier versions are kept)."""
        last_user = self.last_user_message(conversation.id)
        if last_user is None:
            raise EngineError("nothing to regenerate: send a message first.")
        self.store.show_until(conversation.id, last_user.id)

    def _show_latest_reply(self, conversation: Conversation) -> None:
        """After a reply that never started: a regenerate had ended the branch at the last user message,
        which hid the reply it was to replace; show the newest reply to that message again."""
        shown = self.store.messages(conversation.id)
        if shown and shown[-1].role == "user":
            self.store.show_branch(conversation.id, shown[-1].id)

    def edit_last_user_message(self, conversation: Conversation, text: str) -> Message:
        """Edit and resend: the new text becomes a new version of the last user message (an image attached
        to it stays attached); the old one and the replies to it are kept as the earlier version."""
        last_user = self.last_user_message(conversation.id)
        if last_user is not None:
            self.store.show_until(conversation.id, last_user.parent_id)
        return self.store.add_message(conversation.id, "user", text, image=last_user.image if last_user else None)

    def moderate(self, conversation: Conversation, cancel: threading.Event) -> Moderation | None:
        """The moderation model's label for the last user message, classifying it the first time; None
        when the conversation has no moderation model (or no user message)."""
        conversation = self.store.conversation(conversation.id)
        moderator = conversation.moderation_model
        message = self.last_user_message(conversation.id)
        if not moderator or message is None:
            return None
        saved = Moderation.from_dict(message.moderation)
        if saved is not None and saved.model == moderator:
            return saved
        try:
            lockfile = resolve_model(moderator, self.engines.data_dir).lockfile
        except ModelNotFound as error:
            raise EngineError(f"moderation model: {error}") from error
        scheme = scheme_for(lockfile.prompt_format if lockfile else None)
        if scheme is None:
            raise EngineError(
                f"{moderator} is not a moderation model (its catalog entry does not make it one); "
                "choose another in the conversation settings or turn moderation off."
            )
        engine = self.engines.for_model(moderator)
        params = replace(CLASSIFY_PARAMS, n_ctx=self.settings.engine.n_ctx)
        # The moderation model's chat template builds its own prompt around the message.
        events = engine.stream([{"role": "user", "content": message.content}], params, cancel)
        answer = "".join(event for event in events if isinstance(event, str))
        if cancel.is_set():
            raise EngineError("stopped before the moderation model had answered; send the message again.")
        label = scheme.label_of(answer)
        moderation = Moderation(moderator, label, answer, held=label in scheme.intervention)
        self.store.update_message(message.id, moderation=moderation.to_dict())
        return moderation

    def held(self, conversation: Conversation) -> Moderation | None:
        """The moderation of the last user message when its reply is held (nothing answers it yet)."""
        messages = self.store.messages(conversation.id)
        if not messages or messages[-1].role != "user":
            return None
        moderation = Moderation.from_dict(messages[-1].moderation)
        return moderation if moderation is not None and moderation.held else None

    def send_anyway(self, conversation: Conversation) -> None:
        """Release a held reply: the next ``reply`` answers the message, its label kept."""
        message = self.last_user_message(conversation.id)
        moderation = Moderation.from_dict(message.moderation) if message else None
        if message is None or moderation is None or not moderation.held:
            raise EngineError("no reply is held: there is nothing to send anyway.")
        self.store.update_message(message.id, moderation=replace(moderation, held=False).to_dict())

    def switch_version(self, conversation: Conversation, message_id: int, step: int) -> list[Message] | None:
        """Show the previous (step -1) or next (step 1) version of a message and the branch below it; None
        when there is no version that way."""
        versions = self.store.versions_of(message_id)
        if message_id not in versions:
            return None
        index = versions.index(message_id) + step
        if not 0 <= index < len(versions):
            return None
        self.store.show_branch(conversation.id, versions[index])
        return self.store.messages(conversation.id)

    def reply(
        self,
        conversation: Conversation,
        cancel: threading.Event,
        on_text: Callable[[str], None] = lambda text: None,
        on_moderated: Callable[[Moderation], None] = lambda moderation: None,
        on_progress: Callable[[Progress], None] = lambda progress: None,
    ) -> Reply:
        """Stream the model's answer to the conversation so far, saving it as it grows.

        With a moderation model, the last user message is classified first (``on_moderated`` gets its
        label); raises ReplyHeld, generating nothing, when the label holds the reply.

        on_progress hears what happens before the first token (model loading, prompt evaluation).
        """
        conversation = self.store.conversation(conversation.id)
        try:
            moderation = self.moderate(conversation, cancel)
            if moderation is not None:
                on_moderated(moderation)
                if moderation.held:
                    raise ReplyHeld(moderation)
            params = self.params(conversation)
            engine = self.engines.for_model(conversation.model)
            history = self.history(conversation)
        except BaseException:
            self._show_latest_reply(conversation)
            raise
        message = self.store.add_message(
            conversation.id, "assistant", "", model=conversation.model, state=MessageState.STREAMING
        )
        parts: list[str] = []
        saved_at = time.monotonic()
        stats: ReplyStats | None = None
        try:
            for event in engine.stream(history, params, cancel):
                if isinstance(event, ReplyStats):
                    stats = event
                    continue
                if isinstance(event, Progress):
                    on_progress(event)
                    continue
                parts.append(event)
                on_text(event)
                if time.monotonic() - saved_at >= SAVE_INTERVAL:
                    self.store.update_message(message.id, content="".join(parts))
                    saved_at = time.monotonic()
        except BaseException as error:
            content = "".join(parts)
            try:
                if content:
                    # Keep what was generated; a later turn leaves it out of the history.
                    self.store.update_message(
                        message.id,
                        content=content,
                        state=MessageState.ERROR if isinstance(error, Exception) else MessageState.STOPPED,
                    )
                else:
                    self.store.delete_message(message.id)
            except StoreError:  # the disk is full: what the last save kept stays, and the error says so
                pass
            raise
        cancelled = stats is not None and stats.finish_reason is FinishReason.CANCELLED
        state = MessageState.STOPPED if cancelled else MessageState.DONE
        message.content = "".join(parts)
        message.state = state
        message.stats = stats.to_dict() if stats else None
        if not message.content and state is MessageState.STOPPED:
            # Stopped before its first token: nothing to keep, and the earlier version (if any) comes back.
            self.store.delete_message(message.id)
        else:
            self.store.update_message(message.id, content=message.content, state=state, stats=message.stats)
        return Reply(message, stats)
