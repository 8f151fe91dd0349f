"""ggml's own row quantizers and half-float converter, called in-process through ctypes on the
libggml-base and libggml-cpu that llama-cpp-python ships.

``ggml_quantize_chunk`` is the function llama.cpp's quantizer (``llama_model_quantize``) calls for
every tensor, so what it writes is bit for bit llama.cpp's. It is plain C, without global state
for the types that need no importance matrix, and ctypes releases the GIL while it runs: several
threads can quantize slices of one tensor at once. q8_0 goes through the CPU backend's vectorised
row quantizer instead (see ``quantize_rows``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

import gguf
import numpy as np

from .errors import ConversionError


@cache
def _library(name: str) -> ctypes.CDLL:
    """llama-cpp-python's ``lib<name>``, found without importing llama_cpp (which would load
    libllama and its backends for nothing)."""
    spec = importlib.util.find_spec("llama_cpp")
    folders = [Path(location) / "lib" for location in (spec.submodule_search_locations or [])] if spec else []
    files = {"win32": (f"{name}.dll",), "darwin": (f"lib{name}.dylib", f"lib{name}.so")}.get(sys.platform)
    for path in (folder / file for folder in folders for file in files or (f"lib{name}.so",)):
        if path.is_file():
            return ctypes.CDLL(str(path))
    raise ConversionError(f"llama-cpp-python's {name} library was not found; reinstall llama-cpp-python")


@cache
def _quantizer() -> Callable[..., int]:
    quantize_chunk = _library("ggml-base").ggml_quantize_chunk
    quantize_chunk.restype = ctypes.c_size_t
    quantize_chunk.argtypes = [
        ctypes.c_int,  # enum ggml_type
        ctypes.c_void_p,  # const float * src
        ctypes.c_void_p,  # void * dst
        ctypes.c_int64,  # start (element index)
        ctypes.c_int64,  # nrows
        ctypes.c_int64,  # n_per_row
        ctypes.c_void_p,  # const float * imatrix (none)
    ]
    return quantize_chunk


@cache
def _cpu_backend() -> ctypes.CDLL:
    """libggml-cpu, initialised: its init fills the half-float tables its functions fall back on."""
    cpu = _library("ggml-cpu")
    cpu.ggml_cpu_init.restype = None
    cpu.ggml_cpu_init()
    return cpu


@cache
def _q8_0_quantizer() -> Callable[..., None]:
    quantize = _cpu_backend().quantize_row_q8_0
    quantize.restype = None
    quantize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]  # const float * x, void * y, k
    return quantize


@cache
def _f16_widener() -> Callable[..., None]:
    # The CPU backend's converter uses the processor's half-float instructions (F16C, NEON): about
    # ten times ggml-base's portable one, and exact like it.
    widen = _cpu_backend().ggml_cpu_fp16_to_fp32
    widen.restype = None
    widen.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return widen


def f16_to_f32(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float16 -> float32 (exact), with ggml's vectorised converter; into ``out`` (C-contiguous float32
    of the same shape) when given, so a caller converting tensor after tensor can reuse one buffer."""
    source = np.ascontiguousarray(values, dtype=np.float16)
    if out is None:
        out = np.empty(source.shape, np.float32)
    elif out.shape != source.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 of shape {source.shape}")
    _f16_widener()(source.ctypes.data, out.ctypes.data, source.size)
    return out


def quantize_rows(values: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """The bytes of ``qtype`` for the rows of ``values`` (float32, rows × n, n a multiple of the block size).

    q8_0 is quantized by the CPU backend's ``quantize_row_q8_0``, the vectorised (AVX2, NEON …) function
    llama.cpp quantizes activations with, about ten times the reference ``ggml_quantize_chunk`` calls
    (scalar C rounding each value with ``roundf``, which took half of a q8_0 conversion's CPU time). Its
    blocks have the reference's scale; it multiplies by 127/amax where the reference divides by amax/127,
    and rounds halves to even where the reference rounds them away from zero, so about one block in 250
    has one value a step away from what llama.cpp's quantizer writes (each value still within half a
    step of exact). Every other type is the reference's, bit for bit.
    """
    rows = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, values.shape[-1])
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    if rows.shape[1] % block:  # the C quantizers would write past ``out`` (their own check is an assert)
        raise ValueError(f"rows of {rows.shape[1]} values do not split into {qtype.name} blocks of {block}")
    out = np.empty((rows.shape[0], rows.shape[1] // block * type_size), np.uint8)
    if qtype == gguf.GGMLQuantizationType.Q8_0:
        _q8_0_quantizer()(rows.ctypes.data, out.ctypes.data, rows.size)
        return out
    written = _quantizer()(int(qtype), rows.ctypes.data, out.ctypes.data, 0, rows.shape[0], rows.shape[1], None)
    if written != out.size:  # a type needing an imatrix or an init, which the converter never asks for
        raise ConversionError(f"ggml wrote {written} bytes quantizing to {qtype.name}, expected {out.size}")
    return out
