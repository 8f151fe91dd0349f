"""Local generation through llama-cpp-python.

One ``Llama`` per model file (with its LoRA adapter, when the library keeps
one beside it) is shared by every conversation that uses it (``ModelPool``).
Generation drives ``Llama.generate`` directly rather than
``create_chat_completion``: the high-level path re-detokenizes the whole reply
on every token, which costs about a tenth of the decode speed on small models.

Prompt reuse: llama.cpp keeps one evaluated history (the KV cache). A new turn
in the same conversation shares its whole prefix with it, so only the new
tokens are evaluated. When another conversation takes the model, the current
history is saved into a RAM cache first, so switching back restores it instead
of re-reading it.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tui.config import EngineSettings
from tui.engine.base import (
    ChatMessage,
    ContextOverflow,
    EngineError,
    FinishReason,
    Progress,
    ReplyEvent,
    ReplyRewriter,
    ReplyStats,
    SamplingParams,
    fit_conversation,
    prompt_budget,
)
from tui.engine.state_cache import StateCache, common_prefix
from tui.engine.threads import thread_plan
from tui.engine.token_stream import LlamaText, ReplyOutcome, sampled_tokens, seed_sampler, stream_reply

# Below this many tokens re-evaluating a history is cheaper than saving it.
MIN_TOKENS_WORTH_SAVING = 64

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def gpu_offload_summary(n_gpu_layers: int) -> str:
    """One line: whether this llama.cpp build can put layers on a GPU, and what ``n_gpu_layers`` asks of it."""
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        ignored = f"; n_gpu_layers = {n_gpu_layers} is ignored" if n_gpu_layers else ""
        return f"GPU offload: none, this llama-cpp-python is built for the CPU only{ignored} (README: GPU)"
    if n_gpu_layers == 0:
        return "GPU offload: available but off (n_gpu_layers = 0); set [engine] n_gpu_layers or --gpu-layers"
    layers = "every layer" if n_gpu_layers < 0 else f"the last {n_gpu_layers} layers"
    return f"GPU offload: on, {layers} on the GPU (n_gpu_layers = {n_gpu_layers})"


@dataclass
class LoadedModel:
    path: Path
    llm: Any  # llama_cpp.Llama
    n_ctx: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    state_cache: StateCache | None = None  # None when [engine] state_cache_mb = 0
    closed: bool = False
    """Set (under ``lock``) when the pool unloads it; a holder that finds it closed acquires again."""
    _pieces: dict[int, bytes] = field(default_factory=dict)
    _ends: dict[int, bool] = field(default_factory=dict)
    _prompt_tokenizer: Any = None

    def stop_strings(self) -> tuple[str, ...]:
        """Stop strings the converter stored for the model's prompt format (none for other GGUFs)."""
        from converters import STOP_STRINGS_KEY

        try:
            stops = json.loads(self.llm.metadata.get(STOP_STRINGS_KEY, "[]"))
        except (json.JSONDecodeError, RecursionError):  # the file's say; a GGUF may come from anywhere
            return ()
        return tuple(stop for stop in stops if isinstance(stop, str) and stop) if isinstance(stops, list) else ()

    def reply_rewriter(self) -> ReplyRewriter:
        """The reply rewriting of the prompt format the converter recorded (ChatYuan's escaped newlines)."""
        from converters import PROMPT_FORMAT_KEY
        from tui.zoo.templates import FORMATS

        known = FORMATS.get(self.llm.metadata.get(PROMPT_FORMAT_KEY, ""))
        return ReplyRewriter(known.reply_replacements if known else ())

    def prompt_tokenizer(self):
        """The model's PromptTokenizer, built once: it scans the vocabulary for special tokens."""
        if self._prompt_tokenizer is None:
            from tui.zoo.templates import PromptTokenizer

            self._prompt_tokenizer = PromptTokenizer(self.llm)
        return self._prompt_tokenizer

    def is_end(self, token: int) -> bool:
        """Whether the token ends a reply (an end-of-generation token), cached as ``piece`` is: each call into
        llama.cpp lets the UI thread take the GIL, and the generation thread then waits to get it back."""
        cached = self._ends.get(token)
        if cached is None:
            import llama_cpp

            cached = self._ends[token] = bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))
        return cached

    def piece(self, token: int) -> bytes:
        """The bytes of one token, cached: detokenizing is on the per-token hot path."""
        cached = self._pieces.get(token)
        if cached is None:
            import llama_cpp

            buffer = ctypes.create_string_buffer(64)
            size = llama_cpp.llama_token_to_piece(self.llm._model.vocab, token, buffer, len(buffer), 0, False)
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = llama_cpp.llama_token_to_piece(self.llm._model.vocab, token, buffer, len(buffer), 0, False)
            cached = self._pieces[token] = buffer.raw[:size]
        return cached


