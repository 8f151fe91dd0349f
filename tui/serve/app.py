"""`zootui serve`'s ASGI app: OpenAI's HTTP API over the library, through the app's own engine layer.

Each reply is generated in its own thread by the LocalEngine the chat tabs use: the model's chat
template through PromptTokenizer (no request text becomes a control token), its stop strings, its
history cache. A model answers one request at a time; the others wait their turn in arrival order (an
asyncio lock per model). Models load on first use and stay loaded while the fit estimate says they fit
beside each other (``tui.engine.residency``).

Every request is checked for the API key when the server has one (a constant-time compare), bodies
are bounded, and every failure is answered in OpenAI's error shape, never as a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tui.engine import ContextOverflow, EngineError, Engines, ReplyEvent, ReplyStats, SamplingParams
from tui.serve import protocol
from tui.serve.protocol import ApiError

MAX_BODY_BYTES = 4 * 2**20  # a whole context of text is a few hundred KB; this leaves room and bounds memory


@dataclass
class _Failure:
    error: BaseException


_END = object()


class ApiKeyCheck:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <key>``."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                error = ApiError(
                    401,
                    "Missing or incorrect API key: send it as 'Authorization: Bearer <key>'.",
                    code="invalid_api_key",
                )
                await JSONResponse(error.body(), status_code=error.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Server:
    def __init__(self, engines: Engines, models: dict[str, float], defaults: SamplingParams, n_ctx: int):
        """``models``: the library names served, with the time each was made (for /v1/models)."""
        self.engines = engines
        self.models = models
        self.defaults = defaults
        self.n_ctx = n_ctx
        self._queues = {name: asyncio.Lock() for name in models}
        self._running: set[threading.Event] = set()

    def asgi(self, api_key: str | None = None) -> ASGIApp:
        app = Starlette(
            routes=[
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/models/{name:path}", self.get_model, methods=["GET"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.complete, methods=["POST"]),
            ],
            exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
            lifespan=self._lifespan,
        )
        return ApiKeyCheck(app, api_key) if api_key else app

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        self.shut_down()

    def shut_down(self) -> None:
        for cancel in list(self._running):
            cancel.set()
        self.engines.close()

    # Routes

    async def list_models(self, request: HttpRequest) -> Response:
        return JSONResponse(
            {"object": "list", "data": [protocol.model_card(name, int(made)) for name, made in self.models.items()]}
        )

    async def get_model(self, request: HttpRequest) -> Response:
        name = request.path_params["name"]
        if name not in self.models:
            raise protocol.unknown_model(name, list(self.models))
        return JSONResponse(protocol.model_card(name, int(self.models[name])))

    async def chat(self, request: HttpRequest) -> Response:
        parsed = protocol.chat_request(await _json_body(request), self.defaults, self.n_ctx)
        return await self._reply(parsed, protocol.CHAT)

    async def complete(self, request: HttpRequest) -> Response:
        parsed = protocol.completion_request(await _json_body(request), self.defaults, self.n_ctx)
        return await self._reply(parsed, protocol.TEXT)

    async def _reply(self, parsed: protocol.Request, shape: protocol.Shape) -> Response:
        reply_id = protocol.new_id(shape.id_prefix)
        first, events = await self._start(parsed)
        if not parsed.stream:
            text, stats = await _collect(first, events)
            return JSONResponse(shape.whole(reply_id, parsed.model, text, stats))

        async def chunks() -> AsyncIterator[dict[str, str]]:
            stats = None
            for opening in shape.opening(reply_id, parsed.model):
                yield _sse(opening)
            async for event in _chain(first, events):
                if isinstance(event, ReplyStats):
                    stats = event
                elif isinstance(event, ApiError):  # a failure after the first text: said in the stream
                    yield _sse(event.body())
                    break
                else:
                    yield _sse(shape.piece(reply_id, parsed.model, event))
            yield _sse(shape.finish(reply_id, parsed.model, protocol.finish_reason(stats)))
            if parsed.include_usage:
                yield _sse(protocol.usage_chunk(reply_id, parsed.model, shape.chunk_object, stats))
            yield {"data": "[DONE]"}

        return EventSourceResponse(chunks(), sep="\n")

    # Generation

    async def _start(self, parsed: protocol.Request) -> tuple[ReplyEvent, AsyncIterator[ReplyEvent | ApiError]]:
        """Wait for the model's turn, start the reply, and wait for its first event: a failure before any
        text (the prompt too long, a model that will not load) is answered as an error, not a stream."""
        if parsed.model not in self.models:
            raise protocol.unknown_model(parsed.model, list(self.models))
        try:
            engine = self.engines.for_model(parsed.model)
        except EngineError as error:
            raise ApiError(500, str(error), type="server_error") from error
        if parsed.messages is not None:
            messages = parsed.messages

            def produce(cancel: threading.Event):
                return engine.stream(messages, parsed.params, cancel, keep_every_message=True)
        else:
            prompt = parsed.prompt or ""

            def produce(cancel: threading.Event):
                return engine.complete(prompt, parsed.params, cancel)

        queue = self._queues[parsed.model]
        await queue.acquire()
        events = self._generate(produce, queue)
        first = await anext(events)
        if isinstance(first, ApiError):
            await events.aclose()
            raise first
        return first, events

    async def _generate(
        self, produce: Callable[[threading.Event], Any], queue: asyncio.Lock
    ) -> AsyncIterator[ReplyEvent | ApiError]:
        """The reply's events, generated in a thread; the model's turn ends when the thread does, so a
        client that goes away never leaves the next request waiting."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        self._running.add(cancel)

        def hand_over(item: object) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the event loop has closed: the server is shutting down
                cancel.set()

        def run() -> None:
            try:
                for event in produce(cancel):
                    hand_over(event)
                    if cancel.is_set():
                        break
            except BaseException as error:  # noqa: BLE001 - handed to the request, which answers it
                hand_over(_Failure(error))
            finally:
                hand_over(_END)
                self._running.discard(cancel)
                try:
                    loop.call_soon_threadsafe(queue.release)
                except RuntimeError:
                    pass

        threading.Thread(target=run, name="zootui-serve-reply", daemon=True).start()
        try:
            while (item := await events.get()) is not _END:
                if isinstance(item, _Failure):
                    yield _as_api_error(item.error)
                    return
                yield item
        finally:
            cancel.set()


