"""Fuzzing safetensors headers: a header is accepted only when every tensor reads exactly its own bytes.

Headers are drawn as real files lay them out (tensors one after another) and then damaged: offsets
moved, overlapped or given the wrong type, shapes that do not match, dtypes that do not exist, a
file cut short. The reader must raise the one-line ConversionError or read each tensor's exact bytes.
"""

from __future__ import annotations

import itertools
import json
import math
import time

from fuzzing import EXAMPLE_GROWTH_KIB, EXAMPLE_SECONDS, open_or_refuse, peak_rss_kib
from hypothesis import given
from hypothesis import strategies as st

from converters.checkpoint import SAFETENSORS_DTYPES

_ITEMSIZE = {code: dtype.itemsize for code, dtype in SAFETENSORS_DTYPES.items()}
_WEIRD = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.text(max_size=4), st.just(1e400))


@st.composite
def _damaged(draw, value, damage: bool):
    """value, or (when damaging) now and then something of another kind in its place."""
    return draw(_WEIRD) if damage and draw(st.integers(0, 19)) == 0 else value


@st.composite
def safetensors_file(draw) -> bytes:
    header: dict = {}
    position = 0
    damage = draw(st.booleans())  # half the files are laid out as a real writer would, half are damaged
    nudge = st.sampled_from([0] * 8 + [1, -1, -3]) if damage else st.just(0)
    for index in range(draw(st.integers(0, 5))):
        code = draw(
            st.sampled_from(sorted(_ITEMSIZE)) | st.sampled_from(["F8_E4M3", "X"])
            if damage
            else st.sampled_from(sorted(_ITEMSIZE))
        )
        shape = draw(st.lists(st.integers(0, 5) | st.just(-1) if damage else st.integers(0, 5), max_size=3))
        nbytes = math.prod(shape) * _ITEMSIZE.get(code, 1)
        begin = position + draw(nudge)
        end = begin + nbytes + draw(nudge)
        position = max(position, end)
        header[f"t{index}{draw(st.text(max_size=3))}"] = {  # names hold anything, line breaks included
            "dtype": draw(_damaged(code, damage)),
            "shape": draw(_damaged([draw(_damaged(d, damage)) for d in shape], damage)),
            "data_offsets": draw(_damaged([draw(_damaged(begin, damage)), draw(_damaged(end, damage))], damage)),
        }
    if draw(st.booleans()):
        header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header).encode() + b" " * draw(st.integers(0, 7))
    data = bytes(range(256)) * (position // 256 + 1)
    body = len(encoded).to_bytes(8, "little") + encoded + data[: max(position, 0)]
    cut = draw(st.sampled_from([0] * 8 + [1, 9, len(body) // 2])) if damage else 0
    return body[: len(body) - cut]


@given(safetensors_file())
def test_a_header_is_refused_in_one_line_or_every_tensor_reads_its_own_bytes(tmp_path_factory, content):
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "config.json").write_text('{"architectures": []}')
    (directory / "model.safetensors").write_bytes(content)
    started, peak = time.monotonic(), peak_rss_kib()
    checkpoint = open_or_refuse(directory)
    if checkpoint is None:
        return
    data_start = 8 + int.from_bytes(content[:8], "little")
    header = json.loads(content[8:data_start])
    spans = []
    with checkpoint:
        for name in checkpoint.names():
            begin, end = header[name]["data_offsets"]
            assert data_start <= data_start + begin <= data_start + end <= len(content)
            spans.append((begin, end))
            assert checkpoint.load_raw(name).tobytes() == content[data_start + begin : data_start + end]
    spans.sort()
    assert all(first[1] <= second[0] for first, second in itertools.pairwise(spans))
    assert time.monotonic() - started < EXAMPLE_SECONDS
    assert peak_rss_kib() - peak < EXAMPLE_GROWTH_KIB
