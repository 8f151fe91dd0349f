"""LFS files fetched into huggingface_hub's cache so that a killed transfer continues where it stopped.

huggingface_hub 2.4 cannot resume across runs (``hub._remove_dead_partials`` says why), so for an LFS file
zootui keeps a partial of its own, ``blobs/<sha256>.zootui.incomplete`` in the repo's cache folder, and
hands it to huggingface_hub's ``http_get``, which sends ``Range: bytes=<size of the partial>-``, retries
dropped connections the same way, and starts again from byte 0 when a server answers 200 (the transfer
goes out with huggingface_hub's headers and HTTP session, following the Hub's redirects). The sha256 is
taken as the bytes are written, continuing from the partial's bytes, so a finished file is not read
again. A file whose digest matches becomes ``blobs/<sha256>`` by an atomic rename and gets its relative
symlink in ``snapshots/<commit>/``: the layout hf_hub_download leaves (with a commit as the revision it
writes no ref), so ``try_to_load_from_cache`` and huggingface_hub itself find the file as their own.

All of it happens under huggingface_hub's own lock for that blob (``.locks/<repo folder>/<sha256>.lock``),
so zootui and a huggingface_hub process never write one blob at once.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers
from huggingface_hub.utils import tqdm as hf_tqdm

from converters import hash_into, human_size

PARTIAL_SUFFIX = ".zootui.incomplete"
"""Ends in ``.incomplete`` so ``hf cache`` counts the partial as the unfinished download it is."""

Note = Callable[[str], None]


class DigestMismatch(Exception):
    """The bytes received do not hash to the sha256 the Hub lists; nothing was kept."""

    def __init__(self, got: str) -> None:
        super().__init__(got)
        self.got = got


class Oversized(Exception):
    """The server sent more bytes than the Hub lists for the file; nothing was kept."""


@dataclass(frozen=True)
class Blob:
    """An LFS file as huggingface_hub's cache stores it: ``storage`` is the repo's folder in the cache."""

    storage: Path
    sha256: str
    size: int

    @property
    def path(self) -> Path:
        return self.storage / "blobs" / self.sha256

    @property
    def partial(self) -> Path:
        return self.storage / "blobs" / f"{self.sha256}{PARTIAL_SUFFIX}"


def blob_lock(storage: Path, etag: str) -> FileLock:
    """huggingface_hub's lock for one blob of a repo (the path and mode hf_hub_download uses)."""
    path = storage.parent / ".locks" / storage.name / f"{etag}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, mode=0o664)


def fetch_blob(
    blob: Blob, url: str, pointer: Path, *, token: str | bool | None, bar: type[hf_tqdm], note: Note
) -> str | None:
    """Make ``pointer`` (a snapshot path) lead to the blob, fetching it from ``url`` unless it is in the cache.

    Returns the sha256 checked on the received bytes, or None when the blob was there already (another
    process fetched it while this one waited for the lock). ``bar`` is the progress bar class for
    ``http_get``; ``note`` receives one line when a partial is resumed, discarded or waited for.
    """
    lock = blob_lock(blob.storage, blob.sha256)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        note("waiting for another download of this file to finish")
        lock.acquire()
    try:
        digest = None if blob.path.exists() else _transfer(blob, url, token, bar, note)
        _link(blob.path, pointer)
        return digest
    finally:
        lock.release()


def _link(blob: Path, pointer: Path) -> None:
    """The snapshot entry: a symlink relative to the snapshot's folder, as hf_hub_download makes it."""
    target = os.path.relpath(blob, pointer.parent)
    if pointer.is_symlink() and os.readlink(pointer) == target:
        return
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.unlink(missing_ok=True)
    pointer.symlink_to(target)


def _transfer(blob: Blob, url: str, token: str | bool | None, bar: type[hf_tqdm], note: Note) -> str:
    blob.path.parent.mkdir(parents=True, exist_ok=True)
    start = _usable_partial(blob, note)
    if start:
        note(f"resuming at {human_size(start)} of {human_size(blob.size)}")
    try:
        digest = _receive(blob, url, token, bar, start)
        if digest != blob.sha256 and start:
            note("the partial download did not hash right; fetching the file again from the start")
            blob.partial.unlink()
            digest = _receive(blob, url, token, bar, 0)
    except Oversized:
        blob.partial.unlink(missing_ok=True)
        raise
    except BaseException:
        # Refused before its first byte (access, network): an empty partial is worth nothing later.
        if blob.partial.exists() and blob.partial.stat().st_size == 0:
            blob.partial.unlink()
        raise
    if digest != blob.sha256:
        blob.partial.unlink()
        raise DigestMismatch(digest)
    os.replace(blob.partial, blob.path)
    return digest


def _usable_partial(blob: Blob, note: Note) -> int:
    """The bytes of the partial to continue from; one larger than the file is removed."""
    try:
        size = blob.partial.stat().st_size
    except FileNotFoundError:
        return 0
    if size > blob.size:
        note(f"the partial download holds more than the file's {human_size(blob.size)}; fetching the file again")
        blob.partial.unlink()
        return 0
    return size


def _receive(blob: Blob, url: str, token: str | bool | None, bar: type[hf_tqdm], start: int) -> str:
    """Continue the partial from byte ``start`` to the end of the file; the sha256 of all of it."""
    digest = hashlib.sha256()
    if start:
        hash_into(digest, blob.partial)
    raw = io.FileIO(os.open(blob.partial, os.O_RDWR | os.O_CREAT, 0o666), "r+")
    with _HashingFile(raw, blob.partial, digest, start, blob.size) as file:
        file.seek(start)
        file.truncate()
        if start == blob.size:
            # Nothing left to ask for (a Range past the end is refused): count the bytes as received.
            bar(total=blob.size, initial=start).close()
        else:
            http_get(url, file, resume_size=start, headers=build_hf_headers(token=token), tqdm_class=bar)
        return file.digest.hexdigest()


class _HashingFile(io.BufferedRandom):
    """The partial, hashing what is written to its end and refusing bytes past the file's size.

    ``digest`` covers the first ``covered`` bytes. ``http_get`` writes each chunk after the last; when a
    server ignores the Range it seeks back and truncates, and the digest is then taken again over what is left.
    """

    def __init__(self, raw: io.FileIO, path: Path, digest: hashlib._Hash, covered: int, size: int) -> None:
        super().__init__(raw)
        self.path = path
        self.digest = digest
        self.covered = covered
        self.size = size

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.covered + len(data) > self.size:
            raise Oversized()
        self.digest.update(data)
        self.covered += len(data)
        return super().write(data)

    def truncate(self, size: int | None = None) -> int:
        end = super().truncate(size)
        if end < self.covered:
            self.flush()
            self.digest = hashlib.sha256()
            hash_into(self.digest, self.path)
            self.covered = end
        return end
