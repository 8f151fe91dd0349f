"""sha256 of the files a job reads, with progress."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from tui.zoo.jobs.step import StepContext

_HASH_BLOCK = 4 * 2**20


def sha256(path: Path, on_bytes: Callable[[int], None] = lambda n: None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_HASH_BLOCK):
            digest.update(block)
            on_bytes(len(block))
    return digest.hexdigest()


def hash_files(context: StepContext, files: list[Path], root: Path, label: str) -> dict[str, str]:
    """sha256 of each file, keyed by its path under ``root``, reported as progress under ``label``."""
    total = sum(f.stat().st_size for f in files)
    done = 0
    hashes: dict[str, str] = {}
    for file in files:

        def advance(n: int, file: Path = file) -> None:
            nonlocal done
            done += n
            context.report(done, total, f"sha256 {label}/{file.name}")

        hashes[file.relative_to(root).as_posix()] = sha256(file, advance)
    return hashes
