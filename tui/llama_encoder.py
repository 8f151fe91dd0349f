"""llama.cpp's encoder step for encoder-decoder GGUFs (T5: ChatYuan-large), on a loaded ``Llama``.

llama-cpp-python's ``Llama`` only ever decodes; these functions run the encoder through its
low-level API so that the decoder that follows attends to the prompt. The chat engine
(``tui.engine.encdec``) and the jobs' smoke test both use them.
"""

from __future__ import annotations


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

    llama.cpp aborts the whole process on an encoder input longer than its micro-batch, so that is
    refused here first (ValueError, one line). The decoder starts afresh: nothing counts as
    evaluated, so ``Llama.generate`` evaluates the start token at position 0.
    """
    import llama_cpp

    capacity = llama_cpp.llama_n_ubatch(llm.ctx)
    if not 0 < len(tokens) <= capacity:
        raise ValueError(
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
        raise ValueError(f"llama.cpp's encoder failed ({error}); the model file may be damaged.") from error
