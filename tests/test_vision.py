"""MiniGPT-4's vision side: the converter and the numpy encoder against transformers' BLIP-2 on a tiny random model."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
from PIL import Image
from tinyminigpt4 import BLIP2, GRADIENT, NOISE, PROJECTION, build_vision_file, reference

from converters import ConversionError, VisionShape, convert_vision, open_checkpoint, vision_shards
from converters.recover import OutputTensor, SafetensorsWriter
from tui import vision
from tui.vision import VisionEncoder, VisionFileError


@pytest.fixture(scope="module")
def vision_file(tmp_path_factory):
    return build_vision_file(tmp_path_factory.mktemp("vision") / "tiny.vision.gguf")


@pytest.fixture(scope="module")
def encoder(vision_file):
    loaded = VisionEncoder(vision_file)
    yield loaded
    loaded.close()


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def test_preprocessing_is_minigpt4s_eval_transform(encoder):
    ref = reference()
    assert np.array_equal(encoder.preprocess(Image.open(GRADIENT)), ref["pixels_gradient"])
    assert np.array_equal(encoder.preprocess(Image.open(NOISE)), ref["pixels_noise_rgba"])  # alpha dropped


def test_preprocessing_at_the_real_224_pixels(encoder, monkeypatch):
    monkeypatch.setattr(encoder, "shape", vision.VisionShape(**{**encoder.shape.__dict__, "image_size": 224}))
    pixels = encoder.preprocess(Image.open(GRADIENT))
    assert np.array_equal(pixels[:, ::16, ::16], reference()["pixels_gradient_224"])


def test_encoder_matches_transformers_blip2(encoder):
    vectors = encoder.encode(Image.open(GRADIENT))
    expected = reference()["vectors"]
    assert vectors.shape == expected.shape == (32, 128)
    assert relative_error(vectors, expected) < 1e-4


def test_one_thread_or_several_give_the_same_vectors(vision_file, monkeypatch):
    """The encoder splits products, heads and GELU blocks over its threads; the split changes nothing."""
    picture = Image.open(GRADIENT)
    single, split = VisionEncoder(vision_file, threads=1), VisionEncoder(vision_file, threads=3)
    try:
        alone = single.encode(picture)
        monkeypatch.setattr(vision, "_SPLIT_PRODUCTS", 1)  # the tiny model's products split too
        assert relative_error(split.encode(picture), alone) < 1e-6  # only the summation order may differ
    finally:
        single.close()
        split.close()


def test_encoding_stops_when_asked(encoder):
    assert encoder.encode(Image.open(GRADIENT), should_stop=lambda: True) is None


def test_gelu_matches_erf():
    import math

    x = np.linspace(-8, 8, 20001, dtype=np.float32)
    exact = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    computed = x.copy()
    vision._gelu_rows(computed)
    assert np.abs(computed - exact).max() < 1e-6


def test_vision_file_records_minigpt4s_constants(vision_file):
    fields = {name: field.contents() for name, field in gguf.GGUFReader(vision_file).fields.items()}
    assert fields["general.architecture"] == VisionShape.ARCH
    assert fields[VisionShape.key("vit_eps")] == pytest.approx(1e-6)
    assert fields[VisionShape.key("ln_vision_eps")] == pytest.approx(1e-5)
    assert fields[VisionShape.key("qformer_eps")] == pytest.approx(1e-12)
    assert fields[VisionShape.key("image_mean")] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert fields[VisionShape.key("image_std")] == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert fields[VisionShape.key("query_count")] == 32 and fields[VisionShape.key("output_width")] == 128


def test_only_the_shards_with_the_vision_side_are_needed(tmp_path):
    needed = vision_shards(BLIP2 / "pytorch_model.bin.index.json")
    assert needed == ["pytorch_model-00001-of-00003.bin", "pytorch_model-00002-of-00003.bin"]
    partial = tmp_path / "blip2"
    partial.mkdir()
    for name in ["config.json", "pytorch_model.bin.index.json", *needed]:
        shutil.copy(BLIP2 / name, partial / name)
    convert_vision(partial, PROJECTION, tmp_path / "v.gguf")
    (partial / needed[1]).unlink()
    with pytest.raises(ConversionError, match="lacks pytorch_model-00002-of-00003.bin"):
        convert_vision(partial, PROJECTION, tmp_path / "w.gguf")
    assert not (tmp_path / "w.gguf").exists()


def test_a_shard_index_pointing_outside_the_checkpoint_is_refused(tmp_path):
    blip2 = tmp_path / "blip2"
    shutil.copytree(BLIP2, blip2)
    index = json.loads((blip2 / "pytorch_model.bin.index.json").read_text())
    index["weight_map"]["query_tokens"] = "../../etc/passwd"
    (blip2 / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(ConversionError, match="not a plain file name"):
        convert_vision(blip2, PROJECTION, tmp_path / "x.gguf")


def test_current_transformers_spelling_converts_the_same(tmp_path, vision_file):
    """transformers 5 saves the ViT's attention bias fused (self_attn.qkv.bias) rather than as q_bias/v_bias."""
    current = tmp_path / "blip2-current"
    tensors: dict[str, np.ndarray] = {}
    with open_checkpoint(BLIP2) as checkpoint:
        for name in checkpoint.names():
            if name.endswith("self_attn.q_bias"):
                prefix = name[: -len("q_bias")]
                q, v = checkpoint.load(name), checkpoint.load(prefix + "v_bias")
                tensors[prefix + "qkv.bias"] = np.concatenate([q, np.zeros_like(q), v])
            elif not name.endswith("self_attn.v_bias"):
                tensors[name] = np.array(checkpoint.load(name))
    plan = [OutputTensor(name, value.shape, "F32") for name, value in tensors.items()]
    current.mkdir()
    with SafetensorsWriter(current, plan) as writer:
        for name, value in tensors.items():
            writer.write(name, value.astype(np.float32))
        writer.finish()
    shutil.copy(BLIP2 / "config.json", current / "config.json")
    converted = convert_vision(current, PROJECTION, tmp_path / "current.vision.gguf")
    ours = {t.name: np.array(t.data) for t in gguf.GGUFReader(converted).tensors}
    theirs = {t.name: np.array(t.data) for t in gguf.GGUFReader(vision_file).tensors}
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[name], theirs[name]) for name in ours)


