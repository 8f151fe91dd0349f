"""The embeddings-input path: a language model GGUF plus a vision file, for MiniGPT-4.

Everything a text chat does is ``LocalEngine``'s (loading, prompt fitting, the state cache, prefix
reuse, sampling, stop strings, cancel, stats); this engine adds images. Its prompt is the model's
chat template cut at ``IMAGE_SLOT`` (each piece tokenized on its own, as MiniGPT-4's
``get_context_emb`` does), with the image's vectors between the pieces. Through llama-cpp-python's
low-level API the text before an image is evaluated as tokens, the vectors as a ``llama_batch`` of
embeddings at the following positions, and the rest of the prompt goes to ``Llama.generate``.

An image's positions carry placeholder ids derived from its sha256, so a later turn that only adds
text shares the image with the evaluated prefix: neither encoded nor evaluated again. Vectors of
recent images are also kept in RAM, so regenerating a reply or coming back to a conversation whose
history llama.cpp no longer holds does not run the encoder again.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters import sha256_file
from tui.engine.base import ChatMessage, EngineError
from tui.engine.local import EmbeddedRun, LoadedModel, LocalEngine, ModelPool, Prompt
from tui.vision import VisionEncoder, VisionFileError
from tui.zoo.templates import IMAGE_SLOT

CACHED_IMAGES = 16
"""Images whose vectors stay in RAM (32 × 5120 float32, 640 KB each for MiniGPT-4 13B)."""


@dataclass(frozen=True)
class ImageInput:
    """An image in a prompt: its file and the sha256 of its bytes."""

    path: Path
    digest: bytes


def placeholder_ids(digest: bytes, count: int) -> list[int]:
    """Ids for an image's positions: negative (never a token), distinct per position, and together
    they spell the image's sha256, so two images share a prefix of positions only if they are one image."""
    return [-(1 + (index << 8) + digest[index % len(digest)]) for index in range(count)]


def decode_embeddings(llm, vectors: np.ndarray, ids: list[int]) -> None:
    """Evaluate ``vectors`` (one row per position) after the history ``llm`` holds, as ``Llama.eval`` does tokens.

    The positions are recorded in ``llm.input_ids`` under ``ids``; with ``logits_all`` their logits go
    to ``llm.scores`` too.
    """
    import llama_cpp

    count, width = vectors.shape
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
    batch = llama_cpp.llama_batch_init(min(count, llm.n_batch), width, 1)
    try:
        for start in range(0, count, llm.n_batch):
            size = min(llm.n_batch, count - start)
            n_past = llm.n_tokens
            batch.n_tokens = size
            ctypes.memmove(batch.embd, vectors[start : start + size].ctypes.data, vectors[start : start + size].nbytes)
            for index in range(size):
                batch.pos[index] = n_past + index
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = 0
                batch.logits[index] = llm._logits_all or start + index == count - 1
            status = llama_cpp.llama_decode(llm._ctx.ctx, batch)
            if status != 0:
                raise EngineError(
                    f"llama.cpp could not evaluate the image (status {status}); "
                    "raise the context length in the conversation settings or start a new conversation."
                )
            llm.input_ids[n_past : n_past + size] = ids[start : start + size]
            if llm._logits_all:
                rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm._ctx.ctx), shape=(size * llm._n_vocab,))
                llm.scores[n_past : n_past + size, :].reshape(-1)[:] = rows
            llm.n_tokens += size
    finally:
        llama_cpp.llama_batch_free(batch)


