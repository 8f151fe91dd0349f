"""The state dict interpreter: reads what torch.save writes, and nothing a hostile stream does outlives its load."""

from __future__ import annotations

import hashlib
import pickle
import zipfile

import numpy as np
import pytest
from conftest import TINY
from torchzip import FakeTensor, state_dict_pickle, tensor_opcodes, write_torch_zip

from converters import ConversionError, convert, open_checkpoint
from converters.unpickle import MAX_PICKLE_BYTES, MAX_TUPLE_NESTING, STORAGE_DTYPES, load_state_dict


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_module_state_dict_saved_by_torch_reads_exactly(protocol):
    directory = TINY / f"torch_bin_protocol{protocol}"
    expected = np.load(directory / "expected.npz")
    with open_checkpoint(directory) as checkpoint:
        assert checkpoint.names() == list(expected.files)
        for name in expected.files:
            np.testing.assert_array_equal(checkpoint.load(name), expected[name])


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_on_a_storage_class_is_refused_and_changes_nothing_for_later_loads(tmp_path):
    """The issue's stream: BUILD renames the shared HalfStorage stand-in to BFloat16Storage, then is refused."""
    before = convert(TINY / "neox_parallel", tmp_path / "before.gguf", outtype="f16")
    hostile = b"}ctorch\nHalfStorage\n}X\x04\x00\x00\x00nameX\x0f\x00\x00\x00BFloat16Storagesb0."
    with pytest.raises(
        ConversionError, match=r"refusing to load: its pickle sets attributes \(BUILD\) on torch.HalfStorage"
    ):
        load_state_dict(hostile, tmp_path / "hostile.bin")
    after = convert(TINY / "neox_parallel", tmp_path / "after.gguf", outtype="f16")
    assert _sha256(before) == _sha256(after)


def _stream(*opcodes: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + b"".join(opcodes) + pickle.STOP


_GLOBAL_REBUILD = b"ctorch._utils\n_rebuild_tensor_v2\n"
_GLOBAL_HALF = b"ctorch\nHalfStorage\n"
_GLOBAL_PARAMETER = b"ctorch.nn.parameter\nParameter\n"
_SET_NAME = b"}X\x04\x00\x00\x00nameX\x01\x00\x00\x00xs"  # a dict {"name": "x"} for BUILD


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (
            _stream(b"}", _GLOBAL_REBUILD, _SET_NAME, b"b0"),
            r"sets attributes \(BUILD\) on torch._utils._rebuild_tensor_v2",
        ),
        (
            _stream(b"}", _GLOBAL_PARAMETER, _SET_NAME, b"b0"),
            r"sets attributes \(BUILD\) on torch.nn.parameter.Parameter",
        ),
        (
            _stream(b"}", _GLOBAL_HALF, b")}\x86b0"),
            r"sets attributes \(BUILD\) on torch.HalfStorage",
        ),  # (dict, slot state) form
        (_stream(b"cbuiltins\nsetattr\n"), r"references builtins.setattr"),
        (_stream(b"\x8c\x08builtins\x8c\x04eval\x93"), r"references builtins.eval"),
        (_stream(_GLOBAL_HALF, b")\x81"), r"uses the opcode NEWOBJ"),
        (_stream(b"(", _GLOBAL_HALF, b"o"), r"uses the opcode OBJ"),
        (_stream(b"\x82\x01"), r"uses the opcode EXT1"),
        (_stream(b"(itorch\nHalfStorage\n"), r"uses the opcode INST"),
        (_stream(b"S'x'\n"), r"uses the opcode STRING"),
    ],
)
def test_streams_that_reach_beyond_a_state_dict_are_refused(tmp_path, stream, message):
    with pytest.raises(ConversionError, match="refusing to load: its pickle " + message):
        load_state_dict(stream, tmp_path / "hostile.bin")


