"""EasyLM's streaming checkpoints (Koala's released diffs), read one tensor at a time.

The layout, from EasyLM's ``StreamingCheckpointer.save_train_state_to_file``: the file is a
sequence of msgpack arrays ``[key, value]``, one per parameter, with nothing around them.
``key`` is the parameter's path in the flax tree as an array of strings
(``["transformer", "h", "0", "attention", "wq", "kernel"]``). ``value`` is a msgpack bin holding
flax's ``to_bytes`` of one array: msgpack extension type 1 (ndarray), whose data is itself a
msgpack array ``[shape, dtype name, C-order bytes]``. Arrays are float32, float16 or bfloat16
(EasyLM's default when saving).

For LLaMA, a flax ``Dense`` kernel is the transposed PyTorch ``Linear`` weight (in, out), and
``wq``/``wk`` keep Meta's interleaved rotary layout: each head's rows are pairs (2i, 2i+1) that
rotate together, where Hugging Face's LLaMA stores the halves (i, i + head_dim/2).

Everything is validated as it is read: every length is bounded before anything is allocated for
it, and any malformed input ends in one ``ConversionError`` line naming the file and the record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np

from .checkpoint import bf16_to_f32
from .errors import ConversionError

_NDARRAY_EXT = 1  # flax's msgpack extension code for numpy arrays
_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}
_MAX_KEY_PARTS = 16
_MAX_KEY_PART_CHARS = 256
_MAX_DIMS = 8
_HEADER_SLACK = 2**16  # a record's key and msgpack headers, beside its array bytes
_READ_SIZE = 16 * 2**20
_MSGPACK_ERRORS = (msgpack.UnpackException, ValueError, TypeError)


@dataclass(frozen=True)
class Parameter:
    """One parameter of an EasyLM LLaMA, placed in a Hugging Face LLaMA checkpoint."""

    hf_name: str
    transposed: bool
    """A flax kernel (in, out): its transpose is the Hugging Face weight."""
    rotary_heads: str | None = None
    """``"q"`` or ``"k"``: rows in Meta's interleaved rotary order, to be permuted for Hugging Face."""


_GLOBAL = {
    "transformer/wte/embedding": Parameter("model.embed_tokens.weight", transposed=False),
    "transformer/ln_f/kernel": Parameter("model.norm.weight", transposed=False),
    "lm_head/kernel": Parameter("lm_head.weight", transposed=True),
}
_BLOCK = {
    "attention/wq/kernel": Parameter("self_attn.q_proj.weight", transposed=True, rotary_heads="q"),
    "attention/wk/kernel": Parameter("self_attn.k_proj.weight", transposed=True, rotary_heads="k"),
    "attention/wv/kernel": Parameter("self_attn.v_proj.weight", transposed=True),
    "attention/wo/kernel": Parameter("self_attn.o_proj.weight", transposed=True),
    "feed_forward/w1/kernel": Parameter("mlp.gate_proj.weight", transposed=True),
    "feed_forward/w2/kernel": Parameter("mlp.down_proj.weight", transposed=True),
    "feed_forward/w3/kernel": Parameter("mlp.up_proj.weight", transposed=True),
    "attention_norm/kernel": Parameter("input_layernorm.weight", transposed=False),
    "ffn_norm/kernel": Parameter("post_attention_layernorm.weight", transposed=False),
}
_BLOCK_KEY = re.compile(r"transformer/h/(?P<layer>0|[1-9][0-9]{0,4})/(?P<rest>.+)")


def llama_parameter(key: str) -> Parameter | None:
    """Where the EasyLM LLaMA parameter at ``key`` ("transformer/h/3/attention/wq/kernel") goes."""
    if key in _GLOBAL:
        return _GLOBAL[key]
    match = _BLOCK_KEY.fullmatch(key)
    if match is None or match["rest"] not in _BLOCK:
        return None
    block = _BLOCK[match["rest"]]
    return Parameter(f"model.layers.{match['layer']}.{block.hf_name}", block.transposed, block.rotary_heads)