def _as_api_error(error: BaseException) -> ApiError:
    if isinstance(error, ContextOverflow):
        return protocol.context_exceeded(error.prompt_tokens, error.context_size)
    if isinstance(error, EngineError):
        return ApiError(500, str(error), type="server_error")
    print(f"zootui serve: a reply failed unexpectedly: {error!r}", file=sys.stderr)
    return ApiError(500, "The server failed while generating the reply; its log says why.", type="server_error")


async def _chain(first: ReplyEvent, rest: AsyncIterator[ReplyEvent | ApiError]) -> AsyncIterator[ReplyEvent | ApiError]:
    yield first
    async for event in rest:
        yield event


async def _collect(first: ReplyEvent, rest: AsyncIterator[ReplyEvent | ApiError]) -> tuple[str, ReplyStats | None]:
    parts: list[str] = []
    stats = None
    async for event in _chain(first, rest):
        if isinstance(event, ApiError):
            raise event
        if isinstance(event, ReplyStats):
            stats = event
        else:
            parts.append(event)
    return "".join(parts), stats


def _sse(body: dict[str, Any]) -> dict[str, str]:
    return {"data": json.dumps(body, ensure_ascii=False)}


async def _json_body(request: HttpRequest) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():  # a chunked body has no length to check up front
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"The request body is not valid JSON ({error}).") from error


def _too_large() -> ApiError:
    return ApiError(413, f"The request body is larger than {MAX_BODY_BYTES // 2**20} MB.", code="request_too_large")


async def _api_error(request: HttpRequest, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return JSONResponse(error.body(), status_code=error.status)


async def _http_error(request: HttpRequest, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    message = {
        404: f"No such endpoint: {request.url.path}.",
        405: f"{request.method} is not allowed on {request.url.path}.",
    }
    api_error = ApiError(error.status_code, message.get(error.status_code, str(error.detail)))
    return JSONResponse(api_error.body(), status_code=api_error.status)


async def _server_error(request: HttpRequest, error: Exception) -> Response:
    print(f"zootui serve: {request.method} {request.url.path} failed unexpectedly: {error!r}", file=sys.stderr)
    api_error = ApiError(500, "The server failed while handling the request; its log says why.", type="server_error")
    return JSONResponse(api_error.body(), status_code=500)
