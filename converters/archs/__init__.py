"""Architecture registry: every module in this package that defines ARCHITECTURE is registered.

Adding an architecture is adding one module here with an `Architecture` subclass named ARCHITECTURE.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import ConversionError
from ..tokenizer import TokenizerHints
from .base import Architecture, PlannedTensor

__all__ = [
    "REGISTRY",
    "Architecture",
    "PlannedTensor",
    "TokenizerHints",
    "architecture_for",
    "supported_architectures",
]


def _discover() -> dict[str, type[Architecture]]:
    registry: dict[str, type[Architecture]] = {}
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        arch = getattr(module, "ARCHITECTURE", None)
        if arch is not None:
            registry.update(dict.fromkeys(arch.hf_architectures, arch))
    return registry


REGISTRY: dict[str, type[Architecture]] = _discover()


def supported_architectures() -> list[str]:
    return sorted(REGISTRY)


def architecture_for(config: dict) -> Architecture:
    """The converter for config.json's `architectures`, which the checkpoint reader has checked is a list of names."""
    names = config.get("architectures") or []
    for name in names:
        if name in REGISTRY:
            return REGISTRY[name](config)
    found = ", ".join(names) if names else "none named in config.json"
    raise ConversionError(f"unsupported architecture ({found}); supported: {', '.join(supported_architectures())}")
