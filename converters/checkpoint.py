"""Lazy, memory-mapped access to the tensors of a Hugging Face checkpoint directory.

Weights may be `*.safetensors` or PyTorch zip-format `pytorch_model*.bin`, single or sharded with a
`*.index.json`. Nothing is read until `load()`, which returns a read-only view of the memory-mapped
file (no copy) except for bfloat16, see `load`. `release()` hands a tensor's pages back to the OS so
that a pass over every tensor keeps a resident set the size of one tensor, not of the model.
"""

from __future__ import annotations

import itertools
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConversionError
from .jsonfile import ANY, SMALL_JSON_BYTES, STR, Arr, Int, Map, Obj, Tup, check, parse_json, read_json
from .unpickle import TensorRef, read_torch_zip

SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(np.uint16),  # raw bit patterns; numpy has no bfloat16
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
# The format allows 100 MB; real headers take about 150 bytes per tensor (kilobytes for a whole
# model), and parsing one takes about 15 times its size in memory.
MAX_SAFETENSORS_HEADER = SMALL_JSON_BYTES
_PAGE = mmap.PAGESIZE
MAX_TENSOR_DIMS = 8  # weights have at most 5 (3-D convolutions); numpy's own limit is 64


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: np.dtype  # the dtype `load` returns (float32 for bfloat16 tensors)
    nbytes: int  # bytes the tensor occupies in the checkpoint file
    is_bf16: bool = False  # stored as bfloat16; `load_raw` gives its uint16 bit patterns


@dataclass(frozen=True)
class _Entry:
    file: Path
    offset: int  # byte offset of element 0 of the storage/data in the file
    storage_dtype: np.dtype
    storage_numel: int
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None  # in elements; None for C-contiguous data starting at `offset`
    is_bf16: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.storage_dtype.itemsize

    def byte_span(self) -> tuple[int, int]:
        """First and one-past-last byte in the file that the tensor can touch.

        Strides are non-negative (checked by `_check_view` before an entry exists), so the last
        element is the one at the sum of (size - 1) * stride.
        """
        if self.strides is None:
            return self.offset, self.offset + self.nbytes
        last = sum((d - 1) * s for d, s in zip(self.shape, self.strides, strict=True)) if self.nbytes else -1
        return self.offset, self.offset + (last + 1) * self.storage_dtype.itemsize


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widens bfloat16 bit patterns (uint16) to float32 exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


_SAFETENSORS_ENTRY = Obj(
    {
        "dtype": STR,
        "shape": Arr(Int(minimum=0), max_length=MAX_TENSOR_DIMS),
        "data_offsets": Tup(Int(minimum=0), Int(minimum=0)),
    },
    required=("dtype", "shape", "data_offsets"),
)