def _nested_tuples(depth: int) -> bytes:
    return b")" + b"\x85" * (depth - 1)


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"\x80\x02}", "before seeing STOP"),
        (b"\x80\x02}0.", "stack underflow"),
        (b"\x80\x02h\x05.", "memo entry 5 read before it was written"),
        (b"\x80\x02}}.", "values left on the stack"),
        (b"\x80\x02}(K\x01u.", "a key and no value"),
        (b"\x80\x02N}\x86}(h\x00u.", "memo entry 0"),
        (_stream(b"}", _nested_tuples(MAX_TUPLE_NESTING + 1), b"Ns"), "tuples nested more than"),
        (_stream(b"}", b"]" + b"]a" * 3, b"Ns"), "cannot be hashed"),  # a list as a dict key
        (_stream(b"N)R"), "REDUCE calls a NoneType, which is not a torch rebuild function"),
        (_stream(_GLOBAL_REBUILD, b"NNN\x87R"), "wrong number of arguments"),
        (_stream(_GLOBAL_REBUILD, b"(NK\x00))t", b"R"), "not a storage"),
        (_stream(b"(X\x07\x00\x00\x00storage", _GLOBAL_HALF, b"X\x01\x00\x00\x000N\x8a\x01\xfftQ"), "element count"),
        (_stream(b"X\x01\x00\x00\x00xQ"), "unexpected persistent id"),
        (_stream(b"ccollections\nOrderedDict\nN\x85R"), "OrderedDict built from arguments"),
        (b"\x80\x02X\xff\xff\xff\x7f", "pickle is corrupt"),  # a string longer than the stream
    ],
)
def test_malformed_streams_are_one_line_errors(tmp_path, stream, message):
    with pytest.raises(ConversionError, match=message) as raised:
        load_state_dict(stream, tmp_path / "bad.bin")
    assert "\n" not in str(raised.value)


def test_a_memo_index_near_two_to_the_32_costs_nothing():
    """pickle.Unpickler sizes its memo array by the largest index a stream names."""
    stream = _stream(b"}r\xfe\xff\xff\xffj\xfe\xff\xff\xff0")
    assert load_state_dict(stream, TINY / "x.bin") == {}


def _torch_zip_with_pickle(tmp_path, data: bytes, compression: int) -> object:
    directory = tmp_path / "bomb"
    directory.mkdir()
    (directory / "config.json").write_text('{"architectures": []}')
    write_torch_zip(directory / "pytorch_model.bin", data, {}, pickle_compression=compression)
    return directory


def test_a_data_pkl_that_inflates_past_the_limit_is_refused_before_inflating(tmp_path):
    bomb = _stream(b"}") + bytes(MAX_PICKLE_BYTES)  # zeros after STOP: deflates to a few KB
    directory = _torch_zip_with_pickle(tmp_path, bomb, zipfile.ZIP_DEFLATED)
    assert (directory / "pytorch_model.bin").stat().st_size < 64 * 1024
    with pytest.raises(ConversionError, match="data.pkl inflates to .* bytes, more than a state dict needs"):
        open_checkpoint(directory)


def test_every_storage_kind_and_a_parameter_rebuild(tmp_path):
    names = {f"t_{kind}": FakeTensor(str(i), 2, (2,), (1,), storage_kind=kind) for i, kind in enumerate(STORAGE_DTYPES)}
    parameter = (
        b"ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_parameter\n"
        + _GLOBAL_PARAMETER
        + b"("
        + tensor_opcodes(FakeTensor("p", 4, (2, 2), (2, 1)))
        + b"\x89ccollections\nOrderedDict\n)RtNtR"
    )
    stream = state_dict_pickle(names)[:-1] + b"X\x01\x00\x00\x00p" + parameter + b"s."
    result = load_state_dict(stream, tmp_path / "all.bin")
    assert {name: ref.storage.kind.name for name, ref in result.items() if name != "p"} == {
        f"t_{kind}": kind for kind in STORAGE_DTYPES
    }
    assert result["p"].shape == (2, 2) and result["p"].storage.key == "p"
