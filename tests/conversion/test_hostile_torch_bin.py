"""Hostile `.bin` checkpoints: tensor views that reach outside their storage are refused before any byte is read.

Each attack rebuilds the tiny GPT-NeoX fixture as a hand-written torch zip in which one tensor claims
a hostile view; the rest of the model is intact, so nothing but the view check stands between the
converter and the bytes the view points at.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import TINY
from test_convert_cli import assert_user_error, run_cli
from torchzip import FakeTensor, state_dict_pickle, write_torch_zip

from converters import ConversionError, open_checkpoint

_STORAGE_KINDS = {
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.bool_): "BoolStorage",
    np.dtype(np.uint8): "ByteStorage",
}
VICTIM = "gpt_neox.layers.0.attention.dense.weight"  # (128, 128) float16


def hostile_neox(tmp_path, **victim_view):
    """The NeoX fixture as a torch zip, one storage per tensor, with VICTIM's view replaced by `victim_view`."""
    directory = tmp_path / "hostile"
    shutil.copytree(TINY / "neox_parallel", directory, ignore=shutil.ignore_patterns("pytorch_model.bin"))
    tensors, storages = {}, {}
    with open_checkpoint(TINY / "neox_parallel") as source:
        for index, name in enumerate(source.names()):
            array = np.ascontiguousarray(source.load(name))
            key = str(index)
            storages[key] = array.tobytes()
            tensors[name] = FakeTensor(
                key,
                array.size,
                array.shape,
                tuple(step // array.itemsize for step in array.strides),
                storage_kind=_STORAGE_KINDS[array.dtype],
            )
    victim = tensors[VICTIM]
    tensors[VICTIM] = FakeTensor(
        victim.storage_key,
        victim_view.get("storage_numel", victim.storage_numel),
        victim_view.get("shape", victim.shape),
        victim_view.get("stride", victim.stride),
        victim_view.get("storage_offset", 0),
        victim.storage_kind,
    )
    write_torch_zip(directory / "pytorch_model.bin", state_dict_pickle(tensors), storages)
    return directory


def test_the_rebuilt_fixture_converts_so_each_attack_changes_only_the_view(tmp_path):
    directory = hostile_neox(tmp_path)
    result = run_cli(str(directory), "--outtype", "f16", "-o", "out.gguf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("view", "problem"),
    [
        # Every element but the first and last lies far below the storage: SIGSEGV before views were checked.
        ({"stride": (630000, -630000)}, "negative stride"),
        # Small negative strides read the bytes just before the storage (other members, zip headers).
        ({"stride": (1, -1)}, "negative stride"),
        ({"stride": (128, 1), "storage_offset": -64}, "negative storage offset"),
        ({"stride": (129, 1)}, "reaches past its storage"),
        ({"stride": (128, 1), "storage_offset": 1}, "reaches past its storage"),
        # Every row is the same 128 elements: not a weight matrix torch.save writes.
        ({"stride": (0, 1)}, "overlap"),
        ({"shape": (128, 128, 1), "stride": (128, 1)}, "3 dimensions but 2 strides"),
    ],
)
def test_hostile_view_ends_in_one_line_and_writes_nothing(tmp_path, view, problem):
    directory = hostile_neox(tmp_path, **view)
    result = run_cli(str(directory), "--outtype", "f16", "-o", "out.gguf", cwd=tmp_path)
    assert_user_error(result, VICTIM, problem)
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*partial"))


def probe_checkpoint(tmp_path, tensors: dict[str, FakeTensor], storages: dict[str, bytes]):
    """A directory holding only a torch zip of these tensors (no model: for the reader alone)."""
    directory = tmp_path / "probe"
    directory.mkdir()
    (directory / "config.json").write_text('{"architectures": []}')
    write_torch_zip(directory / "pytorch_model.bin", state_dict_pickle(tensors), storages)
    return directory


def test_the_issue_stride_is_refused_by_the_reader(tmp_path):
    """[630000, -1710000] on a (20, 8) tensor: its last element is element 0, which the old check bounded."""
    directory = probe_checkpoint(tmp_path, {"w": FakeTensor("0", 160, (20, 8), (630000, -1710000))}, {"0": bytes(640)})
    with pytest.raises(ConversionError, match=r"pytorch_model.bin: tensor w has a negative stride"):
        open_checkpoint(directory)


def test_a_storage_claimed_larger_by_a_second_tensor_is_refused(tmp_path):
    """Two tensors name one storage key; the second claims more elements than the member holds."""
    tensors = {"small": FakeTensor("0", 4, (4,), (1,)), "large": FakeTensor("0", 4096, (4096,), (1,))}
    directory = probe_checkpoint(tmp_path, tensors, {"0": bytes(16), "1": bytes(65536)})
    with pytest.raises(ConversionError, match=r"storage 0 is shorter than"):
        open_checkpoint(directory)


def test_permuted_and_sliced_views_that_torch_writes_are_still_read(tmp_path):
    storage = np.arange(40, dtype=np.float32)
    tensors = {
        "transposed": FakeTensor("0", 40, (8, 5), (1, 8)),
        "slice": FakeTensor("0", 40, (3, 4), (8, 1), storage_offset=13),
        "row_of_ones": FakeTensor("0", 40, (1, 4), (999, 1), storage_offset=36),  # a size-1 dim's stride is unused
        "empty": FakeTensor("0", 40, (0, 7), (7, 1)),
    }
    with open_checkpoint(probe_checkpoint(tmp_path, tensors, {"0": storage.tobytes()})) as checkpoint:
        np.testing.assert_array_equal(checkpoint.load("transposed"), storage.reshape(5, 8).T)
        expected_slice = [[13, 14, 15, 16], [21, 22, 23, 24], [29, 30, 31, 32]]
        np.testing.assert_array_equal(checkpoint.load("slice"), np.array(expected_slice, dtype=np.float32))
        np.testing.assert_array_equal(checkpoint.load("row_of_ones"), storage[36:40].reshape(1, 4))
        assert checkpoint.load("empty").shape == (0, 7)
