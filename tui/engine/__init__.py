"""Chat backends behind one protocol, chosen by what the model is: decoder-only GGUFs through
llama.cpp's ``Llama``, encoder-decoder GGUFs (T5) through its encoder and decoder, ChatGLM-6B v1
through chatglm.cpp (an optional extra), and remote OpenAI-compatible servers."""

from __future__ import annotations

from pathlib import Path

from tui.config import Settings
from tui.engine.base import (
    ChatEngine,
    ChatMessage,
    ContextOverflow,
    EngineError,
    FinishReason,
    Progress,
    ReplyEvent,
    ReplyStats,
    SamplingParams,
    StopScanner,
)

__all__ = [
    "ChatEngine",
    "ChatMessage",
    "ContextOverflow",
    "EngineError",
    "Engines",
    "FinishReason",
    "Progress",
    "ReplyEvent",
    "ReplyStats",
    "SamplingParams",
    "StopScanner",
]


class Engines:
    """Makes the engine for a model reference; local models share one pool of loaded models, kept
    within what fits in memory (``tui.engine.residency``)."""

    def __init__(self, settings: Settings, data_dir: Path, residency=None):
        from tui.engine.local import ModelPool
        from tui.engine.residency import Residency
        from tui.zoo.fit import free_resources

        self.settings = settings
        self.data_dir = data_dir
        self.residency = residency or Residency(settings.engine, lambda: free_resources(data_dir))
        self.pool = ModelPool(settings.engine, make_room=self.residency.make_room)
        self._encoders = None
        self._glm_pool = None

    @property
    def encoders(self):
        """The vision encoders, loaded the first time a model that sees images is used."""
        if self._encoders is None:
            from tui.engine.embeddings import VisionEncoders

            self._encoders = VisionEncoders(self.settings.engine.n_threads or None)
        return self._encoders

    def _model(self, reference: str):
        from tui.zoo.library import ModelNotFound, resolve_model

        try:
            return resolve_model(reference, self.data_dir)
        except ModelNotFound as error:
            raise EngineError(str(error)) from error

    def for_model(self, reference: str) -> ChatEngine:
        model = self._model(reference)
        if model.is_remote:
            from tui.engine.remote import RemoteEngine

            return RemoteEngine(model.remote_name, self.settings.remote)
        if model.vision_path is not None:
            from tui.engine.embeddings import EmbeddingsEngine

            return EmbeddingsEngine(model.path, model.vision_path, self.pool, self.encoders)
        from tui.zoo.gguf_header import is_encoder_decoder
        from tui.zoo.library import CHATGLM_CPP_SUFFIX

        if model.path.suffix == CHATGLM_CPP_SUFFIX:
            from tui.engine.chatglm import ChatGLMEngine, ChatGLMPool

            if self._glm_pool is None:
                self._glm_pool = ChatGLMPool()
            return ChatGLMEngine(model.path, self._glm_pool)
        if is_encoder_decoder(model.path):
            from tui.engine.encdec import EncoderDecoderEngine

            return EncoderDecoderEngine(model.path, self.pool)
        from tui.engine.local import LocalEngine

        lockfile = model.lockfile
        adapter = model.path.with_name(lockfile.lora_adapter) if lockfile and lockfile.lora_adapter else None
        return LocalEngine(model.path, self.pool, adapter)

    def room_for(self, engines: list[ChatEngine], n_ctx: int):
        """Whether these engines' local models fit in memory at once (remote ones take none here)."""
        from tui.engine.local import LocalEngine

        local = [(engine.path, n_ctx) for engine in engines if isinstance(engine, LocalEngine)]
        return self.residency.room(local, nothing_loaded=not self.pool.loaded())

    def check_accepts_images(self, reference: str) -> None:
        """Raise EngineError (one line) unless the model can see images (it has a vision file)."""
        model = self._model(reference)
        if model.vision_path is None:
            raise EngineError(
                f"{model.name} is a text-only model and cannot see images; "
                "send the image to a MiniGPT-4 model (`zootui models --all` lists them)."
            )

    def close(self) -> None:
        self.pool.close()
        if self._glm_pool is not None:
            self._glm_pool.close()
        if self._encoders is not None:
            self._encoders.close()
