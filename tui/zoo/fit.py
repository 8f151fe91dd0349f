"""Fit: will a model fit this machine? Disk, RAM and VRAM estimates before a job or a load.

Two inputs give the same estimate (``FitEstimate``):

- a catalog variant (``fit_variant``): the layer shape is looked up from its architecture and size
  (the 2023 shapes are few and public, ``KNOWN_SHAPES``), the weight size follows from the quant type;
- a local GGUF (``fit_gguf``): shape and per-tensor sizes come from the file's own metadata.

Memory follows how llama.cpp places a model: the token embeddings always stay in RAM; with
``n_gpu_layers = n`` the last ``n`` repeating blocks (and their share of the KV cache) go to the GPU,
and ``n > n_layer`` also moves the output projection there, so a 32-block LLaMA counts as 33
offloadable layers. The machine's free memory is an input (``Resources``), read by
``free_resources`` or given by a caller or a test.

gguf and converters (numpy) are imported where they are used, so importing this module costs the
app's start nothing.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any

from tui.zoo.catalog import Recipe, ReleaseForm, Status, Variant, shown

GB = 1e9  # decimal, as disk and RAM sizes are usually printed (hub.py's messages use it too)
KV_BYTES_PER_VALUE = 2  # llama.cpp's default KV cache type is f16
# llama.cpp's compute buffers (they grow with n_ctx and n_batch: a few hundred MB for a 7B model at
# 4096) plus the Python process and its libraries. A flat allowance: the verdict's "tight" band
# absorbs the rest of the uncertainty.
RUNTIME_OVERHEAD_BYTES = 512 * 2**20
# Kept free on the GPU: the CUDA context (300-500 MB) and the GPU's compute buffer, neither of
# which is in free memory yet when nvidia-smi is asked before loading.
GPU_RESERVE_BYTES = 1 * 2**30
# A need above this share of what is free is "tight": the estimates are within about 10%, and
# other programs keep allocating while a job runs.
TIGHT_SHARE = 0.8
# A catalog variant is matched to the known shape of its architecture whose size is nearest,
# within this relative distance (LLaMA "30B" and "33B" are the same 32.5B-parameter model).
SIZE_MATCH_TOLERANCE = 0.15
# Largest block count, width or head count read from a GGUF's metadata (a list of per-block sizes is
# allocated from the block count); real models stay far below it.
MAX_GGUF_COUNT = 2**20


class UnknownShape(ValueError):
    """No estimate is possible for this variant; the message says why, in one line."""


class Verdict(str, Enum):
    FITS = "fits"
    TIGHT = "tight"
    DOES_NOT_FIT = "does not fit"


@dataclass(frozen=True)
class KnownShape:
    """A published 2023 model shape (from its Hugging Face config.json)."""

    label: str
    arch: str
    """Hugging Face architecture class, as the catalog names it."""
    parameters: int
    """Exact count, embeddings included (computed from the config; the papers' tables agree)."""
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    tied_output: bool
    """The output projection reuses the token embeddings (BLOOM)."""

    def model_shape(self) -> ModelShape:
        return ModelShape(
            arch=self.arch,
            n_layer=self.n_layer,
            n_embd=self.n_embd,
            n_head=self.n_head,
            n_head_kv=self.n_head_kv,
            key_length=self.head_dim,
            value_length=self.head_dim,
            source=(
                f"assumed {self.label}: {self.n_layer} layers, {self.n_embd} wide, {self.n_head} heads "
                f"({self.n_head_kv} KV) of {self.head_dim}"
            ),
        )

    def weights(self, n_vocab: int, bits: float) -> WeightLayout:
        """Bytes at ``bits`` per weight, with ``n_vocab`` embedding rows (a variant may add a few)."""

        def size(parameters: int) -> int:
            return math.ceil(parameters * bits / 8)

        in_blocks = self.parameters - self.n_vocab * self.n_embd * (1 if self.tied_output else 2)
        embedding = n_vocab * self.n_embd
        return WeightLayout(
            input_bytes=size(embedding),
            block_bytes=(size(in_blocks // self.n_layer),) * self.n_layer,
            output_bytes=size(embedding),
            output_tied=self.tied_output,
        )


KNOWN_SHAPES: tuple[KnownShape, ...] = (
    # LLaMA-1 (and LLaMA-2 7B/13B, which keep the shape): untied output, vocab 32000, head_dim 128.
    KnownShape("LLaMA-7B", "LlamaForCausalLM", 6_738_415_616, 32, 4096, 32, 32, 128, 32000, False),
    KnownShape("LLaMA-13B", "LlamaForCausalLM", 13_015_864_320, 40, 5120, 40, 40, 128, 32000, False),
    KnownShape("LLaMA-30B", "LlamaForCausalLM", 32_528_943_616, 60, 6656, 52, 52, 128, 32000, False),
    KnownShape("LLaMA-65B", "LlamaForCausalLM", 65_285_660_672, 80, 8192, 64, 64, 128, 32000, False),
    # GPT-NeoX: Pythia (Dolly v2, OpenChatKit 7B, OpenAssistant 12B) and GPT-NeoX-20B; untied embed_out.
    KnownShape("Pythia-2.8B", "GPTNeoXForCausalLM", 2_775_208_960, 32, 2560, 32, 32, 80, 50304, False),
    KnownShape("Pythia-6.9B", "GPTNeoXForCausalLM", 6_857_302_016, 32, 4096, 32, 32, 128, 50432, False),
    KnownShape("Pythia-12B", "GPTNeoXForCausalLM", 11_846_072_320, 36, 5120, 40, 40, 128, 50688, False),
    KnownShape("GPT-NeoX-20B", "GPTNeoXForCausalLM", 20_554_567_680, 44, 6144, 64, 64, 96, 50432, False),
    # BLOOM: tied embeddings, vocab 250880.
    KnownShape("BLOOM-560M", "BloomForCausalLM", 559_214_592, 24, 1024, 16, 16, 64, 250880, True),
    KnownShape("BLOOM-1b7", "BloomForCausalLM", 1_722_408_960, 24, 2048, 16, 16, 128, 250880, True),
    KnownShape("BLOOM-3b", "BloomForCausalLM", 3_002_557_440, 30, 2560, 32, 32, 80, 250880, True),
    KnownShape("BLOOM-7b1", "BloomForCausalLM", 7_069_016_064, 30, 4096, 32, 32, 128, 250880, True),
    # ChatGLM2/3-6B: multi-query attention with 2 KV groups of 128 (ChatGLM-6B v1 is unsupported).
    KnownShape("ChatGLM2-6B", "ChatGLMModel", 6_243_584_000, 28, 4096, 32, 2, 128, 65024, False),
)


@dataclass(frozen=True)
class ModelShape:
    """What the KV cache and layer offloading depend on."""

    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int
    source: str
    """Where the numbers come from: the GGUF's metadata, or the known shape assumed for a variant."""
    n_ctx_train: int | None = None
    """The context length the model was trained with (a GGUF's ``{arch}.context_length``), when known."""

    def kv_bytes_per_layer(self, n_ctx: int) -> int:
        """One layer's K and V for n_ctx tokens: n_ctx × n_head_kv × (key + value length) × 2 bytes."""
        return n_ctx * self.n_head_kv * (self.key_length + self.value_length) * KV_BYTES_PER_VALUE

    def kv_cache_bytes(self, n_ctx: int) -> int:
        return self.n_layer * self.kv_bytes_per_layer(n_ctx)


@dataclass(frozen=True)
class WeightLayout:
    """A model's weight bytes, split the way llama.cpp places them on CPU and GPU."""

    input_bytes: int
    """Token embeddings and the small tensors outside the blocks: always in RAM."""
    block_bytes: tuple[int, ...]
    """Each repeating block, in order; ``n_gpu_layers = n`` offloads the last n."""
    output_bytes: int
    """The output projection, offloaded as the extra layer when n_gpu_layers > n_layer."""
    output_tied: bool
    """The output reuses the token embeddings: it costs RAM only once, but VRAM again when offloaded."""

    @property
    def total_bytes(self) -> int:
        return self.input_bytes + sum(self.block_bytes) + (0 if self.output_tied else self.output_bytes)


@dataclass(frozen=True)
class Resources:
    """What this machine has free; None where it cannot be known (no /proc/meminfo, no NVIDIA GPU)."""

    ram_bytes: int | None
    disk_bytes: int
    vram_bytes: int | None


@dataclass(frozen=True)
class DiskNeed:
    """Bytes a job writes, by stage."""

    download_bytes: int
    """What the Hub serves: the variant's files plus the base model its recipe starts from."""
    intermediate_bytes: int
    """The recovered checkpoint (recipes) and the f16 GGUF the quantizer reads (non-direct types)."""
    output_bytes: int
    """The quantized GGUF."""

    @property
    def total_bytes(self) -> int:
        return self.download_bytes + self.intermediate_bytes + self.output_bytes


@dataclass(frozen=True)
class FitEstimate:
    name: str
    quant: str | None
    """Weight type: the planned one for a variant, the file's own for a GGUF (None if it does not say)."""
    n_ctx: int
    shape: ModelShape
    weights: WeightLayout
    disk: DiskNeed | None
    """None for a model already on disk."""
    free: Resources
    gpu_layers: int
    """Suggested n_gpu_layers: what fits in free VRAM (0 without a GPU)."""
    ram_bytes: int
    """RAM needed with ``gpu_layers`` offloaded: weights left on the CPU, their KV cache, overhead."""
    vram_bytes: int
    """VRAM needed with ``gpu_layers`` offloaded (reserve not included)."""
    verdict: Verdict
    reason: str

    @property
    def kv_cache_bytes(self) -> int:
        return self.shape.kv_cache_bytes(self.n_ctx)

    @property
    def offloadable_layers(self) -> int:
        """Repeating blocks plus the output projection, as llama.cpp counts n_gpu_layers."""
        return self.shape.n_layer + 1

    def summary(self) -> str:
        """One line: "fits: needs 4.6 GB RAM of 18.2 free · disk 27.0+27.0+4.1 GB of 80.0 free · GPU: none"."""
        ram_free = "unknown free" if self.free.ram_bytes is None else f"of {_gb(self.free.ram_bytes)} free"
        parts = [f"{self.verdict.value}: needs {_gb(self.ram_bytes)} GB RAM {ram_free}"]
        if self.disk is None:
            parts.append(f"file {_gb(self.weights.total_bytes)} GB")
        else:
            stages = "+".join(
                _gb(size) for size in (self.disk.download_bytes, self.disk.intermediate_bytes, self.disk.output_bytes)
            )
            parts.append(f"disk {stages} GB of {_gb(self.free.disk_bytes)} free")
        if self.free.vram_bytes is None:
            parts.append("GPU: none")
        else:
            parts.append(
                f"GPU: {self.gpu_layers} of {self.offloadable_layers} layers "
                f"({_gb(self.vram_bytes)} GB of {_gb(self.free.vram_bytes)} free)"
            )
        return " · ".join(parts)

    def to_dict(self) -> dict[str, object]:
        """For JSON output: sizes in bytes."""
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "summary": self.summary(),
            "quant": self.quant,
            "n_ctx": self.n_ctx,
            "shape": self.shape.source,
            "weights_bytes": self.weights.total_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "ram_bytes": self.ram_bytes,
            "vram_bytes": self.vram_bytes,
            "gpu_layers": self.gpu_layers,
            "offloadable_layers": self.offloadable_layers,
            "disk": None
            if self.disk is None
            else {
                "download_bytes": self.disk.download_bytes,
                "intermediate_bytes": self.disk.intermediate_bytes,
                "output_bytes": self.disk.output_bytes,
            },
            "free": {
                "ram_bytes": self.free.ram_bytes,
                "disk_bytes": self.free.disk_bytes,
                "vram_bytes": self.free.vram_bytes,
            },
        }


def _gb(size: float) -> str:
    return f"{size / GB:.1f}"


# --- what this machine has free -------------------------------------------------------------------


def free_resources(data_dir: Path) -> Resources:
    """Free RAM (MemAvailable), free disk where ``data_dir`` is (or will be), free VRAM of NVIDIA GPUs."""
    return Resources(ram_bytes=available_ram(), disk_bytes=free_disk(data_dir), vram_bytes=free_vram())


def available_ram(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable: what can be allocated without swapping (page cache counts as free). Linux only."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return None


def free_disk(directory: Path) -> int:
    """Free bytes on the filesystem that holds ``directory``, or would once it is created."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def free_vram() -> int | None:
    """Free memory summed over the NVIDIA GPUs nvidia-smi lists (llama.cpp splits layers across
    them); None without nvidia-smi or when it fails (no driver)."""
    lines = _query_gpus("memory.free")
    try:
        return None if lines is None else sum(int(line) for line in lines) * 2**20  # reported in MiB
    except ValueError:
        return None


def gpu_names() -> list[str]:
    """The NVIDIA GPUs' names as nvidia-smi prints them ("NVIDIA H200"); empty without nvidia-smi."""
    return _query_gpus("name") or []


def _query_gpus(field: str) -> list[str] | None:
    """One line per GPU of ``nvidia-smi --query-gpu=field``; None without nvidia-smi or when it fails."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return None
    try:
        result = subprocess.run(
            [command, f"--query-gpu={field}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


# --- weights and shapes ---------------------------------------------------------------------------


def bits_per_weight(quant: str) -> float:
    """Average bits per weight of a converter output type (``converters.bits_per_weight``)."""
    from converters import bits_per_weight as converter_bits

    return converter_bits(quant)


def known_shape(variant: Variant) -> KnownShape:
    """The published shape of the variant's architecture nearest its size; UnknownShape if none is close."""
    if variant.parameters_b is None:
        raise UnknownShape(f"{variant.id}: the catalog gives no parameter count")
    candidates = [shape for shape in KNOWN_SHAPES if shape.arch == variant.arch]
    if not candidates:
        raise UnknownShape(f"{variant.id}: no known layer shapes for {variant.arch}")
    wanted = variant.parameters_b * 1e9
    nearest = min(candidates, key=lambda shape: abs(shape.parameters - wanted))
    if abs(nearest.parameters - wanted) > SIZE_MATCH_TOLERANCE * wanted:
        raise UnknownShape(f"{variant.id}: no known {variant.arch} shape near {variant.parameters_b:g}B parameters")
    return nearest


def read_gguf(path: Path) -> tuple[ModelShape, WeightLayout, str | None]:
    """Shape, per-tensor weight sizes and weight type from a GGUF's header (no tensor data read)."""
    status = path.stat()
    return _read_gguf(path.resolve(), status.st_mtime_ns, status.st_size)


@lru_cache(maxsize=64)
def _read_gguf(path: Path, mtime_ns: int, size: int) -> tuple[ModelShape, WeightLayout, str | None]:
    """Remembered per file version, for the browser moving back and forth over the same models."""
    import gguf

    from tui.zoo.gguf_header import read_header

    header = read_header(path)

    def value(key: str) -> Any:
        return header.metadata.get(key)

    arch = str(value(gguf.Keys.General.ARCHITECTURE))

    def arch_int(key: str) -> int | None:
        """A count from the metadata; the file may come from anywhere, so absurd counts are refused."""
        name = key.format(arch=arch)
        found = value(name)
        if found is None:
            return None
        if not isinstance(found, int) or isinstance(found, bool) or not 0 <= found <= MAX_GGUF_COUNT:
            raise ValueError(f"{path.name}: its metadata gives {name} as {found!r}, not a count zootui can use")
        return found

    n_layer = arch_int(gguf.Keys.LLM.BLOCK_COUNT)
    n_embd = arch_int(gguf.Keys.LLM.EMBEDDING_LENGTH)
    n_head = arch_int(gguf.Keys.Attention.HEAD_COUNT)
    if not n_layer or not n_embd or not n_head:
        raise ValueError(f"{path.name}: its metadata lacks the {arch} block count, width or head count")
    # Absent keys mean llama.cpp's defaults: as many KV heads as heads, and n_embd / n_head per head.
    n_head_kv = arch_int(gguf.Keys.Attention.HEAD_COUNT_KV) or n_head
    key_length = arch_int(gguf.Keys.Attention.KEY_LENGTH) or n_embd // n_head
    value_length = arch_int(gguf.Keys.Attention.VALUE_LENGTH) or n_embd // n_head
    shape = ModelShape(
        arch,
        n_layer,
        n_embd,
        n_head,
        n_head_kv,
        key_length,
        value_length,
        source=f"GGUF metadata of {path.name}",
        n_ctx_train=arch_int(gguf.Keys.LLM.CONTEXT_LENGTH),
    )

    blocks = [0] * n_layer
    sizes = {tensor.name: tensor.n_bytes for tensor in header.tensors}
    input_bytes = 0
    for name, size in sizes.items():
        block = int(name.split(".")[1]) if name.startswith("blk.") else None
        if block is not None and block < n_layer:  # extra blocks past block_count count with the CPU part
            blocks[block] += size
        elif name != "output.weight":
            input_bytes += size
    tied = "output.weight" not in sizes
    # Without output.weight llama.cpp reuses token_embd for the output, copying it to the GPU when offloaded.
    output_bytes = sizes.get("token_embd.weight", 0) if tied else sizes["output.weight"]
    file_type = value(gguf.Keys.General.FILE_TYPE)
    quant = quant_name(file_type) if isinstance(file_type, int) and not isinstance(file_type, bool) else None
    return shape, WeightLayout(input_bytes, tuple(blocks), output_bytes, tied), quant


def quant_name(file_type: int) -> str:
    """llama.cpp's file type number (``general.file_type``) as the converter names it: 15 -> "q4_k_m"."""
    import gguf

    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return f"file type {file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


# --- estimates ------------------------------------------------------------------------------------


def fit_variant(variant: Variant, *, quant: str, n_ctx: int, free: Resources) -> FitEstimate:
    """Estimate getting and running a catalog variant as a ``quant`` GGUF at ``n_ctx`` tokens of context.

    Raises UnknownShape for variants zootui cannot run or whose shape it does not know, ValueError
    for an unknown ``quant``.
    """
    from tui.zoo.jobs.plan import quantizes

    if variant.status is Status.UNSUPPORTED:
        raise UnknownShape(f"{variant.id}: unsupported ({shown(variant.reason or '')})")
    known = known_shape(variant)
    n_vocab = variant.vocab_size or known.n_vocab
    weights = known.weights(n_vocab, bits_per_weight(quant))
    f16_bytes = known.weights(n_vocab, bits_per_weight("f16")).total_bytes
    disk = DiskNeed(
        download_bytes=_download_bytes(variant, f16_bytes),
        # Recovery writes a whole f16 checkpoint; types llama.cpp quantizes are first written as f16 GGUF
        # (chatglm.cpp's converter writes every type it has directly).
        intermediate_bytes=(f16_bytes if variant.recipe is not Recipe.NONE else 0)
        + (f16_bytes if quantizes(quant, variant.runtime) else 0),
        output_bytes=weights.total_bytes,
    )
    return _estimate(variant.id, quant.lower(), n_ctx, known.model_shape(), weights, disk, free)


def _download_bytes(variant: Variant, f16_bytes: int) -> int:
    """The variant's published files plus its base. Unknown sizes assume an f16 checkpoint of the
    shape; LoRA adapters without a size count as nothing (tens of MB next to gigabytes)."""
    if variant.release_form is ReleaseForm.NONE:
        return 0  # nothing published: the user's own checkpoint is already on disk
    if variant.download_gb is not None:
        own = round(variant.download_gb * GB)
    else:
        own = 0 if variant.release_form is ReleaseForm.LORA else f16_bytes
    base = f16_bytes if variant.recipe is not Recipe.NONE else 0
    return own + base


def fit_gguf(path: Path, *, n_ctx: int, free: Resources) -> FitEstimate:
    """Estimate loading the GGUF at ``path`` with ``n_ctx`` tokens of context."""
    shape, weights, quant = read_gguf(path)
    return _estimate(path.stem, quant, n_ctx, shape, weights, None, free)


def running_need(path: Path, *, n_ctx: int, gpu_layers: int) -> tuple[int, int]:
    """(RAM, VRAM) bytes the GGUF at ``path`` takes loaded with ``n_ctx`` tokens and ``gpu_layers``
    offloaded (-1: all), as the engine loads it; for deciding which models can stay loaded together."""
    shape, weights, _ = read_gguf(path)
    layers = shape.n_layer + 1 if gpu_layers < 0 else gpu_layers
    return _placement(shape, weights, n_ctx, layers)


def suggest_gpu_layers(shape: ModelShape, weights: WeightLayout, n_ctx: int, vram_bytes: int | None) -> int:
    """The largest n_gpu_layers whose weights and KV cache fit in ``vram_bytes`` less GPU_RESERVE_BYTES."""
    if vram_bytes is None:
        return 0
    budget = vram_bytes - GPU_RESERVE_BYTES
    kv_per_layer = shape.kv_bytes_per_layer(n_ctx)
    layers = 0
    for block in reversed(weights.block_bytes):  # llama.cpp offloads the last blocks first
        budget -= block + kv_per_layer
        if budget < 0:
            return layers
        layers += 1
    return layers + 1 if budget >= weights.output_bytes else layers


def _placement(shape: ModelShape, weights: WeightLayout, n_ctx: int, gpu_layers: int) -> tuple[int, int]:
    """(RAM, VRAM) bytes with ``gpu_layers`` offloaded."""
    on_gpu_blocks = min(gpu_layers, shape.n_layer)
    output_on_gpu = gpu_layers > shape.n_layer
    kv_per_layer = shape.kv_bytes_per_layer(n_ctx)
    cpu_blocks = weights.block_bytes[: shape.n_layer - on_gpu_blocks]
    cpu_output = 0 if output_on_gpu or weights.output_tied else weights.output_bytes
    ram = (
        weights.input_bytes
        + sum(cpu_blocks)
        + cpu_output
        + (shape.n_layer - on_gpu_blocks) * kv_per_layer
        + RUNTIME_OVERHEAD_BYTES
    )
    vram = (
        sum(weights.block_bytes[shape.n_layer - on_gpu_blocks :])
        + on_gpu_blocks * kv_per_layer
        + (weights.output_bytes if output_on_gpu else 0)
    )
    return ram, vram


def _estimate(
    name: str,
    quant: str | None,
    n_ctx: int,
    shape: ModelShape,
    weights: WeightLayout,
    disk: DiskNeed | None,
    free: Resources,
) -> FitEstimate:
    gpu_layers = suggest_gpu_layers(shape, weights, n_ctx, free.vram_bytes)
    ram, vram = _placement(shape, weights, n_ctx, gpu_layers)
    checks = [("RAM", ram, free.ram_bytes)]
    if disk is not None:
        checks.append(("disk", disk.total_bytes, free.disk_bytes))
    verdict, reason = _judge(checks)
    return FitEstimate(
        name=name,
        quant=quant,
        n_ctx=n_ctx,
        shape=shape,
        weights=weights,
        disk=disk,
        free=free,
        gpu_layers=gpu_layers,
        ram_bytes=ram,
        vram_bytes=vram,
        verdict=verdict,
        reason=reason,
    )


def _judge(checks: list[tuple[str, int, int | None]]) -> tuple[Verdict, str]:
    """The worst verdict over (resource, needed, free) checks, with the reason naming the resource."""
    known = [(resource, needed, free) for resource, needed, free in checks if free is not None]
    for resource, needed, free in known:
        if needed > free:
            return Verdict.DOES_NOT_FIT, f"{resource}: needs {_gb(needed)} GB, {_gb(free)} GB free"
    for resource, needed, free in known:
        if needed > TIGHT_SHARE * free:
            return Verdict.TIGHT, (
                f"{resource}: needs {_gb(needed)} GB of {_gb(free)} GB free, less than {1 - TIGHT_SHARE:.0%} to spare"
            )
    unknown = [resource for resource, _, free in checks if free is None]
    if unknown:
        return Verdict.FITS, f"fits where known; free {' and '.join(unknown)} could not be read"
    return Verdict.FITS, "fits with room to spare"
