import json
import os
import signal
import subprocess
import time

import pytest
from support import zootui_command

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


@pytest.mark.parametrize("command", [[], ["chat"], ["models"], ["search"], ["export"], ["config"], ["list"]])
def test_help_everywhere(cli_env, command):
    assert "usage: zootui" in run(cli_env, *command, "--help").stdout


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


def test_chat_reads_the_prompt_from_stdin_and_continues_a_conversation(cli_env, isolated_dirs):
    run(cli_env, "chat", "-q", "--max-tokens", "4", input="Say hello.\n")
    run(cli_env, "chat", "-q", "--max-tokens", "4", "--conversation", "1", "And goodbye.")
    store = Store(isolated_dirs / DATABASE_NAME)
    assert [m.role for m in store.messages(1)] == ["user", "assistant", "user", "assistant"]
    store.close()


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


def test_killed_chat_keeps_the_streamed_reply(cli_env, isolated_dirs):
    process = subprocess.Popen(
        zootui_command(
            "chat",
            "--max-tokens",
            "2000",
            "--temperature",
            "0.8",
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
        zootui_command("chat", "--max-tokens", "80", "--temperature", "0.8", "Tell a long story about a zoo."),
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