ModelKey = tuple[Path, Path | None]  # resolved model file, resolved LoRA adapter (or None)


class ModelPool:
    """Loaded models by file and LoRA adapter, shared by all conversations; one generation at a time per model.

    A base with and without its adapter are two entries: the adapter is fixed when llama.cpp loads.
    ``make_room``, when given, is called before a model loads, with its key, its context length and the
    loaded models' keys and context lengths (least recently used first); it returns the keys to unload
    first (``tui.engine.residency``).
    """

    def __init__(
        self,
        settings: EngineSettings,
        make_room: Callable[[ModelKey, int, dict[ModelKey, int]], list[ModelKey]] | None = None,
    ):
        self.settings = settings
        self.make_room = make_room
        self._models: dict[ModelKey, LoadedModel] = {}  # least recently used first
        self._lock = threading.Lock()

    @staticmethod
    def key(path: Path, adapter: Path | None = None) -> ModelKey:
        return (path.resolve(), adapter.resolve() if adapter is not None else None)

    def acquire(
        self, path: Path, n_ctx: int, adapter: Path | None = None, *, whole_prompt_batches: bool = False
    ) -> LoadedModel:
        """The loaded model for path (with the GGUF LoRA ``adapter`` applied, if given), loading or
        reloading (for a longer context) as needed.

        ``whole_prompt_batches`` sizes llama.cpp's batches to the context: an encoder takes its whole
        input in one micro-batch. Use ``hold`` to generate: another thread may unload the model
        between acquire and its lock.
        """
        key = self.key(path, adapter)
        n_ctx = usable_context(path, max(n_ctx, self.settings.n_ctx))
        with self._lock:
            loaded = self._models.pop(key, None)
            if loaded is not None and loaded.n_ctx >= n_ctx:
                self._models[key] = loaded
                return loaded
            if loaded is not None:
                self._close(loaded)
            check_context_memory(path, n_ctx, self.settings.n_gpu_layers)
            if self.make_room is not None:
                loaded_now = {other: model.n_ctx for other, model in self._models.items()}
                for other in self.make_room(key, n_ctx, loaded_now):
                    self._close(self._models.pop(other))
            loaded = self._models[key] = self._load(*key, n_ctx, whole_prompt_batches)
            return loaded

    @contextmanager
    def hold(
        self, path: Path, n_ctx: int, adapter: Path | None = None, *, whole_prompt_batches: bool = False
    ) -> Iterator[LoadedModel]:
        """The loaded model with its lock held: this thread generates with it, others wait their turn."""
        while True:
            loaded = self.acquire(path, n_ctx, adapter, whole_prompt_batches=whole_prompt_batches)
            with loaded.lock:
                if loaded.closed:
                    continue
                yield loaded
                return

    def is_loaded(self, path: Path, n_ctx: int, adapter: Path | None = None) -> bool:
        """Whether acquire would return at once (no load or reload)."""
        with self._lock:
            loaded = self._models.get(self.key(path, adapter))
        if loaded is None:
            return False
        # A model loads with at most the context it was trained for (usable_context), as acquire sees.
        return loaded.n_ctx >= n_ctx or loaded.n_ctx >= usable_context(path, max(n_ctx, self.settings.n_ctx))

    def loaded(self) -> dict[ModelKey, int]:
        """Keys of the loaded models, least recently used first, with the context each was loaded with."""
        with self._lock:
            return {key: loaded.n_ctx for key, loaded in self._models.items()}

    @staticmethod
    def _close(loaded: LoadedModel) -> None:
        with loaded.lock:  # waits for a generation on it to finish
            loaded.closed = True
            if loaded.state_cache is not None:
                loaded.state_cache.clear()
            loaded.llm.close()

    def _load(self, path: Path, adapter: Path | None, n_ctx: int, whole_prompt_batches: bool) -> LoadedModel:
        if not path.is_file():
            raise EngineError(f"model file not found: {path}; check the path or run `zootui models` to list models.")
        if adapter is not None and not adapter.is_file():
            raise EngineError(f"LoRA adapter not found: {adapter}; its lockfile names it; get the model again.")
        import jinja2
        import llama_cpp

        threads = thread_plan(self.settings.n_threads, self.settings.n_threads_batch)
        n_batch = n_ctx if whole_prompt_batches else min(self.settings.n_batch, n_ctx)
        micro_batch = {"n_ubatch": n_batch} if whole_prompt_batches else {}
        try:
            # With lora_path, llama-cpp-python reads the weights into RAM instead of mapping them, and
            # applies the adapter at the scale alpha/rank stored in it.
            llm = llama_cpp.Llama(
                model_path=str(path),
                lora_path=str(adapter) if adapter is not None else None,
                n_ctx=n_ctx,
                n_batch=n_batch,
                **micro_batch,
                n_threads=threads.decode,
                n_threads_batch=threads.batch,
                n_gpu_layers=self.settings.n_gpu_layers,
                flash_attn=self.settings.flash_attn,
                verbose=False,
            )
        except (jinja2.TemplateError, RecursionError) as error:
            # llama-cpp-python compiles the file's chat template while it loads; the file comes from anywhere.
            raise EngineError(
                f"{path.name}: its chat template does not compile ({error}); re-convert the model with a working"
                " template (zootui convert --chat-template FILE)."
            ) from error
        except (ValueError, RuntimeError) as error:
            loaded = f"{path} with the LoRA adapter {adapter.name}" if adapter is not None else str(path)
            raise EngineError(
                f"{loaded}: llama.cpp could not load it ({error}); the file is corrupt, truncated or "
                f"an unsupported architecture; re-download or re-convert it."
            ) from error
        cache = None
        if self.settings.state_cache_mb > 0:
            cache = StateCache(capacity_bytes=self.settings.state_cache_mb * 1024 * 1024)
        return LoadedModel(path=path, llm=llm, n_ctx=n_ctx, state_cache=cache)

    def close(self) -> None:
        with self._lock:
            for loaded in self._models.values():
                self._close(loaded)
            self._models.clear()


