"""Checkpoint reading: safetensors (single and sharded), PyTorch zip pickles without torch, and the damage users meet."""

from __future__ import annotations

import json
import mmap
import os
import pickle
import zipfile

import numpy as np
import pytest
from conftest import TINY

from converters import ConversionError, open_checkpoint


def test_torch_bin_tensors_rebuild_exactly_without_torch():
    expected = np.load(TINY / "torch_bin" / "expected.npz")
    with open_checkpoint(TINY / "torch_bin") as ckpt:
        assert set(ckpt.names()) == set(expected.files)
        for name in expected.files:
            value = ckpt.load(name)
            assert value.shape == expected[name].shape, name
            assert value.dtype == expected[name].dtype, name
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
            assert not value.flags.writeable, name
            assert ckpt.info(name).dtype == value.dtype
        assert ckpt.info("bf16").is_bf16
        assert ckpt.load_raw("bf16").dtype == np.uint16
        # Transposed (strided) and offset views are read in place from the mapped archive.
        assert ckpt.load("transposed_f32").strides == (4, 16)
        assert "torch" not in __import__("sys").modules


@pytest.mark.parametrize(
    ("variant", "index_name"),
    [("llama_gqa", "model.safetensors.index.json"), ("llama_added_tokens", "pytorch_model.bin.index.json")],
)
def test_sharded_checkpoints_are_read_in_file_order(variant, index_name):
    with open_checkpoint(TINY / variant) as ckpt:
        index = json.loads((TINY / variant / index_name).read_text())["weight_map"]
        assert set(ckpt.names()) == set(index)
        assert [p.name for p in ckpt.files()] == sorted(set(index.values()))
        first_shard_names = [n for n in ckpt.names() if index[n] == ckpt.files()[0].name]
        assert ckpt.names()[: len(first_shard_names)] == first_shard_names


def test_bf16_is_widened_by_load_and_raw_by_load_raw():
    with open_checkpoint(TINY / "llama_gqa") as ckpt:
        embed = ckpt.info("model.embed_tokens.weight")
        assert embed.is_bf16 and embed.dtype == np.float32 and embed.nbytes == embed.shape[0] * embed.shape[1] * 2
        bits = ckpt.load_raw("model.embed_tokens.weight")
        widened = ckpt.load("model.embed_tokens.weight")
        np.testing.assert_array_equal(widened.view(np.uint32) >> 16, bits)
        assert not (widened.view(np.uint32) & 0xFFFF).any()


def test_load_is_memory_mapped_and_release_keeps_data():
    with open_checkpoint(TINY / "llama") as ckpt:
        name = "model.embed_tokens.weight"
        first = np.array(ckpt.load(name))
        view = ckpt.load(name)
        root = view
        while isinstance(root, np.ndarray):
            root = root.base
        assert isinstance(root, memoryview) and isinstance(root.obj, mmap.mmap)
        ckpt.release(name)
        np.testing.assert_array_equal(view, first)  # pages come back from the page cache


def _malicious_pickle_archive(path, marker):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"model.embed_tokens.weight": Exploit()}, protocol=2)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    checkpoint = tmp_path / "evil"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    marker = tmp_path / "pwned"
    _malicious_pickle_archive(checkpoint / "pytorch_model.bin", marker)
    with pytest.raises(ConversionError, match=r"refusing to load.*(posix|os)\.system"):
        open_checkpoint(checkpoint)
    assert not marker.exists()


def test_legacy_non_zip_pickle_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ConversionError, match="not a PyTorch zip checkpoint"):
        open_checkpoint(tmp_path)


def test_missing_shard_is_named(copy_fixture):
    directory = copy_fixture("llama_gqa")
    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConversionError, match="missing shard model-00002-of-00002.safetensors"):
        open_checkpoint(directory)


def test_truncated_safetensors_is_detected(copy_fixture):
    directory = copy_fixture("llama")
    weights = directory / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 1000)
    with pytest.raises(ConversionError, match="truncated"):
        open_checkpoint(directory)


def test_truncated_torch_bin_is_detected(copy_fixture):
    directory = copy_fixture("neox_parallel")
    weights = directory / "pytorch_model.bin"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(ConversionError, match="truncated|corrupt"):
        open_checkpoint(directory)


def test_corrupt_safetensors_header_is_detected(copy_fixture):
    directory = copy_fixture("llama")
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:20] = b"\x00garbage!!\xff\xfe"
    weights.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match="corrupt safetensors header"):
        open_checkpoint(directory)


def test_directory_without_weights_or_config(tmp_path):
    with pytest.raises(ConversionError, match="no config.json"):
        open_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConversionError, match="no weights"):
        open_checkpoint(tmp_path)
