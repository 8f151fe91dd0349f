"""MiniGPT-4's vision side -> one GGUF file of its own, for zootui's numpy encoder.

MiniGPT-4 (Vision-CAIR/MiniGPT-4, ``minigpt4/models/minigpt4.py`` ``encode_img``) runs an image through
EVA-CLIP ViT-g/14 (39 blocks: the 40-block EVA-CLIP tower without its last block, every token kept),
``ln_vision``, BLIP-2's Q-Former (learned queries cross-attending to the image tokens every other
layer, the queries' own feed-forward; the text feed-forward layers are dropped) and one Linear layer
``llama_proj`` into the language model's embedding space.

The ViT, ``ln_vision``, the Q-Former and the query tokens come from a BLIP-2 checkpoint in Hugging Face
form (``Salesforce/blip2-flan-t5-xxl``: MiniGPT-4 loads the LAVIS ``blip2_pretrained_flant5xxl.pth``,
which Hugging Face converted into that repo, ``ln_vision`` becoming ``vision_model.post_layernorm``);
``llama_proj`` comes from MiniGPT-4's own training checkpoint (``pretrained_minigpt4*.pth``, a pickle
read by the allow-list unpickler). Both 2023 and current spellings of the attention biases are read
(``self_attn.q_bias``/``v_bias``, or ``self_attn.qkv.bias``).

The output keeps matrices in f16 and vectors, embeddings and the query tokens in f32, and carries
every hyper-parameter the encoder needs, including MiniGPT-4's layer-norm epsilons (EVA's blocks
1e-6, ``ln_vision`` 1e-5, the Q-Former's BERT layers 1e-12) and its image preprocessing
(``blip2_image_eval``: bicubic resize to a square, OpenAI CLIP's mean and std). Tensors stream one at
a time; the file appears under its final name only when complete.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import gguf
import numpy as np

from . import __version__
from .checkpoint import Checkpoint, open_checkpoint
from .errors import ConversionCancelled, ConversionError
from .files import written_atomically
from .jsonfile import STR, Map, Obj, read_json
from .progress import Progress, ProgressCallback

# MiniGPT-4's constants (see the module docstring for where each is set).
VIT_LAYER_NORM_EPS = 1e-6
LN_VISION_EPS = 1e-5
QFORMER_LAYER_NORM_EPS = 1e-12
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
# BLIP-2's defaults for what the tensors cannot tell (head counts), when config.json leaves them out.
_DEFAULT_VIT_HEADS = 16
_DEFAULT_QFORMER_HEADS = 12

VISION_TENSOR_PREFIXES = ("vision_model.", "qformer.", "query_tokens")
"""Tensors of a BLIP-2 checkpoint the vision side reads; the language model's shards are not needed."""
_PROJECTION_NAMES = (("model.llama_proj.weight", "model.llama_proj.bias"), ("llama_proj.weight", "llama_proj.bias"))
_SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SHARD_INDEX = Obj({"weight_map": Map(STR)}, required=("weight_map",))
_PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_VIT_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.")
_QFORMER_LAYER = re.compile(r"^qformer\.encoder\.layer\.(\d+)\.")


