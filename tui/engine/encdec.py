"""Encoder-decoder chat (T5: ChatYuan-large) through llama-cpp-python's low-level API.

llama-cpp-python's ``Llama`` only ever decodes, so a T5 GGUF run through it would attend to an empty
encoder output. This path runs llama.cpp's encoder over the whole prompt in one micro-batch
(``tui.llama_encoder``; the model is loaded with micro-batches as long as its context), then decodes
from the model's decoder start token with llama.cpp's sampler chain, as the decoder-only path does. Prompt
formatting, fitting and the text side are the decoder-only engine's (this is a ``LocalEngine``).

Each turn encodes the whole dialog again: the encoder is bidirectional, so a new turn changes every
position's output and nothing can be reused (``tests/bench/bench_encoder_decoder.py`` measures what
that costs). The decoder's cache holds the reply alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

from tui.engine.base import EngineError, ReplyStats, SamplingParams
from tui.engine.local import LoadedModel, LocalEngine, Prompt
from tui.engine.token_stream import LlamaText, ReplyOutcome, sampled_tokens, seed_sampler, stream_reply
from tui.llama_encoder import decoder_start_token, encode, encoder_input, has_encoder


class EncoderDecoderEngine(LocalEngine):
    """A T5 GGUF run by llama.cpp on this machine: encode the dialog, then decode the reply."""

    whole_prompt_batches = True

    def __init__(self, path, pool):
        super().__init__(path, pool)
        self.description = f"{path.name} (llama.cpp, encoder-decoder)"

    def _prompt_budget(self, params: SamplingParams) -> int:
        # The reply has the decoder's cache to itself; the encoder input needs one place for its EOS.
        return params.n_ctx - 1

    def _generate(
        self,
        model: LoadedModel,
        prompt: Prompt,
        params: SamplingParams,
        cancel: threading.Event,
        *,
        trim_leading_space: bool,
    ) -> Generator[str, None, ReplyStats]:
        llm = model.llm
        if not has_encoder(llm):
            raise EngineError(f"{self.path.name} has no encoder; it is not an encoder-decoder model.")
        tokens_in = encoder_input(llm, prompt.tokens)
        max_tokens = min(params.max_tokens, params.n_ctx - 1)  # the start token takes one place
        seed_sampler(llm, params)
        started = time.perf_counter()
        try:
            encode(llm, tokens_in)
        except ValueError as error:
            raise EngineError(str(error)) from error
        outcome = ReplyOutcome()
        tokens = sampled_tokens(llm, [decoder_start_token(llm)], params)
        stops = model.stop_strings() + params.stop
        yield from stream_reply(
            tokens, LlamaText(model), max_tokens, stops, cancel, outcome, model.reply_rewriter(), trim_leading_space
        )
        return outcome.stats(
            started,
            time.perf_counter(),
            prompt_tokens=len(tokens_in),
            prompt_tokens_evaluated=len(tokens_in),
            context_size=params.n_ctx,
            dropped_messages=prompt.dropped_messages,
            encoded_tokens=len(tokens_in),
        )
