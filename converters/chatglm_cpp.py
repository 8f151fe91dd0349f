"""ChatGLM-6B (GLM v1: THUDM/chatglm-6b and its -int8/-int4 repos) -> chatglm.cpp's model file, without torch.

llama.cpp has no graph for GLM v1 (2D rotary positions, DeepNorm-scaled post-LayerNorm residuals, GELU,
a prefix-LM mask); chatglm.cpp (PyPI ``chatglm-cpp``) has one. Its file, as its own
``chatglm_cpp/convert.py`` (0.4.2) writes it: the magic ``ggml``; int32 model type (1, ChatGLM) and
config version (2); the config record (int32 ggml type, vocab size, hidden size, heads, key-value heads,
layers, intermediate size; float32 LayerNorm epsilon; int32 prefix tokens; float32 rotary base; int32
max length, eos id, pad id); int32 length and the bytes of the SentencePiece model (``ice_text.model``);
then each tensor as int32 name length, name, int32 dimension count, int32 dimensions (PyTorch order),
int32 ggml type, zero padding to a 16-byte boundary and the data, to the end of the file.

Matrices are written in the chosen type, norms and biases in float32. Quantized blocks come from ggml's
own quantizer (``ggml.quantize_rows``): chatglm.cpp's vendored ggml has the block layouts and
dequantizers of q4_0, q4_1, q5_0, q5_1 and q8_0 the pinned llama.cpp has (compared line by line). The
-int8/-int4 repos store their linear weights as int8 with a per-row ``weight_scale`` (int4: two values
per byte, high nibble first); they are widened to float32 first, as chatglm.cpp's converter does.

chatglm.cpp scales the residuals by sqrt(2 * 28) whatever the config says, so only 28-block models (the
real ChatGLM-6B) convert into the model they are.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from .chatglm_cpp_file import CHATGLM_CPP_MAGIC
from .checkpoint import Checkpoint, bf16_to_f32, open_checkpoint
from .errors import ConversionCancelled, ConversionError
from .files import written_atomically
from .ggml import f16_to_f32, quantize_rows
from .jsonfile import LARGE_JSON_BYTES, read_bounded
from .progress import Progress, ProgressCallback
from .sizes import human_size
from .tokenizer import read_sentencepiece

MODEL_TYPE_CHATGLM = 1
CONFIG_VERSION = 2
ALIGNMENT = 16
DEEPNORM_LAYERS = 28  # chatglm.cpp's GLMBlock: alpha = sqrt(2 * 28)
ROPE_THETA = 10000.0
TOKENIZER_FILE = "ice_text.model"
Q = gguf.GGMLQuantizationType
CHATGLM_CPP_OUTTYPES: dict[str, gguf.GGMLQuantizationType] = {
    "f32": Q.F32,
    "f16": Q.F16,
    "q8_0": Q.Q8_0,
    "q5_1": Q.Q5_1,
    "q5_0": Q.Q5_0,
    "q4_1": Q.Q4_1,
    "q4_0": Q.Q4_0,
}
"""Types chatglm.cpp loads a ChatGLM-6B in (every matrix in the one type its config record names)."""
DEFAULT_OUTTYPE = "q4_0"  # chatglm.cpp has no k-quants
SPECIAL_PIECES = ("[MASK]", "[gMASK]", "<sop>", "<eop>")  # chatglm.cpp looks these up by text
_CHUNK_BYTES = 8 * 2**20
_SPACE_MARGIN = 64 * 2**20
_BLOCK = "transformer.layers.{}."


@dataclass(frozen=True)
class _Config:
    vocab_size: int
    hidden_size: int
    num_heads: int
    num_layers: int
    inner_hidden_size: int
    layernorm_epsilon: float
    max_sequence_length: int
    eos_token_id: int
    pad_token_id: int
    quantization_bit: int


def _int(config: dict, key: str, default: int | None = None, minimum: int = 1) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value < 2**31:
        raise ConversionError(
            f"config.json: {key} must be a whole number of at least {minimum}, not {value!r}; fix config.json"
        )
    return value


def is_glm_v1(config: dict) -> bool:
    """Whether config.json is ChatGLM-6B's (GLM v1: 2D positions), which only chatglm.cpp runs."""
    return bool(config.get("position_encoding_2d"))


