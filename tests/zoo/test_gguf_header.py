"""The fast GGUF header reader agrees with the gguf package's reader, and refuses what is not a GGUF."""

import gguf
import pytest

from tui.zoo.gguf_header import read_header


def test_metadata_and_tensor_sizes_match_the_gguf_package(model_path):
    header = read_header(model_path)
    reader = gguf.GGUFReader(model_path)
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
