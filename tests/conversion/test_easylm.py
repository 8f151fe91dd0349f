"""Koala's EasyLM diff: reading EasyLM's streaming msgpack checkpoints and the easylm-diff recipe.

The committed fixture (tests/fixtures/make_tiny.py, make_koala_diff) is a diff against the tiny
LLaMA written in the layout EasyLM writes, with transformers' logits for the model EasyLM's own
recipe recovers from it. Hostile files must end in one line, and memory stays bounded whatever
lengths a file claims.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

import msgpack
import numpy as np
import pytest
from conftest import TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logits import llama_logits, relative_error

import converters.recover
from converters import ConversionError, convert, open_checkpoint
from converters.archs.llama import _unpermute_order
from converters.checkpoint import bf16_to_f32
from converters.easylm import StreamingCheckpoint, llama_parameter
from converters.recover import apply_easylm_diff

DIFF = TINY / "koala_diff" / "koala_tiny_diff"
BASE = TINY / "llama"
REFERENCE = np.load(TINY / "koala_diff" / "reference.npz")
TOLERANCE = {"f32": 1e-3, "q8_0": 6e-2}


def read_diff(path: Path = DIFF) -> dict[str, np.ndarray]:
    """Every array of a streaming checkpoint, bfloat16 widened to float32, in file order."""
    with StreamingCheckpoint(path) as diff:
        return {
            a.key: bf16_to_f32(diff.load_raw(a)) if a.is_bf16 else np.array(diff.load_raw(a)) for a in diff.arrays()
        }


def error_against_reference(gguf_path: Path) -> float:
    return relative_error(llama_logits(gguf_path, REFERENCE["ids"]), REFERENCE["logits"])


@pytest.fixture(scope="module")
def recovered(tmp_path_factory) -> Path:
    return apply_easylm_diff(BASE, DIFF, tmp_path_factory.mktemp("koala") / "recovered")


@pytest.mark.parametrize("outtype", list(TOLERANCE))
def test_recovered_koala_matches_transformers_on_easylm_recovery(recovered, tmp_path, outtype):
    error = error_against_reference(convert(recovered, tmp_path / f"koala-{outtype}.gguf", outtype=outtype, nthreads=1))
    assert error < TOLERANCE[outtype], f"{outtype}: relative error {error:.2e}"


@pytest.mark.parametrize(
    "wrong_order",
    [
        pytest.param(lambda rows, n_head: np.arange(rows), id="meta-order-left-as-is"),
        pytest.param(_unpermute_order, id="permuted-the-wrong-way"),
    ],
)
def test_a_wrong_rotary_row_order_is_caught(tmp_path, monkeypatch, wrong_order):
    """The model still loads and runs with q/k rows in the wrong order; only its logits show it."""
    monkeypatch.setattr(converters.recover, "half_split_order", wrong_order)
    out = apply_easylm_diff(BASE, DIFF, tmp_path / "recovered")
    error = error_against_reference(convert(out, tmp_path / "koala.gguf", outtype="f32", nthreads=1))
    assert error > 100 * TOLERANCE["f32"]


def test_recovery_is_base_plus_diff_stored_as_bfloat16(recovered):
    """Tensors without a rotary or transpose step are checkable with numpy alone."""
    diff = read_diff()
    with open_checkpoint(BASE) as base, open_checkpoint(recovered) as out:
        assert sorted(out.names()) == sorted(base.names())
        assert all(out.info(name).is_bf16 for name in out.names())
        embedding = base.load("model.embed_tokens.weight").astype(np.float32) + diff["transformer/wte/embedding"]
        np.testing.assert_allclose(out.load("model.embed_tokens.weight"), embedding, rtol=2**-8)
        head = base.load("lm_head.weight").astype(np.float32) + diff["lm_head/kernel"].T
        np.testing.assert_allclose(out.load("lm_head.weight"), head, rtol=2**-8)
    assert (recovered / "tokenizer.model").read_bytes() == (BASE / "tokenizer.model").read_bytes()


def test_every_record_of_the_fixture_maps_to_a_llama_weight():
    with StreamingCheckpoint(DIFF) as diff:
        arrays = list(diff.arrays())
    keys = [a.key for a in arrays]
    assert keys == sorted(keys)  # jax's tree_map leaves dict keys sorted, as EasyLM's diffs are
    names = {llama_parameter(key).hf_name for key in keys}
    with open_checkpoint(BASE) as base:
        assert names == set(base.names())
    assert all(a.is_bf16 and a.dtype == np.uint16 for a in arrays)  # EasyLM's default dtype
    assert sum(a.nbytes for a in arrays) < DIFF.stat().st_size < sum(a.nbytes for a in arrays) + 64 * len(arrays)
    assert llama_parameter("transformer/h/1/attention/wk/kernel").rotary_heads == "k"
    assert llama_parameter("transformer/h/01/attention/wk/kernel") is None
    assert llama_parameter("params/transformer/wte/embedding") is None


# --- streams built here, as EasyLM writes them -----------------------------------------------------


def record(key: tuple[str, ...], array: np.ndarray, dtype_name: str | None = None) -> bytes:
    payload = msgpack.packb((array.shape, dtype_name or array.dtype.name, array.tobytes()))
    return msgpack.packb((key, msgpack.packb(msgpack.ExtType(1, payload))))


def fixture_records() -> list[bytes]:
    """The committed diff's records, re-encoded one by one (float32 instead of bfloat16)."""
    return [record(tuple(key.split("/")), array) for key, array in read_diff().items()]


