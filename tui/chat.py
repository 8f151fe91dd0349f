"""Conversations as the CLI and the TUI both use them: send, stream, save, regenerate, edit.

A streamed reply is written to the store while it grows (at most every
``SAVE_INTERVAL`` seconds), so a killed process loses at most that much of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tui.config import Settings
from tui.engine import ChatMessage, EngineError, Engines, FinishReason, ReplyStats, SamplingParams
from tui.store import Conversation, Message, MessageState, Store

SAVE_INTERVAL = 0.5
DEFAULT_TITLE = "New chat"
TITLE_LENGTH = 48


@dataclass(frozen=True)
class Reply:
    message: Message
    stats: ReplyStats | None


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
                messages.append({"role": message.role, "content": message.content})
        return messages

    def add_user_message(self, conversation: Conversation, text: str) -> Message:
        if conversation.title == DEFAULT_TITLE:
            self.store.update_conversation(conversation.id, title=title_from(text))
        return self.store.add_message(conversation.id, "user", text)

    def last_user_message(self, conversation_id: int) -> Message | None:
        return next((m for m in reversed(self.store.messages(conversation_id)) if m.role == "user"), None)

    def prepare_regenerate(self, conversation: Conversation) -> None:
        """Drop the replies after the last user message so a new one can take their place."""
        messages = self.store.messages(conversation.id)
        last_user = next((index for index in range(len(messages) - 1, -1, -1) if messages[index].role == "user"), None)
        if last_user is None:
            raise EngineError("nothing to regenerate: send a message first.")
        if last_user + 1 < len(messages):
            self.store.delete_messages_from(conversation.id, messages[last_user + 1].id)

    def replace_last_user_message(self, conversation: Conversation, text: str) -> Message:
        """Edit and resend: the last user message and everything after it give way to the new text."""
        last_user = self.last_user_message(conversation.id)
        if last_user is not None:
            self.store.delete_messages_from(conversation.id, last_user.id)
        return self.store.add_message(conversation.id, "user", text)

    def reply(
        self, conversation: Conversation, cancel: threading.Event, on_text: Callable[[str], None] = lambda text: None
    ) -> Reply:
        """Stream the model's answer to the conversation so far, saving it as it grows."""
        conversation = self.store.conversation(conversation.id)
        params = self.params(conversation)
        engine = self.engines.for_model(conversation.model)
        history = self.history(conversation)
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
                parts.append(event)
                on_text(event)
                if time.monotonic() - saved_at >= SAVE_INTERVAL:
                    self.store.update_message(message.id, content="".join(parts))
                    saved_at = time.monotonic()
        except BaseException as error:
            content = "".join(parts)
            if content:
                # Keep what was generated; a later turn leaves it out of the history.
                self.store.update_message(
                    message.id,
                    content=content,
                    state=MessageState.ERROR if isinstance(error, Exception) else MessageState.STOPPED,
                )
            else:
                self.store.delete_messages_from(conversation.id, message.id)
            raise
        cancelled = stats is not None and stats.finish_reason is FinishReason.CANCELLED
        state = MessageState.STOPPED if cancelled else MessageState.DONE
        message.content = "".join(parts)
        message.state = state
        message.stats = stats.to_dict() if stats else None
        self.store.update_message(message.id, content=message.content, state=state, stats=message.stats)
        return Reply(message, stats)
