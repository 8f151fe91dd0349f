"""Chat with any OpenAI-compatible server (llama.cpp server, vLLM, Ollama).

The standard library is enough for one streaming POST; it keeps the headless
CLI quick to start. The API key comes from an environment variable named in
the config, never from the config file itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from tui.config import RemoteSettings
from tui.engine.base import (
    ChatMessage,
    EngineError,
    FinishReason,
    ReplyEvent,
    ReplyStats,
    SamplingParams,
    StopScanner,
)


class RemoteEngine:
    def __init__(self, model: str, settings: RemoteSettings):
        self.model = model
        self.settings = settings
        self.base_url = settings.url.rstrip("/")
        self.description = f"{model} at {self.base_url}"

    def _request(self, path: str, body: dict[str, Any] | None = None):
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
        api_key = os.environ.get(self.settings.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method="POST" if body is not None else "GET"
        )
        try:
            return urllib.request.urlopen(request, timeout=self.settings.timeout)
        except urllib.error.HTTPError as error:
            detail = error.read(500).decode("utf-8", "replace").strip().replace("\n", " ")
            if error.code in (401, 403):
                raise EngineError(
                    f"{self.base_url} refused the request ({error.code}); put the API key in "
                    f"${self.settings.api_key_env}."
                ) from error
            if error.code == 404:
                raise EngineError(
                    f"{self.base_url}{path} not found (404): is [remote] url the server's /v1 "
                    f"address, and does it serve the model {self.model!r}? {detail}"
                ) from error
            raise EngineError(f"{self.base_url} answered {error.code}: {detail}") from error
        except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise EngineError(
                f"cannot reach {self.base_url} ({reason}); start the server or fix [remote] url "
                f"in the config (`zootui config path`)."
            ) from error

    def list_models(self) -> list[str]:
        with self._request("/models") as response:
            payload = json.load(response)
        return [entry["id"] for entry in payload.get("data", [])]

    def stream(
        self, messages: list[ChatMessage], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[ReplyEvent]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            # Not in OpenAI's API, but llama.cpp's and vLLM's servers honour them; others ignore them.
            "top_k": params.top_k,
            "repeat_penalty": params.repeat_penalty,
        }
        if params.seed >= 0:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        started = time.perf_counter()
        first_token_at = None
        chunks = 0
        usage: dict[str, Any] = {}
        finish_reason = FinishReason.LENGTH
        stops = StopScanner(params.stop)  # servers differ in whether they honour "stop"
        response = self._request("/chat/completions", body)
        try:
            for event in _server_sent_events(response):
                if cancel.is_set():
                    finish_reason = FinishReason.CANCELLED
                    break
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices", []):
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        if first_token_at is None:
                            first_token_at = time.perf_counter()
                        chunks += 1
                        text = stops.feed(text)
                        if text:
                            yield text
                    if choice.get("finish_reason"):
                        finish_reason = FinishReason.STOP if choice["finish_reason"] == "stop" else "length"
                if stops.stopped:
                    finish_reason = FinishReason.STOP
                    break
        finally:
            response.close()
        ended = time.perf_counter()
        tail = "" if stops.stopped else stops.flush()
        if tail:
            yield tail
        first_token_at = first_token_at or ended
        # Servers that report no usage send about one token per chunk.
        completion_tokens = usage.get("completion_tokens") or chunks
        prompt_tokens = usage.get("prompt_tokens") or 0
        yield ReplyStats(
            finish_reason=finish_reason,
            prompt_tokens=prompt_tokens,
            prompt_tokens_evaluated=prompt_tokens,
            completion_tokens=completion_tokens,
            seconds_to_first_token=first_token_at - started,
            decode_seconds=ended - first_token_at,
            context_size=params.n_ctx,
        )


def _server_sent_events(response) -> Iterator[dict[str, Any]]:
    for raw_line in response:
        line = raw_line.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError as error:
            raise EngineError(
                f"the server sent a malformed stream event ({error}); is it OpenAI-compatible?"
            ) from error
        if "error" in event:
            message = event["error"].get("message") if isinstance(event["error"], dict) else event["error"]
            raise EngineError(f"the server reported an error: {message}")
        yield event
