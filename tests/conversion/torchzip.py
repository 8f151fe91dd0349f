"""Writes PyTorch zip checkpoints opcode by opcode, so tests can describe any tensor a file could claim.

torch itself would refuse to build the hostile views these tests need (negative strides, offsets past
the storage), and the test dependencies exclude it anyway; the layout follows what torch.save writes
(protocol 2, one `data/<key>` member per storage, stored uncompressed).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FakeTensor:
    storage_key: str
    storage_numel: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int = 0
    storage_kind: str = "FloatStorage"


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + value.to_bytes(1, "little")
    if -(2**31) <= value < 2**31:
        return pickle.BININT + value.to_bytes(4, "little", signed=True)
    encoded = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + len(encoded).to_bytes(1, "little") + encoded


def _text(value: str) -> bytes:
    encoded = value.encode()
    return pickle.BINUNICODE + len(encoded).to_bytes(4, "little") + encoded


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _tuple(items: list[bytes]) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def tensor_opcodes(tensor: FakeTensor) -> bytes:
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` as torch.save writes it."""
    storage = _tuple(
        [_text("storage"), _global("torch", tensor.storage_kind), _text(tensor.storage_key), _text("cpu")]
        + [_int(tensor.storage_numel)]
    )
    hooks = _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE
    arguments = _tuple(
        [
            storage + pickle.BINPERSID,
            _int(tensor.storage_offset),
            _tuple([_int(d) for d in tensor.shape]),
            _tuple([_int(s) for s in tensor.stride]),
            pickle.NEWFALSE,
            hooks,
        ]
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + arguments + pickle.REDUCE


def state_dict_pickle(tensors: dict[str, FakeTensor]) -> bytes:
    items = b"".join(_text(name) + tensor_opcodes(tensor) for name, tensor in tensors.items())
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS + pickle.STOP


def write_torch_zip(
    path: Path,
    pickle_bytes: bytes,
    storages: dict[str, bytes],
    pickle_compression: int = zipfile.ZIP_STORED,
) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes, compress_type=pickle_compression)
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
