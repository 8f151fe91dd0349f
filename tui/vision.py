"""MiniGPT-4's image encoder in numpy: a picture in, the vectors that take ``<ImageHere>``'s place out.

The weights are a vision file (``converters.convert_vision``): f16 matrices, memory-mapped, upcast to
f32 one layer at a time (``converters.f16_to_f32``: ggml's F16C conversion, ten times numpy's cast),
used by BLAS matrix products, and released from the resident set once the layer is done, so memory
stays at one layer's f32 weights plus activations whatever the tower's size.

The work is split over the encoder's own threads (matrix products by output rows, attention by head,
GELU by blocks of rows) while numpy's BLAS runs single-threaded: OpenBLAS's threads spin waiting for
each other, which on cores shared with other processes made ViT-g's products slower with two threads
than with one; independent halves do not wait (see tests/bench/bench_vision.py).

The computation follows MiniGPT-4's ``encode_img``: the eval preprocessing (``blip2_image_eval``:
RGB, bicubic resize to the tower's square, scale to [0, 1], normalise with CLIP's mean and std),
EVA's ViT (patch embedding, class token, position embeddings, pre-norm blocks with exact-erf GELU),
``ln_vision`` on every token, the Q-Former (learned queries: layer norm, then per layer
self-attention, cross-attention to the image tokens every ``cross_attention_frequency`` layers,
and the queries' feed-forward, each followed by a residual layer norm, BERT style) and the Linear
projection into the language model's embedding space.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converters import VisionShape, f16_to_f32

if TYPE_CHECKING:
    from PIL import Image

_PAGE = mmap.PAGESIZE
# Bounds on what a vision file may declare, far above ViT-g's, so that a corrupt header cannot make
# the encoder allocate without limit.
_MAX_IMAGE_SIZE = 1024
_MAX_WIDTH = 8192
_MAX_LAYERS = 256
# Abramowitz & Stegun 7.1.26: erf to within 1.5e-7 with one exp; numpy has no erf.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


class VisionFileError(ValueError):
    """The vision file is missing, corrupt or not a MiniGPT-4 vision file; one line naming it and the fix."""


@dataclass(frozen=True)
class _Tensor:
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype


def _read_layout(path: Path) -> tuple[VisionShape, dict[str, _Tensor]]:
    import gguf

    def fail(problem: str) -> VisionFileError:
        return VisionFileError(f"{path}: {problem}; get the model again to rebuild its vision file")

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise fail(f"not a readable GGUF file ({error})") from error
    values: dict[str, Any] = {}
    for name, field in reader.fields.items():
        try:
            values[name] = field.contents()
        except (ValueError, IndexError, TypeError, UnicodeDecodeError):
            continue
    if values.get("general.architecture") != VisionShape.ARCH:
        raise fail(f"general.architecture is {values.get('general.architecture')!r}, not {VisionShape.ARCH!r}")
    settings: dict[str, Any] = {}
    for item in fields(VisionShape):
        value = values.get(VisionShape.key(item.name))
        if value is None:
            raise fail(f"key {VisionShape.key(item.name)} is missing")
        if item.name in ("image_mean", "image_std"):
            if not (
                isinstance(value, list) and len(value) == 3 and all(isinstance(v, float) and 0 <= v < 1 for v in value)
            ):
                raise fail(f"key {VisionShape.key(item.name)} must be three numbers between 0 and 1")
            value = tuple(value)
        elif item.name.endswith("_eps"):
            if not isinstance(value, float) or not 0 < value < 1:
                raise fail(f"key {VisionShape.key(item.name)} must be a small positive number")
        elif not isinstance(value, int) or not 0 < value <= (
            _MAX_IMAGE_SIZE if "size" in item.name else _MAX_WIDTH * 8
        ):
            raise fail(f"key {VisionShape.key(item.name)} is out of range ({value!r})")
        settings[item.name] = value
    shape = VisionShape(**settings)
    if (
        shape.image_size % shape.patch_size
        or shape.vit_layers > _MAX_LAYERS
        or shape.qformer_layers > _MAX_LAYERS
        or max(shape.vit_width, shape.qformer_width, shape.output_width) > _MAX_WIDTH
        or shape.vit_width % shape.vit_heads
        or shape.qformer_width % shape.qformer_heads
    ):
        raise fail("its hyper-parameters do not describe a ViT and Q-Former")
    found = {t.name: t for t in reader.tensors}
    size = path.stat().st_size
    layout: dict[str, _Tensor] = {}
    for name, expected in shape.tensor_shapes().items():
        tensor = found.get(name)
        if tensor is None:
            raise fail(f"tensor {name} is missing")
        dtype = VisionShape.stored_dtype(name, expected)
        actual_shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        if actual_shape != expected or np.dtype(tensor.data.dtype) != dtype:
            raise fail(f"tensor {name} is {tensor.data.dtype}{list(actual_shape)}, expected {dtype}{list(expected)}")
        nbytes = math.prod(expected) * dtype.itemsize
        if tensor.data_offset + nbytes > size:
            raise fail(f"tensor {name} reaches past the end of the file (truncated)")
        layout[name] = _Tensor(int(tensor.data_offset), expected, dtype)
    return shape, layout


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _Workers:
    """Runs pieces of numpy work on a thread pool (numpy releases the GIL in its products and ufuncs)."""

    def __init__(self, pool: Executor | None, count: int) -> None:
        self.pool = pool
        self.count = count

    def run(self, piece: Callable[[int], None], pieces: int) -> None:
        """``piece(0)`` … ``piece(pieces - 1)``, spread over the threads; the first failure is raised."""
        if self.pool is None or pieces == 1:
            for index in range(pieces):
                piece(index)
            return
        for done in [self.pool.submit(piece, index) for index in range(pieces)]:
            done.result()


class VisionEncoder:
    """One loaded vision file: ``encode(image)`` gives ``(query_count, output_width)`` float32 vectors.

    ``threads`` is how many threads an encoding uses (default: every CPU this process may run on).
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self.threads = threads or _available_cpus()
        if not path.is_file():
            raise VisionFileError(f"vision file not found: {path}; get the model again to rebuild it")
        self.shape, self._layout = _read_layout(path)
        with path.open("rb") as stream:
            self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        self._buffers: dict[tuple[int, ...], np.ndarray] = {}
        self._workers = _Workers(None, 1)

    def close(self) -> None:
        self._buffers.clear()
        try:
            self._map.close()
        except BufferError:  # a view into the map is still alive; the map closes when it goes
            pass

    # --- weights ----------------------------------------------------------------------------

    def _stored(self, name: str) -> np.ndarray:
        tensor = self._layout[name]
        return np.frombuffer(self._map, tensor.dtype, math.prod(tensor.shape), tensor.offset).reshape(tensor.shape)

    def _f32(self, name: str) -> np.ndarray:
        """The tensor as float32: f32 ones as a view, f16 ones upcast into one buffer per shape.

        The buffer is overwritten by the next tensor of that shape, so each caller uses the result
        before asking for another weight (every layer below does).
        """
        stored = self._stored(name)
        if stored.dtype == np.float32:
            return stored
        buffer = self._buffers.get(stored.shape)
        if buffer is None:
            buffer = self._buffers[stored.shape] = np.empty(stored.shape, np.float32)
        return f16_to_f32(stored, out=buffer)

    def _release(self, names: Iterable[str]) -> None:
        """Hand the stored pages of these tensors back to the OS (they stay in its page cache)."""
        for name in names:
            tensor = self._layout[name]
            start = tensor.offset - tensor.offset % _PAGE
            end = min(tensor.offset + math.prod(tensor.shape) * tensor.dtype.itemsize, len(self._map))
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    # --- preprocessing ------------------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """MiniGPT-4's eval transform: RGB, bicubic resize to the square, to [0, 1], normalised; CHW float32."""
        from PIL import Image

        size = self.shape.image_size
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        pixels = np.asarray(resized, dtype=np.uint8).astype(np.float32).transpose(2, 0, 1)
        pixels /= np.float32(255)
        pixels -= np.asarray(self.shape.image_mean, np.float32)[:, None, None]
        pixels /= np.asarray(self.shape.image_std, np.float32)[:, None, None]
        return pixels

    # --- the forward pass -----------------------------------------------------------------------

    def encode(self, image: Image.Image, should_stop: Callable[[], bool] = lambda: False) -> np.ndarray | None:
        """The image's vectors; None when ``should_stop`` turns true (it is asked between layers)."""
        return self.encode_pixels(self.preprocess(image), should_stop)

    def encode_pixels(self, pixels: np.ndarray, should_stop: Callable[[], bool] = lambda: False) -> np.ndarray | None:
        """Vectors for preprocessed pixels (3, image_size, image_size); None if stopped."""
        from threadpoolctl import threadpool_limits

        s = self.shape
        if pixels.shape != (3, s.image_size, s.image_size):
            raise ValueError(f"pixels must be (3, {s.image_size}, {s.image_size}), got {pixels.shape}")
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(self.threads) as pool:
            self._workers = _Workers(pool if self.threads > 1 else None, self.threads)
            try:
                return self._forward(pixels, should_stop)
            finally:
                self._workers = _Workers(None, 1)

    def _forward(self, pixels: np.ndarray, should_stop: Callable[[], bool]) -> np.ndarray | None:
        s = self.shape
        tokens = self._image_tokens(pixels)
        for layer in range(s.vit_layers):
            if should_stop():
                return None
            tokens = self._vit_block(tokens, layer)
        image_embeds = _layer_norm(tokens, self._f32("v.post_ln.weight"), self._f32("v.post_ln.bias"), s.ln_vision_eps)
        queries = _layer_norm(
            np.array(self._f32("q.query_embd")),
            self._f32("q.embd_ln.weight"),
            self._f32("q.embd_ln.bias"),
            s.qformer_eps,
        )
        for layer in range(s.qformer_layers):
            queries = self._qformer_layer(queries, image_embeds, layer)
        vectors = self._linear(queries, self._f32("proj.weight"), self._f32("proj.bias"))
        self._release(["proj.weight"])
        return vectors

    def _image_tokens(self, pixels: np.ndarray) -> np.ndarray:
        """Patch embedding (a stride-patch convolution, as one matrix product), class token, positions."""
        s = self.shape
        grid, patch = s.image_size // s.patch_size, s.patch_size
        patches = pixels.reshape(3, grid, patch, grid, patch).transpose(1, 3, 0, 2, 4).reshape(grid * grid, -1)
        weight = self._f32("v.patch_embd.weight").reshape(s.vit_width, -1)
        tokens = np.empty((grid * grid + 1, s.vit_width), np.float32)
        tokens[0] = self._f32("v.class_embd")
        np.matmul(patches, weight.T, out=tokens[1:])
        tokens[1:] += self._f32("v.patch_embd.bias")
        tokens += self._f32("v.position_embd")
        self._release(["v.patch_embd.weight"])
        return tokens

    def _vit_block(self, x: np.ndarray, layer: int) -> np.ndarray:
        s = self.shape
        b = f"v.blk.{layer}"
        h = _layer_norm(x, self._f32(f"{b}.ln1.weight"), self._f32(f"{b}.ln1.bias"), s.vit_eps)
        qkv = self._linear(h, self._f32(f"{b}.attn_qkv.weight"), self._f32(f"{b}.attn_qkv.bias"))
        w = s.vit_width  # the fused projection's rows are all of q, then all of k, then all of v
        attended = self._attention(qkv[:, :w], qkv[:, w : 2 * w], qkv[:, 2 * w :], s.vit_heads)
        x = x + self._linear(attended, self._f32(f"{b}.attn_out.weight"), self._f32(f"{b}.attn_out.bias"))
        h = _layer_norm(x, self._f32(f"{b}.ln2.weight"), self._f32(f"{b}.ln2.bias"), s.vit_eps)
        h = self._gelu(self._linear(h, self._f32(f"{b}.ffn_up.weight"), self._f32(f"{b}.ffn_up.bias")))
        x += self._linear(h, self._f32(f"{b}.ffn_down.weight"), self._f32(f"{b}.ffn_down.bias"))
        self._release(f"{b}.{part}.weight" for part in ("attn_qkv", "attn_out", "ffn_up", "ffn_down"))
        return x

    def _qformer_layer(self, queries: np.ndarray, image_embeds: np.ndarray, layer: int) -> np.ndarray:
        s = self.shape
        b = f"q.blk.{layer}"
        parts = ["attn", "cross"] if s.has_cross_attention(layer) else ["attn"]
        for part in parts:
            source = image_embeds if part == "cross" else queries
            q, k, v = (
                self._linear(x, self._f32(f"{b}.{part}_{name}.weight"), self._f32(f"{b}.{part}_{name}.bias"))
                for name, x in (("q", queries), ("k", source), ("v", source))
            )
            attended = self._attention(q, k, v, s.qformer_heads)
            out = self._linear(attended, self._f32(f"{b}.{part}_out.weight"), self._f32(f"{b}.{part}_out.bias"))
            queries = _layer_norm(
                out + queries, self._f32(f"{b}.{part}_ln.weight"), self._f32(f"{b}.{part}_ln.bias"), s.qformer_eps
            )
        h = self._gelu(self._linear(queries, self._f32(f"{b}.ffn_up.weight"), self._f32(f"{b}.ffn_up.bias")))
        out = self._linear(h, self._f32(f"{b}.ffn_down.weight"), self._f32(f"{b}.ffn_down.bias"))
        queries = _layer_norm(
            out + queries, self._f32(f"{b}.ffn_ln.weight"), self._f32(f"{b}.ffn_ln.bias"), s.qformer_eps
        )
        self._release(f"{b}.{name}.weight" for name in self._qformer_matrices(layer))
        return queries

    def _qformer_matrices(self, layer: int) -> list[str]:
        parts = ["attn", "cross"] if self.shape.has_cross_attention(layer) else ["attn"]
        return [f"{part}_{name}" for part in parts for name in ("q", "k", "v", "out")] + ["ffn_up", "ffn_down"]

    # --- the operations, split over the encoder's threads ---------------------------------------

    def _linear(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """x @ weight.T + bias; a large product is split by output rows, one part per thread."""
        out = np.empty((x.shape[0], weight.shape[0]), np.float32)
        parts = self._workers.count if x.shape[0] * weight.size >= _SPLIT_PRODUCTS else 1
        step = -(-weight.shape[0] // parts)

        def part(index: int) -> None:
            rows = slice(index * step, (index + 1) * step)
            np.matmul(x, weight[rows].T, out=out[:, rows])
            out[:, rows] += bias[rows]

        self._workers.run(part, parts)
        return out

    def _attention(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int) -> np.ndarray:
        """Softmax attention of q (queries, heads * head_dim) over k and v (tokens, heads * head_dim).

        One head at a time, as two-dimensional products on column slices: numpy runs a stack of small
        matrix products many times slower than the same products one by one through BLAS.
        """
        size = q.shape[1] // heads
        scale = np.float32(1 / math.sqrt(size))
        out = np.empty((q.shape[0], q.shape[1]), np.float32)

        def head(index: int) -> None:
            columns = slice(index * size, (index + 1) * size)
            scores = q[:, columns] @ k[:, columns].T
            scores *= scale
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            out[:, columns] = scores @ v[:, columns]

        self._workers.run(head, heads)
        return out

    def _gelu(self, x: np.ndarray) -> np.ndarray:
        """GELU in place, by blocks of ``_GELU_ROWS`` rows, the blocks shared out between the threads."""
        blocks = -(-len(x) // _GELU_ROWS)
        parts = min(self._workers.count, blocks)
        per_part = -(-blocks // parts)

        def part(index: int) -> None:
            for block in range(index * per_part, min((index + 1) * per_part, blocks)):
                _gelu_rows(x[block * _GELU_ROWS : (block + 1) * _GELU_ROWS])

        self._workers.run(part, parts)
        return x


_SPLIT_PRODUCTS = 2**22
"""Multiply-adds above which a product is worth splitting between threads (ViT-g's are 100 times more)."""
_GELU_ROWS = 16
"""Rows of activations GELU works through at once: a block of a ViT-g feed-forward (16 × 6144 floats)
stays in the processor's cache through the dozen passes of ``_gelu_rows``, five times faster than whole arrays."""


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = np.mean(np.square(centred), axis=-1, keepdims=True)
    centred /= np.sqrt(variance + np.float32(eps))
    centred *= weight
    centred += bias
    return centred


def _gelu_rows(x: np.ndarray) -> None:
    """x * Φ(x), in place: GELU with erf (PyTorch's nn.GELU default), erf to within 1.5e-7."""
    z = np.abs(x)
    z *= np.float32(1 / math.sqrt(2))
    t = z * np.float32(_ERF_P)
    t += 1
    np.reciprocal(t, out=t)
    tail = t * np.float32(_ERF_A[4])
    for coefficient in reversed(_ERF_A[:4]):
        tail += np.float32(coefficient)
        tail *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    tail *= z
    tail *= np.float32(0.5)  # (1 - erf(|x| / sqrt 2)) / 2, the normal tail beyond |x|
    np.copysign(tail, -x, out=z)  # minus the tail where x > 0, plus it where x < 0
    z += x >= 0  # Φ(x): 1 - tail for x >= 0, tail for x < 0
    x *= z