def read_streaming_checkpoint(path: Path, max_array_bytes: int) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(key, array)`` for each record of the streaming checkpoint at ``path``, in file order.

    ``key`` joins the path with "/"; bfloat16 arrays come back widened to float32. No record may
    hold more than ``max_array_bytes`` of array data, which bounds the memory a record can take.
    """
    size = path.stat().st_size
    with path.open("rb") as stream:
        unpacker = msgpack.Unpacker(
            stream,
            raw=True,  # keys are decoded (and checked) here; flax's own reader reads raw bytes too
            read_size=min(_READ_SIZE, max_array_bytes + _HEADER_SLACK),
            max_buffer_size=max_array_bytes + _HEADER_SLACK,
            max_bin_len=max_array_bytes + _HEADER_SLACK,
            max_str_len=_MAX_KEY_PART_CHARS,
            max_array_len=_MAX_KEY_PARTS,
            max_map_len=0,
            max_ext_len=0,
        )
        index = 0
        while True:
            start = unpacker.tell()
            try:
                record = unpacker.unpack()
            except msgpack.OutOfData:
                if start == size:
                    return
                raise ConversionError(
                    f"{path.name} is truncated (record {index} at byte {start} of {size}); re-download it"
                ) from None
            except msgpack.BufferFull:
                raise ConversionError(
                    f"{path.name}: record {index} at byte {start} is larger than any tensor of the base model "
                    f"({max_array_bytes} bytes); the diff belongs to a bigger model"
                ) from None
            except _MSGPACK_ERRORS as error:
                raise ConversionError(
                    f"{path.name}: record {index} at byte {start} is not valid msgpack ({_describe(error)}); "
                    "the file is damaged or not an EasyLM streaming checkpoint"
                ) from None
            key = _record_key(path, index, record)
            # Popped and decoded in the yield itself: this frame keeps neither the bytes nor the array
            # while the caller works on it.
            yield key, _decode_array(path, key, record.pop(), max_array_bytes)
            index += 1


def _record_key(path: Path, index: int, record: object) -> str:
    """The parameter path of a ``[key, array bytes]`` record, joined with "/"."""
    if not (isinstance(record, list) and len(record) == 2 and isinstance(record[1], bytes)):
        raise ConversionError(
            f"{path.name}: record {index} is not a [key, array bytes] pair; not an EasyLM streaming checkpoint"
        )
    parts = record[0]
    if not (isinstance(parts, list) and parts and all(isinstance(p, bytes) and p for p in parts)):
        raise ConversionError(f"{path.name}: record {index} has no parameter path of strings for its key")
    try:
        return "/".join(p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise ConversionError(f"{path.name}: record {index} has a key that is not UTF-8") from None


def _decode_array(path: Path, key: str, value: bytes, max_array_bytes: int) -> np.ndarray:
    where = f"{path.name}: {key}"
    try:
        ext = msgpack.unpackb(value, raw=True, max_ext_len=len(value), max_array_len=0, max_map_len=0)
    except _MSGPACK_ERRORS as error:
        raise ConversionError(f"{where} is not a flax array ({_describe(error)}); the file is damaged") from None
    if not isinstance(ext, msgpack.ExtType) or ext.code != _NDARRAY_EXT:
        found = f"extension type {ext.code}" if isinstance(ext, msgpack.ExtType) else type(ext).__name__
        raise ConversionError(f"{where} holds {found}, not a flax ndarray (msgpack extension type 1)")
    try:
        fields = msgpack.unpackb(
            ext.data,
            raw=True,
            max_array_len=_MAX_DIMS,
            max_map_len=0,
            max_ext_len=0,
            max_str_len=16,
            max_bin_len=max_array_bytes,
        )
    except _MSGPACK_ERRORS as error:
        raise ConversionError(f"{where}: its array header is not valid msgpack ({_describe(error)})") from None
    del ext
    if not (isinstance(fields, list) and len(fields) == 3 and isinstance(fields[2], bytes)):
        raise ConversionError(f"{where}: its array is not [shape, dtype, bytes] as flax writes it")
    shape, dtype_name, data = fields
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ConversionError(f"{where}: its shape {shape!r} is not a list of sizes")
    dtype = _DTYPES.get(dtype_name.decode("ascii", "replace") if isinstance(dtype_name, bytes) else "")
    if dtype is None:
        raise ConversionError(f"{where} has dtype {dtype_name!r}; only float32, float16 and bfloat16 are expected")
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(data):
        raise ConversionError(f"{where} has {len(data)} bytes for shape {shape} ({expected} expected); damaged file")
    array = np.frombuffer(data, dtype).reshape(shape)
    return bf16_to_f32(array) if dtype_name == b"bfloat16" else array


def _describe(error: Exception) -> str:
    """One line for a msgpack error, whose own text may be empty or span lines."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
