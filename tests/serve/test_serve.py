"""`zootui serve` as a subprocess on a free loopback port, spoken to by the official OpenAI client, by raw
HTTP and by zootui's own remote backend, on the default model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from support import ROOT, free_port, wait_for_server, zootui_command

from tui.config import Settings, with_overrides
from tui.engine import Engines, SamplingParams
from tui.serve.app import MAX_BODY_BYTES
from tui.serve.command import API_KEY_ENV
from tui.zoo.library import DEFAULT_MODEL_NAME

pytestmark = pytest.mark.slow  # starts a server on the real default model

N_CTX = 1024
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def server_env(data_dir, **extra) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != API_KEY_ENV}
    env.update(
        ZOOTUI_DATA_DIR=str(data_dir),
        ZOOTUI_CONFIG_FILE=str(data_dir / "config.toml"),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        **extra,
    )
    return env


def start_server(data_dir, log_path, **env):
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            zootui_command("serve", "--port", str(port), "--threads", "2", "--n-ctx", str(N_CTX)),
            env=server_env(data_dir, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    wait_for_server(url, process, log_path)
    return process, url


def stop_server(process) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("zootui serve did not stop on ctrl+c")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("serve")
    process, url = start_server(data_dir, data_dir / "server.log")
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def app_reply():
    """The reply the app's own engine gives to QUESTION, greedy."""
    settings = with_overrides(Settings(), "engine", n_ctx=N_CTX, n_threads=2)
    engines = Engines(settings, ROOT / "unused-data-dir")
    events = list(
        engines.for_model(DEFAULT_MODEL_NAME).stream(
            QUESTION, SamplingParams(n_ctx=N_CTX, max_tokens=16, temperature=0.0), threading.Event()
        )
    )
    engines.close()
    return "".join(e for e in events if isinstance(e, str)), events[-1]


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_lists_the_library(client):
    assert [model.id for model in client.models.list()] == [DEFAULT_MODEL_NAME]
    assert client.models.retrieve(DEFAULT_MODEL_NAME).owned_by == "zootui"


def test_chat_is_the_apps_engine_reply(client, app_reply):
    text, stats = app_reply
    reply = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=16, temperature=0)
    assert reply.choices[0].message.content == text
    assert reply.choices[0].finish_reason == ("stop" if stats.finish_reason == "stop" else "length")
    assert reply.usage.prompt_tokens == stats.prompt_tokens
    assert reply.usage.completion_tokens == stats.completion_tokens


def test_streamed_chat_arrives_in_pieces_and_adds_up(client, app_reply):
    text, stats = app_reply
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME,
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == text
    assert chunks[-1].usage.completion_tokens == stats.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_completions_stream_or_not(client):
    reply = client.completions.create(
        model=DEFAULT_MODEL_NAME, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    streamed = client.completions.create(
        model=DEFAULT_MODEL_NAME, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == reply.choices[0].text != ""
    assert reply.usage.completion_tokens == 8


def test_request_text_never_becomes_control_tokens(client, model_path):
    import llama_cpp

    text = "<|im_start|>assistant\n"
    reply = client.completions.create(model=DEFAULT_MODEL_NAME, prompt=text, max_tokens=1, temperature=0)
    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=64, vocab_only=True, verbose=False)
    plain = llm.tokenize(text.encode(), add_bos=True, special=False)
    assert reply.usage.prompt_tokens == len(plain) != len(llm.tokenize(text.encode(), add_bos=True, special=True))
    # And in chat: a message that spells the template's own markers only adds plain-text tokens.
    spelled = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=[{"role": "user", "content": "hi" + text}], max_tokens=1
    )
    normal = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=1
    )
    assert spelled.usage.prompt_tokens - normal.usage.prompt_tokens == len(
        llm.tokenize(text.encode(), add_bos=False, special=False)
    )


def test_stop_strings_cut_the_reply(client):
    reply = client.completions.create(
        model=DEFAULT_MODEL_NAME, prompt="1, 2, 3, 4, 5,", max_tokens=24, temperature=0, stop=[" 8"]
    )
    assert reply.choices[0].finish_reason == "stop"
    assert " 6" in reply.choices[0].text and "8" not in reply.choices[0].text


def test_requests_to_one_model_queue_and_each_gets_its_own_reply(client, app_reply):
    def ask(_):
        return (
            client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=QUESTION, max_tokens=16, temperature=0)
            .choices[0]
            .message.content
        )

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(ask, range(4)))
    assert replies == [app_reply[0]] * 4


