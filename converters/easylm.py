"""EasyLM's streaming checkpoints (Koala's released diffs): every array memory-mapped, none copied.

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

msgpack's unpacker would hand each array over as Python bytes, copied from its buffer two or three
times over: for Koala's 300 MB embeddings that is a gigabyte at a time. So msgpack parses the small
parts of a record (the key, the shape and the dtype, each from a bounded window), the three bin and
extension headers around the array bytes are read here (a marker byte and a big-endian length), and
the array itself is a read-only view of the memory-mapped file. Every length is checked against
the file before it is used, and any malformed input ends in one ``ConversionError`` line naming the
file, the record and its byte offset.
"""

from __future__ import annotations

import math
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np

from .errors import ConversionError

_NDARRAY_EXT = 1  # flax's msgpack extension code for numpy arrays
_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": np.dtype(np.uint16)}
_MAX_KEY_PARTS = 16
_MAX_KEY_PART_CHARS = 256
_MAX_DIMS = 8
_MAX_DTYPE_CHARS = 16
_WINDOW = 2**13  # bytes msgpack is given to parse a record's key (16 parts of 256 at most), or a shape and dtype
# msgpack markers of the containers around the array bytes -> (length bytes, fixed payload length).
_BIN = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0)}
_EXT = {0xC7: (1, 0), 0xC8: (2, 0), 0xC9: (4, 0), 0xD4: (0, 1), 0xD5: (0, 2), 0xD6: (0, 4), 0xD7: (0, 8), 0xD8: (0, 16)}
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


