"""The one small protocol every chat backend speaks."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, TypeVar

from tui.compat import StrEnum

ChatMessage = dict[str, str]  # OpenAI style: {"role": ..., "content": ...}


class EngineError(Exception):
    """A problem a user can fix (missing model, server down, prompt too long); one line."""


class ContextOverflow(EngineError):
    """The prompt leaves no room for a reply in the context."""

    def __init__(self, message: str, *, prompt_tokens: int, context_size: int):
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_size = context_size


Prompt = TypeVar("Prompt")


def prompt_budget(n_ctx: int, max_tokens: int) -> int:
    """The most prompt tokens a conversation may take: it leaves room for at least a short reply."""
    return n_ctx - min(max_tokens, max(n_ctx // 4, 16))


def fit_conversation(
    messages: list[ChatMessage],
    budget: int,
    n_ctx: int,
    measure: Callable[[list[ChatMessage]], tuple[Prompt, int]],
) -> tuple[Prompt, int]:
    """The prompt of ``messages`` and how many of its oldest turns it leaves out to fit ``budget`` tokens;
    the system message stays. ``measure`` makes an engine's prompt of some messages and counts its tokens.

    Fewer turns never make a longer prompt, so the fewest to leave out is found by bisection: a
    conversation of hundreds of turns is measured a few times, not once for every turn it outgrew.
    """
    system = [message for message in messages[:1] if message["role"] == "system"]
    turns = messages[len(system) :]
    prompt, length = measure(messages)
    if length <= budget:
        return prompt, 0
    if len(turns) > 1:
        prompt, length = measure(system + turns[-1:])
        if length <= budget:
            too_few, enough = 0, len(turns) - 1  # leaving out too_few turns does not fit, enough does
            while enough - too_few > 1:
                middle = (too_few + enough) // 2
                candidate, candidate_length = measure(system + turns[middle:])
                if candidate_length <= budget:
                    enough, prompt = middle, candidate
                else:
                    too_few = middle
            return prompt, enough
    raise ContextOverflow(
        f"the last message needs more than the {n_ctx}-token context allows; "
        "shorten it or raise the context length in the conversation settings.",
        prompt_tokens=length,
        context_size=n_ctx,
    )


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 1024
    n_ctx: int = 4096
    seed: int = -1
    stop: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, values: dict[str, Any], defaults: SamplingParams) -> SamplingParams:
        """Stored per-conversation values over defaults; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        chosen = {key: value for key, value in values.items() if key in known}
        if "stop" in chosen:
            chosen["stop"] = tuple(chosen["stop"])
        return cls(**{**asdict(defaults), **chosen})

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["stop"] = list(self.stop)
        return values


class FinishReason(StrEnum):
    """Why a reply ended."""

    STOP = "stop"
    """The model ended it (its end-of-sequence token or a stop string)."""
    LENGTH = "length"
    """It reached max tokens or the end of the context."""
    CANCELLED = "cancelled"
    """The user stopped it."""


