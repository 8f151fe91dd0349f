"""The fast GGUF header reader agrees with the gguf package's reader, and refuses what is not a GGUF in one line."""

import struct

import gguf
import pytest
from ggufbytes import ARRAY, FLOAT32, STRING, UINT32, gguf_file, kv, nested_arrays, string

from tui.zoo.fit import read_gguf
from tui.zoo.gguf_header import GGUFHeaderError, read_header


@pytest.fixture(scope="module")
def reference_reader(model_path) -> gguf.GGUFReader:
    """The gguf package's reading of the default model (read-only; seconds of Python, so read once)."""
    return gguf.GGUFReader(model_path)


@pytest.mark.slow  # over 2 CPU-seconds: gguf.GGUFReader reads the default model's vocabulary item by item
def test_metadata_and_tensor_sizes_match_the_gguf_package(model_path, reference_reader):
    header = read_header(model_path)
    reader = reference_reader
    assert {tensor.name: tensor.n_bytes for tensor in header.tensors} == {
        tensor.name: int(tensor.n_bytes) for tensor in reader.tensors
    }
    scalar_fields = {
        name: field.contents()
        for name, field in reader.fields.items()
        if field.types and field.types[0] != gguf.GGUFValueType.ARRAY and not name.startswith("GGUF.")
    }
    assert header.metadata == scalar_fields
    assert header.metadata["general.architecture"] == "llama"


@pytest.mark.parametrize("content", [b"", b"GGML" + b"\0" * 60, b"GGUF\x03\0\0\0" + b"\xff" * 16])
def test_a_file_that_is_not_a_whole_gguf_is_a_value_error(tmp_path, content):
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken.gguf"):
        read_header(path)


def _write(tmp_path, content: bytes):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        # 100k nested arrays: the recursive skip died with RecursionError, taking `zootui models` with it.
        (gguf_file([kv("a", ARRAY, nested_arrays(100_000))]), "arrays nested more than 8 deep"),
        (gguf_file([kv("a", ARRAY, struct.pack("<IQ", STRING, 2**62))]), "claims 4611686018427387904 items"),
        (gguf_file([kv("a", ARRAY, struct.pack("<IQ", 77, 1))]), "unknown value type 77"),
        (gguf_file([kv("a", 99, b"")]), "key a has unknown value type 99"),
        (gguf_file([kv("a", STRING, struct.pack("<Q", 2**63))]), "past the end of the file"),
        (gguf_file([], n_kv=2**60), "the metadata claims"),
        (gguf_file([], n_tensors=2**60), "tensors claimed"),
        (gguf_file([string("k" * 70_000)]), "more than the format allows"),
        (gguf_file([], string("w") + struct.pack("<I", 9), n_tensors=1), "tensor w has 9 dimensions"),
        (
            gguf_file([], string("w") + struct.pack("<IQIQ", 1, 8, 1234, 0), n_tensors=1),
            "tensor w has unknown type 1234",
        ),
        (gguf_file([], string("w") + struct.pack("<IQIQ", 1, 2**40, 0, 0), n_tensors=1), "tensor w lies past the end"),
        (gguf_file([kv("general.alignment", UINT32, struct.pack("<I", 3))]), "not a power of two"),
    ],
)
def test_hostile_metadata_is_one_line_naming_the_file(tmp_path, content, problem):
    with pytest.raises(GGUFHeaderError, match=problem) as raised:
        read_header(_write(tmp_path, content))
    assert str(raised.value).startswith("hostile.gguf: ") and "\n" not in str(raised.value)


def test_a_shallow_array_of_arrays_is_skipped(tmp_path):
    content = gguf_file([kv("a", ARRAY, nested_arrays(8)), kv("b", UINT32, struct.pack("<I", 7))])
    assert read_header(_write(tmp_path, content)).metadata == {"b": 7}


@pytest.mark.parametrize("count", [10**12, -1, 0, "32"])
def test_fit_refuses_absurd_or_missing_counts(tmp_path, count):
    """A block count of 10**12 would allocate a list of per-block sizes that large."""
    entries = [kv("general.architecture", STRING, string("llama"))]
    for key, value in (("block_count", count), ("embedding_length", 64), ("attention.head_count", 4)):
        if isinstance(value, str):
            entries.append(kv(f"llama.{key}", STRING, string(value)))
        else:
            entries.append(kv(f"llama.{key}", 11, struct.pack("<q", value)))  # int64
    with pytest.raises(ValueError, match=r"hostile.gguf: its metadata"):
        read_gguf(_write(tmp_path, gguf_file(entries)))


@pytest.mark.parametrize("file_type", [(STRING, string("q4")), (FLOAT32, struct.pack("<f", float("inf")))])
def test_a_file_type_that_is_not_a_number_reads_as_unknown(tmp_path, file_type):
    entries = [kv("general.architecture", STRING, string("llama")), kv("general.file_type", *file_type)]
    for key, value in (("block_count", 2), ("embedding_length", 64), ("attention.head_count", 4)):
        entries.append(kv(f"llama.{key}", UINT32, struct.pack("<I", value)))
    _shape, _layout, quant = read_gguf(_write(tmp_path, gguf_file(entries)))
    assert quant is None


@pytest.mark.slow  # over 2 CPU-seconds: gguf.GGUFReader reads the default model's vocabulary item by item
def test_string_arrays_asked_for_are_read(model_path, reference_reader):
    header = read_header(model_path, string_arrays=("tokenizer.ggml.tokens",))
    tokens = reference_reader.fields["tokenizer.ggml.tokens"]
    assert header.metadata["tokenizer.ggml.tokens"] == [tokens.contents(i) for i in range(len(tokens.data))]


def test_a_key_with_line_breaks_stays_on_one_line(tmp_path):
    """Found by the fuzzer: error messages quote keys, and a key may hold anything."""
    with pytest.raises(GGUFHeaderError) as raised:
        read_header(_write(tmp_path, gguf_file([kv("evil\nkey\x00", 99, b"")])))
    assert "\n" not in str(raised.value) and "key evil\\nkey\\x00 has unknown value type 99" in str(raised.value)
