"""smoke_test: load the GGUF (with its adapter) in llama.cpp and generate a few tokens greedily: it loads,
runs and says something, with finite logits. An encoder-decoder GGUF (T5) encodes the prompt first and
decodes from its decoder start token, as the chat engine does. A model that sees
images also encodes a picture with its vision file: finite vectors as wide as the model's embeddings. A
chatglm.cpp file (ChatGLM-6B v1) is loaded by chatglm.cpp, whose binding exposes no logits: it must load
and generate, and the finiteness is its converter's, which refuses NaN and inf weights."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tui.zoo.jobs.errors import JobError
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult
from tui.zoo.jobs.steps.adapter import built_adapter
from tui.zoo.jobs.steps.quantize import built_gguf
from tui.zoo.jobs.steps.vision import built_vision
from tui.zoo.library import CHATGLM_CPP_SUFFIX

SMOKE_PROMPT = "Hello"
SMOKE_TOKENS = 8
SMOKE_CONTEXT = 256


@dataclass(frozen=True)
class SmokeTested(StepResult):
    step = StepName.SMOKE_TEST

    prompt: str
    text: str
    tokens: int
    finish_reason: str
    tokens_per_s: float | None
    passed: bool


class SmokeTest(Step[SmokeTested]):
    result_type = SmokeTested

    def run(self, context: StepContext) -> SmokeTested:
        import llama_cpp
        import numpy as np

        from tui.zoo.gguf_header import is_encoder_decoder

        path = built_gguf(context)
        if path.suffix == CHATGLM_CPP_SUFFIX:
            return _finish(context, path, *_timed(lambda: _chatglm_cpp_reply(path)), finite=None)
        adapter = built_adapter(context)
        encoder_decoder = is_encoder_decoder(path)
        # An encoder takes its whole input in one micro-batch.
        micro_batch = {"n_batch": SMOKE_CONTEXT, "n_ubatch": SMOKE_CONTEXT} if encoder_decoder else {}
        try:
            # logits_all keeps every position's logits, which the finiteness check reads.
            llm = llama_cpp.Llama(
                model_path=str(path),
                lora_path=str(adapter) if adapter else None,
                n_ctx=SMOKE_CONTEXT,
                seed=0,
                logits_all=True,
                verbose=False,
                **micro_batch,
            )
        except (ValueError, RuntimeError) as error:
            loaded = f"{path.name} with {adapter.name}" if adapter else path.name
            raise JobError(f"smoke test failed: llama.cpp could not load {loaded} ({error})") from error
        try:
            reply, seconds = _timed(lambda: (_encode_and_decode if encoder_decoder else _complete)(llm))
            finite = bool(np.isfinite(llm.scores[: llm.n_tokens]).all())
            vision = built_vision(context)
            if vision is not None:
                _check_vision(vision, llm.n_embd())
        finally:
            llm.close()
        return _finish(context, path, reply, seconds, finite=finite)


def _timed(run: Callable[[], tuple[str, int, str]]) -> tuple[tuple[str, int, str], float]:
    started = time.perf_counter()
    reply = run()
    return reply, time.perf_counter() - started


def _finish(
    context: StepContext, path: Path, reply: tuple[str, int, str], seconds: float, *, finite: bool | None
) -> SmokeTested:
    """``finite``: whether every logit was finite; None where the engine shows none to check."""
    text, tokens, finish_reason = reply
    result = SmokeTested(
        prompt=SMOKE_PROMPT,
        text=text,
        tokens=tokens,
        finish_reason=finish_reason,
        tokens_per_s=round(tokens / seconds, 2) if seconds > 0 else None,
        # Garbage weights show up as NaN/inf logits long before they show up in the text.
        passed=finite is not False and (tokens > 0 or finish_reason == "stop"),
    )
    if not result.passed:
        failure = "no output" if finite is None else "non-finite logits or no output"
        raise JobError(f"smoke test failed: {path.name} produced {failure}; the build is broken")
    context.report(1, 1, f"{result.tokens_per_s} tokens/s: {result.text!r}")
    return result


def _chatglm_cpp_reply(path: Path) -> tuple[str, int, str]:
    """Greedy tokens of the smoke prompt from chatglm.cpp."""
    from tui.glm_runtime import Sampling, end_tokens, load_pipeline, next_tokens

    try:
        pipeline = load_pipeline(path)
    except ValueError as error:
        raise JobError(f"smoke test failed: {error}") from error
    prompt = pipeline.tokenizer.encode(SMOKE_PROMPT, SMOKE_CONTEXT)
    reply, finish_reason = [], "length"
    for token in next_tokens(pipeline, prompt, Sampling()):
        if token in end_tokens(pipeline):
            finish_reason = "stop"
            break
        reply.append(token)
        if len(reply) >= SMOKE_TOKENS:
            break
    return pipeline.tokenizer.decode(reply), len(reply), finish_reason


def _complete(llm) -> tuple[str, int, str]:
    """Text, token count and finish reason of a greedy completion of the smoke prompt."""
    completion = llm.create_completion(SMOKE_PROMPT, max_tokens=SMOKE_TOKENS, temperature=0.0)
    choice = completion["choices"][0]
    return choice["text"], completion["usage"]["completion_tokens"], choice["finish_reason"]


def _encode_and_decode(llm) -> tuple[str, int, str]:
    """The same for an encoder-decoder model: the prompt through the encoder, the reply from the decoder."""
    import llama_cpp

    from tui.llama_encoder import decoder_start_token, encode, encoder_input

    try:
        encode(llm, encoder_input(llm, llm.tokenize(SMOKE_PROMPT.encode(), add_bos=False, special=False)))
    except ValueError as error:
        raise JobError(f"smoke test failed: {error}") from error
    reply, finish_reason = [], "length"
    tokens = llm.generate([decoder_start_token(llm)], reset=False, temp=0.0)
    try:
        for token in tokens:
            if llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), token):
                finish_reason = "stop"
                break
            reply.append(token)
            if len(reply) >= SMOKE_TOKENS:
                break
    finally:
        tokens.close()
    return llm.detokenize(reply).decode("utf-8", "replace"), len(reply), finish_reason


def _check_vision(path, n_embd: int) -> None:
    """Encode a generated picture with the vision file: the vectors must be finite and ``n_embd`` wide."""
    import numpy as np
    from PIL import Image

    from tui.vision import VisionEncoder, VisionFileError

    try:
        encoder = VisionEncoder(path)
    except VisionFileError as error:
        raise JobError(f"smoke test failed: {error}") from error
    try:
        y, x = np.mgrid[0:64, 0:64]
        picture = Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8), "RGB")
        vectors = encoder.encode(picture)
    finally:
        encoder.close()
    assert vectors is not None, "nothing asked the encoder to stop"
    if vectors.shape[1] != n_embd or not np.isfinite(vectors).all():
        raise JobError(
            f"smoke test failed: {path.name} gives {vectors.shape[1]}-wide vectors (the model takes {n_embd})"
            " or non-finite ones; the vision side does not belong to this model"
        )