@dataclass(frozen=True)
class EmbeddedRun:
    """Prompt positions that reach llama.cpp as vectors instead of tokens (an image, for MiniGPT-4).

    Their places in ``Prompt.tokens`` hold placeholder ids (negative, so never a real token) that
    identify the input, which lets prefix reuse and the state cache treat them like tokens.
    """

    start: int
    length: int
    source: Any
    """What the engine that built the prompt turns into the vectors."""


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    dropped_messages: int = 0
    embedded: tuple[EmbeddedRun, ...] = ()


def _reuse_evaluated_prefix(llm, prompt_tokens: list[int]) -> list[int]:
    """Keep the part of the evaluated history the prompt starts with; return the tokens still to evaluate.

    The last prompt token is always evaluated again: sampling needs its fresh logits.
    """
    current = llm.input_ids[: llm.n_tokens].tolist()
    shared = min(common_prefix(current, prompt_tokens), len(prompt_tokens) - 1)
    # Llama.eval drops the KV cache past n_tokens before it evaluates anything new.
    llm.n_tokens = shared
    return prompt_tokens[shared:]


def _check_room(prompt_tokens: list[int], params: SamplingParams) -> None:
    """A prompt must leave room in the context for at least one token of reply."""
    if len(prompt_tokens) >= params.n_ctx:
        raise ContextOverflow(
            f"the prompt is {len(prompt_tokens)} tokens, and the context holds {params.n_ctx}; shorten it.",
            prompt_tokens=len(prompt_tokens),
            context_size=params.n_ctx,
        )


def usable_context(path: Path, n_ctx: int) -> int:
    """The context ``path`` is loaded with for ``n_ctx``: never more than the model was trained for, where a
    longer one only costs memory (a 1M-token context took 24 GB for a 5-token reply of a 135M model)."""
    from tui.zoo.fit import read_gguf

    try:
        trained = read_gguf(path)[0].n_ctx_train
    except (OSError, ValueError):  # loading it will say what is wrong with the file
        return n_ctx
    return min(n_ctx, trained) if trained else n_ctx