def read_glm_config(config: dict) -> _Config:
    """The ChatGLM-6B config, holding what chatglm.cpp's GLM v1 graph computes; one line for anything else."""
    if not is_glm_v1(config):
        raise ConversionError(
            "config.json: position_encoding_2d is not true, so this is no ChatGLM-6B (GLM v1); ChatGLM2/3 convert to GGUF"
        )
    epsilon = config.get("layernorm_epsilon", 1e-5)
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not 0 < epsilon < 1:
        raise ConversionError(f"config.json: layernorm_epsilon must be a small positive number, not {epsilon!r}")
    glm = _Config(
        vocab_size=_int(config, "vocab_size"),
        hidden_size=_int(config, "hidden_size"),
        num_heads=_int(config, "num_attention_heads"),
        num_layers=_int(config, "num_layers"),
        inner_hidden_size=_int(config, "inner_hidden_size"),
        layernorm_epsilon=float(epsilon),
        max_sequence_length=_int(config, "max_sequence_length", 2048),
        eos_token_id=_int(config, "eos_token_id", minimum=0),
        pad_token_id=_int(config, "pad_token_id", minimum=0),
        quantization_bit=_int(config, "quantization_bit", 0, minimum=0),
    )
    if glm.num_layers != DEEPNORM_LAYERS:
        raise ConversionError(
            f"config.json: num_layers is {glm.num_layers}; chatglm.cpp scales the residuals for {DEEPNORM_LAYERS} blocks"
            " (ChatGLM-6B's), so this model would run wrong"
        )
    if glm.inner_hidden_size != 4 * glm.hidden_size:
        raise ConversionError(
            f"config.json: inner_hidden_size {glm.inner_hidden_size} is not 4 × hidden_size {glm.hidden_size};"
            " chatglm.cpp's GLM v1 graph needs it to be"
        )
    if glm.hidden_size % (4 * glm.num_heads):
        raise ConversionError(
            f"config.json: hidden_size {glm.hidden_size} does not split into {glm.num_heads} heads with two rotary"
            " halves of whole pairs; fix config.json"
        )
    if glm.quantization_bit not in (0, 4, 8):
        raise ConversionError(f"config.json: quantization_bit is {glm.quantization_bit}; ChatGLM-6B ships 0, 4 or 8")
    return glm


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        block, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape) // block * type_size


def _plan(glm: _Config, target: gguf.GGMLQuantizationType) -> list[_Tensor]:
    """chatglm.cpp's state dict for ChatGLM-6B, in its order, with the shape each tensor must have."""
    h, ff = glm.hidden_size, glm.inner_hidden_size
    vector = Q.F32
    tensors = [_Tensor("transformer.word_embeddings.weight", (glm.vocab_size, h), target)]
    for i in range(glm.num_layers):
        block = _BLOCK.format(i)
        tensors += [
            _Tensor(block + "input_layernorm.weight", (h,), vector),
            _Tensor(block + "input_layernorm.bias", (h,), vector),
            _Tensor(block + "attention.query_key_value.weight", (3 * h, h), target),
            _Tensor(block + "attention.query_key_value.bias", (3 * h,), vector),
            _Tensor(block + "attention.dense.weight", (h, h), target),
            _Tensor(block + "attention.dense.bias", (h,), vector),
            _Tensor(block + "post_attention_layernorm.weight", (h,), vector),
            _Tensor(block + "post_attention_layernorm.bias", (h,), vector),
            _Tensor(block + "mlp.dense_h_to_4h.weight", (ff, h), target),
            _Tensor(block + "mlp.dense_h_to_4h.bias", (ff,), vector),
            _Tensor(block + "mlp.dense_4h_to_h.weight", (h, ff), target),
            _Tensor(block + "mlp.dense_4h_to_h.bias", (h,), vector),
        ]
    tensors += [
        _Tensor("transformer.final_layernorm.weight", (h,), vector),
        _Tensor("transformer.final_layernorm.bias", (h,), vector),
    ]
    return tensors


