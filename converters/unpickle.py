"""Reads PyTorch zip-format checkpoints (`pytorch_model*.bin`) without torch and without running pickle code.

A `torch.save` file is a zip archive holding `<prefix>/data.pkl` (the pickled state dict) and one
uncompressed member `<prefix>/data/<key>` per storage. Storages are never read here: they become
byte ranges of the archive that the checkpoint reader memory-maps.

The pickle is not given to `pickle.Unpickler`: that one lets a stream BUILD (set attributes) on any
object it can name, so a refused file could still change an allow-listed object for the rest of
the process, and its memo grows to whatever index a stream names. Instead `load_state_dict`
interprets the opcodes a state dict needs (those torch.save writes with protocols 2 to 5), taken
apart by `pickletools.genops`, on a stack of inert values: the only callables are stand-ins for the
handful of torch rebuild functions, the only objects it can change are the dicts and lists it made
itself, and its work and memory are bounded by the stream's length.
"""

from __future__ import annotations

import pickletools
import struct
import zipfile
from collections import deque
from dataclasses import dataclass
from enum import Enum
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
# A state dict pickle takes about 150 bytes per tensor (a 7B LLaMA file: 40 KB); this is room for
# ten thousand tensors in one file while bounding the interpreter's time (about 2 s at the limit).
MAX_PICKLE_BYTES = 2 * 2**20
# Values the interpreter may hold at once (stack, memo and container items): about 20 per tensor.
MAX_PICKLE_VALUES = 1_000_000
# torch nests a tensor's arguments three tuples deep. Hashing a tuple recurses in C without a
# depth check, so a stream nesting a million tuples could crash the process on a dict key.
MAX_TUPLE_NESTING = 16
# Mappings inside mappings that are searched for tensors: training checkpoints nest weights two or
# three deep ({"model": {...}}, {"optimizer": {"state": {0: {...}}}}).
MAX_STATE_DICT_NESTING = 8


@dataclass(frozen=True, slots=True)
class StorageKind:
    """Stand-in for a `torch.*Storage` class named in the pickle."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True, slots=True)
class StorageRef:
    """One storage: an archive member holding `numel` elements of `kind`."""

    kind: StorageKind
    key: str
    numel: int


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor as the pickle describes it: a strided view into a storage (all counts in elements)."""

    storage: StorageRef
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _Callable(Enum):
    """The torch functions and classes a state dict pickle calls; each is interpreted by `_call`."""

    ORDERED_DICT = "collections.OrderedDict"
    REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2"
    REBUILD_PARAMETER = "torch._utils._rebuild_parameter"
    REBUILD_FROM_TYPE = "torch._tensor._rebuild_from_type_v2"
    PARAMETER = "torch.nn.parameter.Parameter"


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    **{tuple(c.value.rsplit(".", 1)): c for c in _Callable},
    **{("torch", name): StorageKind(name) for name in STORAGE_DTYPES},
}


class UnsafePickleError(ConversionError):
    pass


class _Corrupt(Exception):
    """The stream breaks the pickle format or a state dict's shape; the message says how."""


def _describe(value: object) -> str:
    """A value of the stream as a message names it (never its repr, which could be huge)."""
    if isinstance(value, _Callable):
        return value.value
    if isinstance(value, StorageKind):
        return f"torch.{value.name}"
    return f"a {type(value).__name__}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not (isinstance(value, tuple) and all(_is_int(v) for v in value)):
        raise _Corrupt(f"a tensor's {what} is not a tuple of integers")
    return value


def _rebuild_tensor(args: tuple) -> TensorRef:
    if not 4 <= len(args) <= 7:
        raise _Corrupt("_rebuild_tensor_v2 called with the wrong number of arguments")
    storage, offset, size, stride = args[:4]
    if not isinstance(storage, StorageRef):
        raise _Corrupt("a tensor rebuilt from something that is not a storage")
    if not _is_int(offset):
        raise _Corrupt("a tensor's storage offset is not an integer")
    return TensorRef(storage, offset, _int_tuple(size, "size"), _int_tuple(stride, "stride"))


