"""The metadata and tensor table of a GGUF file, read without its vocabulary.

``gguf.GGUFReader`` turns every element of every array into numpy views: for a 50k-token vocabulary
that takes seconds, which `zootui models` and the browser's fit pane paid per model. This reader
walks the same header with ``struct`` and skips arrays it is not asked about; the format's
constants (value types, tensor block sizes) come from the ``gguf`` package.

A GGUF in the models folder may come from anywhere, so every count and length is held against the
bytes left in the file before anything is read or looped over: work is bounded by the file's
size, nested arrays are skipped without recursion (to a bounded depth), and every problem is a
`GGUFHeaderError` (a ValueError) whose one line names the file.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
# Smallest encoding of one item of each kind: a string is its 8-byte length, an array its type and count.
_MIN_ITEM_BYTES = {_STRING: 8, _ARRAY: 12, **{t: struct.calcsize("<" + f) for t, f in _SCALARS.items()}}
MAX_ARRAY_NESTING = 8  # llama.cpp's own files nest none; the format allows arrays of arrays
GGML_MAX_DIMS = 4
MAX_KEY_BYTES = 65535  # the format's limit on a key's length
_TENSOR_INFO_MIN_BYTES = 8 + 4 + 4 + 8  # name length, dimension count, type, offset
DEFAULT_ALIGNMENT = 32


class GGUFHeaderError(ValueError):
    """The file is not a GGUF zootui can read; the message is one line naming it (whatever keys it quotes)."""

    def __init__(self, message: str) -> None:
        from converters import one_line

        super().__init__(one_line(message))


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    n_bytes: int


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, Any]
    """Every key with a scalar or string value, and the string arrays asked for; other arrays are left out."""
    tensors: tuple[TensorEntry, ...]


class _Corrupt(Exception):
    pass


class _Cursor:
    def __init__(self, data: mmap.mmap):
        self.data = data
        self.offset = 0

    def take(self, size: int) -> int:
        """Advances past size bytes and returns where they start; refuses to pass the end of the file."""
        if size > len(self.data) - self.offset:
            raise _Corrupt(f"{size} bytes claimed at offset {self.offset}, past the end of the file")
        start, self.offset = self.offset, self.offset + size
        return start

    def unpack(self, fmt: str) -> Any:
        return struct.unpack_from("<" + fmt, self.data, self.take(struct.calcsize("<" + fmt)))[0]

    def count(self, item_type: int, what: str) -> int:
        """A count of items of item_type, which must fit in the bytes left."""
        count = self.unpack("Q")
        if item_type not in _MIN_ITEM_BYTES:
            raise _Corrupt(f"{what} has unknown value type {item_type}")
        if count * _MIN_ITEM_BYTES[item_type] > len(self.data) - self.offset:
            raise _Corrupt(f"{what} claims {count} items, more than the file holds")
        return count

    def string(self, limit: int | None = None) -> str:
        length = self.unpack("Q")
        if limit is not None and length > limit:
            raise _Corrupt(f"a key of {length} bytes, more than the format allows")
        start = self.take(length)
        return self.data[start : start + length].decode("utf-8", "replace")

    def string_array(self, key: str) -> list[str]:
        item_type = self.unpack("I")
        if item_type != _STRING:
            raise _Corrupt(f"{key} is an array of type {item_type}, not of strings")
        return [self.string() for _ in range(self.count(_STRING, key))]

    def skip_array(self) -> None:
        """Skips an array value (its type and count come next), arrays of arrays included, without recursion."""
        pending = [(self.unpack("I"), None, 1)]  # (item type, items left or None before the count is read, depth)
        while pending:
            item_type, left, depth = pending.pop()
            if left is None:
                left = self.count(item_type, "an array")
            if item_type == _ARRAY:
                if left:
                    if depth >= MAX_ARRAY_NESTING:
                        raise _Corrupt(f"arrays nested more than {MAX_ARRAY_NESTING} deep")
                    pending.append((_ARRAY, left - 1, depth))
                    pending.append((self.unpack("I"), None, depth + 1))
            elif item_type == _STRING:
                for _ in range(left):
                    self.take(self.unpack("Q"))
            else:
                self.take(_MIN_ITEM_BYTES[item_type] * left)


@contextmanager
def _opened(path: Path) -> Iterator[_Cursor]:
    """A cursor just past the version of the GGUF at path; GGUFHeaderError if it is not one or is cut short."""
    if path.stat().st_size < len(GGUF_MAGIC):
        raise GGUFHeaderError(f"{path.name} is not a GGUF file (it is nearly empty)")
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != GGUF_MAGIC:
            raise GGUFHeaderError(f"{path.name} is not a GGUF file")
        cursor = _Cursor(data)
        try:
            cursor.offset = 4
            version = cursor.unpack("I")
            if version not in SUPPORTED_VERSIONS:
                raise GGUFHeaderError(f"{path.name}: GGUF version {version} is not supported")
            yield cursor
        except (_Corrupt, struct.error) as error:
            raise GGUFHeaderError(f"{path.name}: truncated or corrupt GGUF header ({error})") from None


def _read_metadata(cursor: _Cursor, until: str | None = None, string_arrays: Collection[str] = ()) -> dict[str, Any]:
    """The scalar and string keys and the string arrays named, reading no further than the key ``until`` when given."""
    metadata: dict[str, Any] = {}
    for _ in range(cursor.count(_STRING, "the metadata")):
        key, value_type = cursor.string(MAX_KEY_BYTES), cursor.unpack("I")
        if value_type == _STRING:
            metadata[key] = cursor.string()
        elif value_type in _SCALARS:
            metadata[key] = cursor.unpack(_SCALARS[value_type])
        elif value_type == _ARRAY and key in string_arrays:
            metadata[key] = cursor.string_array(key)
        elif value_type == _ARRAY:
            cursor.skip_array()
        else:
            raise _Corrupt(f"key {key} has unknown value type {value_type}")
        if key == until:
            break
    return metadata


def read_architecture(path: Path) -> str | None:
    """``general.architecture`` of the GGUF at path (usually its first key, so only that much is read)."""
    with _opened(path) as cursor:
        cursor.unpack("Q")  # the tensor count
        architecture = _read_metadata(cursor, until="general.architecture").get("general.architecture")
    return architecture if isinstance(architecture, str) else None


# llama.cpp's architectures with an encoder and a decoder (t5encoder has no decoder to chat with).
ENCODER_DECODER_ARCHITECTURES = ("t5",)


def is_encoder_decoder(path: Path) -> bool:
    """Whether the GGUF at path needs the encoder step (known before loading it); False if it is no GGUF."""
    try:
        return read_architecture(path) in ENCODER_DECODER_ARCHITECTURES
    except (OSError, ValueError):
        return False  # loading it reports the problem


def read_header(path: Path, string_arrays: Collection[str] = ()) -> GGUFHeader:
    """The scalar metadata and the tensor table of the GGUF at path; GGUFHeaderError if it is not one.

    Arrays are skipped, except the arrays of strings named in `string_arrays` (the vocabulary,
    ``tokenizer.ggml.tokens``), which are read into the metadata as lists.
    """
    with _opened(path) as cursor:
        n_tensors = cursor.unpack("Q")
        if n_tensors * _TENSOR_INFO_MIN_BYTES > len(cursor.data):
            raise _Corrupt(f"{n_tensors} tensors claimed, more than the file holds")
        metadata = _read_metadata(cursor, string_arrays=string_arrays)
        infos = []
        for _ in range(n_tensors):
            name = cursor.string()
            n_dims = cursor.unpack("I")
            if n_dims > GGML_MAX_DIMS:
                raise _Corrupt(f"tensor {name} has {n_dims} dimensions")
            shape = tuple(cursor.unpack("Q") for _ in range(n_dims))
            infos.append((name, shape, cursor.unpack("I"), cursor.unpack("Q")))
        tensors = _tensor_entries(infos, metadata, cursor.offset, len(cursor.data))
    return GGUFHeader(metadata, tensors)


def _tensor_entries(infos, metadata, header_end: int, file_size: int) -> tuple[TensorEntry, ...]:
    """Tensor sizes from the tensor table; each tensor's data must lie inside the file."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment is {alignment!r}, not a power of two")
    data_start = -(-header_end // alignment) * alignment
    tensors = []
    for name, shape, type_id, offset in infos:
        try:
            block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
        except (ValueError, KeyError):
            raise _Corrupt(f"tensor {name} has unknown type {type_id}") from None
        elements = 1
        for dimension in shape:
            elements *= dimension
        n_bytes = elements // block_size * type_size
        if data_start + offset + n_bytes > file_size:
            raise _Corrupt(f"tensor {name} lies past the end of the file")
        tensors.append(TensorEntry(name, shape, n_bytes))
    return tuple(tensors)
