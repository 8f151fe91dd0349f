"""The zoo's command line: `zootui models --all`, `zootui prompt`, `zootui pull` wiring; run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import llama_cpp
import pytest
from ggufbytes import ARRAY, gguf_file, kv, nested_arrays
from support import zootui_command
from tinyzoo import TINY_LLAMA

from tui.engine.local import gpu_offload_summary
from tui.store import DATABASE_NAME, JobState, Store

SEED_FAMILIES = {
    "chatyuan",
    "vicuna",
    "chinese-vicuna",
    "minigpt4",
    "colossalchat",
    "chatglm",
    "openflamingo",
    "chatllama",
    "alpaca",
    "openchatkit",
    "belle",
    "alpaca-lora",
    "luotuo",
    "dolly",
    "lmflow",
    "baize",
    "koala",
    "stackllama",
    "deepspeed-chat",
    "rrhf",
    "llmzoo",
    "openassistant",
}
ROW_KEYS = {"id", "family", "variant", "arch", "release_form", "status", "reason", "fit"}
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
MULTI = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Why?"},
]


def run(cli_env, *args, input=None):
    return subprocess.run(
        zootui_command(*args), check=False, env=cli_env, input=input, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def messages_file(tmp_path):
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(MULTI))
    return path


def test_models_all_json_lists_catalog_and_library_with_fit(cli_env, model_path):
    result = run(cli_env, "models", "--all", "--json", "--n-ctx", "4096")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert all(ROW_KEYS <= entry.keys() for entry in entries)

    catalog = {entry["id"]: entry for entry in entries if entry["source"] == "catalog"}
    assert {entry["family"] for entry in catalog.values()} == SEED_FAMILIES
    opt = catalog["deepspeed-chat-opt-1.3b"]
    assert opt["status"] == "unsupported" and "OPT" in opt["reason"]
    assert opt["fit"]["verdict"] is None and opt["reason"] in opt["fit"]["reason"]
    assert all(entry["reason"] for entry in catalog.values() if entry["status"] != "supported")
    vicuna = catalog["vicuna-7b-v1.1"]
    assert (vicuna["arch"], vicuna["release_form"], vicuna["status"]) == ("LlamaForCausalLM", "delta", "supported")
    assert vicuna["fit"]["verdict"] in ("fits", "tight", "does not fit")
    assert vicuna["fit"]["kv_cache_bytes"] == 2 * 32 * 4096 * 32 * 128 * 2  # 2 GiB
    assert vicuna["fit"]["quant"] == "q4_k_m" and vicuna["in_library"] == []

    [default] = [entry for entry in entries if entry["source"] == "library"]
    assert default["id"] == "smollm2-135m-instruct" and default["path"] == str(model_path)
    assert default["arch"] == "llama" and default["status"] == "ready"
    assert default["fit"]["kv_cache_bytes"] == 2 * 30 * 4096 * 3 * 64 * 2
    assert default["fit"]["quant"] == "q4_1" and default["fit"]["disk"] is None


def test_models_prints_a_fit_line_per_model(cli_env):
    result = run(cli_env, "models", "--all", "--quant", "Q8_0")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("smollm2-135m-instruct")
    assert "GB RAM of" in lines[1] and "file 0.1 GB" in lines[1]
    assert any(line.startswith("Catalog (fit as q8_0 at 4096 tokens") for line in lines)
    [vicuna] = [line.split() for line in lines if line.startswith("vicuna-7b-v1.1 ")]
    assert vicuna[1] == "supported" and vicuna[2] in ("fits:", "tight:", "does")
    [opt] = [line for line in lines if line.startswith("deepspeed-chat-opt-1.3b ")]
    assert "unsupported" in opt and "OPT" in opt


def test_models_says_whether_layers_are_offloaded(cli_env):
    last = run(cli_env, "--gpu-layers", "5", "models").stdout.splitlines()[-1]
    if llama_cpp.llama_supports_gpu_offload():
        assert last == "GPU offload: on, the last 5 layers on the GPU (n_gpu_layers = 5)"
    else:
        assert (
            last
            == "GPU offload: none, this llama-cpp-python is built for the CPU only; n_gpu_layers = 5 is ignored (README: GPU)"
        )


def test_the_offload_line_for_a_gpu_build(monkeypatch):
    # This machine's build has no GPU backend; the lines a CUDA build prints are checked by standing in for its answer.
    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    assert gpu_offload_summary(-1) == "GPU offload: on, every layer on the GPU (n_gpu_layers = -1)"
    assert gpu_offload_summary(0).startswith("GPU offload: available but off (n_gpu_layers = 0)")


def test_prompt_for_a_family_and_a_catalog_variant(cli_env, messages_file):
    expected = "<s>" + VICUNA_SYSTEM + " USER: Hi ASSISTANT: Hello!</s>USER: Why? ASSISTANT:"
    for reference in ("vicuna_v1.1", "vicuna-7b-v1.1"):
        result = run(cli_env, "prompt", reference, "--messages", str(messages_file))
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected


def test_prompt_from_standard_input_and_a_format_with_its_own_eos(cli_env):
    # Dolly v2's GGUF ends answers with "### End" (its EOS); GPT-NeoX has no BOS text in the prompt.
    request = json.dumps({"messages": MULTI})
    result = run(cli_env, "prompt", "dolly-v2-3b", "--messages", "-", input=request)
    assert result.returncode == 0, result.stderr
    assert "### Response:\nHello!### End\n\n### Instruction:\nWhy?" in result.stdout
    assert result.stdout.startswith("Below is an instruction")


def test_prompt_for_the_default_model_uses_its_gguf_template(cli_env, messages_file, model_path):
    # SmolLM2-135M-Instruct's published ChatML template, with its default system message.
    expected = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    )
    for reference in ("smollm2-135m-instruct", str(model_path)):
        result = run(cli_env, "prompt", reference, "--messages", str(messages_file))
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected


def test_errors_are_one_line_and_exit_2(cli_env, messages_file, tmp_path):
    not_json = tmp_path / "broken.json"
    not_json.write_text('[{"role": "user",')
    wrong_shape = tmp_path / "shape.json"
    wrong_shape.write_text('[{"role": "user"}]')
    cases = {
        ("prompt", "no-such-model", "--messages", str(messages_file)): "is not a prompt format, a catalog variant",
        ("prompt", "vicuna_v1.1", "--messages", str(not_json)): "is not valid JSON",
        ("prompt", "vicuna_v1.1", "--messages", str(wrong_shape)): "must hold a non-empty list of messages",
        ("prompt", "vicuna_v1.1", "--messages", str(tmp_path / "missing.json")): "cannot read",
        ("prompt", "openflamingo-9b-v1", "--messages", str(messages_file)): "has no chat prompt format",
        ("prompt", "remote:llama", "--messages", str(messages_file)): "server's own template",
        ("models", "--all", "--quant", "q9"): "unknown weight type 'q9'",
    }
    for args, message in cases.items():
        result = run(cli_env, *args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("zootui: "), args
        assert message in result.stderr, args


def test_version_stays_light_and_pull_is_wired(cli_env):
    python, *module = zootui_command("--version")
    result = subprocess.run(
        [python, "-X", "importtime", *module], check=False, env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "zootui" in result.stdout
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    imported = {name.split(".")[0] for name in modules}
    assert imported.isdisjoint({"numpy", "llama_cpp", "huggingface_hub", "textual", "gguf"})
    # The exit codes live in the converters package, whose exports load on first use: the version pays for the
    # package and that one dependency-free module, never a converter.
    assert {name for name in modules if name.split(".")[0] == "converters"} <= {"converters", "converters.exit_codes"}

    listed = run(cli_env, "--help").stdout
    assert "prompt" in listed and "pull" in listed
    pull_help = run(cli_env, "pull", "--help")
    assert pull_help.returncode == 0 and "--quant" in pull_help.stdout and "--import" in pull_help.stdout


BREAK_A_STEP = """
import sys
from tui.cli import main
from tui.zoo.jobs.steps.convert import Convert