def check_context_memory(path: Path, n_ctx: int, gpu_layers: int) -> None:
    """EngineError (one line) when the KV cache an ``n_ctx``-token context keeps in RAM (that of the layers
    not offloaded to the GPU) cannot fit in the free RAM. The weights are mapped from disk and not counted."""
    from converters import human_size
    from tui.zoo.fit import available_ram, read_gguf

    try:
        shape = read_gguf(path)[0]
    except (OSError, ValueError):
        return
    on_gpu = shape.n_layer if gpu_layers < 0 else min(gpu_layers, shape.n_layer)
    kv_bytes = (shape.n_layer - on_gpu) * shape.kv_bytes_per_layer(n_ctx)
    free = available_ram()
    if free is not None and kv_bytes > free:
        raise EngineError(
            f"{path.name}: a {n_ctx}-token context needs {human_size(kv_bytes)} for its KV cache and "
            f"{human_size(free)} of RAM is free; lower the context length (--n-ctx, [engine] n_ctx or the tab's settings)."
        )


def within_context(params: SamplingParams, model: LoadedModel) -> SamplingParams:
    """``params`` for the context the model was loaded with, when that is shorter than asked for."""
    return params if params.n_ctx <= model.n_ctx else replace(params, n_ctx=model.n_ctx)


def _evaluate_prompt(llm, tokens: list[int], cancel: threading.Event) -> Iterator[Progress]:
    """Evaluate prompt tokens one batch at a time, reporting progress; stops early once cancel is set.

    While a batch runs, llama.cpp polls an abort callback, so a cancel interrupts even a long batch of a
    big model. The callback is removed before decoding: it would run on every graph node of every token.
    """
    if not tokens:
        return
    import llama_cpp

    total = len(tokens)
    yield Progress("prompt", 0, total)
    abort = llama_cpp.ggml_abort_callback(lambda _data: cancel.is_set())
    context = llm._ctx.ctx
    llama_cpp.llama_set_abort_callback(context, abort, None)
    try:
        for start in range(0, total, llm.n_batch):
            try:
                llm.eval(tokens[start : start + llm.n_batch])
            except RuntimeError:
                if cancel.is_set():  # llama_decode aborted: what it evaluated is dropped on the next eval
                    return
                raise
            yield Progress("prompt", min(start + llm.n_batch, total), total)
            if cancel.is_set():  # backends that never poll the abort callback stop between batches
                return
    finally:
        llama_cpp.llama_set_abort_callback(context, llama_cpp.ggml_abort_callback(), None)