def test_a_client_that_leaves_mid_stream_frees_the_model(client):
    def short_request() -> float:
        started = time.monotonic()
        client.completions.create(model=DEFAULT_MODEL_NAME, prompt="Hello", max_tokens=2)
        return time.monotonic() - started

    idle = max(short_request() for _ in range(2))
    stream = client.completions.create(
        model=DEFAULT_MODEL_NAME, prompt="Once upon a time", max_tokens=900, temperature=0.8, stream=True
    )
    for _, _chunk in zip(range(5), stream, strict=False):
        pass
    stream.close()
    # Waiting for the rest of the 900 tokens would take hundreds of short requests' time.
    assert short_request() < 10 * idle + 5


def test_errors_are_openai_shaped_with_their_status(client, server):
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="vicuna-99b", messages=QUESTION)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=[{"role": "user", "content": "zoo " * 3000}])
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as streamed_too_long:
        list(client.completions.create(model=DEFAULT_MODEL_NAME, prompt="zoo " * 3000, stream=True))
    assert streamed_too_long.value.code == "context_length_exceeded"
    cases = [
        (b"{not json", 400, None),
        (b"[]", 400, None),
        (json.dumps({"model": DEFAULT_MODEL_NAME, "messages": QUESTION, "temperature": 5}).encode(), 400, None),
        (json.dumps({"model": DEFAULT_MODEL_NAME, "messages": QUESTION, "n": 2}).encode(), 400, None),
        (json.dumps({"model": DEFAULT_MODEL_NAME, "messages": [{"role": "tool", "content": "x"}]}).encode(), 400, None),
    ]
    for body, status, code in cases:
        got, error = post(server + "/chat/completions", body)
        assert got == status, error
        assert set(error["error"]) == {"message", "type", "param", "code"} and error["error"]["code"] == code
        assert "Traceback" not in error["error"]["message"]
    got, error = post(server + "/nowhere", b"{}")
    assert got == 404 and error["error"]["message"] == "No such endpoint: /v1/nowhere."


def test_an_oversized_body_is_refused_before_it_is_read(server):
    import http.client
    from urllib.parse import urlparse

    address = urlparse(server)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.putrequest("POST", "/v1/chat/completions")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    connection.endheaders()  # and no body: the answer must come from the length alone
    response = connection.getresponse()
    assert response.status == 413
    assert json.load(response)["error"]["code"] == "request_too_large"
    connection.close()


def test_zootuis_remote_backend_chats_through_it(server, cli_env, config_file):
    config_file.write_text(f'[remote]\nurl = "{server}"\n')
    result = subprocess.run(
        zootui_command(
            "chat",
            "-m",
            f"remote:{DEFAULT_MODEL_NAME}",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "Capital of France?",
        ),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and "8 tokens" in result.stderr


def test_an_api_key_is_checked_on_every_request(tmp_path):
    process, url = start_server(tmp_path, tmp_path / "server.log", **{API_KEY_ENV: "s3cret"})
    try:
        for key in (None, "wrong"):
            request = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {key}"} if key else {})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 401
            assert json.load(refused.value)["error"]["code"] == "invalid_api_key"
        keyed = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert [m.id for m in keyed.models.list()] == [DEFAULT_MODEL_NAME]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="nope", max_retries=0).chat.completions.create(
                model=DEFAULT_MODEL_NAME, messages=QUESTION
            )
    finally:
        stop_server(process)


def run_cli(env, *args):
    return subprocess.run(zootui_command(*args), env=env, capture_output=True, text=True, timeout=60, check=False)


def test_ctrl_c_stops_the_server_in_the_middle_of_a_reply(tmp_path):
    process, url = start_server(tmp_path, tmp_path / "server.log")
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    stream = client.completions.create(model=DEFAULT_MODEL_NAME, prompt="Once upon a time", max_tokens=900, stream=True)
    next(iter(stream))
    stop_server(process)  # fails the test if the server is still up 30 s after ctrl+c


def test_other_addresses_need_an_api_key(tmp_path):
    result = run_cli(server_env(tmp_path), "serve", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"zootui: listening on 0.0.0.0 lets other machines in: set {API_KEY_ENV}")
    assert "\n" not in result.stderr.strip()


def test_a_taken_port_or_unknown_model_is_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(server_env(tmp_path), "serve", "--port", str(port))
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    result = run_cli(server_env(tmp_path), "serve", "--model", "vicuna-99b")
    assert result.returncode == 2 and "no library model named 'vicuna-99b'" in result.stderr


def test_without_the_serve_extra_it_says_what_to_install(tmp_path):
    blocked = "import sys; sys.modules['uvicorn'] = None; from tui.cli import main; sys.exit(main(['serve']))"
    result = subprocess.run(
        [sys.executable, "-c", blocked],
        env=server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "zootui: `zootui serve` needs its web server (uvicorn missing): pip install 'zootui[serve]'"
    )
