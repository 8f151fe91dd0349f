"""Hugging Face checkpoint directory -> one GGUF file, streamed a slice of rows at a time.

f32, f16, bf16 and q8_0 are written directly. Other types are written as an f16 (bf16 for bf16
checkpoints) intermediate beside the output and quantized by llama.cpp in a subprocess. Every file
appears under its final name only when complete (temporary name, then os.replace).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from . import __version__, hashing
from .archs import Architecture, PlannedTensor, architecture_for
from .checkpoint import Checkpoint, bf16_to_f32, open_checkpoint
from .errors import ConversionCancelled, ConversionError
from .files import partial_path
from .ggml import f16_to_f32, quantize_rows
from .progress import Progress, ProgressCallback
from .quantize import QUANT_SPECS, check_qtype, quantize
from .sizes import human_size
from .tokenizer import load_vocab

Q = gguf.GGMLQuantizationType
DIRECT_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
OUTTYPES = tuple(DIRECT_TYPES) + tuple(name for name in QUANT_SPECS if name not in DIRECT_TYPES)
DIRECT_OUTTYPES = tuple(DIRECT_TYPES)
"""Output types ``convert`` writes itself; the others go through llama.cpp's quantizer after it."""
INPUT_METADATA_FILES = (
    "config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "tokenizer.model",
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "merges.txt",
    "chat_template.jinja",
)
# Stop strings of the model's prompt format, as a JSON list (zootui's own metadata key).
STOP_STRINGS_KEY = "zootui.prompt.stop"
# The name of zootui's prompt format the chat template came from: the engine applies its reply rewriting.
PROMPT_FORMAT_KEY = "zootui.prompt.format"
_CHUNK_BYTES = 2 * 2**20  # rows encoded per step; with one step in flight per worker, bounds the working set
_HASH_PLACEHOLDER = "?" * 64  # not hex, so it can never be mistaken for a digest
_SPACE_MARGIN = 64 * 2**20
_HF_CACHE_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<revision>[0-9a-f]{40})$")


@dataclass(frozen=True)
class _OutTensor:
    plan: PlannedTensor
    qtype: gguf.GGMLQuantizationType
    nbytes: int


def _out_type(p: PlannedTensor, target: gguf.GGMLQuantizationType) -> gguf.GGMLQuantizationType:
    """Norms and biases stay f32 (as llama.cpp's converter keeps them); rows a block type cannot split fall back to f16."""
    if len(p.shape) < 2:
        return Q.F32
    block, _ = gguf.GGML_QUANT_SIZES[target]
    return target if p.shape[-1] % block == 0 else Q.F16


def _nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * type_size


def _encode(
    rows: np.ndarray, is_bf16: bool, qtype: gguf.GGMLQuantizationType, scale: float | None = None
) -> np.ndarray:
    """Converts a slice of source rows, times `scale` when there is one, to the bytes of `qtype`."""
    if is_bf16 and qtype == Q.BF16 and scale is None:
        return rows  # already bfloat16 bits: copy exactly
    if qtype == Q.F16 and not is_bf16 and scale is None:
        return rows.astype(np.float16, copy=False)
    if is_bf16:
        values = bf16_to_f32(rows)
    elif rows.dtype == np.float16:
        values = f16_to_f32(rows)
    else:
        values = rows.astype(np.float32, copy=False)
    if scale is not None:
        values = values * np.float32(scale)
    if qtype == Q.F32:
        return values
    if qtype == Q.F16:
        return values.astype(np.float16)
    return quantize_rows(values, qtype)


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def input_files(checkpoint: Checkpoint) -> list[Path]:
    """Every file the conversion reads: config, index, weights and tokenizer files."""
    present = [checkpoint.directory / name for name in INPUT_METADATA_FILES if (checkpoint.directory / name).is_file()]
    return sorted(set(present + checkpoint.files()), key=lambda p: p.name)