class LocalEngine:
    """A GGUF file run by llama.cpp on this machine (CPU, or CPU and GPU)."""

    whole_prompt_batches = False
    """Load the model with batches as long as its context (an encoder's input goes in one piece)."""

    def __init__(self, path: Path, pool: ModelPool, adapter: Path | None = None):
        self.path = path
        self.adapter = adapter
        self.pool = pool
        files = f"{path.name} + {adapter.name}" if adapter is not None else path.name
        self.description = f"{files} (llama.cpp)"

    def stream(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        cancel: threading.Event,
        *,
        keep_every_message: bool = False,
    ) -> Iterator[ReplyEvent]:
        """The reply to a conversation. When it outgrows the context the oldest turns are left out, or,
        with ``keep_every_message`` (the server: its client must know), ContextOverflow is raised."""
        if not self.pool.is_loaded(self.path, params.n_ctx, self.adapter):
            yield Progress("loading")
        with self._hold(params) as model:
            params = within_context(params, model)
            if keep_every_message:
                prompt = self._format(model, messages)
                _check_room(prompt.tokens, params)
            else:
                prompt = self._fit_prompt(model, messages, params)
            stats = yield from self._generate(model, prompt, params, cancel, trim_leading_space=True)
        yield stats

    def _hold(self, params: SamplingParams):
        return self.pool.hold(self.path, params.n_ctx, self.adapter, whole_prompt_batches=self.whole_prompt_batches)

    def complete(self, text: str, params: SamplingParams, cancel: threading.Event) -> Iterator[ReplyEvent]:
        """The continuation of raw text (an OpenAI /v1/completions prompt). The text is tokenized as plain
        text, so nothing in it becomes a control token; the model's BOS comes first if its vocabulary asks."""
        with self._hold(params) as model:
            params = within_context(params, model)
            tokens = model.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
            _check_room(tokens, params)
            stats = yield from self._generate(model, Prompt(tokens), params, cancel, trim_leading_space=False)
        yield stats

    def _generate(
        self,
        model: LoadedModel,
        prompt: Prompt,
        params: SamplingParams,
        cancel: threading.Event,
        *,
        trim_leading_space: bool,
    ) -> Generator[str | Progress, None, ReplyStats]:
        """Stream the text after ``prompt`` (the caller holds the model's lock); returns the reply's stats."""
        llm = model.llm
        self._restore_history(model, prompt.tokens)
        max_tokens = min(params.max_tokens, params.n_ctx - len(prompt.tokens))
        seed_sampler(llm, params)
        to_evaluate = _reuse_evaluated_prefix(llm, prompt.tokens)
        prompt_tokens_evaluated = len(to_evaluate)
        started = time.perf_counter()
        outcome = ReplyOutcome()
        to_evaluate = self._evaluate_embedded(model, prompt, to_evaluate, cancel)
        if to_evaluate is not None:
            # The prompt but its last token is evaluated here, batch by batch, so that the reply can show
            # how far it got and a cancel stops it; generate() then evaluates the last token and samples.
            yield from _evaluate_prompt(llm, to_evaluate[:-1], cancel)
            to_evaluate = None if cancel.is_set() else to_evaluate[-1:]
        if to_evaluate is None:  # cancelled while the prompt or its embedded inputs were evaluated
            outcome.finish_reason = FinishReason.CANCELLED
            prompt_tokens_evaluated = llm.n_tokens - (len(prompt.tokens) - prompt_tokens_evaluated)
        else:
            tokens = sampled_tokens(llm, to_evaluate, params)
            stops = model.stop_strings() + params.stop
            yield from stream_reply(
                tokens, LlamaText(model), max_tokens, stops, cancel, outcome, model.reply_rewriter(), trim_leading_space
            )
        return outcome.stats(
            started,
            time.perf_counter(),
            prompt_tokens=len(prompt.tokens),
            prompt_tokens_evaluated=prompt_tokens_evaluated,
            context_size=params.n_ctx,
            dropped_messages=prompt.dropped_messages,
        )

    def _evaluate_embedded(
        self, model: LoadedModel, prompt: Prompt, to_evaluate: list[int], cancel: threading.Event
    ) -> list[int] | None:
        """Evaluate what the prompt feeds as vectors; return the tokens left for ``generate`` (None if cancelled).

        A text prompt has nothing of the kind: everything goes to ``generate``.
        """
        return to_evaluate

    def _format(self, model: LoadedModel, messages: list[ChatMessage]) -> Prompt:
        """The prompt from the model's own chat template; message text never becomes control tokens.

        A text model sees only the text of messages (an image attached for another model is left out).
        """
        text_only = [{"role": m["role"], "content": m["content"]} for m in messages]
        return Prompt(self._tokenize(model, lambda tokenizer, template: tokenizer.tokenize(template, text_only)))

    @staticmethod
    def _tokenize(model: LoadedModel, render: Callable[[Any, str], Any]) -> Any:
        """Run ``render(prompt_tokenizer, template)`` on the model's template, reporting its failures."""
        template = model.llm.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        try:
            return render(model.prompt_tokenizer(), template)
        except Exception as error:  # a template is data from the file: any failure is reported, not raised
            raise EngineError(
                f"{model.path.name}: its chat template failed ({error}); re-convert the model with a working template."
            ) from error

    def _prompt_budget(self, params: SamplingParams) -> int:
        return prompt_budget(params.n_ctx, params.max_tokens)

    def _fit_prompt(self, model: LoadedModel, messages: list[ChatMessage], params: SamplingParams) -> Prompt:
        """The prompt, leaving out the oldest turns when the conversation outgrows the context."""

        def measure(chosen: list[ChatMessage]) -> tuple[Prompt, int]:
            prompt = self._format(model, chosen)
            return prompt, len(prompt.tokens)

        prompt, dropped = fit_conversation(messages, self._prompt_budget(params), params.n_ctx, measure)
        return replace(prompt, dropped_messages=dropped)

    def _restore_history(self, model: LoadedModel, prompt_tokens: list[int]) -> None:
        """Keep the current history for later, and bring back a saved one that fits better."""
        cache = model.state_cache
        if cache is None:
            return
        llm = model.llm
        current = llm.input_ids[: llm.n_tokens].tolist()
        shared = common_prefix(current, prompt_tokens)
        if shared < len(current) and len(current) >= MIN_TOKENS_WORTH_SAVING:
            cache.save(llm)
        saved = cache.best_match(prompt_tokens)
        if saved is not None and common_prefix(saved.tokens, prompt_tokens) > shared:
            cache.restore(llm, saved)