@dataclass(frozen=True)
class VisionShape:
    """The hyper-parameters of a vision file, as written to and read from its GGUF keys, and its tensors."""

    ARCH: ClassVar[str] = "minigpt4_vision"
    """``general.architecture`` of the vision file; every hyper-parameter key starts with it."""

    image_size: int
    patch_size: int
    vit_width: int
    vit_layers: int
    vit_heads: int
    vit_ffn: int
    qformer_width: int
    qformer_layers: int
    qformer_heads: int
    qformer_ffn: int
    cross_attention_frequency: int
    query_count: int
    output_width: int
    vit_eps: float = VIT_LAYER_NORM_EPS
    ln_vision_eps: float = LN_VISION_EPS
    qformer_eps: float = QFORMER_LAYER_NORM_EPS
    image_mean: tuple[float, float, float] = IMAGE_MEAN
    image_std: tuple[float, float, float] = IMAGE_STD

    @property
    def patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def has_cross_attention(self, layer: int) -> bool:
        return layer % self.cross_attention_frequency == 0

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the file, by GGUF name, with its numpy shape."""
        w, f, p = self.vit_width, self.vit_ffn, self.patch_size
        shapes: dict[str, tuple[int, ...]] = {
            "v.patch_embd.weight": (w, 3, p, p),
            "v.patch_embd.bias": (w,),
            "v.class_embd": (w,),
            "v.position_embd": (self.patches + 1, w),
        }
        for i in range(self.vit_layers):
            b = f"v.blk.{i}"
            shapes |= {
                f"{b}.ln1.weight": (w,),
                f"{b}.ln1.bias": (w,),
                f"{b}.attn_qkv.weight": (3 * w, w),
                f"{b}.attn_qkv.bias": (3 * w,),
                f"{b}.attn_out.weight": (w, w),
                f"{b}.attn_out.bias": (w,),
                f"{b}.ln2.weight": (w,),
                f"{b}.ln2.bias": (w,),
                f"{b}.ffn_up.weight": (f, w),
                f"{b}.ffn_up.bias": (f,),
                f"{b}.ffn_down.weight": (w, f),
                f"{b}.ffn_down.bias": (w,),
            }
        shapes |= {"v.post_ln.weight": (w,), "v.post_ln.bias": (w,)}
        d, g = self.qformer_width, self.qformer_ffn
        shapes |= {"q.query_embd": (self.query_count, d), "q.embd_ln.weight": (d,), "q.embd_ln.bias": (d,)}
        for i in range(self.qformer_layers):
            b = f"q.blk.{i}"
            parts = ["attn", "cross"] if self.has_cross_attention(i) else ["attn"]
            for part in parts:
                source_width = w if part == "cross" else d
                shapes |= {
                    f"{b}.{part}_q.weight": (d, d),
                    f"{b}.{part}_q.bias": (d,),
                    f"{b}.{part}_k.weight": (d, source_width),
                    f"{b}.{part}_k.bias": (d,),
                    f"{b}.{part}_v.weight": (d, source_width),
                    f"{b}.{part}_v.bias": (d,),
                    f"{b}.{part}_out.weight": (d, d),
                    f"{b}.{part}_out.bias": (d,),
                    f"{b}.{part}_ln.weight": (d,),
                    f"{b}.{part}_ln.bias": (d,),
                }
            shapes |= {
                f"{b}.ffn_up.weight": (g, d),
                f"{b}.ffn_up.bias": (g,),
                f"{b}.ffn_down.weight": (d, g),
                f"{b}.ffn_down.bias": (d,),
                f"{b}.ffn_ln.weight": (d,),
                f"{b}.ffn_ln.bias": (d,),
            }
        shapes |= {"proj.weight": (self.output_width, d), "proj.bias": (self.output_width,)}
        return shapes

    @classmethod
    def key(cls, name: str) -> str:
        """The GGUF key of hyper-parameter ``name``."""
        return f"{cls.ARCH}.{name}"

    @staticmethod
    def stored_dtype(name: str, shape: tuple[int, ...]) -> np.dtype:
        """f16 for the weights of the linear layers and the patch convolution, f32 for everything else."""
        return np.dtype(np.float16 if name.endswith(".weight") and len(shape) >= 2 else np.float32)

    def write(self, writer: gguf.GGUFWriter) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, tuple):
                writer.add_array(self.key(item.name), list(value))
            elif isinstance(value, float):
                writer.add_float32(self.key(item.name), value)
            else:
                writer.add_uint32(self.key(item.name), value)


def vision_shards(index_path: Path) -> list[str]:
    """The weight files of a sharded BLIP-2 checkpoint that hold the vision side, from its index."""
    weight_map = read_json(index_path, _SHARD_INDEX)["weight_map"]
    shards = sorted({file for name, file in weight_map.items() if name.startswith(VISION_TENSOR_PREFIXES)})
    # The index is downloaded text: a shard named "../x" would point the converter outside the checkpoint.
    strange = next((name for name in shards if not _PLAIN_FILE_NAME.fullmatch(name)), None)
    if strange is not None:
        raise ConversionError(
            f"{index_path}: weight_map names the shard {strange!r}, which is not a plain file name; re-download the index"
        )
    if not shards:
        raise ConversionError(
            f"{index_path} lists no vision_model, qformer or query_tokens tensors: not a BLIP-2 checkpoint"
        )
    return shards


@contextmanager
def _vision_checkpoint(directory: Path) -> Iterator[Checkpoint]:
    """The BLIP-2 checkpoint, opened over only the shards that hold the vision side.

    A download of the vision side skips the language model's shards (most of the repo), which the
    shard index still lists; the checkpoint is opened over a view holding config.json and links to
    the shards that are needed.
    """
    index_path = next((directory / name for name in _SHARD_INDEXES if (directory / name).is_file()), None)
    if index_path is None:
        with open_checkpoint(directory) as checkpoint:
            yield checkpoint
        return
    needed = vision_shards(index_path)
    missing = [name for name in ("config.json", *needed) if not (directory / name).is_file()]
    if missing:
        raise ConversionError(f"{directory} lacks {missing[0]}, which holds part of the vision side; download it")
    with tempfile.TemporaryDirectory(prefix="zootui-blip2-") as view:
        (Path(view) / "config.json").symlink_to((directory / "config.json").resolve())
        for name in needed:
            (Path(view) / name).symlink_to((directory / name).resolve())
        with open_checkpoint(view) as checkpoint:
            yield checkpoint


def _read_projection(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``llama_proj`` from MiniGPT-4's checkpoint: a torch pickle, read without torch or its code."""
    if not path.is_file():
        raise ConversionError(f"projection checkpoint not found: {path}; download pretrained_minigpt4*.pth")
    with tempfile.TemporaryDirectory(prefix="zootui-projection-") as view:
        (Path(view) / "config.json").write_text("{}")
        (Path(view) / "pytorch_model.bin").symlink_to(path.resolve())
        with open_checkpoint(view) as checkpoint:
            names = set(checkpoint.names())
            found = next((pair for pair in _PROJECTION_NAMES if set(pair) <= names), None)
            if found is None:
                raise ConversionError(
                    f"{path.name} holds no llama_proj.weight and llama_proj.bias: not a MiniGPT-4 checkpoint"
                )
            weight, bias = (np.array(checkpoint.load(name), dtype=np.float32) for name in found)
    if weight.ndim != 2 or bias.shape != weight.shape[:1]:
        raise ConversionError(f"{path.name}: llama_proj has shapes {weight.shape} and {bias.shape}, not a Linear layer")
    return weight, bias


