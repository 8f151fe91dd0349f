"""Files the app writes are written whole or not at all.

Each is first written beside its final name as ``.NAME.XXXXXXXX.partial`` (hidden, unique per writer),
then renamed, as converters/files.py does for the converters' outputs (converters runs without tui).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_atomically(path: Path) -> Iterator[Path]:
    """A partial path beside ``path`` that becomes ``path`` only if the block succeeds; removed either way."""
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomically(path: Path, content: str | bytes, *, create_parents: bool = True) -> None:
    """Write text (UTF-8) or bytes to path through a partial file in the same directory, synced, then renamed.

    ``create_parents`` makes the missing directories first (the app's own files under the data dir); a
    file the user points at goes only into a directory that exists."""
    path = path.expanduser()
    if create_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as partial, partial.open("wb") as stream:
        stream.write(content.encode("utf-8") if isinstance(content, str) else content)
        stream.flush()
        os.fsync(stream.fileno())
