"""Hugging Face checkpoints -> verified, quantized GGUF for llama.cpp. Usable without the TUI.

from converters import convert
convert("path/to/checkpoint", "model.gguf", outtype="q4_k_m")
"""

__version__ = "0.1.0"

from .checkpoint import Checkpoint, TensorInfo, open_checkpoint, read_config
from .convert import (
    DIRECT_OUTTYPES,
    OUTTYPES,
    PROMPT_FORMAT_KEY,
    STOP_STRINGS_KEY,
    bits_per_weight,
    checkpoint_input_files,
    convert,
)
from .errors import ConversionCancelled, ConversionError, one_line
from .ggml import f16_to_f32
from .hashing import sha256_file
from .progress import ConsoleProgress, Progress
from .quantize import QUANT_TYPES, quantize
from .sizes import human_size
from .vision import VisionShape, convert_vision, vision_shards

__all__ = [
    "DIRECT_OUTTYPES",
    "OUTTYPES",
    "PROMPT_FORMAT_KEY",
    "QUANT_TYPES",
    "STOP_STRINGS_KEY",
    "Checkpoint",
    "ConsoleProgress",
    "ConversionCancelled",
    "ConversionError",
    "Progress",
    "TensorInfo",
    "VisionShape",
    "__version__",
    "bits_per_weight",
    "checkpoint_input_files",
    "convert",
    "convert_vision",
    "f16_to_f32",
    "human_size",
    "one_line",
    "open_checkpoint",
    "quantize",
    "read_config",
    "sha256_file",
    "vision_shards",
]