def _layer_count(names: list[str], pattern: re.Pattern[str]) -> int:
    layers = {int(match.group(1)) for name in names if (match := pattern.match(name))}
    if layers != set(range(len(layers))):
        raise ConversionError(f"the BLIP-2 checkpoint's layers are not numbered 0..{len(layers) - 1}; re-download it")
    return len(layers)


def _config_value(config: dict, section: str, name: str, default: int) -> int:
    value = (config.get(section) or {}).get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConversionError(f"config.json: {section}.{name} must be a positive integer, got {value!r}")
    return value


def _shape(checkpoint: Checkpoint, output_width: int) -> VisionShape:
    names = checkpoint.names()
    required = ("vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding")
    for name in (*required, "query_tokens", "qformer.layernorm.weight"):
        if name not in names:
            raise ConversionError(f"{checkpoint.directory.name}: no tensor {name}: not a BLIP-2 checkpoint")
    patch = checkpoint.info(required[0]).shape  # (width, 3, patch, patch)
    positions = checkpoint.info(required[1]).shape[-2]
    side = math.isqrt(positions - 1)
    if len(patch) != 4 or patch[1] != 3 or patch[2] != patch[3] or side * side != positions - 1:
        raise ConversionError(f"{checkpoint.directory.name}: the patch embedding is not a square ViT patch grid")
    queries = checkpoint.info("query_tokens").shape
    vit_layers = _layer_count(names, _VIT_LAYER)
    qformer_layers = _layer_count(names, _QFORMER_LAYER)
    shape = VisionShape(
        image_size=side * patch[2],
        patch_size=patch[2],
        vit_width=patch[0],
        vit_layers=vit_layers,
        vit_heads=_config_value(checkpoint.config, "vision_config", "num_attention_heads", _DEFAULT_VIT_HEADS),
        vit_ffn=checkpoint.info("vision_model.encoder.layers.0.mlp.fc1.weight").shape[0],
        qformer_width=queries[-1],
        qformer_layers=qformer_layers,
        qformer_heads=_config_value(checkpoint.config, "qformer_config", "num_attention_heads", _DEFAULT_QFORMER_HEADS),
        qformer_ffn=checkpoint.info("qformer.encoder.layer.0.intermediate_query.dense.weight").shape[0],
        cross_attention_frequency=_config_value(checkpoint.config, "qformer_config", "cross_attention_frequency", 2),
        query_count=queries[-2],
        output_width=output_width,
    )
    if shape.vit_width % shape.vit_heads or shape.qformer_width % shape.qformer_heads:
        raise ConversionError(
            "config.json: the attention heads do not divide the hidden sizes; fix num_attention_heads"
        )
    return shape


