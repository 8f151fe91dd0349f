"""Adding a GGUF file to the library as it is, and removing a model zootui put there."""

from __future__ import annotations

from pathlib import Path

from tui.files import write_atomically, written_atomically
from tui.zoo.fit import quant_name
from tui.zoo.gguf_header import read_header
from tui.zoo.jobs.errors import JobError
from tui.zoo.jobs.provenance import now, tool_versions
from tui.zoo.library import (
    DEFAULT_MODEL_NAME,
    GGUF_SUFFIX,
    Lockfile,
    RegisteredModel,
    checked_name,
    library_models,
    lockfile_path,
    models_dir,
    registered_path,
)


def checked_model_name(name: str) -> str:
    try:
        return checked_name(name)
    except ValueError as error:
        raise JobError(str(error)) from None


def free_destination(data_dir: Path, model_id: str, label: str | None = None, suffix: str = GGUF_SUFFIX) -> Path:
    """Where a new build of ``model_id`` goes; JobError when the library already has one there."""
    destination = registered_path(data_dir, model_id, label, suffix)
    if destination.exists():
        raise JobError(
            f"the library already has a model named {destination.stem!r}; delete it first or choose another name"
        )
    return destination


def import_gguf(data_dir: Path, path: Path, *, name: str | None = None) -> RegisteredModel:
    """Copy a GGUF file into the library, with a lockfile holding its sha256."""
    if name is not None:
        checked_model_name(name)
    path = path.expanduser()
    if not path.is_file():
        raise JobError(f"GGUF file not found: {path}; check the path")
    try:
        file_type = read_header(path).metadata.get("general.file_type")
    except (ValueError, OSError) as error:
        raise JobError(f"{path} is not a readable GGUF file ({error})") from error
    # The metadata is the file's say: a file type that is not a number is as good as none.
    quant = quant_name(file_type) if isinstance(file_type, int) and not isinstance(file_type, bool) else "unknown"
    name = checked_model_name(name or path.stem)
    destination = free_destination(data_dir, name)
    destination.parent.mkdir(parents=True, exist_ok=True)
    from converters import sha256_file

    try:
        with written_atomically(destination) as partial:
            with partial.open("wb") as copy:  # hashed as it is copied: one read of a file of many GB
                digest = sha256_file(path, on_block=copy.write)
            assert digest is not None, "nothing asked it to stop"
            lockfile = Lockfile(
                name=name,
                quant=quant,
                output_sha256=digest,
                sources=[{"path": str(path.resolve())}],
                inputs={path.name: digest},
                tools=tool_versions(),
                created_at=now(),
            )
            write_atomically(lockfile_path(destination), lockfile.to_json())
    except OSError as error:
        raise JobError(f"cannot copy {path} into the library: {error.strerror or error}") from error
    return RegisteredModel(name, destination, lockfile)


def delete_model(data_dir: Path, name: str) -> None:
    """Remove a model zootui put in the library (its GGUF, adapter or vision file, and lockfile)."""
    if name == DEFAULT_MODEL_NAME:
        raise JobError("the default model ships with zootui and cannot be deleted")
    library = models_dir(data_dir)
    model = next(
        (
            m
            for m in library_models(data_dir)
            if m.name == name and m.path is not None and m.path.is_relative_to(library)
        ),
        None,
    )
    if model is None or model.path is None:
        raise JobError(f"no model named {name!r} in the library; `zootui models` lists them")
    if model.lockfile is not None and model.lockfile.lora_adapter:
        (model.path.parent / model.lockfile.lora_adapter).unlink(missing_ok=True)
    if model.vision_path is not None:
        model.vision_path.unlink(missing_ok=True)
    lockfile_path(model.path).unlink(missing_ok=True)
    model.path.unlink(missing_ok=True)
    if model.path.parent != library and not any(model.path.parent.iterdir()):
        model.path.parent.rmdir()
