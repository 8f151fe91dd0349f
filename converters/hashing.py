"""sha256 of a file in one pass, for provenance and for every caller that also needs the bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

HASH_BLOCK = 4 * 2**20


def sha256_file(
    path: str | os.PathLike[str],
    *,
    on_block: Callable[[memoryview], object] | None = None,
    stop: Callable[[], bool] | None = None,
) -> str | None:
    """The hex sha256 of the file at ``path``, read once in blocks.

    ``on_block`` sees every block as it is read (to copy it, or to count progress); ``stop`` is asked
    before each block, and the digest is None when it said to stop.
    """
    digest = hashlib.sha256()
    return digest.hexdigest() if hash_into(digest, path, on_block=on_block, stop=stop) else None


def hash_into(
    digest: hashlib._Hash,
    path: str | os.PathLike[str],
    *,
    on_block: Callable[[memoryview], object] | None = None,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Feed the bytes of the file at ``path`` into ``digest``, read once in blocks, so a caller can go on
    hashing bytes that follow them (a download continuing a partial file). False when ``stop`` said to stop."""
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb") as stream:
        while n := stream.readinto(buffer):
            if stop is not None and stop():
                return False
            block = view[:n]
            digest.update(block)
            if on_block is not None:
                on_block(block)
    return True
