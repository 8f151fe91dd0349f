"""The metadata and tensor table of a GGUF file, read without its vocabulary.

``gguf.GGUFReader`` turns every element of every array into numpy views: for a 50k-token vocabulary
that takes seconds, which `zootui models` and the browser's fit pane paid per model. This reader
walks the same header with ``struct`` and skips arrays it is not asked about; the format's
constants (value types, tensor block sizes) come from the ``gguf`` package.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    n_bytes: int


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, Any]
    """Every key with a scalar or string value; array-valued keys are left out."""
    tensors: tuple[TensorEntry, ...]


class _Cursor:
    def __init__(self, data: mmap.mmap):
        self.data = data
        self.offset = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.data, self.offset)[0]
        self.offset += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        length = self.unpack("Q")
        text = self.data[self.offset : self.offset + length].decode("utf-8", "replace")
        self.offset += length
        return text

    def skip_value(self, value_type: int) -> None:
        if value_type == _STRING:
            length = self.unpack("Q")
            self.offset += length
        elif value_type == _ARRAY:
            item_type, count = self.unpack("I"), self.unpack("Q")
            if item_type in _SCALARS:
                self.offset += struct.calcsize("<" + _SCALARS[item_type]) * count
            else:
                for _ in range(count):
                    self.skip_value(item_type)
        else:
            self.offset += struct.calcsize("<" + _SCALARS[value_type])


def read_header(path: Path) -> GGUFHeader:
    """The scalar metadata and the tensor table of the GGUF at path; ValueError if it is not one."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if path.stat().st_size < len(GGUF_MAGIC):
        raise ValueError(f"{path.name} is not a GGUF file (it is nearly empty)")
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data)
        try:
            if data[:4] != GGUF_MAGIC:
                raise ValueError(f"{path.name} is not a GGUF file")
            cursor.offset = 4
            version = cursor.unpack("I")
            if version not in SUPPORTED_VERSIONS:
                raise ValueError(f"{path.name}: GGUF version {version} is not supported")
            n_tensors, n_kv = cursor.unpack("Q"), cursor.unpack("Q")
            metadata: dict[str, Any] = {}
            for _ in range(n_kv):
                key, value_type = cursor.string(), cursor.unpack("I")
                if value_type == _STRING:
                    metadata[key] = cursor.string()
                elif value_type in _SCALARS:
                    metadata[key] = cursor.unpack(_SCALARS[value_type])
                else:
                    cursor.skip_value(value_type)
            tensors = []
            for _ in range(n_tensors):
                name = cursor.string()
                shape = tuple(cursor.unpack("Q") for _ in range(cursor.unpack("I")))
                tensor_type = GGMLQuantizationType(cursor.unpack("I"))
                cursor.unpack("Q")  # data offset
                block_size, type_size = GGML_QUANT_SIZES[tensor_type]
                elements = 1
                for dimension in shape:
                    elements *= dimension
                tensors.append(TensorEntry(name, shape, elements // block_size * type_size))
        except (struct.error, KeyError, UnicodeDecodeError) as error:
            raise ValueError(f"{path.name}: truncated or corrupt GGUF header ({error})") from error
    return GGUFHeader(metadata, tuple(tensors))