class VisionEncoders:
    """Loaded vision files, shared by every conversation, and the vectors of the images seen last."""

    def __init__(self, threads: int | None = None, cached_images: int = CACHED_IMAGES) -> None:
        self.threads = threads
        """Threads an encoding uses (None: every CPU this process may run on)."""
        self._encoders: dict[Path, VisionEncoder] = {}
        self._vectors: OrderedDict[tuple[Path, bytes], np.ndarray] = OrderedDict()
        self._capacity = cached_images
        self._lock = threading.Lock()
        self.images_encoded = 0
        """Images run through an encoder (not served from RAM), since start."""

    def encoder(self, path: Path) -> VisionEncoder:
        key = path.resolve()
        with self._lock:
            encoder = self._encoders.get(key)
            if encoder is None:
                try:
                    encoder = self._encoders[key] = VisionEncoder(key, self.threads)
                except VisionFileError as error:
                    raise EngineError(str(error)) from error
            return encoder

    def vectors(self, path: Path, image: ImageInput, should_stop: Callable[[], bool]) -> np.ndarray | None:
        """The image's vectors from the vision file at ``path``; None if ``should_stop`` said so first."""
        from tui.images import ImageError, open_rgb

        encoder = self.encoder(path)
        key = (encoder.path, image.digest)
        with self._lock:
            cached = self._vectors.get(key)
            if cached is not None:
                self._vectors.move_to_end(key)
                return cached
            try:
                picture = open_rgb(image.path)
            except ImageError as error:
                raise EngineError(str(error)) from error
            vectors = encoder.encode(picture, should_stop)
            if vectors is None:
                return None
            self.images_encoded += 1
            self._vectors[key] = vectors
            while len(self._vectors) > self._capacity:
                self._vectors.popitem(last=False)
            return vectors

    def close(self) -> None:
        with self._lock:
            for encoder in self._encoders.values():
                encoder.close()
            self._encoders.clear()
            self._vectors.clear()


class EmbeddingsEngine(LocalEngine):
    """A GGUF language model that also sees images, through the vision file beside it (MiniGPT-4)."""

    def __init__(self, path: Path, vision_path: Path, pool: ModelPool, encoders: VisionEncoders) -> None:
        super().__init__(path, pool)
        self.vision_path = vision_path
        self.encoders = encoders
        self.description = f"{path.name} + {vision_path.name} (llama.cpp, image input)"
        self._digests: dict[Path, bytes] = {}

    def _format(self, model: LoadedModel, messages: list[ChatMessage]) -> Prompt:
        images = [self._image(Path(m["image"])) for m in messages if m.get("image")]
        segments = self._tokenize(
            model, lambda tokenizer, template: tokenizer.tokenize_around(template, messages, IMAGE_SLOT)
        )
        if len(segments) != len(images) + 1 or not segments[-1]:
            raise EngineError(
                f"{model.path.name}: its chat template has {len(segments) - 1} image places for {len(images)} "
                "images; get the model again so that it carries MiniGPT-4's prompt format."
            )
        width = self.encoders.encoder(self.vision_path).shape.query_count
        tokens: list[int] = []
        runs: list[EmbeddedRun] = []
        for segment, image in zip(segments, [*images, None], strict=True):
            tokens += segment
            if image is not None:
                runs.append(EmbeddedRun(len(tokens), width, image))
                tokens += placeholder_ids(image.digest, width)
        return Prompt(tokens, embedded=tuple(runs))

    def _image(self, path: Path) -> ImageInput:
        digest = self._digests.get(path)
        if digest is None:
            try:
                digest = self._digests[path] = bytes.fromhex(sha256_file(path))
            except OSError as error:
                raise EngineError(
                    f"{path}: cannot read the attached image ({error.strerror or error}); attach it again."
                ) from error
        return ImageInput(path, digest)

    def _evaluate_embedded(
        self, model: LoadedModel, prompt: Prompt, to_evaluate: list[int], cancel: threading.Event
    ) -> list[int] | None:
        """Evaluate the text up to the last image still to evaluate, and the images as embeddings."""
        import llama_cpp

        llm = model.llm
        position = llm.n_tokens
        for run in prompt.embedded:
            if run.start + run.length <= position:  # already in the evaluated prefix
                continue
            if run.start > position:
                llm.eval(prompt.tokens[position : run.start])
                position = run.start
            vectors = self.encoders.vectors(self.vision_path, run.source, cancel.is_set)
            if vectors is None or cancel.is_set():
                return None
            expected = llama_cpp.llama_model_n_embd_inp(llm.model)
            if vectors.shape[1] != expected:
                raise EngineError(
                    f"{self.vision_path.name} gives {vectors.shape[1]}-wide vectors but {self.path.name} takes "
                    f"{expected}; the vision file belongs to another model, get the model again."
                )
            decode_embeddings(llm, vectors[position - run.start :], prompt.tokens[position : run.start + run.length])
            position = run.start + run.length
        return prompt.tokens[position:]
