"""Hugging Face checkpoints -> verified, quantized GGUF for llama.cpp. Usable without the TUI.

from converters import convert
convert("path/to/checkpoint", "model.gguf", outtype="q4_k_m")
"""

__version__ = "0.1.0"

from .checkpoint import Checkpoint, TensorInfo, open_checkpoint
from .convert import OUTTYPES, convert
from .errors import ConversionCancelled, ConversionError
from .progress import ConsoleProgress, Progress
from .quantize import QUANT_TYPES, quantize

__all__ = [
    "OUTTYPES",
    "QUANT_TYPES",
    "Checkpoint",
    "ConsoleProgress",
    "ConversionCancelled",
    "ConversionError",
    "Progress",
    "TensorInfo",
    "__version__",
    "convert",
    "open_checkpoint",
    "quantize",
]
