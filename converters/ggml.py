"""ggml's own row quantizer, called in-process through ctypes on the libggml-base that llama-cpp-python ships.

``ggml_quantize_chunk`` is the function llama.cpp's quantizer (``llama_model_quantize``) calls for
every tensor, so q8_0 written here is bit for bit llama.cpp's. It is plain C, without global state
for the types that need no importance matrix, and ctypes releases the GIL while it runs: several
threads can quantize slices of one tensor at once.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from functools import cache
from pathlib import Path

import gguf
import numpy as np

from .errors import ConversionError

_LIBRARY_NAMES = {"win32": ("ggml-base.dll",), "darwin": ("libggml-base.dylib", "libggml-base.so")}


@cache
def _library() -> ctypes.CDLL:
    # Found without importing llama_cpp, which would load libllama and its backends for nothing.
    spec = importlib.util.find_spec("llama_cpp")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        for name in _LIBRARY_NAMES.get(sys.platform, ("libggml-base.so",)):
            path = Path(location) / "lib" / name
            if path.is_file():
                lib = ctypes.CDLL(str(path))
                lib.ggml_quantize_chunk.restype = ctypes.c_size_t
                lib.ggml_quantize_chunk.argtypes = [
                    ctypes.c_int,  # enum ggml_type
                    ctypes.c_void_p,  # const float * src
                    ctypes.c_void_p,  # void * dst
                    ctypes.c_int64,  # start (element index)
                    ctypes.c_int64,  # nrows
                    ctypes.c_int64,  # n_per_row
                    ctypes.c_void_p,  # const float * imatrix (none)
                ]
                lib.ggml_fp16_to_fp32_row.restype = None
                lib.ggml_fp16_to_fp32_row.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
                return lib
    raise ConversionError("llama-cpp-python's libggml-base library was not found; reinstall llama-cpp-python")


def f16_to_f32(values: np.ndarray) -> np.ndarray:
    """float16 -> float32 (exact), with ggml's row converter: about twice as fast as numpy's cast."""
    source = np.ascontiguousarray(values, dtype=np.float16)
    out = np.empty(source.shape, np.float32)
    _library().ggml_fp16_to_fp32_row(source.ctypes.data, out.ctypes.data, source.size)
    return out


def quantize_rows(values: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """The bytes of ``qtype`` for the rows of ``values`` (float32, rows × n, n a multiple of the block size)."""
    rows = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, values.shape[-1])
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    out = np.empty((rows.shape[0], rows.shape[1] // block * type_size), np.uint8)
    written = _library().ggml_quantize_chunk(
        int(qtype), rows.ctypes.data, out.ctypes.data, 0, rows.shape[0], rows.shape[1], None
    )
    if written != out.size:  # a type needing an imatrix or an init, which the converter never asks for
        raise ConversionError(f"ggml wrote {written} bytes quantizing to {qtype.name}, expected {out.size}")
    return out
