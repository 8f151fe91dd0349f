"""ChatGLM-6B v1 chat through chatglm.cpp (the ``glm`` extra), behind the same protocol as llama.cpp's paths.

The prompt is ChatGLM-6B's own format (``tui.zoo.templates``: "[Round i]\\n问：…\\n答：", a lone
question as it is) and chatglm.cpp's tokenizer appends [gMASK] and <sop>. GLM's 2D positions count
from the end of the prompt, so every turn evaluates the whole prompt again (chatglm.cpp's own chat
does the same). The reply ends at <eop>, at a stop string, at the token limit or when cancelled;
its text is chatglm.cpp's decode of the tokens so far (which turns <n> and blank tokens back into
whitespace and half-width punctuation beside Chinese into full-width, as ChatGLM-6B's
process_response does), streamed as far as later tokens cannot change it.

chatglm.cpp draws its own random numbers: a conversation's seed has no effect on sampling (greedy
replies, at temperature 0, are the same every time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.engine.base import (
    ChatMessage,
    EngineError,
    ReplyEvent,
    SamplingParams,
    fit_conversation,
    prompt_budget,
)
from tui.engine.token_stream import ReplyOutcome, stream_reply
from tui.glm_runtime import Sampling, context_length, end_tokens, load_pipeline, next_tokens

PROMPT_FORMAT = "chatglm"
# The last characters of a decoded reply that the next token may still change: half-width punctuation
# becomes full-width beside a Chinese character, and an unfinished UTF-8 sequence decodes as U+FFFD.
_UNSETTLED = ",!:;?\ufffd"


@dataclass
class _Loaded:
    pipeline: Any  # chatglm_cpp.Pipeline
    lock: threading.Lock = field(default_factory=threading.Lock)


class ChatGLMPool:
    """The chatglm.cpp pipeline of the model file last asked for, shared by every conversation; one
    generation at a time.

    One model at a time: each is several GB that neither the fit estimate nor the llama.cpp pool's
    residency counts. Loading another lets the pool's hold on the last one go first; a reply still running
    on it keeps it until that reply ends.
    """

    def __init__(self) -> None:
        self._loaded: dict[Path, _Loaded] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> _Loaded:
        key = path.resolve()
        with self._lock:
            if key not in self._loaded:
                if not path.is_file():
                    raise EngineError(f"model file not found: {path}; run `zootui models` to list models.")
                self._loaded.clear()
                try:
                    self._loaded[key] = _Loaded(load_pipeline(path))
                except ValueError as error:
                    raise EngineError(str(error)) from error
            return self._loaded[key]

    def close(self) -> None:
        with self._lock:
            self._loaded.clear()


def settled(text: str) -> str:
    """The part of a decoded reply that more tokens cannot change."""
    return text.rstrip(_UNSETTLED)


class GLMText:
    """chatglm.cpp's tokens: the reply decoded after each one (its decode rewrites whitespace tokens and
    punctuation), given out as far as it is settled.

    Only the current line is decoded again, so a long reply costs time in proportion to its length: a
    token that decodes to a line end settles everything before it, since no rewrite reaches across a
    newline. The line after it is decoded behind that token (then cut off), as sentencepiece drops the
    leading space of the first piece it decodes, which the whole reply's decode keeps.
    """

    def __init__(self, pipeline) -> None:
        self.tokenizer = pipeline.tokenizer
        self.ends = end_tokens(pipeline)
        self.anchor: list[int] = []  # the token that ended the previous line; none on the first line
        self.anchor_text = ""
        self.line: list[int] = []
        self.shown = ""  # of the current line

    def is_end(self, token: int) -> bool:
        return token in self.ends

    def text(self, token: int) -> str:
        self.line.append(token)
        line = self._decode_line()
        added = self._advance(settled(line))
        if line.endswith("\n") and self.shown == line:
            ending = self.tokenizer.decode([token])
            if ending.endswith("\n"):
                self.anchor, self.anchor_text, self.line, self.shown = [token], ending, [], ""
        return added

    def rest(self) -> str:
        # ChatGLM-6B's process_response strips the reply.
        return self._advance(self._decode_line().rstrip())

    def _decode_line(self) -> str:
        return self.tokenizer.decode(self.anchor + self.line)[len(self.anchor_text) :]

    def _advance(self, text: str) -> str:
        if not text.startswith(self.shown):  # an earlier part changed: nothing more is certain
            return ""
        added, self.shown = text[len(self.shown) :], text
        return added


class ChatGLMEngine:
    """A ChatGLM-6B v1 model file (chatglm.cpp's format) run by chatglm.cpp on this machine."""

    def __init__(self, path: Path, pool: ChatGLMPool):
        self.path = path
        self.pool = pool
        self.description = f"{path.name} (chatglm.cpp)"

    def stream(
        self, messages: list[ChatMessage], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[ReplyEvent]:
        loaded = self.pool.get(self.path)
        with loaded.lock:
            pipeline = loaded.pipeline
            n_ctx = min(params.n_ctx, context_length(pipeline))
            prompt, dropped = self._fit_prompt(pipeline, messages, params, n_ctx)
            sampling = Sampling(params.temperature, params.top_k, params.top_p, params.repeat_penalty)
            max_tokens = min(params.max_tokens, n_ctx - len(prompt))
            outcome = ReplyOutcome()
            started = time.perf_counter()
            tokens = next_tokens(pipeline, prompt, sampling)
            yield from stream_reply(tokens, GLMText(pipeline), max_tokens, params.stop, cancel, outcome)
            ended = time.perf_counter()
        yield outcome.stats(
            started,
            ended,
            prompt_tokens=len(prompt),
            prompt_tokens_evaluated=len(prompt),
            context_size=n_ctx,
            dropped_messages=dropped,
        )

    def _fit_prompt(self, pipeline, messages: list[ChatMessage], params: SamplingParams, n_ctx: int):
        """ChatGLM-6B's prompt as tokens, leaving out the oldest turns when the conversation outgrows the context."""
        from tui.zoo.templates import render_prompt

        def measure(chosen: list[ChatMessage]) -> tuple[list[int], int]:
            text = render_prompt(PROMPT_FORMAT, chosen, "", "")
            tokens = pipeline.tokenizer.encode(text, n_ctx + 1)  # longer than the budget: nothing is cut
            return tokens, len(tokens)

        return fit_conversation(messages, prompt_budget(n_ctx, params.max_tokens), n_ctx, measure)
