"""The CLI (`python -m converters`, also `zootui convert`): errors a user can cause give one line and exit 2."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
from conftest import TINY
from support import fill_disk

from converters import ConsoleProgress, Progress

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "converters", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_converts_with_plain_progress_lines(tmp_path):
    result = run_cli(str(TINY / "llama"), "--outtype", "q8_0", "-o", "out.gguf", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "out.gguf")
    assert "convert: 100.0%" in result.stderr and "\r" not in result.stderr  # not a TTY: plain lines
    assert gguf.GGUFReader(tmp_path / "out.gguf").fields["general.architecture"].contents() == "llama"


def test_default_output_name_and_chat_template_file(tmp_path):
    template = tmp_path / "vicuna.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}ASSISTANT:")
    result = run_cli(str(TINY / "bloom"), "--outtype", "f16", "--chat-template", str(template), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "bloom-f16.gguf"
    assert gguf.GGUFReader(out).fields["tokenizer.chat_template"].contents() == template.read_text()


def test_unsupported_architecture_is_named_with_the_supported_ones(copy_fixture, tmp_path):
    directory = copy_fixture("llama")
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["OPTForCausalLM"]
    (directory / "config.json").write_text(json.dumps(config))
    assert_user_error(
        run_cli(str(directory), cwd=tmp_path),
        "OPTForCausalLM",
        "LlamaForCausalLM",
        "GPTNeoXForCausalLM",
        "BloomForCausalLM",
    )


def test_missing_shard(copy_fixture, tmp_path):
    directory = copy_fixture("llama_gqa")
    (directory / "model-00001-of-00002.safetensors").unlink()
    assert_user_error(run_cli(str(directory), cwd=tmp_path), "missing shard model-00001-of-00002.safetensors")


def test_truncated_shard(copy_fixture, tmp_path):
    directory = copy_fixture("llama_gqa")
    shard = directory / "model-00002-of-00002.safetensors"
    os.truncate(shard, shard.stat().st_size - 4096)
    assert_user_error(run_cli(str(directory), cwd=tmp_path), "truncated", "re-download")


def test_shape_mismatch(copy_fixture, tmp_path):
    directory = copy_fixture("llama")
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 512
    (directory / "config.json").write_text(json.dumps(config))
    assert_user_error(run_cli(str(directory), cwd=tmp_path), "shape mismatch", "mlp.")


def test_corrupt_header(copy_fixture, tmp_path):
    directory = copy_fixture("bloom")
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[0:8] = (10**12).to_bytes(8, "little")
    weights.write_bytes(bytes(data))
    assert_user_error(run_cli(str(directory), cwd=tmp_path), "corrupt safetensors header")


def test_unsafe_pickle(tmp_path):
    from test_checkpoint import _malicious_pickle_archive

    directory = tmp_path / "evil"
    directory.mkdir()
    shutil.copy(TINY / "llama" / "config.json", directory / "config.json")
    marker = tmp_path / "pwned"
    _malicious_pickle_archive(directory / "pytorch_model.bin", marker)
    assert_user_error(run_cli(str(directory), cwd=tmp_path), "refusing to load")
    assert not marker.exists()


def test_imatrix_type_is_refused(tmp_path):
    assert_user_error(run_cli(str(TINY / "llama"), "--outtype", "iq2_xs", cwd=tmp_path), "importance matrix")


def test_not_enough_disk_space(tmp_path, small_disk):
    filler = fill_disk(small_disk)
    assert_user_error(
        run_cli(str(TINY / "llama"), "--outtype", "f32", "-o", str(small_disk / "x.gguf"), cwd=tmp_path),
        "not enough disk space",
    )
    assert list(small_disk.iterdir()) == [filler]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_redrawn_bar_on_a_terminal():
    screen = _Terminal()
    show = ConsoleProgress(screen)
    for done in (0, 512, 1024):
        show(Progress(done, 1024, "blk.0.attn_q.weight", "convert"))
    frames = screen.getvalue().split("\r")[1:]
    assert len(frames) == 3 and frames[1].count("#") == 15 and "50.0%" in frames[1]
    assert screen.getvalue().endswith("\n")  # the finished bar keeps its line


def test_tokenizer_larger_than_the_model(copy_fixture, tmp_path):
    directory = copy_fixture("llama")
    (directory / "added_tokens.json").write_text(json.dumps({"<extra>": 5000}))
    assert_user_error(run_cli(str(directory), cwd=tmp_path), "<extra>", "embedding has only 700 rows")


@pytest.mark.parametrize(
    ("fixture", "changes", "names"),
    [
        ("gptj", {"rotary_dim": 15}, "rotary_dim must be even"),
        ("gptj", {"rotary_dim": 64}, "rotary_dim"),  # more than the head's 32 dims
        ("chatglm2", {"multi_query_group_num": 3}, "groups must split the heads"),
        ("chatglm2", {"rmsnorm": False}, "rmsnorm"),
        ("chatglm2", {"kv_channels": 16}, "kv_channels"),
    ],
)
def test_configs_llama_cpp_cannot_compute_are_refused(copy_fixture, tmp_path, fixture, changes, names):
    """A GPT-J or ChatGLM config that the phi2 / chatglm graphs would compute wrongly is one clear line."""
    directory = copy_fixture(fixture)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))
    assert_user_error(run_cli(str(directory), cwd=tmp_path), "config.json", names)
