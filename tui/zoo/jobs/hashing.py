"""sha256 of the files a job reads, with progress; a file whose digest is already known is not read again."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from tui.zoo.jobs.step import StepContext


def sha256(path: Path, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    from converters import sha256_file

    digest = sha256_file(path, on_block=lambda block: on_bytes(len(block)))
    assert digest is not None, "nothing asked it to stop"
    return digest


def hash_files(
    context: StepContext, files: list[Path], root: Path, label: str, known: Mapping[str, str] | None = None
) -> dict[str, str]:
    """sha256 of each file, keyed by its path under ``root``, reported as progress under ``label``.

    ``known`` holds digests already computed for some of those keys (a verified download's)."""
    known = known or {}
    keys = {file: file.relative_to(root).as_posix() for file in files}
    unknown = [file for file in files if keys[file] not in known]
    total = sum(f.stat().st_size for f in unknown)
    done = 0
    hashes: dict[str, str] = {}
    for file in files:
        if keys[file] in known:
            hashes[keys[file]] = known[keys[file]]
            continue

        def advance(n: int, file: Path = file) -> None:
            nonlocal done
            done += n
            context.report(done, total, f"sha256 {label}/{file.name}")

        hashes[keys[file]] = sha256(file, advance)
    return hashes