def _call(function: object, args: object) -> object:
    """REDUCE: what torch's own function would return, as inert values."""
    if not isinstance(args, tuple):
        raise _Corrupt("REDUCE arguments are not a tuple")
    if function is _Callable.ORDERED_DICT:
        if args:
            raise _Corrupt("OrderedDict built from arguments; torch.save fills it with SETITEMS")
        return {}
    if function is _Callable.REBUILD_TENSOR:
        return _rebuild_tensor(args)
    if function is _Callable.REBUILD_PARAMETER:
        if not args or not isinstance(args[0], TensorRef):
            raise _Corrupt("a Parameter rebuilt from something that is not a tensor")
        return args[0]
    if function is _Callable.REBUILD_FROM_TYPE:
        if len(args) != 4 or args[0] not in (_Callable.REBUILD_TENSOR, _Callable.REBUILD_PARAMETER):
            raise _Corrupt("_rebuild_from_type_v2 with an unexpected rebuild function")
        if args[1] is not _Callable.PARAMETER or not isinstance(args[2], tuple):
            raise _Corrupt("_rebuild_from_type_v2 with an unexpected type")
        return _call(args[0], args[2])
    raise _Corrupt(f"REDUCE calls a {type(function).__name__}, which is not a torch rebuild function")


def _storage(pid: object) -> StorageRef:
    """BINPERSID: torch's persistent id ("storage", storage class, key, location, element count)."""
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], StorageKind)):
        raise _Corrupt("unexpected persistent id")
    _, kind, key, _location, numel = pid
    if not isinstance(key, str) or not _is_int(numel) or numel < 0:
        raise _Corrupt("a storage with a malformed key or element count")
    return StorageRef(kind, key, numel)