@dataclass(frozen=True)
class ReplyStats:
    """Figures for one reply, shown under it and saved with it."""

    finish_reason: FinishReason
    prompt_tokens: int
    prompt_tokens_evaluated: int  # prompt tokens actually computed; the rest came from the cache
    completion_tokens: int
    seconds_to_first_token: float
    decode_seconds: float
    context_size: int
    dropped_messages: int = 0  # oldest messages left out so the conversation fits the context
    encoded_tokens: int = 0  # encoder-decoder models: prompt tokens the encoder ran over (every turn, all of them)

    @property
    def tokens_per_second(self) -> float:
        # The first token comes out of the prompt evaluation; decode speed counts the ones after it.
        if self.completion_tokens < 2 or self.decode_seconds <= 0:
            return 0.0
        return (self.completion_tokens - 1) / self.decode_seconds

    @property
    def context_used(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["tokens_per_second"] = round(self.tokens_per_second, 2)
        return values

    def summary(self) -> str:
        parts = [
            f"{self.tokens_per_second:.1f} tok/s",
            f"{self.completion_tokens} tokens",
            f"context {self.context_used}/{self.context_size}",
        ]
        if self.encoded_tokens:
            parts.append(f"{self.encoded_tokens} prompt tokens encoded")
        elif self.prompt_tokens:
            parts.append(f"prompt {self.prompt_tokens_evaluated}/{self.prompt_tokens} evaluated")
        if self.dropped_messages:
            parts.append(f"{self.dropped_messages} oldest messages left out")
        # A cancelled reply says nothing here: the message it belongs to is marked stopped. (== rather than
        # is: figures read back from the store hold the reason as a plain string.)
        if self.finish_reason == FinishReason.LENGTH:
            parts.append("hit max tokens")
        return " · ".join(parts)


@dataclass(frozen=True)
class Progress:
    """Where a reply stands before its first token (engines that know send these)."""

    stage: str  # "loading" (the model) or "prompt" (evaluating it: done of total tokens)
    done: int = 0
    total: int = 0


ReplyEvent = str | Progress | ReplyStats  # progress, then text deltas, then one ReplyStats last


class ChatEngine(Protocol):
    """Streams a reply: text deltas as they are produced, then the reply's stats.

    Before the first delta it may report Progress (loading the model, evaluating the prompt).

    ``cancel`` may be set from any thread; the engine then stops soon and still
    yields its stats (``FinishReason.CANCELLED``).
    """

    description: str

    def stream(
        self, messages: list[ChatMessage], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[ReplyEvent]: ...


def _unfinished_suffix(window: str, patterns: tuple[str, ...], longest: int) -> int:
    """Length of the longest suffix of window that is a proper prefix of one of the patterns."""
    for length in range(min(len(window), longest - 1), 0, -1):
        suffix = window[-length:]
        if any(pattern.startswith(suffix) for pattern in patterns):
            return length
    return 0


class StopScanner:
    """Finds stop strings in streamed text without ever emitting part of one.

    Text that could still become a stop string is held back until the next
    delta decides; only the tail that can overlap a stop string is searched.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]):
        self._stops = tuple(stop for stop in stops if stop)
        self._longest = max((len(stop) for stop in self._stops), default=0)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if not self._stops:
            return text
        window = self._pending + text
        found = min((index for index in (window.find(stop) for stop in self._stops) if index >= 0), default=-1)
        if found >= 0:
            self.stopped = True
            self._pending = ""
            return window[:found]
        keep = self._held_back(window)
        self._pending = window[len(window) - keep :] if keep else ""
        return window[: len(window) - keep]

    def _held_back(self, window: str) -> int:
        return _unfinished_suffix(window, self._stops, self._longest)

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return rest


class ReplyRewriter:
    """Applies a prompt format's reply replacements (ChatYuan writes a newline as the two characters
    backslash and n) to streamed text, holding back a tail that may be the start of one."""

    def __init__(self, replacements: tuple[tuple[str, str], ...]):
        self._replacements = dict(pattern for pattern in replacements if pattern[0])
        self._patterns = tuple(self._replacements)
        self._longest = max((len(p) for p in self._patterns), default=0)
        # Longest first, so that of two patterns starting at one place the longer wins.
        ordered = sorted(self._patterns, key=len, reverse=True)
        self._regex = re.compile("|".join(re.escape(p) for p in ordered)) if ordered else None
        self._pending = ""

    def feed(self, text: str) -> str:
        if self._regex is None:
            return text
        window = self._pending + text
        keep = _unfinished_suffix(window, self._patterns, self._longest)
        self._pending = window[len(window) - keep :] if keep else ""
        return self._rewrite(window[: len(window) - keep])

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return self._rewrite(rest)

    def _rewrite(self, text: str) -> str:
        if self._regex is None or not text:
            return text
        return self._regex.sub(lambda match: self._replacements[match.group(0)], text)