def broken(self, context):
    raise RuntimeError("injected failure")

Convert.run = broken
sys.exit(main(sys.argv[1:]))
"""


def test_pull_ends_an_unexpected_step_error_in_one_line_and_resumes(cli_env, isolated_dirs):
    checkpoint = str(TINY_LLAMA)
    broken = subprocess.run(
        [sys.executable, "-c", BREAK_A_STEP, "pull", "--import", checkpoint, "--quant", "q8_0"],
        check=False,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode == 2, broken.stderr
    last = broken.stderr.splitlines()[-1]
    assert last.startswith("zootui: convert: unexpected RuntimeError: injected failure; finished steps are kept")
    assert "Traceback" not in broken.stderr
    store = Store(isolated_dirs / DATABASE_NAME)
    [job] = store.jobs()
    assert job.state == JobState.FAILED and [s.name for s in job.steps if s.finished] == ["read"]

    resumed = run(cli_env, "pull", "--import", checkpoint, "--quant", "q8_0")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == "llama-q8_0\n" and "[2/4] convert" in resumed.stderr and "[1/4]" not in resumed.stderr
    assert store.job(job.id).state == JobState.DONE
    store.close()


@pytest.mark.parametrize("variant_id", ["belle-7b-2m", "phoenix-chat-7b", "dolly-v2-3b", "vicuna-7b-v1.1"])
def test_the_browser_previews_the_prompt_zootui_prompt_prints(cli_env, tmp_path, variant_id):
    from tui.screens.browser import PREVIEW_MESSAGES, describe
    from tui.zoo.catalog import load_catalog
    from tui.zoo.listing import model_rows

    messages = tmp_path / "preview.json"
    messages.write_text(json.dumps(PREVIEW_MESSAGES))
    printed = run(cli_env, "prompt", variant_id, "--messages", str(messages))
    assert printed.returncode == 0, printed.stderr

    store = Store(tmp_path / DATABASE_NAME)
    [row] = [row for row in model_rows(load_catalog(), tmp_path, store) if row.key == variant_id]
    shown = describe(row, fit="")
    preview = shown.split("```text\n", 1)[1].split("\n```", 1)[0]
    assert preview == printed.stdout
    store.close()


def test_models_lists_a_hostile_gguf_with_a_note_and_the_rest_of_the_library(cli_env, isolated_dirs):
    """Metadata nesting 100k arrays deep once made `zootui models` exit 1 for the whole library."""
    hostile = isolated_dirs / "models" / "evil" / "evil.gguf"
    hostile.parent.mkdir(parents=True)
    hostile.write_bytes(gguf_file([kv("a", ARRAY, nested_arrays(100_000))]))
    result = run(cli_env, "models")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("smollm2-135m-instruct")
    [note] = [line for line in lines if "evil.gguf" in line and "fit unknown" in line]
    assert "truncated or corrupt GGUF header (arrays nested more than 8 deep)" in note
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # loads the real default model
def test_an_import_named_by_the_user_chats_by_that_name_and_shows_its_quant(cli_env):
    pulled = run(cli_env, "pull", "--import", str(TINY_LLAMA), "--name", "my-coati", "--quant", "q8_0")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout == "my-coati\n" and "zootui chat -m my-coati" in pulled.stderr
    listed = run(cli_env, "models")
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("my-coati ") and "imported, q8_0" in line for line in listed.stdout.splitlines())
    chatted = run(cli_env, "chat", "-m", "my-coati", "--max-tokens", "4", "-q", "Hello")
    assert chatted.returncode == 0, chatted.stderr


def test_prompt_on_a_hostile_gguf_is_one_line(cli_env, tmp_path, messages_file):
    hostile = tmp_path / "evil.gguf"
    hostile.write_bytes(gguf_file([kv("a", ARRAY, nested_arrays(100_000))]))
    result = run(cli_env, "prompt", str(hostile), "--messages", str(messages_file))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "evil.gguf is not a readable GGUF file" in line and "arrays nested more than 8 deep" in line
