"""Files the converters write appear whole under their final name or not at all.

Everything is first written beside its final name as ``.NAME.XXXXXXXX.partial`` (hidden, unique per
writer), then renamed: a crash leaves only such leftovers, which a job removes before it redoes a step.
tui/files.py writes the app's own files the same way.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_path(final: Path) -> Path:
    """Where ``final`` is written before it takes its name."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")


@contextmanager
def written_atomically(final: Path, *, directory: bool = False) -> Iterator[Path]:
    """A partial path (a new empty directory when ``directory``) that becomes ``final`` only if the block
    succeeds; whatever is left of it is removed either way."""
    partial = partial_path(final)
    if directory:
        partial.mkdir()
    try:
        yield partial
        os.replace(partial, final)
    finally:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)
