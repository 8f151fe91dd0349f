"""Builds GGUF files byte by byte, so tests can write metadata no GGUF writer would (arrays nested 100k deep, lying counts)."""

from __future__ import annotations

import struct

STRING, ARRAY, UINT32, FLOAT32 = 8, 9, 4, 6


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv(key: str, value_type: int, payload: bytes) -> bytes:
    """One metadata entry: its key, its value type, and the value's bytes as the caller encoded them."""
    return string(key) + struct.pack("<I", value_type) + payload


def nested_arrays(depth: int) -> bytes:
    """The payload of an array holding an array holding … an empty uint32 array, `depth` arrays in all."""
    return struct.pack("<IQ", ARRAY, 1) * (depth - 1) + struct.pack("<IQ", UINT32, 0)


def gguf_file(entries: list[bytes], tensors: bytes = b"", n_tensors: int = 0, n_kv: int | None = None) -> bytes:
    """A GGUF v3 file: header, the given metadata entries and tensor infos (no tensor data)."""
    count = len(entries) if n_kv is None else n_kv
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, count) + b"".join(entries) + tensors
