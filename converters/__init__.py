"""Hugging Face checkpoints -> verified, quantized GGUF for llama.cpp. Usable without the TUI.

from converters import convert
convert("path/to/checkpoint", "model.gguf", outtype="q4_k_m")

Importing the package costs almost nothing: each name it exports loads its module (and numpy, gguf …)
when it is first used, so `zootui --version`, and tui code that only needs the exit codes or
`human_size`, start without the converter.
"""

from __future__ import annotations

import importlib
import sys
import types

from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USER_ERROR

__version__ = "0.1.0"

# Each exported name, and the module of this package that defines it.
_LAZY_EXPORTS = {
    "CHATGLM_CPP_OUTTYPES": "chatglm_cpp",
    "convert_chatglm": "chatglm_cpp",
    "CHATGLM_CPP_MAGIC": "chatglm_cpp_file",
    "CHATGLM_CPP_SUFFIX": "chatglm_cpp_file",
    "Checkpoint": "checkpoint",
    "TensorInfo": "checkpoint",
    "open_checkpoint": "checkpoint",
    "read_config": "checkpoint",
    "DIRECT_OUTTYPES": "convert",
    "OUTTYPES": "convert",
    "PROMPT_FORMAT_KEY": "convert",
    "STOP_STRINGS_KEY": "convert",
    "bits_per_weight": "convert",
    "checkpoint_input_files": "convert",
    "convert": "convert",
    "ConversionCancelled": "errors",
    "ConversionError": "errors",
    "one_line": "errors",
    "f16_to_f32": "ggml",
    "sha256_file": "hashing",
    "hash_into": "hashing",
    "ConsoleProgress": "progress",
    "Progress": "progress",
    "QUANT_TYPES": "quantize",
    "quantize": "quantize",
    "human_size": "sizes",
    "VisionShape": "vision",
    "convert_vision": "vision",
    "vision_shards": "vision",
}

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USER_ERROR", "__version__", *_LAZY_EXPORTS]


def __getattr__(name: str) -> object:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_EXPORTS})


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        # Importing a submodule binds it to the package's attribute of its name; for `convert` and
        # `quantize` that name is the exported function, which must stay what `converters.convert` is.
        if isinstance(value, types.ModuleType) and _LAZY_EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