def checkpoint_input_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The files converting ``directory`` reads (opening it checks that it is a checkpoint at all)."""
    with open_checkpoint(directory) as checkpoint:
        return input_files(checkpoint)


def bits_per_weight(outtype: str) -> float:
    """Average bits per weight of an output type: exact for the direct types (gguf's block sizes), the
    quantizer's approximate figure for the others (the same the disk-space check uses)."""
    name = outtype.lower()
    if name in DIRECT_TYPES:
        block_size, type_size = gguf.GGML_QUANT_SIZES[DIRECT_TYPES[name][0]]
        return type_size * 8 / block_size
    if name in QUANT_SPECS:
        return QUANT_SPECS[name][1]
    raise ValueError(f"unknown weight type {outtype!r}; choose one of {', '.join(OUTTYPES)}")


def _sha256(path: Path, stop: Callable[[], bool]) -> str:
    return hashing.sha256_file(path, stop=stop) or _HASH_PLACEHOLDER


def provenance_from_path(directory: Path) -> dict:
    """Repo and revision when the directory is a Hugging Face cache snapshot."""
    match = _HF_CACHE_SNAPSHOT.search(directory.resolve().as_posix())
    if not match:
        return {}
    return {"repo": f"{match['org']}/{match['name']}", "revision": match["revision"]}


class _Writer:
    """Writes one GGUF: metadata through gguf.GGUFWriter, then tensor data streamed slice by slice."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        arch: Architecture,
        tensors: list[_OutTensor],
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        workers: int,
    ) -> None:
        self.checkpoint = checkpoint
        self.arch = arch
        self.tensors = tensors
        self.progress = progress
        self.cancel = cancel
        self.workers = workers
        self.bytes_total = sum(self._source_bytes(t.plan) for t in tensors)
        self.bytes_done = 0

    def _source_bytes(self, plan: PlannedTensor) -> int:
        """Bytes of the checkpoint this output reads (a part of a split tensor reads its rows only)."""
        if plan.source is None:
            return 0
        info = self.checkpoint.info(plan.source)
        return info.nbytes // max(info.shape[0], 1) * plan.shape[0] if info.shape else info.nbytes

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _report(self, tensor: str) -> None:
        if self.progress is not None:
            self.progress(Progress(self.bytes_done, self.bytes_total, tensor, "convert"))

    def write(
        self,
        path: Path,
        metadata: Callable[[gguf.GGUFWriter], None],
        files: list[Path],
        known_sha256: Mapping[str, str],
    ) -> None:
        writer = gguf.GGUFWriter(path, self.arch.arch_name)
        try:
            metadata(writer)
            # Digests are computed while the tensors stream (hashlib releases the GIL), then patched
            # into the already-written metadata, where placeholders of equal length hold their place.
            writer.add_array("zootui.source.sha256", [f"{_HASH_PLACEHOLDER}  {f.name}" for f in files])
            for t in self.tensors:
                raw_dtype = None if t.qtype in (Q.F32, Q.F16) else t.qtype
                dtype = {Q.F32: np.float32, Q.F16: np.float16, Q.BF16: np.uint16}.get(t.qtype, np.uint8)
                shape = t.plan.shape if dtype is not np.uint8 else gguf.quant_shape_to_byte_shape(t.plan.shape, t.qtype)
                writer.add_tensor_info(t.plan.name, shape, np.dtype(dtype), t.nbytes, raw_dtype=raw_dtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            metadata_end = writer.fout[0].tell()
            writer.write_ti_data_to_file()
            failed = threading.Event()  # don't keep reading a large checkpoint for a file that will be deleted
            with ThreadPoolExecutor(max_workers=1) as pool:
                digests: list[Future[str]] = [
                    pool.submit(_sha256, f, lambda: failed.is_set() or self._cancelled())
                    for f in files
                    if f.name not in known_sha256
                ]
                try:
                    self._write_data(writer, writer.fout[0])
                except BaseException:
                    failed.set()
                    raise
                computed = iter([d.result() for d in digests])
                results = [known_sha256[f.name] if f.name in known_sha256 else next(computed) for f in files]
                if self._cancelled():
                    raise ConversionCancelled()
                out = writer.fout[0]
                out.flush()
                self._patch_digests(path, out, metadata_end, files, results)
        finally:
            writer.close()

    def _write_data(self, writer: gguf.GGUFWriter, out) -> None:
        writer.write_padding(out, out.tell())
        self._report("")
        # Slices are encoded by a pool (numpy and ggml release the GIL) and written in order; at most
        # one slice per worker waits beyond the one being written, which bounds the memory.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for t in self.tensors:
                if t.plan.source is None:
                    out.write(np.ascontiguousarray(_encode(np.zeros(t.plan.shape, np.float32), False, t.qtype)).data)
                    writer.write_padding(out, t.nbytes)
                    continue
                info = self.checkpoint.info(t.plan.source)
                source = self.checkpoint.load_raw(t.plan.source)
                rows = t.plan.shape[0]
                row_bytes = max(1, info.nbytes // max(source.shape[0], 1))
                step = max(1, _CHUNK_BYTES // row_bytes)
                pending: deque[tuple[Future[np.ndarray], int]] = deque()
                for start in range(0, rows, step):
                    if self._cancelled():
                        raise ConversionCancelled()
                    index = (
                        slice(start, start + step)
                        if t.plan.row_order is None
                        else t.plan.row_order[start : start + step]
                    )
                    encoded = pool.submit(_encode, source[index], info.is_bf16, t.qtype, t.plan.scale)
                    pending.append((encoded, min(step, rows - start)))
                    if len(pending) > self.workers:
                        self._write_slice(out, t, row_bytes, *pending.popleft())
                while pending:
                    self._write_slice(out, t, row_bytes, *pending.popleft())
                writer.write_padding(out, t.nbytes)
                del source

    def _write_slice(self, out, t: _OutTensor, row_bytes: int, encoded: Future[np.ndarray], rows: int) -> None:
        out.write(np.ascontiguousarray(encoded.result()).data)
        self.checkpoint.release(t.plan.source)
        self.bytes_done += rows * row_bytes
        self._report(t.plan.name)

    @staticmethod
    def _patch_digests(path: Path, out, metadata_end: int, files: list[Path], digests: list[str]) -> None:
        with open(path, "rb") as f:
            head = f.read(metadata_end)
        for file, digest in zip(files, digests, strict=False):
            placeholder = f"{_HASH_PLACEHOLDER}  {file.name}".encode()
            position = head.find(placeholder)
            if position < 0 or head.find(placeholder, position + 1) >= 0:
                raise RuntimeError(f"cannot place the digest of {file.name} in the GGUF metadata")
            out.seek(position)
            out.write(digest.encode())
        out.seek(0, os.SEEK_END)


def convert(
    src_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    outtype: str = "q4_k_m",
    chat_template: str | None = None,
    provenance: dict | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    eos_token: str | None = None,
    nthreads: int | None = None,
    stop_strings: Sequence[str] = (),
    known_sha256: Mapping[str, str] | None = None,
    prompt_format: str | None = None,
) -> Path:
    """Converts the checkpoint in `src_dir` to a GGUF at `out_path` and returns that path.

    `provenance` may give "repo" and "revision" (inferred for Hugging Face cache snapshots);
    `eos_token` overrides the end-of-sequence token by its text (Dolly v2 ends replies with "### End");
    `nthreads` encodes slices in that many threads and runs the quantizer with as many (default: the usable CPUs);
    `stop_strings` end a reply besides the eos token (formats like Vicuna v0's "###"), stored as
    STOP_STRINGS_KEY for the chat engine;
    `prompt_format` names the zootui prompt format the template came from (PROMPT_FORMAT_KEY);
    `known_sha256` gives digests the caller already has (a download it verified), by file name: those
    files are not read again for the provenance digests.
    Raises ConversionError (one line, for the user) and ConversionCancelled when `cancel` is set.
    """
    outtype = outtype.lower()
    if outtype not in DIRECT_TYPES:
        check_qtype(outtype)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open_checkpoint(src_dir) as checkpoint:
        arch = architecture_for(checkpoint.config)
        plan = arch.plan(checkpoint)
        n_vocab = arch.vocab_rows(checkpoint)
        vocab = load_vocab(
            checkpoint.directory, n_vocab, checkpoint.config, arch.default_pre, chat_template, eos_token, arch.tokenizer
        )
        any_bf16 = any(checkpoint.info(p.source).is_bf16 for p in plan if p.source is not None)
        if outtype in DIRECT_TYPES:
            target, file_type = DIRECT_TYPES[outtype]
        else:  # the quantizer's input: lossless for f16 checkpoints, and bf16 ones keep their range
            target, file_type = DIRECT_TYPES["bf16" if any_bf16 else "f16"]
        tensors = [_OutTensor(p, q := _out_type(p, target), _nbytes(p.shape, q)) for p in plan]
        gguf_bytes = sum(t.nbytes for t in tensors)
        needed = gguf_bytes + _SPACE_MARGIN
        if outtype not in DIRECT_TYPES:
            needed += sum(math.prod(p.shape) for p in plan) * QUANT_SPECS[outtype][1] // 8
        free = shutil.disk_usage(out_path.parent).free
        if free < needed:
            raise ConversionError(
                f"not enough disk space in {out_path.parent}: need {human_size(needed)}, {human_size(free)} free; free some space or choose another -o"
            )

        source = {**provenance_from_path(checkpoint.directory), **(provenance or {})}
        name = source.get("repo", checkpoint.directory.name)

        def metadata(writer: gguf.GGUFWriter) -> None:
            writer.add_type(gguf.GGUFType.MODEL)
            writer.add_name(name.split("/")[-1])
            writer.add_file_type(file_type)
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            arch.add_hparams(writer, n_vocab)
            vocab.add_to(writer)
            if "repo" in source:
                writer.add_source_repo_url(f"https://huggingface.co/{source['repo']}")
                writer.add_string("zootui.source.repo", source["repo"])
            if source.get("revision"):
                writer.add_string("zootui.source.revision", source["revision"])
            writer.add_string("zootui.converter.version", __version__)
            if stop_strings:
                # One JSON string rather than a GGUF array: llama.cpp hands string arrays to Python
                # unescaped, and a stop string may hold a newline or a quote.
                writer.add_string(STOP_STRINGS_KEY, json.dumps(list(stop_strings)))
            if prompt_format:
                writer.add_string(PROMPT_FORMAT_KEY, prompt_format)

        direct_path = partial_path(out_path)
        try:
            _Writer(checkpoint, arch, tensors, progress, cancel, nthreads or _usable_cpus()).write(
                direct_path, metadata, input_files(checkpoint), known_sha256 or {}
            )
            if outtype in DIRECT_TYPES:
                os.replace(direct_path, out_path)
            else:
                quantize(direct_path, out_path, outtype, progress=progress, cancel=cancel, nthreads=nthreads)
        finally:
            direct_path.unlink(missing_ok=True)
    return out_path
