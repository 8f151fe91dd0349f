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
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb") as stream:
        while n := stream.readinto(buffer):
            if stop is not None and stop():
                return None
            block = view[:n]
            digest.update(block)
            if on_block is not None:
                on_block(block)
    return digest.hexdigest()