def recover_from(tmp_path: Path, data: bytes, base: Path = BASE) -> Path:
    diff = tmp_path / "diff"
    diff.write_bytes(data)
    return apply_easylm_diff(base, diff, tmp_path / "out")


def test_float32_and_float16_diffs_are_read_as_stored(tmp_path):
    array = np.arange(6, dtype=np.float16).reshape(2, 3)
    (tmp_path / "d").write_bytes(record(("a",), array) + record(("b",), array.astype(np.float32)))
    read = read_diff(tmp_path / "d")
    assert read["a"].dtype == np.float16 and read["b"].dtype == np.float32
    np.testing.assert_array_equal(read["a"], array)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda records: records[:-1], "has no diff for"),
        (lambda records: records + records[-1:], "twice"),
        (lambda records: records[:1] + [record(("transformer", "extra"), np.zeros(2, np.float32))], "not a parameter"),
        (lambda records: [record(("lm_head", "kernel"), np.zeros((128, 7), np.float32))], "as a Hugging Face weight"),
        (lambda records: [records[0][:-3]], "claims .* bytes but only .* follow; the file is truncated"),
        (lambda records: [record(("lm_head", "kernel"), np.zeros(2, np.int32))], "dtype"),
        (lambda records: [msgpack.packb((["lm_head"], msgpack.packb(msgpack.ExtType(3, b"x"))))], "extension type 3"),
        (lambda records: [msgpack.packb({"lm_head": 1})], "not valid msgpack"),
        (lambda records: [b"\x91" * 5000], r"not a \[key, array\] pair"),
        (lambda records: [b"\x92\x91\xa1a\xc6\xff\xff\xff\xff" + bytes(1000)], "claims 4294967295 bytes but only 1000"),
    ],
    ids=[
        "missing",
        "twice",
        "unknown-key",
        "wrong-shape",
        "truncated",
        "int-dtype",
        "wrong-ext",
        "map",
        "deep",
        "huge-bin",
    ],
)
def test_a_damaged_or_foreign_diff_ends_in_one_line_and_leaves_no_output(tmp_path, change, message):
    with pytest.raises(ConversionError, match=message) as raised:
        recover_from(tmp_path, b"".join(change(fixture_records())))
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_diff_for_another_base_says_so(tmp_path):
    with pytest.raises(ConversionError, match="another base"):
        recover_from(tmp_path, DIFF.read_bytes(), base=TINY / "llama_gqa")  # 2 KV heads: k_proj is half as tall


def test_recovery_works_a_slice_of_rows_at_a_time(tmp_path, monkeypatch):
    """Memory follows the slice size, not the tensors: with 16 KiB slices, no step allocates the
    float32 copy of the largest tensor (the 700x128 embedding, 358 KB, last in the file) or half of it.
    Measured from the first tensor's progress report on, past the reading of config.json."""
    monkeypatch.setattr(converters.recover, "_SLICE_BYTES", 2**14)
    tracemalloc.start()
    reports, held = [], []

    def progress(report) -> None:
        if not reports:
            held.append(tracemalloc.get_traced_memory()[0])
            tracemalloc.reset_peak()
        reports.append(report.tensor)

    try:
        out = apply_easylm_diff(BASE, DIFF, tmp_path / "recovered", progress=progress)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reports[-1] == "model.embed_tokens.weight"
    assert peak - held[0] < 700 * 128 * 4 // 2, f"recovery took {peak - held[0]} bytes at once"
    with open_checkpoint(out) as sliced, open_checkpoint(BASE) as base:
        assert sorted(sliced.names()) == sorted(base.names())


# --- fuzzing -------------------------------------------------------------------------------------

SMALL = [
    record(("transformer", "ln_f", "kernel"), np.ones(8, np.float32)),
    record(("lm_head", "kernel"), np.ones((4, 4), np.uint16), "bfloat16"),
]
HOSTILE = [
    b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items
    b"\xdf\xff\xff\xff\xff",  # a map of 4 billion pairs
    b"\xc6\xff\xff\xff\xff",  # a bin of 4 GiB
    b"\xc9\xff\xff\xff\xff\x01",  # an extension of 4 GiB
    b"\xdb\xff\xff\xff\xff",  # a string of 4 GiB
    b"\x91" * 2000,  # nested arrays
    b"\x92\x91\xa1a",  # a record cut before its value
]


def read_all(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "diff"
        path.write_bytes(data)
        tracemalloc.start()
        try:
            with StreamingCheckpoint(path) as diff:
                for stored in diff.arrays():
                    diff.load_raw(stored).sum()  # every view it hands out lies inside the file
        except ConversionError as error:
            assert "\n" not in str(error) and str(error).startswith("diff")
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    assert peak < 2**20, f"reading took {peak} bytes"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.sampled_from(SMALL + HOSTILE) | st.binary(max_size=64), max_size=6),
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)), max_size=4),
)
def test_hostile_streams_end_in_one_line_with_bounded_memory(pieces, cut, flips):
    data = bytearray(b"".join(pieces))
    for position, value in flips:
        if position < len(data):
            data[position] = value
    read_all(bytes(data[: len(data) - min(cut, len(data) // 2)]))
