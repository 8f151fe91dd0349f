"""The remote backend against a real OpenAI-compatible server: llama-cpp-python's own, on 127.0.0.1."""

import subprocess
import sys
import threading

import pytest
from support import free_port, wait_for_server, zootui_command

from tui.config import RemoteSettings
from tui.engine import EngineError, ReplyStats, SamplingParams
from tui.engine.remote import RemoteEngine

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server] (the test extra)")

MODEL_ALIAS = "smollm2"

pytestmark = pytest.mark.slow  # starts llama-cpp-python's server on the real default model


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    port = free_port()
    # A file, not a pipe, takes the server's log: an unread pipe fills up and stalls the server.
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(model_path),
                "--model_alias",
                MODEL_ALIAS,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "1024",
                "--n_threads",
                "2",
                "--verbose",
                "False",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    wait_for_server(url, process, log_path)
    yield url
    process.terminate()
    process.wait(timeout=20)


def test_lists_and_streams_from_the_server(server):
    engine = RemoteEngine(MODEL_ALIAS, RemoteSettings(url=server))
    assert MODEL_ALIAS in engine.list_models()
    events = list(
        engine.stream(
            [{"role": "user", "content": "What is the capital of France?"}],
            SamplingParams(temperature=0.0, max_tokens=12, seed=1),
            threading.Event(),
        )
    )
    text = "".join(event for event in events if isinstance(event, str))
    stats = events[-1]
    assert isinstance(stats, ReplyStats)
    assert text.strip()
    assert len([event for event in events if isinstance(event, str)]) > 1, "the reply must arrive in pieces"
    assert stats.completion_tokens > 0


def test_cancel_ends_the_remote_stream(server):
    engine = RemoteEngine(MODEL_ALIAS, RemoteSettings(url=server))
    cancel = threading.Event()
    pieces = []
    for event in engine.stream(
        [{"role": "user", "content": "Write a long story."}], SamplingParams(temperature=0.0, max_tokens=300), cancel
    ):
        if isinstance(event, str):
            pieces.append(event)
            if len(pieces) == 3:
                cancel.set()
        else:
            stats = event
    assert stats.finish_reason == "cancelled" and len(pieces) <= 4


def test_cli_chat_through_the_server(server, cli_env, config_file):
    config_file.write_text(f'[remote]\nurl = "{server}"\n')
    result = subprocess.run(
        zootui_command(
            "chat", "-m", f"remote:{MODEL_ALIAS}", "--max-tokens", "8", "--temperature", "0", "Capital of France?"
        ),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_unreachable_server_is_a_clear_error():
    engine = RemoteEngine(MODEL_ALIAS, RemoteSettings(url=f"http://127.0.0.1:{free_port()}/v1", timeout=5))
    with pytest.raises(EngineError, match="cannot reach .* start the server"):
        list(engine.stream([{"role": "user", "content": "hi"}], SamplingParams(), threading.Event()))