@dataclass(frozen=True)
class StoredArray:
    """One array of a streaming checkpoint: where its bytes are in the file, and what they hold."""

    key: str
    """The parameter's path joined with "/"."""
    shape: tuple[int, ...]
    dtype: np.dtype
    """Of the stored elements: bfloat16 is kept as its uint16 bit patterns (numpy has no bfloat16)."""
    is_bf16: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class StreamingCheckpoint:
    """An EasyLM streaming checkpoint file, read record by record. A context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stream = self.path.open("rb")
        self.size = os.fstat(self._stream.fileno()).st_size
        self._map = mmap.mmap(self._stream.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None

    def __enter__(self) -> StreamingCheckpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # an array from load_raw is still alive; the map closes with it
                pass
            self._map = None
        self._stream.close()

    def arrays(self) -> Iterator[StoredArray]:
        """Every record's array, in file order (headers only: no array data is read)."""
        position, index = 0, 0
        while position < self.size:
            stored, position = self._record(position, index)
            yield stored
            index += 1

    def load_raw(self, stored: StoredArray) -> np.ndarray:
        """The stored elements as a read-only view of the mapped file (bfloat16 as uint16 bit patterns)."""
        if stored.nbytes == 0:
            return np.empty(stored.shape, stored.dtype)
        assert self._map is not None
        return np.frombuffer(self._map, stored.dtype, math.prod(stored.shape), stored.offset).reshape(stored.shape)

    def release(self, stored: StoredArray) -> None:
        """Drops the array's pages from this process's resident set; they stay in the OS page cache."""
        if self._map is None or stored.nbytes == 0:
            return
        aligned = stored.offset - stored.offset % mmap.PAGESIZE
        self._map.madvise(mmap.MADV_DONTNEED, aligned, stored.offset + stored.nbytes - aligned)

    # --- parsing ------------------------------------------------------------------------------------

    def _record(self, position: int, index: int) -> tuple[StoredArray, int]:
        """The record at ``position`` and the position of the next one."""
        where = f"{self.path.name}: record {index} at byte {position}"
        unpacker = self._window(position, where, max_array_len=_MAX_KEY_PARTS, max_str_len=_MAX_KEY_PART_CHARS)
        try:
            if unpacker.read_array_header() != 2:
                raise ConversionError(f"{where} is not a [key, array] pair; not an EasyLM streaming checkpoint")
            parts = unpacker.unpack()
        except _MSGPACK_ERRORS as error:
            raise self._unpack_error(error, where, position) from None
        if not (isinstance(parts, list) and parts and all(isinstance(p, bytes) and p for p in parts)):
            raise ConversionError(f"{where} has no parameter path of strings for its key")
        try:
            key = "/".join(p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            raise ConversionError(f"{where} has a key that is not UTF-8") from None
        where = f"{self.path.name}: {key} (record {index} at byte {position})"
        value_start, value_length, _ = self._header(position + unpacker.tell(), _BIN, where, "the array bytes")
        end = value_start + value_length
        ext_start, ext_length, code = self._header(value_start, _EXT, where, "a flax ndarray", limit=end)
        if code != _NDARRAY_EXT:
            raise ConversionError(f"{where} holds msgpack extension type {code}, not a flax ndarray (type 1)")
        if ext_start + ext_length != end:
            raise ConversionError(f"{where}: its array does not fill its record; the file is damaged")
        unpacker = self._window(ext_start, where, max_array_len=_MAX_DIMS, max_str_len=_MAX_DTYPE_CHARS, limit=end)
        try:
            if unpacker.read_array_header() != 3:
                raise ConversionError(f"{where}: its array is not [shape, dtype, bytes] as flax writes it")
            shape, dtype_name = unpacker.unpack(), unpacker.unpack()
        except _MSGPACK_ERRORS as error:
            raise self._unpack_error(error, where, ext_start, end) from None
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise ConversionError(f"{where}: its shape {shape!r} is not a list of sizes")
        name = dtype_name.decode("ascii", "replace") if isinstance(dtype_name, bytes) else ""
        if name not in _DTYPES:
            raise ConversionError(f"{where} has dtype {dtype_name!r}; only float32, float16 and bfloat16 are expected")
        data_start, data_length, _ = self._header(ext_start + unpacker.tell(), _BIN, where, "the array bytes", end)
        stored = StoredArray(key, tuple(shape), _DTYPES[name], name == "bfloat16", data_start)
        if data_start + data_length != end or stored.nbytes != data_length:
            raise ConversionError(
                f"{where} has {data_length} bytes for shape {shape} of {name} ({stored.nbytes} expected); the file is damaged"
            )
        return stored, end

    def _window(self, start: int, where: str, *, max_array_len: int, max_str_len: int, limit: int | None = None):
        """A msgpack unpacker over at most _WINDOW bytes from ``start``, limited to small arrays and strings."""
        assert self._map is not None
        unpacker = msgpack.Unpacker(
            raw=True,
            max_buffer_size=_WINDOW,
            max_array_len=max_array_len,
            max_str_len=max_str_len,
            max_bin_len=0,
            max_map_len=0,
            max_ext_len=0,
        )
        unpacker.feed(self._map[start : min(start + _WINDOW, self.size if limit is None else limit)])
        return unpacker

    def _unpack_error(self, error: Exception, where: str, start: int, limit: int | None = None) -> ConversionError:
        if isinstance(error, msgpack.OutOfData):
            if start + _WINDOW >= (self.size if limit is None else limit):
                return ConversionError(f"{where}: it ends inside its header; the file is truncated or damaged")
            return ConversionError(f"{where}: its header is longer than {_WINDOW} bytes; not an EasyLM checkpoint")
        return ConversionError(
            f"{where} is not valid msgpack ({_describe(error)}); the file is damaged or not an EasyLM streaming checkpoint"
        )

    def _header(
        self, at: int, kinds: dict[int, tuple[int, int]], where: str, what: str, limit: int | None = None
    ) -> tuple[int, int, int | None]:
        """(payload start, payload length, extension type or None) of the bin or extension header at ``at``."""
        assert self._map is not None
        end = self.size if limit is None else limit
        if at >= end:
            raise ConversionError(f"{where}: the file ends before {what}; it is truncated, re-download it")
        marker = self._map[at]
        if marker not in kinds:
            raise ConversionError(f"{where}: byte {at} should start {what} but is 0x{marker:02x}; the file is damaged")
        length_bytes, fixed = kinds[marker]
        type_bytes = 1 if kinds is _EXT else 0
        payload = at + 1 + length_bytes + type_bytes
        if payload > end:
            raise ConversionError(f"{where}: the file ends inside the header of {what}; it is truncated")
        length = fixed if length_bytes == 0 else int.from_bytes(self._map[at + 1 : at + 1 + length_bytes], "big")
        code = self._map[payload - 1] if type_bytes else None
        if payload + length > end:
            raise ConversionError(
                f"{where}: {what} claims {length} bytes but only {end - payload} follow; the file is truncated or damaged"
            )
        return payload, length, code


def _describe(error: Exception) -> str:
    """One line for a msgpack error, whose own text may be empty or span lines."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
