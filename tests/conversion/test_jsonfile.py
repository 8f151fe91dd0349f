"""converters.jsonfile's bounded read: memory follows the file's size, and the bound still holds."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from converters import ConversionError
from converters.jsonfile import SMALL_JSON_BYTES, read_bounded, read_json


def _peak_bytes(read) -> int:
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_small_file_costs_about_its_size_not_the_bound(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 64, "note": "x" * 1000}), encoding="utf-8")

    peak = _peak_bytes(lambda: read_json(path))

    # Reading up to the 16 MiB bound allocated the whole bound for this 1 KB file.
    assert peak < 256 * 2**10, f"reading a 1 KB JSON file peaked at {peak / 2**20:.1f} MiB"


def test_a_file_over_the_bound_is_refused_unread(tmp_path):
    path = tmp_path / "config.json"
    with open(path, "wb") as stream:
        stream.truncate(SMALL_JSON_BYTES + 1)  # sparse: only its size is large

    def read() -> None:
        with pytest.raises(ConversionError, match=r"config\.json is larger than 16 MiB"):
            read_json(path)

    assert _peak_bytes(read) < 256 * 2**10


def test_the_bound_holds_for_a_file_longer_than_its_size_says(tmp_path):
    # A pipe reports a size of 0: what the read finds past that still counts against the bound.
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)

    def write() -> None:
        with open(pipe, "wb") as stream:
            stream.write(b"[" + b"1," * 600 + b"1]")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        with pytest.raises(ConversionError, match=r"pipe\.json is larger than"):
            read_bounded(pipe, 1000)
    finally:
        writer.join()


def test_a_file_that_reports_no_size_is_read_whole():
    status = Path("/proc/self/status")
    if not status.exists() or status.stat().st_size != 0:
        pytest.skip("needs Linux's /proc, whose files report a size of 0")
    assert b"Name:" in read_bounded(status, SMALL_JSON_BYTES)
