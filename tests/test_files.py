"""Atomic writes and size wording, converters' side and the app's side."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters import human_size
from converters.files import written_atomically as converters_written
from tui.files import write_atomically
from tui.files import written_atomically as app_written


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 bytes"), (1000, "1000 bytes"), (4096, "4.0 KiB"), (35 * 2**20, "35.0 MiB"), (3 * 2**30, "3.00 GiB")],
)
def test_sizes_are_shown_in_a_unit_that_shows_the_number(size: int, shown: str):
    assert human_size(size) == shown


@pytest.mark.parametrize("written", [converters_written, app_written])
def test_a_failed_write_leaves_neither_the_file_nor_a_partial(tmp_path: Path, written):
    final = tmp_path / "model.gguf"
    with pytest.raises(RuntimeError), written(final) as partial:
        assert partial.name.startswith(".model.gguf.") and partial.name.endswith(".partial")
        partial.write_bytes(b"half")
        raise RuntimeError("cut short")
    assert list(tmp_path.iterdir()) == []
    with written(final) as partial:
        partial.write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"] and final.read_bytes() == b"whole"


def test_a_directory_is_staged_whole(tmp_path: Path):
    final = tmp_path / "recovered"
    with pytest.raises(RuntimeError), converters_written(final, directory=True) as staging:
        (staging / "config.json").write_text("{}")
        raise RuntimeError("cut short")
    assert list(tmp_path.iterdir()) == []


def test_text_is_written_whole_and_replaces_the_old_file(tmp_path: Path):
    path = tmp_path / "deep" / "config.toml"
    write_atomically(path, "a = 1\n")
    write_atomically(path, "a = 2\n")
    assert path.read_text() == "a = 2\n" and [p.name for p in path.parent.iterdir()] == ["config.toml"]