def test_a_checkpoint_without_llama_proj_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="holds no llama_proj"):
        convert_vision(BLIP2, BLIP2 / "pytorch_model-00003-of-00003.bin", tmp_path / "x.gguf")
    with pytest.raises(ConversionError, match="not found"):
        convert_vision(BLIP2, tmp_path / "missing.pth", tmp_path / "x.gguf")


def test_a_projection_for_another_q_former_is_refused(tmp_path, monkeypatch):
    from converters import vision as converter

    monkeypatch.setattr(converter, "_read_projection", lambda path: (np.zeros((128, 17), np.float32), np.zeros(128)))
    with pytest.raises(ConversionError, match="takes 17 inputs but the Q-Former gives 32"):
        convert_vision(BLIP2, PROJECTION, tmp_path / "x.gguf")


def test_a_language_model_checkpoint_is_not_a_blip2(tmp_path):
    from support import ROOT

    with pytest.raises(ConversionError, match="not a BLIP-2 checkpoint"):
        convert_vision(ROOT / "tests" / "fixtures" / "tiny" / "llama", PROJECTION, tmp_path / "x.gguf")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[: len(data) // 2], "truncated|not a readable"),
        (lambda data: b"GGUF" + b"\0" * 60, "not a readable|architecture"),
        (lambda data: b"not a gguf file at all", "not a readable"),
    ],
)
def test_a_damaged_vision_file_is_one_clear_error(tmp_path, vision_file, damage, message):
    broken = tmp_path / "broken.vision.gguf"
    broken.write_bytes(damage(vision_file.read_bytes()))
    with pytest.raises(VisionFileError, match=message) as raised:
        VisionEncoder(broken)
    assert "\n" not in str(raised.value) and str(broken) in str(raised.value)


def test_a_language_model_gguf_is_not_a_vision_file(tmp_path):
    from tinyminigpt4 import build_language_model

    with pytest.raises(VisionFileError, match="general.architecture is 'llama'"):
        VisionEncoder(build_language_model(tmp_path / "llama.gguf"))


def test_nested_state_dicts_are_read_with_dotted_names_and_cycles_end(tmp_path):
    """MiniGPT-4's checkpoint nests its weights under "model"; a pickle may also make a dict hold itself."""
    import pickle
    import zipfile

    from converters.unpickle import read_torch_zip

    looping: dict = {"epoch": 4}
    looping["again"] = looping
    path = tmp_path / "nested.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(looping, protocol=2))
    assert read_torch_zip(path).tensors == {}
    index = read_torch_zip(PROJECTION)
    assert {"model.llama_proj.weight", "model.llama_proj.bias"} <= set(index.tensors)
    assert index.tensors["model.llama_proj.weight"].shape == (128, 32)
