"""Fuzzing the GGUF header reader with metadata no writer would produce.

Files are drawn value by value (scalars, strings, arrays of arrays of any depth, tensor infos); a
"lying" file then overstates a count or a length, or is cut short. The reader must return the
header or raise its one-line GGUFHeaderError, within bounded time and memory; for an honest file it
must return exactly the scalar metadata that was written.
"""

from __future__ import annotations

import struct
import time

from fuzzing import EXAMPLE_GROWTH_KIB, EXAMPLE_SECONDS, peak_rss_kib
from ggufbytes import ARRAY, STRING, kv, string
from hypothesis import event, given
from hypothesis import strategies as st

from tui.zoo.gguf_header import GGUFHeaderError, read_header

_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _scalar(value_type: int) -> st.SearchStrategy[tuple[bytes, object]]:
    """(encoding, the value read back) for one scalar of value_type."""
    size = struct.calcsize("<" + _SCALAR_FORMATS[value_type])
    return st.binary(min_size=size, max_size=size).map(
        lambda raw: (raw, struct.unpack("<" + _SCALAR_FORMATS[value_type], raw)[0])
    )


_text = st.text(max_size=12).map(lambda t: (string(t), t))


def _array(depth: int) -> st.SearchStrategy[bytes]:
    """An array value's payload: item type, count and items; arrays hold arrays down to `depth`."""
    item_types = [*_SCALAR_FORMATS, STRING] + ([ARRAY] if depth > 1 else [])

    @st.composite
    def build(draw) -> bytes:
        item_type = draw(st.sampled_from(item_types))
        count = draw(st.integers(0, 4))
        if item_type == ARRAY:
            items = [draw(_array(depth - 1)) for _ in range(count)]
        elif item_type == STRING:
            items = [draw(_text)[0] for _ in range(count)]
        else:
            items = [draw(_scalar(item_type))[0] for _ in range(count)]
        return struct.pack("<IQ", item_type, count) + b"".join(items)

    return build()


@st.composite
def gguf_files(draw) -> tuple[bytes, dict | None]:
    """(file bytes, the scalar metadata an honest file holds, or None for a lying one)."""
    expected: dict = {}
    entries = []
    for index in range(draw(st.integers(0, 6))):
        key = f"k{index}{draw(st.text(max_size=3))}"  # keys hold anything, line breaks included
        kind = draw(st.sampled_from(["scalar", "string", "array"]))
        if kind == "scalar":
            value_type = draw(st.sampled_from(sorted(_SCALAR_FORMATS)))
            raw, value = draw(_scalar(value_type))
            entries.append(kv(key, value_type, raw))
            expected[key] = value
        elif kind == "string":
            raw, value = draw(_text)
            entries.append(kv(key, STRING, raw))
            expected[key] = value
        else:
            entries.append(kv(key, ARRAY, draw(_array(draw(st.integers(1, 12))))))
    tensors = []
    for index in range(draw(st.integers(0, 3))):
        dims = draw(st.lists(st.integers(1, 8), max_size=4))
        tensors.append(string(f"t{index}") + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, 0, 0))
    body = b"".join(entries) + b"".join(tensors)
    n_kv, n_tensors = len(entries), len(tensors)
    honest = not draw(st.booleans())
    if not honest:
        lie = draw(st.sampled_from(["n_kv", "n_tensors", "cut", "flip"]))
        if lie == "n_kv":
            n_kv = draw(st.integers(0, 2**64 - 1))
        elif lie == "n_tensors":
            n_tensors = draw(st.integers(0, 2**64 - 1))
        elif lie == "cut" and body:
            body = body[: draw(st.integers(0, len(body) - 1))]
        elif body:  # one byte changed anywhere: a type, a count, a length
            position = draw(st.integers(0, len(body) - 1))
            body = body[:position] + bytes([draw(st.integers(0, 255))]) + body[position + 1 :]
    header = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)
    largest = 4 * 8**4  # room for any one tensor's f32 data (all start at offset 0), which the reader checks
    data = bytes(draw(st.sampled_from([0, largest]))) if tensors else b""
    return header + body + bytes(32) + data, expected if honest and (not tensors or data) else None


@given(gguf_files())
def test_any_metadata_reads_or_is_a_one_line_error(tmp_path_factory, drawn):
    content, expected = drawn
    path = tmp_path_factory.mktemp("fuzz") / "fuzzed.gguf"
    path.write_bytes(content)
    started, peak = time.monotonic(), peak_rss_kib()
    try:
        header = read_header(path)
    except GGUFHeaderError as error:
        assert str(error).startswith("fuzzed.gguf") and "\n" not in str(error)
        assert expected is None, f"an honest file was refused: {error}"
        event("refused")
    else:
        event("read")
        if expected is not None:
            assert header.metadata == expected or _same_with_nan(header.metadata, expected)
        assert all(t.n_bytes <= len(content) for t in header.tensors)
    assert time.monotonic() - started < EXAMPLE_SECONDS
    assert peak_rss_kib() - peak < EXAMPLE_GROWTH_KIB


def _same_with_nan(found: dict, expected: dict) -> bool:
    """Equal, where NaN floats (never equal to themselves) count as equal to NaN."""
    return found.keys() == expected.keys() and all(
        a == b or (isinstance(a, float) and a != a and b != b)
        for a, b in zip(found.values(), expected.values(), strict=True)
    )
