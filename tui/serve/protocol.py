"""OpenAI's HTTP API as `zootui serve` speaks it: requests read and checked, responses and errors shaped.

No web framework here: the ASGI app (``tui.serve.app``) hands this module decoded JSON and sends back
what it builds. Shapes follow OpenAI's API reference (chat.completion, chat.completion.chunk,
text_completion, model list, and errors as {"error": {"message", "type", "param", "code"}} with the
HTTP status that goes with them), which the official clients parse. FastChat's own server sends
{"object": "error", "message", "code"} with status 500 for every error; OpenAI's clients do not read
that shape, so it is not followed here.

Sampling values a request leaves out come from the [chat] section of the config, as in the app.
``top_k`` and ``repeat_penalty`` are read too: they are not OpenAI's, but llama.cpp's and vLLM's
servers take them and zootui's own remote backend sends them.
"""

from __future__ import annotations

import math
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any

from tui.engine import ChatMessage, FinishReason, ReplyStats, SamplingParams

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 4  # as OpenAI's API allows
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class ApiError(Exception):
    """An error answered in OpenAI's shape with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def unknown_model(name: object, served: list[str]) -> ApiError:
    return ApiError(
        404,
        f"The model {name!r} does not exist here; this server has {', '.join(served) or 'no models'} (GET /v1/models).",
        code="model_not_found",
        param="model",
    )


def context_exceeded(prompt_tokens: int, context_size: int) -> ApiError:
    return ApiError(
        400,
        f"This model's context holds {context_size} tokens, and the prompt is {prompt_tokens}; shorten the prompt "
        f"(or start the server with a longer --n-ctx).",
        code="context_length_exceeded",
        param="messages",
    )


@dataclass(frozen=True)
class Request:
    model: str
    params: SamplingParams
    stream: bool
    include_usage: bool
    messages: list[ChatMessage] | None = None
    """Chat completions."""
    prompt: str | None = None
    """Text completions."""


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ApiError(400, f"{key!r} must be a number from {low:g} to {high:g}, not {value!r}.", param=key)
    return float(value)


def _integer(body: dict[str, Any], key: str, low: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ApiError(400, f"{key!r} must be a whole number of at least {low}, not {value!r}.", param=key)
    return value


def _unsupported(body: dict[str, Any], key: str, allowed: tuple[Any, ...], why: str) -> None:
    if key in body and body[key] not in allowed:
        raise ApiError(400, f"{key!r} is not supported here: {why}.", param=key)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOP_STRINGS or not all(isinstance(s, str) for s in stops):
        raise ApiError(400, f"'stop' must be a string or a list of up to {MAX_STOP_STRINGS} strings.", param="stop")
    return tuple(s for s in stops if s)


def _common(
    body: Any, defaults: SamplingParams, n_ctx: int, default_max_tokens: int
) -> tuple[str, SamplingParams, bool, bool]:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' must name a model (GET /v1/models lists them).", param="model")
    _unsupported(body, "n", (None, 1), "one choice per request")
    _unsupported(body, "logprobs", (None, False, 0), "no log probabilities")
    _unsupported(body, "presence_penalty", (None, 0, 0.0), "use repeat_penalty")
    _unsupported(body, "frequency_penalty", (None, 0, 0.0), "use repeat_penalty")
    _unsupported(body, "tools", (None, []), "no tool calls")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false.", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object.", param="stream_options")
    max_tokens = _integer(body, "max_completion_tokens", 1) or _integer(body, "max_tokens", 1)
    seed = _integer(body, "seed", -(2**31))
    chosen = {
        "temperature": _number(body, "temperature", 0, 2),
        "top_p": _number(body, "top_p", 0, 1),
        "top_k": _integer(body, "top_k", 0),
        "repeat_penalty": _number(body, "repeat_penalty", 0, 10),
        "seed": seed if seed is None or seed >= 0 else -1,
    }
    params = replace(
        defaults,
        **{key: value for key, value in chosen.items() if value is not None},
        max_tokens=max_tokens or default_max_tokens,
        n_ctx=n_ctx,
        stop=_stop(body),
    )
    return model, params, stream, bool(options.get("include_usage"))


def _content(message: dict[str, Any], position: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    # The newer form: a list of parts; text parts are joined, anything else is refused.
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(part["text"] for part in content)
    raise ApiError(400, f"messages[{position}].content must be text (a string or text parts).", param="messages")


def chat_request(body: Any, defaults: SamplingParams, n_ctx: int) -> Request:
    """A /v1/chat/completions body; the reply may use the whole context unless max_tokens says less."""
    model, params, stream, include_usage = _common(body, defaults, n_ctx, default_max_tokens=n_ctx)
    _unsupported(body, "response_format", (None, {"type": "text"}), "text replies only")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} messages.", param="messages")
    messages: list[ChatMessage] = []
    for position, message in enumerate(raw):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(
                400,
                f"messages[{position}] must have a role of {', '.join(ROLES)} (the models here know no other).",
                param="messages",
            )
        messages.append({"role": message["role"], "content": _content(message, position)})
    return Request(model, params, stream, include_usage, messages=messages)


def completion_request(body: Any, defaults: SamplingParams, n_ctx: int) -> Request:
    """A /v1/completions body (one prompt; 16 tokens unless max_tokens says otherwise, as OpenAI's default)."""
    model, params, stream, include_usage = _common(
        body, defaults, n_ctx, default_max_tokens=COMPLETION_DEFAULT_MAX_TOKENS
    )
    _unsupported(body, "echo", (None, False), "the prompt is not repeated")
    _unsupported(body, "suffix", (None, ""), "no insertion")
    _unsupported(body, "best_of", (None, 1), "one choice per request")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be one string.", param="prompt")
    return Request(model, params, stream, include_usage, prompt=prompt)


# Responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def finish_reason(stats: ReplyStats | None) -> str:
    # A stream cut by a stop string or the end-of-sequence token is "stop"; anything else ran out of room.
    return "stop" if stats is not None and stats.finish_reason is FinishReason.STOP else "length"


def usage(stats: ReplyStats | None) -> dict[str, int]:
    prompt = stats.prompt_tokens if stats else 0
    completion = stats.completion_tokens if stats else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_chunk(id: str, model: str, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": now(),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def text_chunk(id: str, model: str, text: str, finish: str | None) -> dict[str, Any]:
    return {
        "id": id,
        "object": "text_completion",
        "created": now(),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }


class Shape(ABC):
    """How an endpoint words a reply: whole, or as the chunks of a stream."""

    id_prefix: str
    chunk_object: str

    @abstractmethod
    def whole(self, id: str, model: str, text: str, stats: ReplyStats | None) -> dict[str, Any]: ...

    def opening(self, id: str, model: str) -> list[dict[str, Any]]:
        return []

    @abstractmethod
    def piece(self, id: str, model: str, text: str) -> dict[str, Any]: ...

    @abstractmethod
    def finish(self, id: str, model: str, reason: str) -> dict[str, Any]: ...


class ChatShape(Shape):
    id_prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    def whole(self, id: str, model: str, text: str, stats: ReplyStats | None) -> dict[str, Any]:
        return {
            "id": id,
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason(stats),
                }
            ],
            "usage": usage(stats),
        }

    def opening(self, id: str, model: str) -> list[dict[str, Any]]:
        return [chat_chunk(id, model, {"role": "assistant", "content": ""})]

    def piece(self, id: str, model: str, text: str) -> dict[str, Any]:
        return chat_chunk(id, model, {"content": text})

    def finish(self, id: str, model: str, reason: str) -> dict[str, Any]:
        return chat_chunk(id, model, {}, reason)


class TextShape(Shape):
    id_prefix = "cmpl"
    chunk_object = "text_completion"

    def whole(self, id: str, model: str, text: str, stats: ReplyStats | None) -> dict[str, Any]:
        return {**text_chunk(id, model, text, finish_reason(stats)), "usage": usage(stats)}

    def piece(self, id: str, model: str, text: str) -> dict[str, Any]:
        return text_chunk(id, model, text, None)

    def finish(self, id: str, model: str, reason: str) -> dict[str, Any]:
        return text_chunk(id, model, "", reason)


CHAT = ChatShape()
TEXT = TextShape()


def usage_chunk(id: str, model: str, object: str, stats: ReplyStats | None) -> dict[str, Any]:
    """The last chunk of a stream when the client asked for stream_options.include_usage."""
    return {"id": id, "object": object, "created": now(), "model": model, "choices": [], "usage": usage(stats)}


def model_card(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "zootui"}
