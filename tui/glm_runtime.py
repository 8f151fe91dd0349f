"""chatglm.cpp (PyPI ``chatglm-cpp``, the ``glm`` extra), which runs ChatGLM-6B v1 where llama.cpp has no graph.

Loading a model file and the token loop, shared by the chat engine (``tui.engine.chatglm``) and the jobs'
smoke test. ``Pipeline.model.generate_next_token(ids, image, config, n_past, n_ctx)`` evaluates
``ids[n_past:]`` and returns the next token: ``n_ctx`` is the prompt's length, from which GLM's 2D
positions count the reply, and the prompt must be evaluated whole first (chatglm.cpp's first call
gives it GLM's prefix mask), then one token at a time. The binding exposes no logits.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

GLM_EXTRA = "glm"
GLM_EXTRA_MISSING = (
    f"it runs on chatglm.cpp, an optional engine that is not installed: pip install 'zootui[{GLM_EXTRA}]'"
    " (it compiles chatglm.cpp; see the README)"
)


def chatglm_cpp_missing() -> str | None:
    """GLM_EXTRA_MISSING when chatglm.cpp is not installed, else None (found without importing it)."""
    return GLM_EXTRA_MISSING if importlib.util.find_spec("chatglm_cpp") is None else None


@dataclass(frozen=True)
class Sampling:
    """chatglm.cpp's sampling settings: greedy at temperature 0, else top-k, top-p and temperature."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0


def load_pipeline(path, max_length: int | None = None):
    """chatglm.cpp's Pipeline for the model file at path; ValueError (one line) when it cannot load it."""
    missing = chatglm_cpp_missing()
    if missing:
        raise ValueError(f"{path.name}: {missing}")
    import chatglm_cpp

    try:
        return chatglm_cpp.Pipeline(str(path), **({"max_length": max_length} if max_length else {}))
    except RuntimeError as error:  # chatglm.cpp's CHATGLM_CHECK failures: a damaged or foreign file
        raise ValueError(f"chatglm.cpp could not load {path.name} ({error}); re-convert the model") from error


def context_length(pipeline) -> int:
    """The longest sequence (prompt and reply) the model takes."""
    return pipeline.model.config.max_length


def end_tokens(pipeline) -> set[int]:
    config = pipeline.model.config
    return {config.eos_token_id, *config.extra_eos_token_ids}


def next_tokens(pipeline, prompt: list[int], sampling: Sampling) -> Iterator[int]:
    """The reply's tokens one by one (the end token included), until the context is full."""
    import chatglm_cpp

    config = chatglm_cpp._C.GenerationConfig(
        max_length=context_length(pipeline),
        max_context_length=context_length(pipeline),
        do_sample=sampling.temperature > 0,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        temperature=sampling.temperature if sampling.temperature > 0 else 1.0,
        repetition_penalty=sampling.repetition_penalty,
    )
    ids, n_past = list(prompt), 0
    while len(ids) < context_length(pipeline):
        token = pipeline.model.generate_next_token(ids, None, config, n_past, len(prompt))
        yield token
        n_past = len(ids)
        ids.append(token)
