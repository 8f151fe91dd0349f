"""From sampled tokens to reply text: what the local engines (llama.cpp's decoder-only and encoder-decoder
paths, chatglm.cpp's) share.

Sampling for llama.cpp goes through ``Llama.generate`` (its sampler chain: repeat penalty, top-k,
top-p, min-p, temperature, then a seeded draw, or greedy at temperature 0). The text side ends a reply
at the end token, at a stop string or at the token limit, honours cancel between tokens, and applies
the prompt format's reply rewriting; each engine says how its tokens become text (``ReplyText``).
"""

from __future__ import annotations

import codecs
import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tui.engine.base import FinishReason, ReplyRewriter, ReplyStats, SamplingParams, StopScanner

if TYPE_CHECKING:
    from tui.engine.local import LoadedModel

MIN_P = 0.05  # llama-cpp-python's default; the settings do not expose it


@dataclass
class ReplyOutcome:
    """What streaming a reply found out, for its stats."""

    finish_reason: FinishReason = FinishReason.LENGTH
    completion_tokens: int = 0
    first_token_at: float | None = None

    def stats(self, started: float, ended: float, **prompt_figures) -> ReplyStats:
        """The reply's stats, timed from ``started`` (before the prompt is evaluated) to ``ended``."""
        first_token_at = self.first_token_at or ended
        return ReplyStats(
            finish_reason=self.finish_reason,
            completion_tokens=self.completion_tokens,
            seconds_to_first_token=first_token_at - started,
            decode_seconds=ended - first_token_at,
            **prompt_figures,
        )


def seed_sampler(llm, params: SamplingParams) -> None:
    """The reply's seed: the conversation's, or a fresh one for each reply (seed -1)."""
    llm.set_seed(params.seed if params.seed >= 0 else int.from_bytes(os.urandom(4), "little"))


def sampled_tokens(llm, to_evaluate: Sequence[int], params: SamplingParams) -> Generator[int, None, None]:
    """Evaluate ``to_evaluate`` after the ``llm.n_tokens`` already evaluated, then sample token after token."""
    return llm.generate(
        to_evaluate,
        reset=False,
        top_k=params.top_k,
        top_p=params.top_p,
        min_p=MIN_P,
        temp=params.temperature,
        repeat_penalty=params.repeat_penalty,
    )


class ReplyText(Protocol):
    """How one engine turns its tokens into text."""

    def is_end(self, token: int) -> bool:
        """The token ends the reply (it is not part of it)."""

    def text(self, token: int) -> str:
        """The text this token adds, as far as later tokens cannot change it."""

    def rest(self) -> str:
        """What was held back for later tokens, once there are none."""


class LlamaText:
    """llama.cpp's tokens: their pieces, with UTF-8 decoded across token boundaries."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def is_end(self, token: int) -> bool:
        return self.model.is_end(token)

    def text(self, token: int) -> str:
        return self.decoder.decode(self.model.piece(token))

    def rest(self) -> str:
        return self.decoder.decode(b"", final=True)


def stream_reply(
    tokens: Iterator[int],
    reply: ReplyText,
    max_tokens: int,
    stops: tuple[str, ...],
    cancel: threading.Event,
    outcome: ReplyOutcome,
    rewriter: ReplyRewriter | None = None,
    trim_leading_space: bool = True,
) -> Iterator[str]:
    """Yield the reply's text as ``tokens`` come; closes ``tokens`` (when it can be) and records the ending
    in ``outcome``. ``rewriter`` applies a prompt format's reply rewriting; ``trim_leading_space`` drops
    the whitespace a reply opens with (a chat turn, not a raw continuation)."""
    scanner = StopScanner(stops)
    rewriter = rewriter or ReplyRewriter(())
    at_start = trim_leading_space

    def shown(text: str) -> str:
        nonlocal at_start
        if at_start and text:
            # Replies often open with the space that SentencePiece puts before a word.
            text = text.lstrip()
            at_start = not text
        return text

    try:
        for token in tokens:
            if outcome.first_token_at is None:
                outcome.first_token_at = time.perf_counter()
            if cancel.is_set():
                outcome.finish_reason = FinishReason.CANCELLED
                break
            if reply.is_end(token):
                outcome.finish_reason = FinishReason.STOP
                break
            outcome.completion_tokens += 1
            if text := shown(rewriter.feed(scanner.feed(reply.text(token)))):
                yield text
            if scanner.stopped:
                outcome.finish_reason = FinishReason.STOP
                break
            if outcome.completion_tokens >= max_tokens:
                break
    finally:
        if isinstance(tokens, Generator):
            tokens.close()
    held = "" if scanner.stopped else scanner.flush() + reply.rest()
    if tail := shown(rewriter.feed(held) + rewriter.flush()):
        yield tail