_MARK = object()
# Opcodes that push one constant: their argument, already decoded by genops.
_CONSTANTS = {"BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_SINGLETONS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
_IGNORED = {"PROTO", "FRAME"}  # genops has already checked the protocol number and frame lengths


class _Machine:
    """The pickle virtual machine, reduced to what a state dict needs."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.stack: list[object] = []
        self.memo: dict[int, object] = {}
        self.values = 0  # values held by the stack, the memo and containers; bounded by MAX_PICKLE_VALUES
        self.nesting: dict[int, int] = {}  # id of a tuple this load built -> how deep it nests tuples

    def hold(self, count: int = 1) -> None:
        self.values += count
        if self.values > MAX_PICKLE_VALUES:
            raise _Corrupt(f"more than {MAX_PICKLE_VALUES} values")

    def push(self, value: object) -> None:
        self.hold()
        self.stack.append(value)

    def pop(self) -> object:
        if not self.stack or self.stack[-1] is _MARK:
            raise _Corrupt("stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[object]:
        for position in range(len(self.stack) - 1, -1, -1):
            if self.stack[position] is _MARK:
                items = self.stack[position + 1 :]
                del self.stack[position:]
                return items
        raise _Corrupt("no MARK on the stack")

    def top(self) -> object:
        if not self.stack or self.stack[-1] is _MARK:
            raise _Corrupt("stack underflow")
        return self.stack[-1]

    def tuple(self, items: list[object]) -> tuple:
        depth = 1 + max((self.nesting.get(id(i), 1) for i in items if isinstance(i, tuple)), default=0)
        if depth > MAX_TUPLE_NESTING:
            raise _Corrupt(f"tuples nested more than {MAX_TUPLE_NESTING} deep")
        built = tuple(items)
        self.nesting[id(built)] = depth
        return built

    def set_items(self, target: object, items: list[object]) -> None:
        if not isinstance(target, dict):
            raise _Corrupt("SETITEMS on something that is not a dict")
        if len(items) % 2:
            raise _Corrupt("SETITEMS with a key and no value")
        try:
            for key, value in zip(items[::2], items[1::2], strict=True):
                target[key] = value
        except TypeError:
            raise _Corrupt("a dict key that cannot be hashed") from None
        self.hold(len(items))

    def refuse(self, what: str) -> UnsafePickleError:
        return UnsafePickleError(
            f"{self.source.name}: refusing to load: its pickle {what}, which a state dict of tensors does not need;"
            " the file may be malicious, get the weights as safetensors or from a trusted source"
        )

    def global_(self, module: object, name: object) -> object:
        found = _ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise self.refuse(f"references {module}.{name}, which is not a tensor")
        return found

    def step(self, name: str, arg: object) -> None:
        if name in _CONSTANTS:
            self.push(arg)
        elif name in _SINGLETONS:
            self.push(_SINGLETONS[name])
        elif name == "MARK":
            self.push(_MARK)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = [self.pop() for _ in range(int(name[-1]))][::-1]
            self.push(self.tuple(items))
        elif name == "TUPLE":
            self.push(self.tuple(self.pop_mark()))
        elif name == "EMPTY_DICT":
            self.push({})
        elif name == "EMPTY_LIST":
            self.push([])
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            self.set_items(self.top(), [key, value])
        elif name == "SETITEMS":
            items = self.pop_mark()
            self.set_items(self.top(), items)
        elif name in ("APPEND", "APPENDS"):
            items = [self.pop()] if name == "APPEND" else self.pop_mark()
            target = self.top()
            if not isinstance(target, list):
                raise _Corrupt("APPEND on something that is not a list")
            target.extend(items)
            self.hold(len(items))
        elif name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
            self.hold()
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.top()
        elif name in ("BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise _Corrupt(f"memo entry {arg} read before it was written")
            self.push(self.memo[arg])
        elif name == "GLOBAL":
            module, _, attribute = str(arg).partition(" ")
            self.push(self.global_(module, attribute))
        elif name == "STACK_GLOBAL":
            attribute, module = self.pop(), self.pop()
            self.push(self.global_(module, attribute))
        elif name == "REDUCE":
            args, function = self.pop(), self.pop()
            self.push(_call(function, args))
        elif name == "BINPERSID":
            self.push(_storage(self.pop()))
        elif name == "BUILD":
            # torch.save BUILDs only the state dict (an OrderedDict) with its `_metadata`, which
            # conversion does not use; state set on anything else would outlive this load.
            state = self.pop()
            if not isinstance(self.top(), dict) or not isinstance(state, dict | tuple):
                raise self.refuse(f"sets attributes (BUILD) on {_describe(self.top())}")
        elif name == "POP":
            self.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            self.push(self.top())
        elif name not in _IGNORED:
            raise self.refuse(f"uses the opcode {name}")


def load_state_dict(data: bytes, source: Path) -> object:
    """The object a state dict pickle describes, built from inert stand-ins; UnsafePickleError or ConversionError."""
    if len(data) > MAX_PICKLE_BYTES:
        raise ConversionError(
            f"{source.name}: its pickle is {len(data)} bytes, more than a state dict needs ({MAX_PICKLE_BYTES});"
            " the file is corrupt or not a checkpoint"
        )
    machine = _Machine(source)
    try:
        for opcode, arg, _position in pickletools.genops(data):
            if opcode.name == "STOP":
                result = machine.pop()
                if machine.stack:
                    raise _Corrupt("values left on the stack at STOP")
                return result
            machine.step(opcode.name, arg)
        raise _Corrupt("no STOP opcode")
    except (_Corrupt, ValueError, struct.error) as error:  # genops raises ValueError on a malformed stream
        raise ConversionError(f"{source.name}: its pickle is corrupt ({error}); re-download the file") from None


def _flatten_state_dict(obj, source: Path) -> dict[str, TensorRef]:
    """Tensors of a {name: tensor} mapping; non-tensor entries (e.g. version numbers) are ignored.

    Training checkpoints nest their state dicts (MiniGPT-4's ``{"model": {...}, "optimizer": {...}}``):
    nested mappings are walked, up to ``MAX_STATE_DICT_NESTING`` deep (which also bounds the length
    of the names), and their tensors named with dotted paths (``model.llama_proj.weight``). A pickle
    can make a mapping contain itself, so each mapping is visited once.
    """
    if not isinstance(obj, dict):
        raise ConversionError(f"{source.name}: the pickle holds a {type(obj).__name__}, not a state dict of tensors")
    tensors: dict[str, TensorRef] = {}
    pending: deque[tuple[str, int, dict]] = deque([("", 1, obj)])
    visited = {id(obj)}
    while pending:
        prefix, depth, mapping = pending.popleft()
        for key, value in mapping.items():
            if isinstance(value, TensorRef):
                tensors.setdefault(prefix + str(key), value)
            elif isinstance(value, dict) and depth < MAX_STATE_DICT_NESTING and id(value) not in visited:
                visited.add(id(value))
                pending.append((f"{prefix}{key}.", depth + 1, value))
    return tensors


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
            if pickles[0].file_size > MAX_PICKLE_BYTES:  # checked before inflating a compressed member
                raise ConversionError(
                    f"{path.name}: its data.pkl inflates to {pickles[0].file_size} bytes, more than a state dict"
                    f" needs ({MAX_PICKLE_BYTES}); the file is corrupt or not a checkpoint"
                )
            with archive.open(pickles[0]) as pkl:
                # The size in the zip directory can lie; read no more than the limit past it.
                state = load_state_dict(pkl.read(MAX_PICKLE_BYTES + 1), path)
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
