"""Serving under load: `zootui serve` against llama-cpp-python's own `llama_cpp.server`, side by side in one run.

    .venv/bin/python tests/bench/bench_serve.py [--clients 4] [--seconds 30] [--threads 2] [--tokens 64] [--rounds 1]

Both servers get the same model (the default one), threads, context length, batch size and flash
attention, each in its own process on a free loopback port; llama_cpp.server runs with
interrupt_requests off, so that a new request waits its turn instead of cutting the one before (zootui's
behaviour). zootui runs twice: without its cache of evaluated histories (as llama_cpp.server runs by
default) and with it (zootui's default, `[engine] state_cache_mb`). Each round starts each server, warms it with one request, then runs CLIENTS threads of the
official OpenAI client sending streamed, greedy chat completions back to back (each request its own
prompt, the same sequence for both servers) for SECONDS; requests under way at the deadline finish
and count, so a run is bounded by SECONDS plus one request per client.

Prints per server: completed requests per second; time to first token (median and 90th percentile:
waiting in the queue included, as a client sees it); decode tokens/s of a request (median, its
content chunks after the first over the time from the first to the last: both servers send about one
token per chunk); aggregate completion chunks per second. Then zootui / llama_cpp.server ratios
(goal: not slower). Not part of the test run: timings on shared machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import free_port, wait_for_server  # noqa: E402

from tui.zoo.library import DEFAULT_MODEL_NAME, default_model_path  # noqa: E402

ANIMALS = ("panda", "koala", "alpaca", "vicuna", "llama", "dolly the sheep", "baize", "phoenix")
N_CTX = 2048
N_BATCH = 512


@dataclass
class Result:
    first_token: float
    """Seconds from sending the request to its first content chunk."""
    decode_rate: float | None
    chunks: int


# llama_cpp.server keeps no cache of evaluated histories by default; zootui keeps one (for switching
# between conversations), which a stream of unrelated prompts only pays for: both ways are measured.
ZOOTUI_CONFIGS = {"zootui serve": "state_cache_mb = 0\n", "zootui serve, history cache": ""}


def start(kind: str, threads: int, work: Path) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    model = default_model_path()
    env = dict(os.environ)
    if kind in ZOOTUI_CONFIGS:
        data = work / "data"
        (work / "config.toml").write_text(f"[engine]\nn_batch = {N_BATCH}\nflash_attn = true\n{ZOOTUI_CONFIGS[kind]}")
        env.update(ZOOTUI_DATA_DIR=str(data), ZOOTUI_CONFIG_FILE=str(work / "config.toml"))
        command = [
            sys.executable,
            "-m",
            "tui",
            "serve",
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--n-ctx",
            str(N_CTX),
        ]
        name = DEFAULT_MODEL_NAME
    else:
        name = "smollm2"
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", name,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX), "--n_batch", str(N_BATCH),
            "--n_threads", str(threads), "--n_threads_batch", str(threads), "--flash_attn", "True",
            "--interrupt_requests", "False", "--verbose", "False",
        ]  # fmt: skip
    log = work / f"{kind.replace(' ', '-')}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    wait_for_server(url, process, log, timeout=180)
    return process, url, name


def one_request(client: openai.OpenAI, model: str, prompt: str, tokens: int) -> Result:
    sent = time.perf_counter()
    times = []
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0, stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter())
    first = (times[0] if times else time.perf_counter()) - sent
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 and times[-1] > times[0] else None
    return Result(first, rate, len(times))


def load(url: str, model: str, clients: int, seconds: float, tokens: int) -> dict[str, float]:
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    one_request(client, model, "Say hello.", 8)  # loads the model
    results: list[Result] = []
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = started + seconds

    def run(number: int) -> None:
        request = 0
        while time.perf_counter() < deadline:
            prompt = f"Request {request} of client {number}: write a short poem about a {ANIMALS[(number + request) % len(ANIMALS)]}."
            result = one_request(client, model, prompt, tokens)
            with lock:
                results.append(result)
            request += 1

    workers = [threading.Thread(target=run, args=(number,)) for number in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    first = sorted(r.first_token for r in results)
    rates = [r.decode_rate for r in results if r.decode_rate is not None]
    return {
        "requests": len(results),
        "requests_per_second": len(results) / elapsed,
        "first_token_median": statistics.median(first),
        "first_token_p90": first[min(len(first) - 1, int(0.9 * len(first)))],
        "decode_median": statistics.median(rates) if rates else 0.0,
        "chunks_per_second": sum(r.chunks for r in results) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="rounds; each runs both servers, in turn")
    args = parser.parse_args()
    print(
        f"{args.clients} clients, {args.seconds:g} s, {args.threads} threads, {args.tokens} greedy tokens a request, "
        f"n_ctx {N_CTX}, n_batch {N_BATCH}, flash attention on, model {default_model_path().name}, {os.cpu_count()} CPUs"
    )
    figures: dict[str, list[dict[str, float]]] = {"llama_cpp.server": [], **{kind: [] for kind in ZOOTUI_CONFIGS}}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.rounds):
            for kind in figures:
                process, url, model = start(kind, args.threads, Path(scratch))
                try:
                    figures[kind].append(load(url, model, args.clients, args.seconds, args.tokens))
                finally:
                    process.terminate()
                    process.wait(timeout=60)
    columns = [
        "requests",
        "requests_per_second",
        "first_token_median",
        "first_token_p90",
        "decode_median",
        "chunks_per_second",
    ]
    print(f"{'server':<28}" + "".join(f"{column:>21}" for column in columns))
    for kind, runs in figures.items():
        for run in runs:
            print(f"{kind:<28}" + "".join(f"{run[column]:>21.3f}" for column in columns))
    mean = {kind: {c: statistics.mean(run[c] for run in runs) for c in columns} for kind, runs in figures.items()}
    theirs = mean["llama_cpp.server"]
    for kind in ZOOTUI_CONFIGS:
        ours = mean[kind]
        print(
            f"{kind} / llama_cpp.server: requests/s {ours['requests_per_second'] / theirs['requests_per_second']:.2f} "
            f"(goal ≥ 1), first token {ours['first_token_median'] / theirs['first_token_median']:.2f} (goal ≤ 1), "
            f"decode {ours['decode_median'] / theirs['decode_median']:.2f} (goal ≥ 1)"
        )


if __name__ == "__main__":
    main()
