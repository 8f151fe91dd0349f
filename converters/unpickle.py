"""Reads PyTorch zip-format checkpoints (`pytorch_model*.bin`) without torch and without running pickle code.

A `torch.save` file is a zip archive holding `<prefix>/data.pkl` (the pickled state dict) and one
uncompressed member `<prefix>/data/<key>` per storage. The pickle only names a handful of torch
globals to rebuild tensors; this module maps exactly those to inert stand-ins and refuses every
other global, so a hostile pickle cannot import or call anything. Storages are never read here:
they become byte ranges of the archive that the checkpoint reader memory-maps.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConversionError

# torch storage class name -> numpy dtype of its elements. bfloat16 has no numpy dtype: its raw
# 16-bit patterns are kept as uint16 and widened later by the checkpoint reader.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(np.uint16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


@dataclass(frozen=True)
class StorageKind:
    """Stand-in for a `torch.*Storage` class named in the pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class StorageRef:
    """One storage: an archive member holding `numel` elements of `kind`."""

    kind: StorageKind
    key: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it: a strided view into a storage (all counts in elements)."""

    storage: StorageRef
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    return TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *extra):
    return data


class _ParameterType:
    """Stand-in for `torch.nn.Parameter`, only ever passed to `_rebuild_from_type_v2`."""


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_parameter):
        raise pickle.UnpicklingError("unexpected rebuild function")
    return func(*args)


# (module, name) -> the only objects the pickle may reference.
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): _ParameterType,
    **{("torch", name): StorageKind(name) for name in STORAGE_DTYPES},
}


class UnsafePickleError(ConversionError):
    pass


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file, source: Path) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source.name}: refusing to load: its pickle references {module}.{name}, which is not a tensor;"
                " the file may be malicious, get the weights as safetensors or from a trusted source"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], StorageKind)):
            raise UnsafePickleError(f"{self.source.name}: refusing to load: unexpected persistent id in its pickle")
        _, kind, key, _location, numel = pid
        return StorageRef(kind, str(key), int(numel))


def _flatten_state_dict(obj, source: Path) -> dict[str, TensorRef]:
    """Accepts a plain {name: tensor} mapping; non-tensor entries (e.g. version numbers) are ignored."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{source.name}: the pickle holds a {type(obj).__name__}, not a state dict of tensors")
    return {str(k): v for k, v in obj.items() if isinstance(v, TensorRef)}


@dataclass(frozen=True)
class TorchZipIndex:
    tensors: dict[str, TensorRef]  # in pickle order, which is the order torch saved them
    storage_offsets: dict[str, int]  # storage key -> byte offset of its data in the archive file


_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes


def _member_data_offset(fp, info: zipfile.ZipInfo) -> int:
    fp.seek(info.header_offset)
    header = fp.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise ConversionError(f"corrupt zip entry {info.filename}")
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def read_torch_zip(path: Path) -> TorchZipIndex:
    """Indexes the tensors of a torch zip checkpoint without reading any tensor data."""
    if not zipfile.is_zipfile(path):
        raise ConversionError(
            f"{path.name} is not a PyTorch zip checkpoint (truncated, or saved by torch older than 1.6);"
            " re-download it or re-save it with a current torch"
        )
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            members = archive.infolist()
            pickles = [m for m in members if m.filename.endswith("/data.pkl") or m.filename == "data.pkl"]
            if len(pickles) != 1:
                raise ConversionError(f"{path.name}: expected one data.pkl in the archive, found {len(pickles)}")
            prefix = pickles[0].filename[: -len("data.pkl")]
            with archive.open(pickles[0]) as pkl:
                state = _AllowListUnpickler(pkl, path).load()
            tensors = _flatten_state_dict(state, path)
            by_name = {m.filename: m for m in members}
            storage_offsets: dict[str, int] = {}
            archive_size = path.stat().st_size
            for ref in tensors.values():
                # Every tensor's claim is checked, not only the first one naming a storage: another
                # tensor could claim the same key with more elements or a wider dtype.
                key = ref.storage.key
                info = by_name.get(f"{prefix}data/{key}")
                if info is None:
                    raise ConversionError(
                        f"{path.name}: storage {key} is missing from the archive; re-download the file"
                    )
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ConversionError(
                        f"{path.name}: storage {key} is compressed; re-save the checkpoint with torch.save"
                    )
                if info.file_size < ref.storage.numel * ref.storage.kind.dtype.itemsize:
                    raise ConversionError(
                        f"{path.name}: storage {key} is shorter than its tensors need; re-download the file"
                    )
                if key not in storage_offsets:
                    storage_offsets[key] = _member_data_offset(raw, info)
                    if storage_offsets[key] + info.file_size > archive_size:
                        raise ConversionError(
                            f"{path.name} is truncated (storage {key} ends past the end of the file); re-download it"
                        )
    except ConversionError:
        raise
    except Exception as exc:  # noqa: BLE001 - any malformed archive or pickle: zipfile, pickle and struct raise many kinds
        raise ConversionError(
            f"{path.name} is corrupt or truncated ({type(exc).__name__}: {exc}); re-download it"
        ) from None
    return TorchZipIndex(tensors, storage_offsets)
