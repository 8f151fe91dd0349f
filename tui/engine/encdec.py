"""Encoder-decoder chat (T5: ChatYuan-large) through llama-cpp-python's low-level API.

llama-cpp-python's ``Llama`` only ever decodes, so a T5 GGUF run through it would attend to an empty
encoder output. This path runs llama.cpp's encoder over the whole prompt in one micro-batch
(``llama_encode``; llama.cpp aborts the process on a longer one, so the model is loaded with
micro-batches as long as its context and the prompt is checked first), then decodes from the
model's decoder start token with llama.cpp's sampler chain, as the decoder-only path does. Prompt
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
from tui.engine.token_stream import ReplyOutcome, sampled_tokens, seed_sampler, stream_reply


def has_encoder(llm) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_model_has_encoder(llm.model))


def decoder_start_token(llm) -> int:
    """The token the decoder starts from (T5: <pad>); BOS when the model names none."""
    import llama_cpp

    token = llama_cpp.llama_model_decoder_start_token(llm.model)
    return token if token >= 0 else llm.token_bos()


def encoder_input(llm, prompt_tokens: list[int]) -> list[int]:
    """The prompt as the encoder takes it: T5 tokenizers end every input with EOS (raw text tokenized
    with the vocabulary's specials has it already; typed text never becomes the EOS token)."""
    import llama_cpp

    add_eos = llama_cpp.llama_vocab_get_add_eos(llama_cpp.llama_model_get_vocab(llm.model))
    if add_eos and prompt_tokens[-1:] != [llm.token_eos()]:
        return [*prompt_tokens, llm.token_eos()]
    return list(prompt_tokens)


def encode(llm, tokens: list[int]) -> None:
    """Run the encoder over ``tokens`` in one micro-batch; the decoder then attends to its output.

    The decoder starts afresh: nothing counts as evaluated, so ``Llama.generate`` evaluates the
    start token at position 0.
    """
    import llama_cpp

    capacity = llama_cpp.llama_n_ubatch(llm.ctx)
    if not 0 < len(tokens) <= capacity:
        raise EngineError(
            f"the prompt is {len(tokens)} tokens and the encoder takes at most {capacity} at once; "
            "shorten the conversation or raise the context length in its settings."
        )
    # The last reply's positions are still in the decoder's cache, and llama.cpp checks a new batch
    # for sequence 0 against them; the reply is over, so the cache goes.
    llm._ctx.kv_cache_clear()
    llm.n_tokens = 0
    llm._batch.set_batch(tokens, n_past=0, logits_all=True)  # the encoder outputs every position
    try:
        llm._ctx.encode(llm._batch)
    except RuntimeError as error:
        raise EngineError(f"llama.cpp's encoder failed ({error}); the model file may be damaged.") from error


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
        encode(llm, tokens_in)
        outcome = ReplyOutcome()
        tokens = sampled_tokens(llm, [decoder_start_token(llm)], params)
        stops = model.stop_strings() + params.stop
        yield from stream_reply(model, tokens, max_tokens, stops, cancel, outcome, trim_leading_space)
        return outcome.stats(
            started,
            time.perf_counter(),
            prompt_tokens=len(tokens_in),
            prompt_tokens_evaluated=len(tokens_in),
            context_size=params.n_ctx,
            dropped_messages=prompt.dropped_messages,
            encoded_tokens=len(tokens_in),
        )
