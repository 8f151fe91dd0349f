"""Fuzzing the torch `.bin` reader: opcode streams, and tensor views checked element by element against their storage.

Properties: the interpreter and the checkpoint reader either succeed or raise the project's one-line
ConversionError (never another exception or a crash), within bounded time and memory; and every
tensor they accept reads exactly its own storage's elements, never a byte outside it.
"""

from __future__ import annotations

import pickle
import struct
import time
from pathlib import Path

import numpy as np
from fuzzing import EXAMPLE_GROWTH_KIB, EXAMPLE_SECONDS, open_or_refuse, peak_rss_kib
from hypothesis import event, given
from hypothesis import strategies as st
from torchzip import FakeTensor, state_dict_pickle, tensor_opcodes, write_torch_zip

from converters import ConversionError
from converters.unpickle import STORAGE_DTYPES, load_state_dict

_GLOBALS = [
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch._utils\n_rebuild_parameter\n",
    b"ctorch._tensor\n_rebuild_from_type_v2\n",
    b"ctorch.nn.parameter\nParameter\n",
    b"ccollections\nOrderedDict\n",
    *(f"ctorch\n{name}\n".encode() for name in STORAGE_DTYPES),
    b"cbuiltins\neval\n",
    b"cos\nsystem\n",
    b"ctorch\nNotAStorage\n",
]
_BARE_OPCODES = [
    pickle.MARK, pickle.STOP, pickle.POP, pickle.POP_MARK, pickle.DUP, pickle.NONE, pickle.NEWTRUE,
    pickle.NEWFALSE, pickle.EMPTY_TUPLE, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3,
    pickle.EMPTY_LIST, pickle.APPEND, pickle.APPENDS, pickle.EMPTY_DICT, pickle.SETITEM, pickle.SETITEMS,
    pickle.REDUCE, pickle.BUILD, pickle.BINPERSID, pickle.MEMOIZE, pickle.STACK_GLOBAL,
    pickle.NEWOBJ, pickle.OBJ, pickle.EMPTY_SET, pickle.ADDITEMS,
]  # fmt: skip

_tensors = st.builds(
    FakeTensor,
    storage_key=st.sampled_from(["0", "1", "missing"]),
    storage_numel=st.integers(-4, 64),
    shape=st.lists(st.integers(-2, 8), max_size=3).map(tuple),
    stride=st.lists(st.integers(-8, 70), max_size=3).map(tuple),
    storage_offset=st.integers(-8, 70),
    storage_kind=st.sampled_from(sorted(STORAGE_DTYPES)),
)


@st.composite
def _plausible_tensors(draw) -> FakeTensor:
    """Views like torch writes (contiguous, permuted, sliced, with gaps) over storage "0", often valid, sometimes off by one."""
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    order = draw(st.permutations(range(len(shape))))
    strides, step = [0] * len(shape), 1
    for axis in reversed(order):
        strides[axis] = step
        step *= max(shape[axis], 1) + draw(st.integers(0, 1))  # a gap: a slice of a wider tensor
    extent = 1 + sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) if all(shape) else 0
    offset = draw(st.integers(0, max(64 - extent, 0) + 1))  # one past the last valid offset, sometimes
    return FakeTensor("0", 64, shape, tuple(strides), offset)


_opcode = st.one_of(
    st.sampled_from(_BARE_OPCODES),
    st.sampled_from(_GLOBALS),
    st.integers(0, 255).map(lambda k: pickle.BININT1 + bytes([k])),
    st.integers(-(2**31), 2**31 - 1).map(lambda n: pickle.BININT + struct.pack("<i", n)),
    st.binary(max_size=9).map(lambda b: pickle.LONG1 + bytes([len(b)]) + b),
    st.floats(allow_nan=True).map(lambda f: pickle.BINFLOAT + struct.pack(">d", f)),
    st.text(max_size=12).map(lambda t: pickle.BINUNICODE + struct.pack("<I", len(t.encode())) + t.encode()),
    st.text(max_size=12).map(lambda t: pickle.SHORT_BINUNICODE + bytes([len(t.encode()) % 256]) + t.encode()),
    st.integers(0, 8).map(lambda k: pickle.BINPUT + bytes([k])),
    st.integers(0, 8).map(lambda k: pickle.BINGET + bytes([k])),
    st.integers(0, 2**32 - 1).map(lambda k: pickle.LONG_BINPUT + struct.pack("<I", k)),
    st.integers(0, 2**32 - 1).map(lambda k: pickle.LONG_BINGET + struct.pack("<I", k)),
    st.integers(0, 2**64 - 1).map(lambda n: pickle.FRAME + struct.pack("<Q", n)),
    st.integers(0, 255).map(lambda k: pickle.PROTO + bytes([k])),
    _tensors.map(tensor_opcodes),  # a whole tensor, so that streams reach the rebuild paths
    st.binary(max_size=6),  # anything at all
)
_streams = st.lists(_opcode, max_size=40).map(lambda ops: b"\x80\x02}(" + b"".join(ops) + b"u.")


@given(_streams)
def test_any_opcode_stream_loads_or_is_a_one_line_error(stream):
    started, peak = time.monotonic(), peak_rss_kib()
    try:
        load_state_dict(stream, Path("fuzzed.bin"))  # any value it returns is inert data
        event("loaded")
    except ConversionError as error:
        assert "\n" not in str(error)
        event("refused: " + str(error).split("(")[0][:40])
    assert time.monotonic() - started < EXAMPLE_SECONDS
    assert peak_rss_kib() - peak < EXAMPLE_GROWTH_KIB


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c\n\x00"]), _plausible_tensors() | _tensors), min_size=1, max_size=4)
)
def test_accepted_views_read_exactly_their_own_storage(tmp_path_factory, named_tensors):
    """Storage "0" holds float32 element indices; everything around it in the file is NaN."""
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "config.json").write_text('{"architectures": []}')
    tensors = {name: tensor for name, tensor in named_tensors}
    index_storage = np.arange(64, dtype=np.float32).tobytes()
    poison = np.full(64, np.nan, dtype=np.float32).tobytes()
    write_torch_zip(directory / "pytorch_model.bin", state_dict_pickle(tensors), {"0": index_storage, "1": poison})
    checkpoint = open_or_refuse(directory)
    if checkpoint is None:
        return
    with checkpoint:
        for name, tensor in tensors.items():
            raw = checkpoint.load_raw(name)
            assert raw.shape == tensor.shape
            if tensor.storage_key != "0" or tensor.storage_kind != "FloatStorage" or raw.size == 0:
                continue
            expected = np.zeros(tensor.shape, dtype=np.float32)
            for position in np.ndindex(*tensor.shape):
                expected[position] = tensor.storage_offset + sum(
                    i * s for i, s in zip(position, tensor.stride, strict=True)
                )
            assert np.array_equal(raw, expected), name  # never a NaN: no byte from outside the storage
