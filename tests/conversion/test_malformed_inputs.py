"""Malformed checkpoint files end in one ConversionError line naming the file, the key and the problem.

Each case damages one field of a committed tiny checkpoint the way the issue's 124 hostile inputs
did (wrong types, absurd sizes, deep nesting, bytes that are not UTF-8, names outside the
directory); the conversion must refuse it before it writes anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from test_convert_cli import assert_user_error, run_cli

from converters import ConversionError, convert


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A damage: load `name` as JSON, let `change` edit it in place, write it back."""

    def damage(directory: Path) -> None:
        data = json.loads((directory / name).read_text(encoding="utf-8"))
        change(data)
        (directory / name).write_text(json.dumps(data), encoding="utf-8")

    return damage


def write_bytes(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda directory: (directory / name).write_bytes(content)


def _set(*path: str | int, value: object) -> Callable[[dict], None]:
    """An edit setting the item at a key path (keys and list indexes) to value."""

    def change(data: dict) -> None:
        for part in path[:-1]:
            data = data[part]
        data[path[-1]] = value

    return change


def edit_safetensors_header(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A damage to a safetensors header, keeping its length (padded with spaces, as the format allows)."""

    def damage(directory: Path) -> None:
        data = (directory / name).read_bytes()
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + length])
        change(header)
        encoded = json.dumps(header, separators=(",", ":")).encode()
        assert len(encoded) <= length, "the damage must not grow the header"
        (directory / name).write_bytes(data[:8] + encoded.ljust(length) + data[8 + length :])

    return damage


def _first_two_tensors(header: dict) -> list[dict]:
    return sorted((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][0])[:2]


def _overlap(header: dict) -> None:
    first, second = _first_two_tensors(header)
    size = second["data_offsets"][1] - second["data_offsets"][0]
    second["data_offsets"] = [first["data_offsets"][0], first["data_offsets"][0] + size]


def _as_dtype(code: str, itemsize: int) -> Callable[[dict], None]:
    """Relabels the embedding's bytes as another dtype of the same size, shape adjusted to match."""

    def change(header: dict) -> None:
        entry = header["model.embed_tokens.weight"]
        entry["dtype"] = code
        entry["shape"] = [entry["shape"][0], entry["shape"][1] * 2 // itemsize]

    return change


def _rename_and_break_norm(header: dict) -> None:
    header["e\nn\u200b"] = {**header.pop("model.norm.weight"), "shape": "x"}


DEEP = b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
NOT_UTF8 = b'{"architectures": ["Llama\xffForCausalLM"]}'

CASES = {
    # safetensors headers
    "data_offsets as strings": (
        "llama",
        edit_safetensors_header("model.safetensors", _set("model.norm.weight", "data_offsets", value=["0", "256"])),
        [
            "model.safetensors",
            "the header's model.norm.weight.data_offsets[0] must be an integer",
            'not the string "0"',
        ],
    ),
    "data_offsets as floats": (
        "llama",
        edit_safetensors_header("model.safetensors", _set("model.norm.weight", "data_offsets", value=[0.0, 256.0])),
        ["the header's model.norm.weight.data_offsets[0] must be an integer", "not the number 0.0"],
    ),
    "shape 1e400": (
        "llama",
        edit_safetensors_header("model.safetensors", _set("model.norm.weight", "shape", value=[1e400])),
        ["model.norm.weight.shape[0] must be an integer of at least 0, not the number inf"],
    ),
    "negative shape": (
        "llama",
        edit_safetensors_header("model.safetensors", _set("model.norm.weight", "shape", value=[-128])),
        ["model.norm.weight.shape[0] is -128, but must be an integer of at least 0"],
    ),
    "overlapping byte ranges": (
        "llama",
        edit_safetensors_header("model.safetensors", _overlap),
        ["model.safetensors has a corrupt safetensors header", "overlaps the bytes of"],
    ),
    "bool where a float weight belongs": (
        "llama",
        edit_safetensors_header("model.safetensors", _as_dtype("BOOL", 1)),
        ["model.embed_tokens.weight is stored as bool", "a weight is a float tensor"],
    ),
    "int16 where a float weight belongs": (
        "llama",
        edit_safetensors_header("model.safetensors", _as_dtype("I16", 2)),
        ["model.embed_tokens.weight is stored as int16"],
    ),
    "tensor name with line breaks": (
        "llama",
        edit_safetensors_header("model.safetensors", _rename_and_break_norm),
        ["the header's e\\nn\\u200b.shape must be an array"],
    ),
    "header that is not an object": (
        "llama",
        edit_safetensors_header("model.safetensors", lambda h: h.clear() or h.update({"x": [1, 2]})),
        ["model.safetensors: the header's x must be an object"],
    ),
    # config.json
    "config nested 200k deep": ("llama", write_bytes("config.json", DEEP), ["config.json nests JSON", "too deep"]),
    "config not UTF-8": ("llama", write_bytes("config.json", NOT_UTF8), ["config.json is not UTF-8", "0xff"]),
    "config a list": ("llama", write_bytes("config.json", b"[1, 2]"), ["config.json: the file must be an object"]),
    "architectures a string": (
        "llama",
        edit_json("config.json", _set("architectures", value="LlamaForCausalLM")),
        ["config.json: architectures must be an array"],
    ),
    "hidden_size as a string": (
        "llama",
        edit_json("config.json", _set("hidden_size", value="128")),
        ["config.json: hidden_size must be an integer from 1 to 2147483647", 'not the string "128"'],
    ),
    "num_hidden_layers 10**12": (
        "llama",
        edit_json("config.json", _set("num_hidden_layers", value=10**12)),
        ["config.json: num_hidden_layers is 1000000000000, but must be an integer from 1 to 1024"],
    ),
    "zero heads": (
        "llama",
        edit_json("config.json", _set("num_attention_heads", value=0)),
        ["config.json: num_attention_heads is 0, but must be an integer from 1"],
    ),
    "context length past uint32": (
        "llama",
        edit_json("config.json", _set("max_position_embeddings", value=2**40)),
        ["config.json: max_position_embeddings is 1099511627776"],
    ),
    "infinite rms_norm_eps": (
        "llama",
        edit_json("config.json", _set("rms_norm_eps", value=float("inf"))),
        ["config.json: rms_norm_eps must be a positive number, not the number inf"],
    ),
    "rope_scaling as a string": (
        "llama",
        edit_json("config.json", _set("rope_scaling", value="linear")),
        ["config.json: rope_scaling must be an object, not the string"],
    ),
    "linear rope without a factor": (
        "llama",
        edit_json("config.json", _set("rope_scaling", value={"type": "linear"})),
        ["config.json lacks rope_parameters.factor"],
    ),
    "rotary_pct above 1": (
        "neox_sequential",
        edit_json("config.json", _set("rotary_pct", value=2.5)),
        ["config.json: rotary_pct is 2.5, but must be a positive number of at most 1.0"],
    ),
    "head count that does not divide the fused rows": (
        "neox_sequential",
        edit_json("config.json", _set("num_attention_heads", value=5)),
        ["head counts do not divide the 384 rows of gpt_neox.layers.0.attention.query_key_value"],
    ),
    # tokenizer files
    "vocab id as a string": (
        "bloom",
        edit_json("tokenizer.json", _set("model", "vocab", "<s>", value="1")),
        ['tokenizer.json: model.vocab["<s>"] must be an integer of at least 0'],
    ),
    "BPE vocab in Unigram's list form": (
        "bloom",
        edit_json("tokenizer.json", _set("model", "vocab", value=[["<s>", 0.0]])),
        ["tokenizer.json: model.vocab must be an object, not an array"],
    ),
    "added token without an id": (
        "bloom",
        edit_json("tokenizer.json", lambda t: t["added_tokens"][0].pop("id")),
        ["tokenizer.json: added_tokens[0].id is missing"],
    ),
    "pre_tokenizer as a list": (
        "bloom",
        edit_json("tokenizer.json", _set("pre_tokenizer", value=["ByteLevel"])),
        ["tokenizer.json: pre_tokenizer must be null or an object, not an array"],
    ),
    "pre-tokenizer pattern as a string": (
        "bloom",
        edit_json("tokenizer.json", _set("pre_tokenizer", "pretokenizers", 0, "pattern", value="x")),
        ["tokenizer.json: pre_tokenizer.pretokenizers[0].pattern must be an object"],
    ),
    "merge as a number": (
        "bloom",
        edit_json("tokenizer.json", _set("model", "merges", 0, value=7)),
        ["tokenizer.json: model.merges[0] must be a string or an array of 2, not the number 7"],
    ),
    "tokenizer.json nested 200k deep": ("bloom", write_bytes("tokenizer.json", DEEP), ["tokenizer.json nests JSON"]),
    "tokenizer.json not UTF-8": (
        "bloom",
        write_bytes("tokenizer.json", b"\xfe\xff{}"),
        ["tokenizer.json is not UTF-8"],
    ),
    "added_tokens_decoder keyed by text": (
        "llama",
        edit_json("tokenizer_config.json", _set("added_tokens_decoder", value={"pad": {"content": "<pad>"}})),
        ['tokenizer_config.json: added_tokens_decoder["pad"] must be keyed by a token id'],
    ),
    "add_bos_token as a string": (
        "llama",
        edit_json("tokenizer_config.json", _set("add_bos_token", value="yes")),
        ["tokenizer_config.json: add_bos_token must be true or false or null"],
    ),
    "added_tokens.json id as a string": (
        "llama",
        write_bytes("added_tokens.json", b'{"<extra>": "5"}'),
        ['added_tokens.json: ["<extra>"] must be an integer'],
    ),
    "special_tokens_map a list": (
        "llama",
        write_bytes("special_tokens_map.json", b"[]"),
        ["special_tokens_map.json: the file must be an object"],
    ),
    "chat_template.jinja not UTF-8": (
        "llama",
        write_bytes("chat_template.jinja", b"{{ '\xff' }}"),
        ["chat_template.jinja is not UTF-8"],
    ),
    "SentencePiece piece text as a varint": (
        "llama",
        write_bytes("tokenizer.model", b"\x0a\x02\x08\x01"),
        ["tokenizer.model is not a valid SentencePiece model", "a piece's text has the wrong wire type"],
    ),
    "SentencePiece piece type out of range": (
        "llama",
        write_bytes("tokenizer.model", b"\x0a\x05\x0a\x01a\x18\x63"),
        ["tokenizer.model is not a valid SentencePiece model", "piece 0 has type 99"],
    ),
    # shard indexes
    "shard named by a path that climbs out": (
        "llama_gqa",
        edit_json(
            "model.safetensors.index.json", _set("weight_map", "model.norm.weight", value="../../../../etc/passwd")
        ),
        ["model.safetensors.index.json: weight_map names the shard '../../../../etc/passwd'", "not a file name"],
    ),
    "shard named by an absolute path": (
        "llama_gqa",
        edit_json("model.safetensors.index.json", _set("weight_map", "model.norm.weight", value="/etc/passwd")),
        ["weight_map names the shard '/etc/passwd'"],
    ),
    "weight_map as a list": (
        "llama_gqa",
        edit_json("model.safetensors.index.json", _set("weight_map", value=["model-00001-of-00002.safetensors"])),
        ["model.safetensors.index.json: weight_map must be an object"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_one_line_naming_file_and_key(copy_fixture, tmp_path, case):
    variant, damage, fragments = CASES[case]
    directory = copy_fixture(variant)
    damage(directory)
    with pytest.raises(ConversionError) as raised:
        convert(directory, tmp_path / "out.gguf", outtype="f16")
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*partial"))


def test_a_shard_linked_from_outside_the_checkpoint_is_refused(copy_fixture, tmp_path):
    directory = copy_fixture("llama_gqa")
    outside = tmp_path / "elsewhere.safetensors"
    (directory / "model-00002-of-00002.safetensors").rename(outside)
    os.symlink(outside, directory / "model-00002-of-00002.safetensors")
    with pytest.raises(ConversionError, match=r"the shard model-00002-of-00002.safetensors links to .*elsewhere"):
        convert(directory, tmp_path / "out.gguf", outtype="f16")


def test_hub_cache_snapshots_link_into_their_blob_store(copy_fixture, tmp_path):
    """huggingface_hub's layout: snapshots/<revision>/<file> -> ../../blobs/<hash>; those links are followed."""
    repo = tmp_path / "models--zoo--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / ("0" * 40)
    source = copy_fixture("llama_gqa")
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        (source / file.name).rename(repo / "blobs" / file.name)
        os.symlink(Path("../../blobs") / file.name, snapshot / file.name)
    assert convert(snapshot, tmp_path / "out.gguf", outtype="f16").is_file()


@pytest.mark.parametrize(
    "case", ["data_offsets as strings", "config nested 200k deep", "shard named by a path that climbs out"]
)
def test_the_cli_gives_one_line_and_exit_2(copy_fixture, tmp_path, case):
    variant, damage, fragments = CASES[case]
    directory = copy_fixture(variant)
    damage(directory)
    assert_user_error(run_cli(str(directory), "--outtype", "f16", cwd=tmp_path), fragments[0])
