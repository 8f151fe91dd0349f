"""Weight recovery: rebuild a usable checkpoint from what the 2023 authors published.

Recipes (the catalog's ``recipe`` names the one a model needs):

- ``apply_delta``: W = W_base + Δ, tensor by tensor (FastChat, LMFlow, ChatYuan-7B). With
  ``pad_rows`` the base first gains the delta's extra vocabulary rows: zero rows (Wombat, Chimera,
  Vicuna v0) or the mean of the existing rows (Alpaca's weight diff, checked with ``expected_sum``).
- ``xor_files``: byte-wise XOR of each published file with the same-named base file (Open-Assistant).
- ``decrypt_keystream``: BELLE's XOR of each ``.enc`` file with the bytes of Meta's original
  ``consolidated.00.pth``, checked against the SHA-256 in the file's first 32 bytes.
- ``merge_lora``: W = W0 + (alpha/r)·B·A for each adapter in turn (StackLLaMA chains two).
- ``write_lora_gguf``: instead of merging, keep an adapter as a GGUF LoRA that llama.cpp applies
  at run time on a (possibly quantized) base.
- ``apply_easylm_diff``: W = W_base + Δ where Δ is one tensor of an EasyLM streaming checkpoint
  (Koala), brought into the Hugging Face base's layout first (see ``converters.easylm``).

Memory stays bounded: tensors are read memory-mapped through ``converters.checkpoint`` one at a
time, and files are streamed in blocks. Outputs are Hugging Face checkpoint directories (config and
tokenizer files copied, weights as safetensors shards written by a streaming writer), built under a
temporary name and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import gguf
import numpy as np
import numpy.typing as npt

from .archs import architecture_for
from .archs.llama import Llama, half_split_order
from .checkpoint import SAFETENSORS_DTYPES, Checkpoint, bf16_to_f32, open_checkpoint
from .easylm import Parameter, StoredArray, StreamingCheckpoint, llama_parameter
from .errors import ConversionCancelled, ConversionError
from .files import written_atomically
from .jsonfile import BOOL, NULL, STR, Int, Num, Obj, OneOf, read_json
from .progress import Progress, ProgressCallback
from .sizes import human_size

PadRows = Literal["none", "zero", "mean"]

METADATA_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "chat_template.jinja",
)
_SHARD_BYTES = 4 * 2**30
_SPACE_MARGIN = 64 * 2**20
_BLOCK = 16 * 2**20
_BELLE_CHUNK = 10 * 2**20  # decrypt.py reads data and key in 10 MiB chunks
_CODES = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items() if code != "BF16"}


# --- streaming safetensors output ------------------------------------------------------------


@dataclass(frozen=True)
class OutputTensor:
    name: str
    shape: tuple[int, ...]
    code: str  # safetensors dtype: "F16", "F32", "BF16", …

    @property
    def nbytes(self) -> int:
        itemsize = 2 if self.code == "BF16" else SAFETENSORS_DTYPES[self.code].itemsize
        return math.prod(self.shape) * itemsize


def _encode(array: np.ndarray, code: str) -> np.ndarray:
    """The bytes to store for ``array`` as ``code``; float32 becomes bfloat16 by round-to-nearest-even."""
    if code != "BF16":
        return np.ascontiguousarray(array, dtype=SAFETENSORS_DTYPES[code])
    if array.dtype == np.uint16:  # already bfloat16 bit patterns
        return np.ascontiguousarray(array)
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


class SafetensorsWriter:
    """Writes safetensors shards one tensor (or one slice of a tensor's rows) at a time, tensors in any order.

    Shapes and dtypes are known up front, so every shard's header, and every tensor's place in its
    shard, is fixed before any data is written: a recipe can write tensors in the order its input
    yields them, and nothing is held longer than its own ``write`` call. Use it as a context
    manager, and call ``finish`` once every tensor is written.
    """

    def __init__(self, directory: Path, tensors: Sequence[OutputTensor], max_shard_bytes: int = _SHARD_BYTES) -> None:
        self.directory = directory
        shards: list[list[OutputTensor]] = [[]]
        for tensor in tensors:
            if shards[-1] and sum(t.nbytes for t in shards[-1]) + tensor.nbytes > max_shard_bytes:
                shards.append([])
            shards[-1].append(tensor)
        count = len(shards)
        self._names = (
            ["model.safetensors"]
            if count == 1
            else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        )
        self._shards = shards
        self._headers: list[bytes] = []
        self._places: dict[str, tuple[int, int, OutputTensor]] = {}  # name -> (shard, offset in its data, tensor)
        for shard, planned in enumerate(shards):
            header: dict[str, object] = {"__metadata__": {"format": "pt"}}
            offset = 0
            for tensor in planned:
                header[tensor.name] = {
                    "dtype": tensor.code,
                    "shape": list(tensor.shape),
                    "data_offsets": [offset, offset + tensor.nbytes],
                }
                self._places[tensor.name] = (shard, offset, tensor)
                offset += tensor.nbytes
            encoded = json.dumps(header, separators=(",", ":")).encode()
            encoded += b" " * (-len(encoded) % 8)  # keeps the data 8-byte aligned for memory mapping
            self._headers.append(len(encoded).to_bytes(8, "little") + encoded)
        self._rows: dict[str, int] = {}  # rows written so far, by tensor
        self._stream: BinaryIO | None = None
        self._stream_shard = -1

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._close_stream()

    def write(self, name: str, array: np.ndarray, first_row: int = 0) -> None:
        """Write ``array`` as the tensor ``name``, or as its rows from ``first_row`` on: a tensor may
        come in slices of rows, in order."""
        place = self._places.get(name)
        if place is None:
            raise ValueError(f"cannot write {name}: it is not in the plan")
        shard, offset, tensor = place
        done = self._rows.get(name, 0)
        rows = tensor.shape[0] if tensor.shape else 1
        piece = tuple(array.shape)
        if tensor.shape:
            count = piece[0] if piece else 0
            fits = len(piece) == len(tensor.shape) and piece[1:] == tensor.shape[1:] and count > 0
        else:
            count, fits = 1, piece == ()
        if not fits or first_row != done or done + count > rows:
            raise ValueError(
                f"cannot write {name} {piece} at row {first_row}: it is {tensor.shape}, {done} rows written"
            )
        if shard != self._stream_shard:
            self._open(shard)
        assert self._stream is not None
        self._stream.seek(len(self._headers[shard]) + offset + first_row * (tensor.nbytes // rows))
        self._stream.write(_encode(array, tensor.code).reshape(-1).view(np.uint8).data)
        self._rows[name] = done + count

    def _open(self, shard: int) -> None:
        self._close_stream()
        path = self.directory / self._names[shard]
        # Stays open across write() calls while they go to this shard; _close_stream and finish close it.
        if path.exists():
            self._stream = open(path, "r+b")
        else:
            self._stream = open(path, "wb")
            self._stream.write(self._headers[shard])
        self._stream_shard = shard

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
            self._stream_shard = -1

    def finish(self) -> None:
        """Close the last shard and, for several shards, write the index."""
        self._close_stream()
        unwritten = [
            n for n, (_, _, t) in self._places.items() if self._rows.get(n, 0) < (t.shape[0] if t.shape else 1)
        ]
        if unwritten:
            raise ValueError(f"{len(unwritten)} planned tensors were never written, first {unwritten[0]}")
        if len(self._shards) > 1:
            index = {
                "metadata": {"total_size": sum(t.nbytes for shard in self._shards for t in shard)},
                "weight_map": {t.name: self._names[i] for i, shard in enumerate(self._shards) for t in shard},
            }
            (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


# --- shared plumbing ---------------------------------------------------------------------------


@contextmanager
def _staged(out_dir: Path, needed_bytes: int) -> Iterator[Path]:
    """A temporary directory beside ``out_dir`` that becomes ``out_dir`` only if the block succeeds."""
    if out_dir.exists():
        raise ConversionError(f"{out_dir} already exists; remove it or choose another output directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir.parent).free
    if free < needed_bytes + _SPACE_MARGIN:
        raise ConversionError(
            f"not enough disk space in {out_dir.parent}: need {human_size(needed_bytes)}, {human_size(free)} free"
        )
    with written_atomically(out_dir, directory=True) as staging:
        yield staging


def _copy_metadata(out_dir: Path, *sources: Path) -> None:
    """Copy config and tokenizer files, each from the first source that has it."""
    for name in METADATA_FILES:
        found = next((s / name for s in sources if (s / name).is_file()), None)
        if found is not None:
            shutil.copyfile(found, out_dir / name)


class _Reporter:
    def __init__(self, total: int, progress: ProgressCallback | None, cancel: threading.Event | None) -> None:
        self.total, self.done = total, 0
        self.progress, self.cancel = progress, cancel

    def step(self, label: str, nbytes: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise ConversionCancelled("recovery cancelled; no output was written")
        self.done += nbytes
        if self.progress is not None:
            self.progress(Progress(self.done, self.total, label, "recover"))


def _code_of(checkpoint: Checkpoint, name: str) -> str:
    info = checkpoint.info(name)
    return "BF16" if info.is_bf16 else _CODES[info.dtype]


# --- additive deltas ---------------------------------------------------------------------------


def _base_rows(base: Checkpoint, tensor: OutputTensor, pad_rows: PadRows) -> np.ndarray:
    """The base tensor in float32, grown to the delta's rows the way the recipe grew the vocabulary."""
    value = base.load(tensor.name).astype(np.float32)
    if value.shape == tensor.shape:
        return value
    rows = tensor.shape[0]
    if value.shape[1:] != tensor.shape[1:] or value.shape[0] > rows:
        raise ConversionError(
            f"tensor {tensor.name} is {list(value.shape)} in the base but {list(tensor.shape)} in the delta"
        )
    if pad_rows == "none":
        raise ConversionError(
            f"tensor {tensor.name} has {rows} rows in the delta but {value.shape[0]} in the base; the delta expects another base model"
        )
    if pad_rows == "zero":
        fill = np.zeros((rows - value.shape[0], *value.shape[1:]), np.float32)
    else:
        fill = np.repeat(value.mean(axis=0, keepdims=True), rows - value.shape[0], axis=0)
    return np.concatenate([value, fill])


def apply_delta(
    base_dir: str | os.PathLike[str],
    delta_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    pad_rows: PadRows = "none",
    dtype: npt.DTypeLike = np.float16,
    expected_sum: float | None = None,
    sum_tolerance: float = 1e-2,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Write ``base + delta`` for every tensor to ``out_dir`` and return it.

    Names must match exactly. With ``pad_rows`` a tensor whose delta has more rows (the vocabulary
    grew by a pad token) gets the base's missing rows as zeros or as the mean of its rows first.
    The sum runs in float32 and is stored as ``dtype`` (FastChat-style recipes store float16;
    Alpaca's stores float32). ``expected_sum`` checks the sum of all recovered values, as Alpaca's
    ``weight_diff.py`` does.
    """
    out_dir = Path(out_dir)
    code = _CODES[np.dtype(dtype)]
    with open_checkpoint(base_dir) as base, open_checkpoint(delta_dir) as delta:
        names = delta.names()
        unmatched = sorted(set(names) ^ set(base.names()))
        if unmatched:
            side = "base" if unmatched[0] in base.names() else "delta"
            raise ConversionError(
                f"tensor {unmatched[0]} is only in the {side} ({len(unmatched)} unmatched); the delta was made against another base model"
            )
        plan = [OutputTensor(n, delta.info(n).shape, code) for n in names]
        report = _Reporter(sum(t.nbytes for t in plan), progress, cancel)
        total = np.float32(0)
        with _staged(out_dir, report.total) as staging:
            with SafetensorsWriter(staging, plan) as writer:
                for tensor in plan:
                    recovered = _base_rows(base, tensor, pad_rows) + delta.load(tensor.name)
                    # Alpaca's check adds float32 tensor sums in float32, in the checkpoint's order.
                    total += recovered.sum(dtype=np.float32)
                    writer.write(tensor.name, recovered)
                    base.release(tensor.name)
                    delta.release(tensor.name)
                    report.step(tensor.name, tensor.nbytes)
                writer.finish()
            if expected_sum is not None and abs(float(total) - expected_sum) > sum_tolerance:
                raise ConversionError(
                    f"recovered weights sum to {float(total):.4f}, expected {expected_sum:.4f}; "
                    "the base or the delta is not the one the authors used"
                )
            _copy_metadata(staging, Path(delta_dir), Path(base_dir))
    return out_dir


# --- EasyLM diffs ------------------------------------------------------------------------------


_SLICE_BYTES = 8 * 2**20  # float32 rows added per step: bounds the working set of the largest tensor


def _widened(values: np.ndarray, is_bf16: bool) -> np.ndarray:
    return bf16_to_f32(values) if is_bf16 else values.astype(np.float32)


def _rotary_order(parameter: Parameter, rows: int, arch: Llama) -> np.ndarray | None:
    """HF's half-split order for q/k rows, which EasyLM keeps in Meta's interleaved order. Left out,
    the model would still run, and talk nonsense."""
    if parameter.rotary_heads is None:
        return None
    return half_split_order(rows, arch.n_head if parameter.rotary_heads == "q" else arch.n_head_kv)


def _add_in_slices(
    writer: SafetensorsWriter,
    tensor: OutputTensor,
    base: Checkpoint,
    diff: StreamingCheckpoint,
    stored: StoredArray,
    parameter: Parameter,
    order: np.ndarray | None,
) -> None:
    """Write base + diff for one tensor, a slice of its Hugging Face rows at a time.

    A kernel's HF row r is its column r (or, for q/k, column order[r]), so each slice reads those
    columns of the mapped diff; pages of both inputs are released after every slice.
    """
    change = diff.load_raw(stored)
    original = base.load_raw(tensor.name)
    base_bf16 = base.info(tensor.name).is_bf16
    rows = tensor.shape[0]
    step = max(1, _SLICE_BYTES // max(1, 4 * math.prod(tensor.shape[1:])))
    for start in range(0, rows, step):
        index = slice(start, start + step) if order is None else order[start : start + step]
        delta = change[:, index].T if parameter.transposed else change[index]
        total = _widened(original[start : start + step], base_bf16)
        total += _widened(delta, stored.is_bf16)
        writer.write(tensor.name, total, first_row=start)
        base.release(tensor.name)
        diff.release(stored)


def apply_easylm_diff(
    base_dir: str | os.PathLike[str],
    diff_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Koala's recovery: a Hugging Face LLaMA base plus an EasyLM streaming-checkpoint diff.

    EasyLM adds base and diff in its own parameter space (``diff_checkpoint --recover_diff``) and
    saves bfloat16; here each diff tensor is brought into the base's layout instead (kernels
    transposed, q/k rows permuted), which puts the same float32 sums in the same places, stored as
    bfloat16 too. Both inputs are memory-mapped and added a slice of rows at a time, so memory
    does not grow with the model or its largest tensor. Config and tokenizer files come from the
    base (Koala keeps LLaMA's vocabulary).
    """
    out_dir, diff_file = Path(out_dir), Path(diff_file)
    if not diff_file.is_file():
        raise ConversionError(f"{diff_file} is not a file; give the EasyLM diff file (koala_7b_diff_v2 …)")
    with open_checkpoint(base_dir) as base, StreamingCheckpoint(diff_file) as diff:
        arch = architecture_for(base.config)
        if not isinstance(arch, Llama):
            raise ConversionError(
                f"EasyLM diffs are of LLaMA models, but the base {base.directory} is {arch.arch_name}"
            )
        names = [n for n in base.names() if not n.endswith(arch.dropped_suffixes)]
        plan = {n: OutputTensor(n, base.info(n).shape, "BF16") for n in names}
        report = _Reporter(sum(t.nbytes for t in plan.values()), progress, cancel)
        done: set[str] = set()
        with _staged(out_dir, report.total) as staging:
            with SafetensorsWriter(staging, list(plan.values())) as writer:
                for stored in diff.arrays():
                    parameter = llama_parameter(stored.key)
                    if parameter is None:
                        raise ConversionError(
                            f"{diff_file.name} holds {stored.key}, which is not a parameter of EasyLM's LLaMA; the diff is of another model"
                        )
                    tensor = plan.get(parameter.hf_name)
                    if tensor is None or tensor.name in done:
                        problem = "twice" if tensor else f"but the base has no {parameter.hf_name}"
                        raise ConversionError(
                            f"{diff_file.name} holds {stored.key} {problem}; the diff was made for another base"
                        )
                    as_hf = stored.shape[::-1] if parameter.transposed else stored.shape
                    if as_hf != tensor.shape or not tensor.shape:
                        raise ConversionError(
                            f"{diff_file.name}: {stored.key} is {list(as_hf)} as a Hugging Face weight, but the base's "
                            f"{tensor.name} is {list(tensor.shape)}; the diff was made for another base"
                        )
                    _add_in_slices(
                        writer, tensor, base, diff, stored, parameter, _rotary_order(parameter, tensor.shape[0], arch)
                    )
                    done.add(tensor.name)
                    report.step(tensor.name, tensor.nbytes)
                missing = [n for n in names if n not in done]
                if missing:
                    raise ConversionError(
                        f"{diff_file.name} has no diff for {missing[0]} ({len(missing)} base tensors missing); "
                        "the file is incomplete, re-download it"
                    )
                writer.finish()
            _copy_metadata(staging, Path(base_dir))
    return out_dir


# --- byte-wise XOR -----------------------------------------------------------------------------


def _xor(data: bytes, key: bytes) -> bytes:
    """``data`` XOR ``key``, the key repeated cyclically when shorter."""
    stream = np.frombuffer(data, np.uint8)
    keystream = np.resize(np.frombuffer(key, np.uint8), stream.size)
    return np.bitwise_xor(stream, keystream).tobytes()


def xor_files(
    payload_dir: str | os.PathLike[str],
    base_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Open-Assistant's ``xor_codec.py`` decode: each payload file XOR the same-named base file.

    A shorter base file counts as zero-padded (the payload's tail passes through); a longer one is
    cut to the payload's length. ``added_tokens.json`` is copied as is. The base files must be
    byte-identical to the authors' (same transformers conversion), or the output is garbage.
    """
    payload_dir, base_dir, out_dir = Path(payload_dir), Path(base_dir), Path(out_dir)
    payloads = sorted(p for p in payload_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for payload in payloads:
        if payload.name != "added_tokens.json" and not (base_dir / payload.name).is_file():
            raise ConversionError(
                f"{base_dir} has no {payload.name}; the XOR needs every base file under the same name"
            )
    report = _Reporter(sum(p.stat().st_size for p in payloads), progress, cancel)
    with _staged(out_dir, report.total) as staging:
        for payload in payloads:
            target = staging / payload.name
            if payload.name == "added_tokens.json":
                shutil.copyfile(payload, target)
                report.step(payload.name, payload.stat().st_size)
                continue
            with payload.open("rb") as source, (base_dir / payload.name).open("rb") as key, target.open("wb") as out:
                while block := source.read(_BLOCK):
                    key_block = key.read(len(block))
                    key_block += bytes(len(block) - len(key_block))
                    out.write(_xor(block, key_block))
                    report.step(payload.name, len(block))
    return out_dir


_ENC_NAME = re.compile(r"^(?P<name>.+)\.(?P<sha>[0-9a-f]{64})\.enc$")


def decrypt_keystream(
    encrypted_dir: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    chunk_size: int = _BELLE_CHUNK,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """BELLE's ``decrypt.py``: every ``<name>.<sha256>.enc`` file becomes ``<name>``.

    The first 32 bytes of a file are the SHA-256 of its plaintext. The rest is read in
    ``chunk_size`` pieces, each XORed with the next ``chunk_size`` bytes of ``key_file`` (rewound
    to its start at end of file; a shorter last piece of key is repeated cyclically).
    """
    encrypted_dir, key_file, out_dir = Path(encrypted_dir), Path(key_file), Path(out_dir)
    files = sorted(p for p in encrypted_dir.iterdir() if _ENC_NAME.match(p.name))
    if not files:
        raise ConversionError(f"no <name>.<sha256>.enc files in {encrypted_dir}")
    if key_file.stat().st_size == 0:
        raise ConversionError(f"{key_file} is empty; BELLE's key is Meta's original consolidated.00.pth")
    report = _Reporter(sum(p.stat().st_size - 32 for p in files), progress, cancel)
    with _staged(out_dir, report.total) as staging:
        for encrypted in files:
            name = _ENC_NAME.match(encrypted.name)["name"]  # type: ignore[index]
            digest = hashlib.sha256()
            with encrypted.open("rb") as source, key_file.open("rb") as key, (staging / name).open("wb") as out:
                expected = source.read(32)
                while data := source.read(chunk_size):
                    key_chunk = key.read(chunk_size)
                    if not key_chunk:
                        key.seek(0)
                        key_chunk = key.read(chunk_size)
                    plain = _xor(data, key_chunk)
                    digest.update(plain)
                    out.write(plain)
                    report.step(name, len(data))
            if digest.digest() != expected:
                raise ConversionError(
                    f"{name} decrypts to the wrong SHA-256; the key must be Meta's original consolidated.00.pth of the right size"
                )
    return out_dir


# --- LoRA --------------------------------------------------------------------------------------


_LORA_NAME = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


@dataclass(frozen=True)
class LoraAdapter:
    """A PEFT LoRA adapter: ``pairs`` maps each adapted base weight to its (A, B) tensor names."""

    directory: Path
    scale: float
    alpha: float
    fan_in_fan_out: bool
    pairs: dict[str, tuple[str, str]]


_ADAPTER_CONFIG = Obj(
    {"peft_type": STR, "r": Int(minimum=1), "lora_alpha": Num(), "fan_in_fan_out": OneOf(BOOL, NULL)},
    required=("r", "lora_alpha"),
)


@contextmanager
def open_adapter(directory: str | os.PathLike[str]) -> Iterator[tuple[LoraAdapter, Checkpoint]]:
    """Read a PEFT adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``/``.bin``)."""
    directory = Path(directory)
    config_path = directory / "adapter_config.json"
    if not config_path.is_file():
        raise ConversionError(f"{directory} has no adapter_config.json; point at a PEFT LoRA adapter directory")
    config = read_json(config_path, _ADAPTER_CONFIG)
    if config.get("peft_type", "LORA") != "LORA":
        raise ConversionError(f"{directory} holds a {config['peft_type']} adapter; only LoRA can be merged")
    if config.get("use_rslora") or config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ConversionError(f"{directory} uses rsLoRA, DoRA or per-layer ranks; only plain LoRA is supported")
    r, alpha = config["r"], config["lora_alpha"]
    with _adapter_checkpoint(directory) as checkpoint:
        parts: dict[str, dict[str, str]] = {}
        for name in checkpoint.names():
            match = _LORA_NAME.match(name)
            if match is None:
                raise ConversionError(
                    f"{directory} holds {name}, which is not a LoRA A/B matrix (modules_to_save are not supported)"
                )
            parts.setdefault(match["module"] + ".weight", {})[match["part"]] = name
        incomplete = [target for target, found in parts.items() if set(found) != {"A", "B"}]
        if incomplete:
            raise ConversionError(f"{directory} has an unpaired LoRA matrix for {incomplete[0]}")
        pairs = {target: (found["A"], found["B"]) for target, found in parts.items()}
        yield LoraAdapter(directory, alpha / r, float(alpha), bool(config.get("fan_in_fan_out")), pairs), checkpoint


@contextmanager
def _adapter_checkpoint(directory: Path) -> Iterator[Checkpoint]:
    """The adapter's tensors through ``converters.checkpoint``.

    Its reader wants a checkpoint directory (config.json, ``*.safetensors`` or
    ``pytorch_model*.bin``), so this presents the adapter under those names through symlinks
    until the reader accepts adapter directories itself.
    """
    weights = directory / "adapter_model.safetensors"
    if not weights.is_file():
        weights = directory / "adapter_model.bin"
    if not weights.is_file():
        raise ConversionError(f"{directory} has no adapter_model.safetensors or adapter_model.bin")
    with tempfile.TemporaryDirectory(prefix="zootui-adapter-") as view:
        view_dir = Path(view)
        (view_dir / "config.json").symlink_to((directory / "adapter_config.json").resolve())
        view_name = weights.name if weights.suffix == ".safetensors" else "pytorch_model.bin"
        (view_dir / view_name).symlink_to(weights.resolve())
        with open_checkpoint(view_dir) as checkpoint:
            yield checkpoint


def _lora_delta(adapter: LoraAdapter, checkpoint: Checkpoint, target: str, shape: tuple[int, ...]) -> np.ndarray:
    a_name, b_name = adapter.pairs[target]
    a = checkpoint.load(a_name).astype(np.float32)
    b = checkpoint.load(b_name).astype(np.float32)
    delta = b @ a
    if adapter.fan_in_fan_out:  # GPT-2 style Conv1D weights are stored (in, out)
        delta = delta.T
    if delta.shape != shape:
        raise ConversionError(
            f"adapter {adapter.directory.name} changes {target} by {list(delta.shape)}, but the base tensor is {list(shape)}; wrong base model"
        )
    return adapter.scale * delta


def merge_lora(
    base_dir: str | os.PathLike[str],
    adapter_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Merge each adapter in turn into the base: W = W0 + (alpha/r)·B·A, then the next adapter.

    A chain (StackLLaMA: SFT adapter, then RL adapter) is summed in float32 and rounded once to
    the base's dtype, instead of after every merge as separate PEFT runs would. Config and
    tokenizer files come from the base.
    """
    out_dir = Path(out_dir)
    if not adapter_dirs:
        raise ConversionError("no adapter to merge")
    with open_checkpoint(base_dir) as base, _open_adapters(adapter_dirs) as adapters:
        names = base.names()
        for adapter, _ in adapters:
            stray = sorted(set(adapter.pairs) - set(names))
            if stray:
                raise ConversionError(
                    f"adapter {adapter.directory.name} targets {stray[0]}, which the base does not have; wrong base model"
                )
        plan = [OutputTensor(n, base.info(n).shape, _code_of(base, n)) for n in names]
        report = _Reporter(sum(t.nbytes for t in plan), progress, cancel)
        with _staged(out_dir, report.total) as staging:
            with SafetensorsWriter(staging, plan) as writer:
                for tensor in plan:
                    updates = [(a, c) for a, c in adapters if tensor.name in a.pairs]
                    if updates:
                        merged = base.load(tensor.name).astype(np.float32)
                        for adapter, checkpoint in updates:
                            merged += _lora_delta(adapter, checkpoint, tensor.name, tensor.shape)
                        writer.write(tensor.name, merged)
                    else:
                        writer.write(tensor.name, base.load_raw(tensor.name))
                    base.release(tensor.name)
                    report.step(tensor.name, tensor.nbytes)
                writer.finish()
            _copy_metadata(staging, Path(base_dir))
    return out_dir


@contextmanager
def _open_adapters(adapter_dirs: Sequence[str | os.PathLike[str]]) -> Iterator[list[tuple[LoraAdapter, Checkpoint]]]:
    with ExitStack() as stack:
        yield [stack.enter_context(open_adapter(d)) for d in adapter_dirs]


def write_lora_gguf(
    adapter_dir: str | os.PathLike[str],
    base_config: dict,
    out_path: str | os.PathLike[str],
) -> Path:
    """Write a PEFT adapter as a GGUF LoRA for llama.cpp (``Llama(..., lora_path=out_path)``).

    Tensors are named after the base GGUF's (``blk.3.attn_q.weight.lora_a``) and kept in PEFT
    layout, A (r, in) and B (out, r), as float32. Row reorders the converter applies to a base
    weight (LLaMA's Q/K rotary layout) are applied to B, whose rows are the weight's output rows.
    """
    out_path = Path(out_path)
    arch = architecture_for(base_config)
    with open_adapter(adapter_dir) as (adapter, checkpoint):
        if adapter.fan_in_fan_out:
            raise ConversionError(
                f"{adapter_dir} uses fan_in_fan_out weights; llama.cpp adapters expect (out, in) weights"
            )
        tensors: list[tuple[str, np.ndarray]] = []
        for target, (a_name, b_name) in sorted(adapter.pairs.items()):
            found = arch.name_map.get_type_and_name(target.removeprefix(arch.name_prefix), try_suffixes=(".weight",))
            if found is None:
                raise ConversionError(f"adapter tensor for {target} has no llama.cpp counterpart in {arch.arch_name}")
            tensor_type, gguf_name = found
            a = np.ascontiguousarray(checkpoint.load(a_name), dtype=np.float32)
            b = np.ascontiguousarray(checkpoint.load(b_name), dtype=np.float32)
            order = arch.row_order(tensor_type, b.shape[0])
            tensors.append((f"{gguf_name}.lora_a", a))
            tensors.append((f"{gguf_name}.lora_b", b if order is None else np.ascontiguousarray(b[order])))
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(out_path) as staging:
            writer = gguf.GGUFWriter(staging, arch.arch_name)
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter.alpha)
            for name, value in tensors:
                writer.add_tensor(name, value)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
    return out_path