class _Rows:
    """A checkpoint tensor read a slice of rows at a time as float32, widening the -int8/-int4 repos' weights."""

    def __init__(self, checkpoint: Checkpoint, tensor: _Tensor, quantization_bit: int) -> None:
        self.checkpoint = checkpoint
        self.tensor = tensor
        name = tensor.name
        if name not in checkpoint.names():
            raise ConversionError(f"the checkpoint lacks {name}; a shard is missing or truncated, re-download it")
        info = checkpoint.info(name)
        self.raw = checkpoint.load_raw(name)
        self.is_bf16 = info.is_bf16
        self.scale = None
        if info.dtype == np.int8 and len(tensor.shape) == 2:  # a QuantizedLinear's weight
            scale_name = name + "_scale"
            if quantization_bit not in (4, 8) or scale_name not in checkpoint.names():
                raise ConversionError(
                    f"{name} is int8 but config.json's quantization_bit is {quantization_bit} or {scale_name} is missing;"
                    " the checkpoint is not a ChatGLM-6B int8/int4 release"
                )
            self.scale = checkpoint.load(scale_name)
            self.unpack = quantization_bit == 4
            stored = (tensor.shape[0], tensor.shape[1] // 2) if self.unpack else tensor.shape
            if self.raw.shape != stored or self.scale.shape != (tensor.shape[0],):
                raise ConversionError(
                    f"shape mismatch: {name} is {list(self.raw.shape)} with {len(self.scale)} scales,"
                    f" config.json implies {list(stored)}; the weights and config.json disagree"
                )
        elif info.dtype.kind != "f" or info.shape != tensor.shape:
            raise ConversionError(
                f"{name} is {info.dtype.name} {list(info.shape)}, config.json implies a float tensor of"
                f" {list(tensor.shape)}; the weights and config.json disagree"
            )

    def rows(self, start: int, stop: int) -> np.ndarray:
        raw = self.raw[start:stop]
        if self.scale is not None:
            quantized = raw.astype(np.int8)
            if self.unpack:  # two signed 4-bit values per byte, the high nibble first
                high = quantized >> 4
                low = (quantized << 4).astype(np.int8) >> 4
                quantized = np.stack((high, low), axis=-1).reshape(raw.shape[0], -1)
            return quantized.astype(np.float32) * self.scale[start:stop, None].astype(np.float32)
        if self.is_bf16:
            return bf16_to_f32(raw)
        if raw.dtype == np.float16:
            return f16_to_f32(raw)
        return raw.astype(np.float32)


def _encode(values: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    if qtype == Q.F32:
        return values
    if qtype == Q.F16:
        return values.astype(np.float16)
    return quantize_rows(values, qtype)


def _check_tied_head(checkpoint: Checkpoint) -> None:
    """chatglm.cpp computes the logits with the word embeddings: a separate lm_head must equal them."""
    head, embeddings = "lm_head.weight", "transformer.word_embeddings.weight"
    if head not in checkpoint.names() or embeddings not in checkpoint.names():
        return
    a, b = checkpoint.load_raw(head), checkpoint.load_raw(embeddings)
    step = max(1, _CHUNK_BYTES // max(1, a.nbytes // max(len(a), 1)))
    if a.shape != b.shape or any(not np.array_equal(a[i : i + step], b[i : i + step]) for i in range(0, len(a), step)):
        raise ConversionError(
            "lm_head.weight differs from transformer.word_embeddings.weight; chatglm.cpp ties them, as ChatGLM-6B does"
        )


def _tokenizer_bytes(directory: Path, glm: _Config) -> bytes:
    path = directory / TOKENIZER_FILE
    if not path.is_file():
        raise ConversionError(f"{directory} has no {TOKENIZER_FILE}; download the tokenizer with the weights")
    model = read_sentencepiece(path)  # one line if it is not a SentencePiece model
    missing = [piece for piece in SPECIAL_PIECES if piece not in model.pieces]
    if missing:
        raise ConversionError(f"{path} has no {missing[0]} piece; it is not ChatGLM-6B's tokenizer")
    eop = model.pieces.index("<eop>")
    if glm.eos_token_id != eop:
        raise ConversionError(
            f"config.json: eos_token_id is {glm.eos_token_id}, but <eop> is {eop} in {TOKENIZER_FILE};"
            " the tokenizer does not belong to this config"
        )
    if len(model.pieces) > glm.vocab_size:
        raise ConversionError(
            f"{TOKENIZER_FILE} has {len(model.pieces)} pieces, more than the {glm.vocab_size} rows of the embedding"
        )
    return read_bounded(path, LARGE_JSON_BYTES)


def convert_chatglm(
    src_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    outtype: str = "q4_0",
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Writes chatglm.cpp's model file for the ChatGLM-6B checkpoint in `src_dir` at `out_path`.

    `outtype` is one of CHATGLM_CPP_OUTTYPES. Raises ConversionError (one line) and ConversionCancelled.
    """
    outtype = outtype.lower()
    if outtype not in CHATGLM_CPP_OUTTYPES:
        raise ConversionError(
            f"chatglm.cpp cannot run type {outtype!r}; choose one of {', '.join(CHATGLM_CPP_OUTTYPES)}"
        )
    target = CHATGLM_CPP_OUTTYPES[outtype]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open_checkpoint(src_dir) as checkpoint:
        glm = read_glm_config(checkpoint.config)
        block, _ = gguf.GGML_QUANT_SIZES[target]
        if glm.hidden_size % block:
            raise ConversionError(
                f"hidden_size {glm.hidden_size} is not a multiple of {outtype}'s {block}-value blocks"
            )
        proto = _tokenizer_bytes(checkpoint.directory, glm)
        _check_tied_head(checkpoint)
        tensors = _plan(glm, target)
        readers = [_Rows(checkpoint, t, glm.quantization_bit) for t in tensors]
        total = sum(t.nbytes for t in tensors)
        free = shutil.disk_usage(out_path.parent).free
        if free < total + _SPACE_MARGIN:
            raise ConversionError(
                f"not enough disk space in {out_path.parent}: need {human_size(total + _SPACE_MARGIN)},"
                f" {human_size(free)} free; free some space or choose another place"
            )
        with written_atomically(out_path) as partial, open(partial, "wb") as out:
            out.write(CHATGLM_CPP_MAGIC + struct.pack("<ii", MODEL_TYPE_CHATGLM, CONFIG_VERSION))
            out.write(
                struct.pack(
                    "<iiiiiiififiii",
                    int(target),
                    glm.vocab_size,
                    glm.hidden_size,
                    glm.num_heads,
                    glm.num_heads,  # key-value heads: GLM v1 has full multi-head attention
                    glm.num_layers,
                    glm.inner_hidden_size,
                    glm.layernorm_epsilon,
                    0,  # prefix (P-tuning v2) tokens
                    ROPE_THETA,
                    glm.max_sequence_length,
                    glm.eos_token_id,
                    glm.pad_token_id,
                )
            )
            out.write(struct.pack("<i", len(proto)) + proto)
            done = 0
            for tensor, reader in zip(tensors, readers, strict=True):
                name = tensor.name.encode()
                out.write(struct.pack("<i", len(name)) + name)
                out.write(struct.pack(f"<i{len(tensor.shape)}ii", len(tensor.shape), *tensor.shape, int(tensor.qtype)))
                out.write(b"\0" * (-out.tell() % ALIGNMENT))
                rows = tensor.shape[0] if len(tensor.shape) == 2 else 1
                row_bytes = tensor.nbytes // rows
                step = max(1, _CHUNK_BYTES // row_bytes)
                for start in range(0, rows, step):
                    if cancel is not None and cancel.is_set():
                        raise ConversionCancelled()
                    values = reader.rows(start, start + step) if rows > 1 else reader.rows(0, tensor.shape[0])
                    # chatglm.cpp's binding shows no logits, so the smoke test cannot see damaged weights: they stop here.
                    if not np.isfinite(values).all():
                        raise ConversionError(
                            f"{tensor.name} holds NaN or inf; the checkpoint is damaged: download it again"
                        )
                    out.write(np.ascontiguousarray(_encode(values, tensor.qtype)).data)
                    checkpoint.release(tensor.name)
                    done += min(step, rows - start) * row_bytes
                    if progress is not None:
                        progress(Progress(done, total, tensor.name, "convert"))
    return out_path
