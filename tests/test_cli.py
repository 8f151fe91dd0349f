import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest
from support import fill_disk, zootui_command

from tui import __version__
from tui.store import DATABASE_NAME, Store


def run(cli_env, *args, input=None, check=True):
    result = subprocess.run(
        zootui_command(*args), env=cli_env, input=input, capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_version(cli_env):
    assert run(cli_env, "--version").stdout.strip() == f"zootui {__version__}"


def test_version_loads_neither_the_converter_nor_the_engine(cli_env):
    # The exit codes come from converters, whose package must stay cheap to import: cold start is this.
    script = (
        "import sys\n"
        "from tui.cli import main\n"
        "try:\n"
        "    main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'numpy', 'gguf', 'huggingface_hub', 'llama_cpp', 'textual', 'sqlite3'}\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=cli_env, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.splitlines() == [f"zootui {__version__}", "[]"]


@pytest.mark.parametrize("command", [[], ["chat"], ["models"], ["search"], ["export"], ["config"], ["list"]])
def test_help_everywhere(cli_env, command):
    assert "usage: zootui" in run(cli_env, *command, "--help").stdout


@pytest.mark.slow  # loads the real default model
def test_chat_streams_saves_and_is_found_again(cli_env, isolated_dirs):
    result = run(
        cli_env,
        "chat",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
        "--seed",
        "3",
        "--system",
        "Answer briefly.",
        "What is the capital of France?",
    )
    assert result.stdout.strip()
    assert "tok/s" in result.stderr and "conversation 1" in result.stderr
    store = Store(isolated_dirs / DATABASE_NAME)
    [conversation] = store.conversations()
    assert conversation.system_prompt == "Answer briefly."
    assert conversation.params["max_tokens"] == 12 and conversation.params["seed"] == 3
    [user, assistant] = store.messages(conversation.id)
    assert user.content == "What is the capital of France?"
    assert assistant.content.strip() == result.stdout.strip()
    store.close()

    found = json.loads(run(cli_env, "search", "capital of France", "--json").stdout)
    assert found[0]["conversation_id"] == conversation.id
    exported = json.loads(run(cli_env, "export", str(conversation.id), "--format", "json").stdout)
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    markdown = run(cli_env, "export", str(conversation.id), "--format", "md").stdout
    assert "## User\n\nWhat is the capital of France?" in markdown
    assert str(conversation.id) in run(cli_env, "list").stdout


@pytest.mark.slow  # loads the real default model
def test_chat_reads_the_prompt_from_stdin_and_continues_a_conversation(cli_env, isolated_dirs):
    run(cli_env, "chat", "-q", "--max-tokens", "4", input="Say hello.\n")
    run(cli_env, "chat", "-q", "--max-tokens", "4", "--conversation", "1", "And goodbye.")
    store = Store(isolated_dirs / DATABASE_NAME)
    assert [m.role for m in store.messages(1)] == ["user", "assistant", "user", "assistant"]
    store.close()


@pytest.mark.slow  # loads the real default model
def test_chat_on_a_gguf_path(cli_env, model_path):
    assert run(cli_env, "chat", "-q", "-m", str(model_path), "--max-tokens", "3", "Hi").stdout.strip()


def test_user_errors_are_one_line_and_exit_2(cli_env, tmp_path):
    for args in (
        ["chat", "-m", "nope", "hi"],
        ["chat", "-m", str(tmp_path / "x.gguf"), "hi"],
        ["export", "42"],
        ["chat", "   "],
    ):
        result = run(cli_env, *args, check=False)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("zootui: ")


def test_models_lists_the_default_model(cli_env):
    assert "smollm2-135m-instruct" in run(cli_env, "models").stdout
    [default] = json.loads(run(cli_env, "models", "--json").stdout)
    assert default["path"].endswith(".gguf") and default["size_bytes"] > 50_000_000


def test_config_path_and_show(cli_env, tmp_path):
    path = run(cli_env, "config", "path").stdout.strip()
    assert path == str(tmp_path / "config" / "config.toml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("[chat]\ntemperature = 'warm'\n")
    result = run(cli_env, "config", "show")
    assert "temperature = 0.7" in result.stdout
    assert result.stderr.count("\n") == 1 and "[chat] temperature" in result.stderr


@pytest.mark.slow  # loads the real default model
def test_killed_chat_keeps_the_streamed_reply(cli_env, isolated_dirs):
    process = subprocess.Popen(
        zootui_command(
            "chat",
            "--max-tokens",
            "2000",
            "--temperature",
            "0.8",
            # Seed 1 writes past 700 tokens; with a random seed the story sometimes ended after ~100, before
            # the kill 2.5 s in, and the reply was done instead of cut off.
            "--seed",
            "1",
            "Write a very long story about every animal in a big zoo.",
        ),
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    printed = b""
    printed_a_second_before = b""
    os.set_blocking(process.stdout.fileno(), False)
    started = None
    snapshots = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        chunk = process.stdout.read() or b""
        printed += chunk
        now = time.monotonic()
        if printed and started is None:
            started = now
        snapshots.append((now, len(printed)))
        if started is not None and now - started > 2.5:
            break
        time.sleep(0.05)
    assert started is not None, process.stderr.read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = time.monotonic()
    printed_a_second_before = max(length for when, length in snapshots if when <= killed_at - 1.0)
    store = Store(isolated_dirs / DATABASE_NAME)
    [_, reply] = store.messages(1)
    assert reply.state == "streaming"
    text = printed.decode("utf-8", "replace")
    assert text.startswith(reply.content)
    assert len(reply.content.encode()) >= printed_a_second_before > 0
    store.close()

    # The next command sees that nobody is finishing it, as the app does on start.
    listed = run(cli_env, "list")
    assert listed.stderr == "zootui: 1 reply was cut off when zootui last stopped; what was generated is kept.\n"
    exported = json.loads(run(cli_env, "export", "1", "--format", "json").stdout)
    assert exported["messages"][1]["state"] == "interrupted" and exported["messages"][1]["content"] == reply.content
    assert run(cli_env, "list").stderr == ""


@pytest.mark.slow
def test_a_reply_still_streaming_in_another_process_is_left_alone(cli_env, isolated_dirs):
    process = subprocess.Popen(
        # Seed 1 writes all 400 tokens (3-4 s here), so the reply still streams while `list` runs; 80 random
        # tokens could be over before it started.
        zootui_command(
            "chat", "--max-tokens", "400", "--temperature", "0.8", "--seed", "1", "Tell a long story about a zoo."
        ),
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = process.stdout.read(1)  # the reply has started streaming (and is saved as streaming)
        assert first, process.stderr.read()
        time.sleep(0.6)  # past the first save
        listed = run(cli_env, "list")
        assert "cut off" not in listed.stderr
    finally:
        process.wait(timeout=240)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == 0
    store = Store(isolated_dirs / DATABASE_NAME)
    [_, reply] = store.messages(1)
    assert reply.state == "done" and reply.content
    store.close()


def one_line_error(result, fragment: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("zootui: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat", "--n-ctx", "1000000000", "hi"], "--n-ctx 1000000000 is out of range; use a value from 256 to"),
        (["chat", "--temperature", "-5", "hi"], "--temperature -5.0 is out of range; use a value from 0.0 to 5.0"),
        (["chat", "--max-tokens", "0", "hi"], "--max-tokens 0 is out of range"),
        (["--threads", "-3"], "--threads -3 is out of range"),
        (["models", "--n-ctx", "10"], "--n-ctx 10 is out of range"),
    ],
)
def test_command_line_values_are_checked_as_the_config_file_is(cli_env, isolated_dirs, args, message):
    one_line_error(run(cli_env, *args, check=False), message)
    assert not (isolated_dirs / DATABASE_NAME).exists()  # refused before anything was opened or saved


@pytest.mark.slow  # loads the real default model
def test_a_bad_n_ctx_is_never_saved_into_the_conversation(cli_env, isolated_dirs):
    run(cli_env, "chat", "-q", "--max-tokens", "2", "Hi")
    one_line_error(run(cli_env, "chat", "-c", "1", "--n-ctx", "1000000000", "Again", check=False), "out of range")
    store = Store(isolated_dirs / DATABASE_NAME)
    assert store.conversation(1).params["n_ctx"] != 1_000_000_000 and len(store.messages(1)) == 2
    store.close()
    run(cli_env, "chat", "-q", "--max-tokens", "2", "-c", "1", "Again")  # the conversation still works


@pytest.mark.slow
def test_a_context_past_what_the_model_was_trained_for_loads_at_its_trained_length(cli_env, config_file):
    # SmolLM2-135M was trained with 8192 tokens; a 1M-token context took 23.8 GB for a 5-token reply.
    config_file.write_text("[engine]\nn_ctx = 1048576\n")
    result = run(cli_env, "chat", "--max-tokens", "5", "Hi")
    assert "/8192" in result.stderr and "1048576" not in result.stderr, result.stderr


@pytest.mark.slow  # loads the real default model
def test_a_request_that_never_reached_a_model_saves_nothing(cli_env, isolated_dirs, tmp_path):
    not_a_model = tmp_path / "not_a_model.ggml"
    not_a_model.write_text("named like chatglm.cpp's file, but text")
    for model, message in [
        ("nosuchmodel", "no model named 'nosuchmodel'"),
        (str(tmp_path / "missing.gguf"), "model file not found"),
        ("/etc/passwd", "/etc/passwd is not a GGUF file"),
        (str(tmp_path), "is a directory; give a .gguf file"),
        ("vicuna-7b-v1.1", "in the catalog but not on this machine; get it with `zootui pull vicuna-7b-v1.1`"),
        ("stackllama-7b-rm", "in the catalog but zootui cannot run it yet: a reward model"),
        (str(not_a_model), "not_a_model.ggml is not a GGUF file (nor chatglm.cpp's .ggml)"),
    ]:
        one_line_error(run(cli_env, "chat", "-m", model, "hi", check=False), message)
    assert run(cli_env, "list").stdout == ""
    run(cli_env, "chat", "-q", "--max-tokens", "2", "Hi")
    store = Store(isolated_dirs / DATABASE_NAME)
    [conversation] = store.conversations()
    continued = run(cli_env, "chat", "-c", str(conversation.id), "-m", "nosuchmodel", "More", check=False)
    one_line_error(continued, "no model named")
    [again] = store.conversations()
    assert again.model == conversation.model == "smollm2-135m-instruct" and len(store.messages(again.id)) == 2
    store.close()


@pytest.mark.slow  # loads the real default model
def test_export_writes_only_where_it_was_pointed(cli_env, isolated_dirs, tmp_path):
    run(cli_env, "chat", "-q", "--max-tokens", "2", "Hi")
    nowhere = tmp_path / "nonexistent" / "dir"
    one_line_error(run(cli_env, "export", "1", "-o", str(nowhere / "o.md"), check=False), "does not exist")
    assert not nowhere.parent.exists()
    one_line_error(run(cli_env, "export", "1", "-o", str(tmp_path), check=False), "is a directory")
    one_line_error(run(cli_env, "export", "1", "-o", "/proc/x", check=False), "cannot write /proc/x")
    target = tmp_path / "kept.md"
    target.write_text("mine")
    one_line_error(run(cli_env, "export", "1", "-o", str(target), check=False), "already exists; give --force")
    assert target.read_text() == "mine"
    run(cli_env, "export", "1", "-o", str(target), "--force")
    assert target.read_text().startswith("---\ntitle:")


def saved_reply(database) -> str:
    """The reply's text saved so far, read without writing: the chat process owns the file."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT content FROM messages WHERE role = 'assistant'").fetchone()
    return row[0] if row else ""


@pytest.mark.slow
def test_the_disk_filling_mid_reply_is_one_line_and_keeps_what_was_saved(cli_env, small_disk):
    env = {**cli_env, "ZOOTUI_DATA_DIR": str(small_disk / "data")}
    # Seed 1 writes the whole 400 tokens (3-4 s here): with another seed the story sometimes ended after ~100,
    # before the disk was full, and nothing was left to save.
    process = subprocess.Popen(
        zootui_command(
            "chat", "--max-tokens", "400", "--temperature", "0.8", "--seed", "1", "Tell a long story about a zoo."
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # read(1) takes one byte, leaving the rest for communicate()
    )
    first = process.stdout.read(1)
    assert first, process.stderr.read()
    database = small_disk / "data" / DATABASE_NAME
    deadline = time.monotonic() + 30
    while not saved_reply(database):  # the disk fills once a save of the growing reply is on it
        assert time.monotonic() < deadline and process.poll() is None, "no part of the reply was saved"
        time.sleep(0.05)
    filler = fill_disk(small_disk)
    printed, errors = process.communicate(timeout=240)
    assert process.returncode == 2, errors
    assert errors.count(b"\n") == 1 and b"the disk is full" in errors and b"what was saved of it is kept" in errors
    filler.unlink()

    store = Store(small_disk / "data" / DATABASE_NAME)
    assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    [_, reply] = store.messages(1)
    assert reply.content and (first + printed).decode("utf-8", "replace").startswith(reply.content)
    store.close()
    exported = json.loads(run(env, "export", "1", "--format", "json").stdout)
    assert exported["messages"][1]["state"] == "interrupted"


def test_a_full_disk_at_open_is_one_line_that_says_so(cli_env, small_disk):
    env = {**cli_env, "ZOOTUI_DATA_DIR": str(small_disk / "data")}
    run(env, "list")
    fill_disk(small_disk)
    for data in ("data", "fresh"):
        result = run({**env, "ZOOTUI_DATA_DIR": str(small_disk / data)}, "list", check=False)
        one_line_error(result, "the disk is full; free some space")
        assert "move it aside" not in result.stderr
