"""Hugging Face checkpoints -> verified, quantized GGUF for llama.cpp. Usable without the TUI.

    from converters import convert
    convert("path/to/checkpoint", "model.gguf", outtype="q4_k_m")
"""

__version__ = "0.1.0"

from .checkpoint import Checkpoint, TensorInfo, open_checkpoint  # noqa: E402
from .convert import OUTTYPES, convert  # noqa: E402
from .errors import ConversionCancelled, ConversionError  # noqa: E402
from .progress import ConsoleProgress, Progress  # noqa: E402
from .quantize import QUANT_TYPES, quantize  # noqa: E402

__all__ = [
    "__version__",
    "Checkpoint",
    "TensorInfo",
    "open_checkpoint",
    "convert",
    "OUTTYPES",
    "ConversionError",
    "ConversionCancelled",
    "Progress",
    "ConsoleProgress",
    "QUANT_TYPES",
    "quantize",
]
