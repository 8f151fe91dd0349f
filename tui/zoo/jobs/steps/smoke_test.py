"""smoke_test: load the GGUF (with its adapter) in llama.cpp and generate a few tokens greedily: it loads,
runs and says something, with finite logits."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tui.zoo.jobs.errors import JobError
from tui.zoo.jobs.step import Step, StepContext, StepName, StepResult
from tui.zoo.jobs.steps.adapter import built_adapter
from tui.zoo.jobs.steps.quantize import built_gguf

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

        path = built_gguf(context)
        adapter = built_adapter(context)
        try:
            # logits_all keeps every position's logits, which the finiteness check reads.
            llm = llama_cpp.Llama(
                model_path=str(path),
                lora_path=str(adapter) if adapter else None,
                n_ctx=SMOKE_CONTEXT,
                seed=0,
                logits_all=True,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            loaded = f"{path.name} with {adapter.name}" if adapter else path.name
            raise JobError(f"smoke test failed: llama.cpp could not load {loaded} ({error})") from error
        try:
            started = time.perf_counter()
            completion = llm.create_completion(SMOKE_PROMPT, max_tokens=SMOKE_TOKENS, temperature=0.0)
            seconds = time.perf_counter() - started
            finite = bool(np.isfinite(llm.scores[: llm.n_tokens]).all())
        finally:
            llm.close()
        tokens = completion["usage"]["completion_tokens"]
        choice = completion["choices"][0]
        result = SmokeTested(
            prompt=SMOKE_PROMPT,
            text=choice["text"],
            tokens=tokens,
            finish_reason=choice["finish_reason"],
            tokens_per_s=round(tokens / seconds, 2) if seconds > 0 else None,
            # Garbage weights show up as NaN/inf logits long before they show up in the text.
            passed=finite and (tokens > 0 or choice["finish_reason"] == "stop"),
        )
        if not result.passed:
            raise JobError(
                f"smoke test failed: {path.name} produced non-finite logits or no output; the build is broken"
            )
        context.report(1, 1, f"{result.tokens_per_s} tokens/s: {result.text!r}")
        return result