def _read_safetensors_header(path: Path) -> list[tuple[str, _Entry]]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path.name} is empty or truncated; re-download it")
        header_len = int.from_bytes(head, "little")
        if header_len > MAX_SAFETENSORS_HEADER or 8 + header_len > size:
            raise ConversionError(f"{path.name} has a corrupt safetensors header (length {header_len}); re-download it")
        raw = f.read(header_len)
    try:
        header = check(parse_json(raw, path.name), Map(ANY), path.name)
    except ConversionError as error:
        raise ConversionError(f"{path.name} has a corrupt safetensors header ({error}); re-download it") from None
    data_start = 8 + header_len
    entries = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        check(meta, _SAFETENSORS_ENTRY, path.name, f"the header's {name}", f"re-download {path.name}")
        dtype_name, shape, (begin, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        dtype = SAFETENSORS_DTYPES.get(dtype_name)
        if dtype is None:
            raise ConversionError(
                f"{path.name}: tensor {name} has unsupported dtype {dtype_name}; convert it to f16/bf16/f32 first"
            )
        numel = math.prod(shape)
        if end - begin != numel * dtype.itemsize:
            raise ConversionError(
                f"{path.name} has a corrupt safetensors header (size of {name} does not match its shape); re-download it"
            )
        if data_start + end > size:
            raise ConversionError(
                f"{path.name} is truncated ({size} bytes, {name} ends at {data_start + end}); re-download it"
            )
        entries.append((name, _Entry(path, data_start + begin, dtype, numel, shape, None, dtype_name == "BF16")))
    entries.sort(key=lambda item: (item[1].offset, item[1].nbytes))  # file order
    for (before, first), (name, second) in itertools.pairwise(entries):
        if second.offset < first.offset + first.nbytes:
            raise ConversionError(
                f"{path.name} has a corrupt safetensors header ({name} overlaps the bytes of {before}); re-download it"
            )
    return entries


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _view_problem(ref: TensorRef) -> str | None:
    """Why a tensor's view does not lie within its storage as one non-overlapping strided block, if it does not.

    torch never writes negative strides, a negative offset or a tensor whose elements overlap, so
    these are refused rather than materialised; sizes and strides are Python ints, so nothing overflows.
    """
    shape, strides = ref.shape, ref.stride
    if len(shape) > MAX_TENSOR_DIMS:
        return f"{len(shape)} dimensions (at most {MAX_TENSOR_DIMS} are supported)"
    if len(strides) != len(shape):
        return f"{len(shape)} dimensions but {len(strides)} strides"
    if any(d < 0 for d in shape):
        return f"a negative size {list(shape)}"
    if any(s < 0 for s in strides):
        return f"a negative stride {list(strides)}"
    if ref.storage_offset < 0:
        return f"a negative storage offset ({ref.storage_offset})"
    if math.prod(shape) == 0:
        return None
    extent = 1  # storage elements spanned by the dimensions checked so far
    for size, stride in sorted((p for p in zip(shape, strides, strict=True) if p[0] > 1), key=lambda p: p[1]):
        if stride < extent:
            return f"strides {list(strides)} that make its elements overlap"
        extent += (size - 1) * stride
    if ref.storage_offset + extent > ref.storage.numel:
        return (
            f"a view that reaches past its storage (element {ref.storage_offset + extent - 1}"
            f" of a storage of {ref.storage.numel})"
        )
    return None


def _read_torch_bin(path: Path) -> list[tuple[str, _Entry]]:
    index = read_torch_zip(path)
    entries = []
    for name, ref in index.tensors.items():
        problem = _view_problem(ref)
        if problem is not None:
            raise ConversionError(
                f"{path.name}: tensor {name} has {problem}; the file is corrupt or malicious, get it again from a trusted source"
            )
        dtype = ref.storage.kind.dtype
        strides = None if ref.stride == _contiguous_strides(ref.shape) else ref.stride
        offset = index.storage_offsets[ref.storage.key] + ref.storage_offset * dtype.itemsize
        entry = _Entry(
            path, offset, dtype, ref.storage.numel, ref.shape, strides, ref.storage.kind.name == "BFloat16Storage"
        )
        entries.append((name, entry))
    return entries


_SHARD_INDEX = Obj({"weight_map": Map(STR)}, required=("weight_map",))
# What every converter reads from config.json before an architecture takes over (see archs.base.hparam).
CONFIG_SCHEMA = Obj({"architectures": Arr(STR)})


def read_config(directory: Path) -> dict:
    """A checkpoint's config.json through the typed reader (its architecture's fields are checked by `hparam`)."""
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{directory} has no config.json; point at a Hugging Face checkpoint directory")
    return read_json(config_path, CONFIG_SCHEMA)


def _shard_path(directory: Path, index_path: Path, name: str) -> Path:
    """A shard the index names: a plain file name in the checkpoint directory, or in the Hub cache's blob store.

    An index is downloaded text: a name like "../../../../etc/passwd", an absolute path or a link
    out of the directory would make the converter read (and hash into a lockfile) any file.
    """
    path = directory / name
    if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
        raise ConversionError(
            f"{index_path}: weight_map names the shard {name!r}, which is not a file name in {directory}; re-download the index"
        )
    target, root = path.resolve(), directory.resolve()
    allowed = [root]
    if root.parent.name == "snapshots":  # huggingface_hub links each file to ../../blobs/<hash> of its repository
        allowed.append(root.parent.parent / "blobs")
    if path.exists() and not any(target.is_relative_to(folder) for folder in allowed):
        raise ConversionError(
            f"{index_path}: the shard {name} links to {target}, outside the checkpoint directory; copy the file in instead"
        )
    return path


def _weight_files(directory: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weight files to read and, for sharded checkpoints, the index's name -> file map."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = directory / index_name
        if index_path.is_file():
            weight_map = read_json(index_path, _SHARD_INDEX)["weight_map"]
            files = [_shard_path(directory, index_path, name) for name in sorted(set(weight_map.values()))]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise ConversionError(
                    f"missing shard {missing[0]} (listed in {index_name}, {len(missing)} of {len(files)} missing); download it into {directory}"
                )
            return files, weight_map
    safetensors = sorted(directory.glob("*.safetensors"))
    if safetensors:
        return safetensors, None
    bins = sorted(directory.glob("pytorch_model*.bin"))
    if bins:
        return bins, None
    raise ConversionError(f"no weights in {directory}: expected *.safetensors or pytorch_model*.bin files")


class Checkpoint:
    """A Hugging Face checkpoint directory: its config and lazily loaded tensors. A context manager."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.config: dict = read_config(self.directory)
        self._files, weight_map = _weight_files(self.directory)
        self._entries: dict[str, _Entry] = {}
        for path in self._files:
            reader = _read_safetensors_header if path.suffix == ".safetensors" else _read_torch_bin
            for name, entry in reader(path):
                self._entries.setdefault(name, entry)
        if weight_map is not None:
            absent = [name for name in weight_map if name not in self._entries]
            if absent:
                raise ConversionError(
                    f"tensor {absent[0]} is listed in the shard index under {weight_map[absent[0]]} but not found there"
                    f" ({len(absent)} missing); the shard is truncated or stale, re-download it"
                )
        self._maps: dict[Path, mmap.mmap] = {}

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        maps, self._maps = self._maps, {}
        for m in maps.values():
            try:
                m.close()
            except BufferError:  # an array returned by load() is still alive; the map closes with it
                pass

    def files(self) -> list[Path]:
        return list(self._files)

    def names(self) -> list[str]:
        return list(self._entries)

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.directory}") from None

    def info(self, name: str) -> TensorInfo:
        e = self._entry(name)
        dtype = np.dtype(np.float32) if e.is_bf16 else e.storage_dtype
        return TensorInfo(e.shape, dtype, e.nbytes, e.is_bf16)

    def _map(self, path: Path) -> mmap.mmap:
        m = self._maps.get(path)
        if m is None:
            with open(path, "rb") as f:
                m = self._maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return m

    def load_raw(self, name: str) -> np.ndarray:
        """The stored elements as a read-only memory-mapped view; bfloat16 comes back as uint16 bit patterns."""
        e = self._entry(name)
        if e.nbytes == 0:
            return np.empty(e.shape, e.storage_dtype)
        m = self._map(e.file)
        if e.strides is None:
            return np.frombuffer(m, e.storage_dtype, math.prod(e.shape), e.offset).reshape(e.shape)
        start, end = e.byte_span()
        flat = np.frombuffer(m, e.storage_dtype, (end - start) // e.storage_dtype.itemsize, start)
        byte_strides = tuple(s * e.storage_dtype.itemsize for s in e.strides)
        return np.lib.stride_tricks.as_strided(flat, e.shape, byte_strides, writeable=False)

    def load(self, name: str) -> np.ndarray:
        """The tensor as a read-only array, memory-mapped without a copy.

        bfloat16 tensors are the exception: numpy has no bfloat16, so they are widened to a new
        float32 array (exact). Use `load_raw` for their memory-mapped uint16 bit patterns.
        """
        raw = self.load_raw(name)
        if not self._entry(name).is_bf16:
            return raw
        widened = bf16_to_f32(raw)
        widened.flags.writeable = False
        return widened

    def release(self, name: str) -> None:
        """Drops the tensor's pages from this process's resident set; they stay in the OS page cache."""
        e = self._entry(name)
        m = self._maps.get(e.file)
        if m is None or e.nbytes == 0:
            return
        start, end = e.byte_span()
        aligned = start - start % _PAGE
        m.madvise(mmap.MADV_DONTNEED, aligned, min(end, len(m)) - aligned)


def open_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    path = Path(directory)
    if not path.is_dir():
        raise ConversionError(f"{path} is not a directory; give the folder that holds config.json and the weights")
    return Checkpoint(path)