class _Reader:
    """Reads checkpoint tensors and remembers which, so their pages can be released once written."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.touched: list[str] = []

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.checkpoint.names():
            raise ConversionError(
                f"{self.checkpoint.directory.name}: no tensor {name}; the BLIP-2 checkpoint is incomplete"
            )
        self.touched.append(name)
        return self.checkpoint.load(name)

    def release(self) -> None:
        for name in self.touched:
            self.checkpoint.release(name)
        self.touched.clear()


def _sources(read: _Reader, shape: VisionShape) -> dict[str, Callable[[], np.ndarray]]:
    """GGUF name -> how to read it from the BLIP-2 checkpoint (a renaming, and the fused attention bias)."""

    def load(name: str) -> Callable[[], np.ndarray]:
        return lambda: read(name)

    def qkv_bias(prefix: str) -> Callable[[], np.ndarray]:
        def fused() -> np.ndarray:
            if f"{prefix}.qkv.bias" in read.checkpoint.names():
                return read(f"{prefix}.qkv.bias")
            q, v = read(f"{prefix}.q_bias"), read(f"{prefix}.v_bias")
            return np.concatenate([q, np.zeros_like(q), v])  # EVA's k projection has no bias

        return fused

    e = "vision_model.embeddings"
    sources = {
        "v.patch_embd.weight": load(f"{e}.patch_embedding.weight"),
        "v.patch_embd.bias": load(f"{e}.patch_embedding.bias"),
        "v.class_embd": lambda: read(f"{e}.class_embedding").reshape(-1),
        "v.position_embd": lambda: read(f"{e}.position_embedding").reshape(shape.patches + 1, -1),
        "v.post_ln.weight": load("vision_model.post_layernorm.weight"),
        "v.post_ln.bias": load("vision_model.post_layernorm.bias"),
        "q.query_embd": lambda: read("query_tokens").reshape(shape.query_count, -1),
        "q.embd_ln.weight": load("qformer.layernorm.weight"),
        "q.embd_ln.bias": load("qformer.layernorm.bias"),
    }
    for i in range(shape.vit_layers):
        hf, b = f"vision_model.encoder.layers.{i}", f"v.blk.{i}"
        for ours, theirs in (
            ("ln1", "layer_norm1"),
            ("attn_out", "self_attn.projection"),
            ("ln2", "layer_norm2"),
            ("ffn_up", "mlp.fc1"),
            ("ffn_down", "mlp.fc2"),
        ):
            sources[f"{b}.{ours}.weight"] = load(f"{hf}.{theirs}.weight")
            sources[f"{b}.{ours}.bias"] = load(f"{hf}.{theirs}.bias")
        sources[f"{b}.attn_qkv.weight"] = load(f"{hf}.self_attn.qkv.weight")
        sources[f"{b}.attn_qkv.bias"] = qkv_bias(f"{hf}.self_attn")
    for i in range(shape.qformer_layers):
        hf, b = f"qformer.encoder.layer.{i}", f"q.blk.{i}"
        parts = (
            [("attn", "attention"), ("cross", "crossattention")]
            if shape.has_cross_attention(i)
            else [("attn", "attention")]
        )
        for ours, theirs in parts:
            for projection in ("q", "k", "v"):
                hf_name = {"q": "query", "k": "key", "v": "value"}[projection]
                for kind in ("weight", "bias"):
                    sources[f"{b}.{ours}_{projection}.{kind}"] = load(f"{hf}.{theirs}.attention.{hf_name}.{kind}")
            for kind in ("weight", "bias"):
                sources[f"{b}.{ours}_out.{kind}"] = load(f"{hf}.{theirs}.output.dense.{kind}")
                sources[f"{b}.{ours}_ln.{kind}"] = load(f"{hf}.{theirs}.output.LayerNorm.{kind}")
        for kind in ("weight", "bias"):
            sources[f"{b}.ffn_up.{kind}"] = load(f"{hf}.intermediate_query.dense.{kind}")
            sources[f"{b}.ffn_down.{kind}"] = load(f"{hf}.output_query.dense.{kind}")
            sources[f"{b}.ffn_ln.{kind}"] = load(f"{hf}.output_query.LayerNorm.{kind}")
    return sources


def convert_vision(
    blip2_dir: str | os.PathLike[str],
    projection: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    provenance: dict[str, dict[str, str]] | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Writes MiniGPT-4's vision side (BLIP-2 in ``blip2_dir``, ``llama_proj`` in ``projection``) to ``out_path``.

    ``provenance`` maps a part ("vision", "projection") to its {"repo", "revision"}, stored in the file.
    Raises ConversionError (one line) and ConversionCancelled when ``cancel`` is set.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    proj_weight, proj_bias = _read_projection(Path(projection))
    with _vision_checkpoint(Path(blip2_dir)) as checkpoint:
        shape = _shape(checkpoint, proj_weight.shape[0])
        if proj_weight.shape[1] != shape.qformer_width:
            raise ConversionError(
                f"{Path(projection).name}: llama_proj takes {proj_weight.shape[1]} inputs but the Q-Former gives "
                f"{shape.qformer_width}; the projection belongs to another model"
            )
        read = _Reader(checkpoint)
        sources = _sources(read, shape)
        sources["proj.weight"] = lambda: proj_weight
        sources["proj.bias"] = lambda: proj_bias
        with written_atomically(out_path) as partial:
            _write(partial, shape, sources, read.release, provenance or {}, progress, cancel)
    return out_path


def _write(
    path: Path,
    shape: VisionShape,
    sources: dict[str, Callable[[], np.ndarray]],
    release: Callable[[], None],
    provenance: dict[str, dict[str, str]],
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> None:
    shapes = shape.tensor_shapes()
    dtypes = {name: VisionShape.stored_dtype(name, tensor_shape) for name, tensor_shape in shapes.items()}
    total = sum(math.prod(s) * dtypes[name].itemsize for name, s in shapes.items())
    writer = gguf.GGUFWriter(path, VisionShape.ARCH)
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name("MiniGPT-4 vision encoder")
        shape.write(writer)
        for part, source in sorted(provenance.items()):
            for field in ("repo", "revision"):
                if source.get(field):
                    writer.add_string(f"zootui.source.{part}.{field}", source[field])
        writer.add_string("zootui.converter.version", __version__)
        for name, tensor_shape in shapes.items():
            writer.add_tensor_info(name, tensor_shape, dtypes[name], math.prod(tensor_shape) * dtypes[name].itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        done = 0
        for name, tensor_shape in shapes.items():
            if cancel is not None and cancel.is_set():
                raise ConversionCancelled()
            values = np.asarray(sources[name]())
            if values.shape != tensor_shape:
                raise ConversionError(
                    f"tensor for {name} has shape {values.shape}, expected {tensor_shape}; the checkpoint does not match"
                )
            writer.write_tensor_data(np.ascontiguousarray(values, dtype=dtypes[name]))
            release()  # the checkpoint's pages of this tensor leave the resident set
            done += values.size * dtypes[name].itemsize
            if progress is not None:
                progress(Progress(done, total, name, "convert"))
    finally:
        writer.close()
