"""Chat performance, side by side on one model, one thread count and one prompt.

    .venv/bin/python tests/bench/bench_chat.py [--threads 2] [--tokens 128] [--rounds 3] [--no-llama-bench]
        [--load 1] [--threads-only | --no-thread-choice] [--only history|tabs|stream]

Prints decode tokens/s of:
  - llama.cpp's own llama-bench (tg), built once from the llama.cpp vendored in llama-cpp-python's sdist, into
    an empty context and after as many tokens as the reply's prompt (where the reply's tokens are decoded);
  - llama-cpp-python's high-level streaming loop (create_completion(stream=True));
  - zootui's engine alone, and a reply streamed through the running app (headless Pilot); these two and
    llama-bench in --rounds rounds, one after the other, and their medians, and the median of each round's
    app against the llama-bench run just before it;
then the UI thread's CPU time while streaming as a share of the generation's, the prompt tokens evaluated
for a second turn and when switching back to a tab with a long history, and start-up times; then a
conversation of 500 stored messages: how long it takes to open, to page up through, and the speed of a
reply in it against the engine alone on the same history; and the first frame with 30 open tabs. First,
the default thread counts against every logical CPU, idle and beside --load busy processes (a browser, a
build).
Not part of the test run: timings on shared machines are noisy, so read the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # stored_conversations: the fixed conversations the tests use

from tui.config import Settings, with_overrides  # noqa: E402
from tui.zoo.library import default_model_path  # noqa: E402

PROMPT = "Write a long, detailed story about a day in the life of a zoo keeper."
LLAMA_CPP_VERSION = "0.3.36"
BUILD_CACHE = Path.home() / ".cache" / "zootui-bench"
CMAKE_FLAGS = [
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
]


def build_llama_bench() -> Path:
    """llama-bench from the llama.cpp inside llama-cpp-python's sdist, built with the wheel's CPU flags."""
    binary = BUILD_CACHE / f"llama.cpp-{LLAMA_CPP_VERSION}" / "build" / "bin" / "llama-bench"
    if binary.exists():
        return binary
    BUILD_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_VERSION}",
                "-d",
                download,
            ],
            check=True,
        )
        [sdist] = Path(download).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(BUILD_CACHE / "sdist", filter="data")
    source = next((BUILD_CACHE / "sdist").glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
    target = binary.parents[2]
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    subprocess.run(
        [
            "cmake",
            "-S",
            str(target),
            "-B",
            str(target / "build"),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=OFF",
            "-DLLAMA_BUILD_TOOLS=ON",
            *CMAKE_FLAGS,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        ["cmake", "--build", str(target / "build"), "--target", "llama-bench", "-j", str(os.cpu_count() or 2)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return binary


def llama_bench(
    model: Path, threads: int, tokens: int, flash: bool, depths: tuple[int, ...] = (0,)
) -> dict[int, float]:
    """tg tokens/s at each depth: ``tokens`` generated after that many tokens already in the context."""
    output = subprocess.run(
        [
            str(build_llama_bench()),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-p",
            "0",
            "-n",
            str(tokens),
            "-d",
            ",".join(str(depth) for depth in depths),
            "-r",
            "3",
            "-fa",
            "1" if flash else "0",
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {row["n_depth"]: row["avg_ts"] for row in json.loads(output)}


def high_level_loop(model: Path, threads: int, tokens: int, flash: bool) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=2048, n_threads=threads, n_threads_batch=threads, flash_attn=flash, verbose=False
    )
    prompt = llm.tokenize(
        f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n".encode(), add_bos=False, special=True
    )
    first = last = None
    count = 0
    for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, stream=True):
        last = time.perf_counter()
        first = first or last
        count += 1
    llm.close()
    return (count - 1) / (last - first)


def engine_alone(model: Path, settings: Settings, tokens: int) -> dict:
    from tui.engine import Engines, ReplyStats, SamplingParams

    engines = Engines(settings, Path(tempfile.mkdtemp()))
    engine = engines.for_model(str(model))
    params = SamplingParams(temperature=0.0, max_tokens=tokens, n_ctx=2048, repeat_penalty=1.0)
    stats = next(
        event
        for event in engine.stream([{"role": "user", "content": PROMPT}], params, threading.Event())
        if isinstance(event, ReplyStats)
    )
    engines.close()
    return {"tokens_per_second": stats.tokens_per_second, "prompt_tokens": stats.prompt_tokens}


LONG_PROMPT = "Summarise this: " + " ".join(["The zoo keeper feeds the animals every morning."] * 40)


def engine_threads(model: Path, decode: int, batch: int, tokens: int) -> dict:
    """Decode and prompt tokens/s of the engine alone with these thread counts."""
    from tui.engine import Engines, ReplyStats, SamplingParams

    settings = with_overrides(Settings(), "engine", n_threads=decode, n_threads_batch=batch, n_ctx=2048)
    engines = Engines(settings, Path(tempfile.mkdtemp()))
    engine = engines.for_model(str(model))
    params = SamplingParams(temperature=0.0, max_tokens=tokens, n_ctx=2048, repeat_penalty=1.0)
    stats = [
        next(event for event in engine.stream(messages, params, threading.Event()) if isinstance(event, ReplyStats))
        for messages in ([{"role": "user", "content": PROMPT}], [{"role": "user", "content": LONG_PROMPT}])
    ]
    engines.close()
    return {
        "decode": stats[0].tokens_per_second,
        "prompt": stats[1].prompt_tokens_evaluated / max(stats[1].seconds_to_first_token, 1e-9),
    }


class CompetingLoad:
    """Processes that keep CPUs busy, as a browser or a build would, while a measurement runs."""

    def __init__(self, processes: int):
        self._count = processes
        self._processes: list[subprocess.Popen] = []

    def __enter__(self) -> CompetingLoad:
        self._processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self._count)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc) -> None:
        for process in self._processes:
            process.kill()
            process.wait()


def thread_choice(args: argparse.Namespace) -> None:
    """The default thread counts against every logical CPU, on an idle machine and beside a competing load."""
    from tui.engine.threads import physical_cores, thread_plan, usable_cpus

    plan = thread_plan()
    logical = len(usable_cpus())
    choices = [
        (f"zootui default ({plan.decode} for replies, {plan.batch} for prompts)", plan.decode, plan.batch),
        (f"every CPU ({logical} for both, the old default)", logical, logical),
    ]
    if plan.batch != plan.decode:
        choices.append((f"{plan.decode} for both", plan.decode, plan.decode))
    print(
        f"\nthread counts ({physical_cores()} physical cores, {logical} usable CPUs; load: {args.load} busy process(es))"
    )
    rows = []
    for name, decode, batch in choices:
        idle = in_own_process(f"threads:{decode}:{batch}", args)
        with CompetingLoad(args.load):
            loaded = in_own_process(f"threads:{decode}:{batch}", args)
        rows.append((name, idle, loaded))
    width = max(len(name) for name, _, _ in rows)
    print(f"  {'':<{width}}  decode tok/s idle / loaded   prompt tok/s idle / loaded")
    for name, idle, loaded in rows:
        print(
            f"  {name:<{width}}  {idle['decode']:7.1f} / {loaded['decode']:7.1f}"
            f"        {idle['prompt']:7.1f} / {loaded['prompt']:7.1f}"
        )
    default, every = rows[0], rows[1]
    print(
        f"  default / every CPU under load: decode {default[2]['decode'] / max(every[2]['decode'], 1e-9):.2f}, "
        f"prompt {default[2]['prompt'] / max(every[2]['prompt'], 1e-9):.2f}"
    )


def thread_cpu_seconds(thread_id: int) -> float:
    fields = Path(f"/proc/self/task/{thread_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StreamWindow:
    """CPU seconds of the UI thread and of the whole process from a reply's first text on screen to its end.

    It wraps the chat pane's handlers for the first batch of text and for the finished reply, so what the
    UI does before the first token (mounting the views) and after the last (the final render) stays out.
    """

    def __init__(self) -> None:
        from tui.widgets.chat_pane import ChatPane

        self.ui_cpu = self.process_cpu = 0.0
        self._start: tuple[float, float] | None = None
        main_thread = threading.get_native_id()
        on_delta, on_done = ChatPane.on_chat_pane_reply_delta, ChatPane.on_chat_pane_reply_done
        window = self

        async def delta(pane, event):
            if window._start is None:
                window._start = (thread_cpu_seconds(main_thread), time.process_time())
            await on_delta(pane, event)

        async def done(pane, event):
            if window._start is not None:
                ui, process = window._start
                window.ui_cpu += thread_cpu_seconds(main_thread) - ui
                window.process_cpu += time.process_time() - process
                window._start = None
            await on_done(pane, event)

        ChatPane.on_chat_pane_reply_delta, ChatPane.on_chat_pane_reply_done = delta, done

    def take(self) -> float:
        """The UI thread's CPU as a share of the rest of the process's (generation) since the last take."""
        share = self.ui_cpu / max(self.process_cpu - self.ui_cpu, 1e-9)
        self.ui_cpu = self.process_cpu = 0.0
        return share


async def send_and_wait(app, pilot, text: str) -> dict:
    """Send text in the active tab and wait for the reply; its saved figures."""
    from tui.widgets.prompt import PromptArea

    chat = app.active_chat
    before = len(app.store.messages(chat.conversation.id))
    prompt = chat.query_one(PromptArea)
    prompt.focus()
    prompt.text = text
    await pilot.pause()
    await pilot.press("enter")
    # Waiting on the worker rather than polling keeps the bench's own work off the UI thread's account.
    await app.workers.wait_for_complete()
    await pilot.pause()
    messages = app.store.messages(chat.conversation.id)
    if len(messages) < before + 2 or messages[-1].stats is None:
        raise RuntimeError(f"the app did not finish its reply: {[n.message for n in app._notifications]}")
    return messages[-1].stats


def new_data_dir() -> Path:
    data = Path(tempfile.mkdtemp())
    os.environ["ZOOTUI_DATA_DIR"] = str(data)
    return data


async def through_the_app(settings: Settings, tokens: int) -> dict:
    """Stream replies in the real app, headless, and read the figures it saved."""
    from tui.app import ZooApp
    from tui.store import DATABASE_NAME, Store

    store = Store(new_data_dir() / DATABASE_NAME)
    app = ZooApp(settings, store)
    window = StreamWindow()
    results: dict = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        main_thread = threading.get_native_id()
        ui_before, process_before = thread_cpu_seconds(main_thread), time.process_time()
        first = await send_and_wait(app, pilot, PROMPT)
        ui_cpu = thread_cpu_seconds(main_thread) - ui_before
        total_cpu = time.process_time() - process_before
        results["app_tokens_per_second"] = first["tokens_per_second"]
        results["app_tokens"] = first["completion_tokens"]
        results["ui_cpu_share"] = ui_cpu / max(total_cpu - ui_cpu, 1e-9)
        results["ui_cpu_share_streaming"] = window.take()
        second = await send_and_wait(app, pilot, "Now summarise it in one sentence.")
        results["second_turn"] = (second["prompt_tokens_evaluated"], second["prompt_tokens"])
        await pilot.press("ctrl+n")
        await pilot.pause()
        await send_and_wait(app, pilot, "What is 2 + 2?")
        await pilot.press("ctrl+pageup")
        await pilot.pause()
        back = await send_and_wait(app, pilot, "Thank you.")
        results["switch_back"] = (back["prompt_tokens_evaluated"], back["prompt_tokens"])
    return results


HISTORY_MESSAGES = 500


async def long_history(settings: Settings, messages: int) -> dict:
    """Open a conversation of ``messages`` stored messages (code, tables, Chinese), scroll it to its first
    message a page at a time, and stream a reply in it; a two-message conversation is opened the same way."""
    from stored_conversations import stored_conversation

    from tui.app import ZooApp
    from tui.store import DATABASE_NAME, Store
    from tui.widgets.message_log import MessageLog

    store = Store(new_data_dir() / DATABASE_NAME)
    warm_up = stored_conversation(store, 8, title="warm-up")
    short = stored_conversation(store, 2, title="short")
    long = stored_conversation(store, messages, title="long")
    for conversation in (warm_up, short, long):
        store.update_conversation(conversation.id, is_open=False)
    app = ZooApp(settings, store)
    window = StreamWindow()
    results: dict = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for name, conversation in (("warm-up", warm_up), ("short", short), ("long", long)):
            started = time.perf_counter()
            await app.open_conversation(conversation.id)
            # Open means its tab is in front with the messages painted.
            while (chat := app.active_chat).conversation.id != conversation.id or not chat.query_one(MessageLog).views:
                await pilot.pause(0.005)
            results[f"mounted_{name}"] = time.perf_counter() - started
            await pilot.pause()  # until the UI is idle: laid out, painted, the tab's animations done
            results[f"open_{name}"] = time.perf_counter() - started
        log = app.active_chat.query_one(MessageLog)
        results["mounted"] = (len(log.views), messages)
        first = store.messages(long.id)[0].id
        log.focus()
        await pilot.pause()
        presses: list[float] = []
        frames: list[float] = []  # from each key to the first frame drawn scrolled: what the user waits for
        drawn: list[tuple[float, float]] = []  # when each frame was drawn, and the log's scroll position in it
        draw = app.screen._compositor_refresh

        def timed_draw(*args, **kwargs):
            draw(*args, **kwargs)
            drawn.append((time.perf_counter(), log.scroll_y))

        app.screen._compositor_refresh = timed_draw
        most = 0
        while (log.views[0].message_id != first or log.scroll_y > 0) and len(presses) < 5 * messages:
            drawn.clear()
            scrolled_from, started = log.scroll_y, time.perf_counter()
            await pilot.press("pageup")
            await pilot.pause()
            presses.append(time.perf_counter() - started)
            scrolled = next((at for at, scroll_y in drawn if scroll_y != scrolled_from), started + presses[-1])
            frames.append(scrolled - started)
            most = max(most, len(log.views))
        results["scroll"] = (len(presses), statistics.median(presses), max(presses), log.views[0].message_id == first)
        results["scroll_frame"] = (statistics.median(frames), max(frames))
        results["most_mounted"] = most
        stats = await send_and_wait(app, pilot, PROMPT)
        results["tokens_per_second"] = stats["tokens_per_second"]
        results["ui_cpu_share_streaming"] = window.take()
        results["dropped_messages"] = stats.get("dropped_messages", 0)
    return results


def engine_on_history(model: Path, settings: Settings, tokens: int, messages: int) -> float:
    """The engine alone, answering the same long conversation the app does (its oldest turns left out)."""
    from stored_conversations import stored_conversation

    from tui.chat import ChatService
    from tui.engine import Engines, ReplyStats, SamplingParams
    from tui.store import DATABASE_NAME, Store

    data = new_data_dir()
    store = Store(data / DATABASE_NAME)
    conversation = stored_conversation(store, messages)
    engines = Engines(settings, data)
    history = ChatService(store, settings, engines).history(conversation)
    history.append({"role": "user", "content": PROMPT})
    engine = engines.for_model(str(model))
    params = SamplingParams(temperature=0.0, max_tokens=tokens, n_ctx=2048, repeat_penalty=1.0)
    stats = next(event for event in engine.stream(history, params, threading.Event()) if isinstance(event, ReplyStats))
    engines.close()
    return stats.tokens_per_second


def version_seconds(runs: int = 10) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tui", "--version"], check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


FIRST_FRAME_PROBE = """
import sys, time
from pathlib import Path
from tui.cli import main
import tui.app

class FirstFrame(tui.app.ZooApp):
    # Textual reads CSS_PATH relative to the class's own file; this class lives in no file.
    CSS_PATH = str(Path(tui.app.__file__).with_name("app.tcss"))

    def on_mount(self):
        # Textual runs ZooApp's own on_mount as well (handlers run for every class in the MRO).
        self.call_after_refresh(self.report)

    def report(self):
        sys.__stderr__.write(f"first frame at {time.time()}\\n")
        self.exit()

tui.app.ZooApp = FirstFrame
original_run = FirstFrame.run
FirstFrame.run = lambda self, **kwargs: original_run(self, headless=True)
sys.exit(main([]))
"""


def first_frame_seconds(runs: int = 5, tabs: int = 0, messages: int = 20) -> float:
    """Median seconds from launch to the first painted frame; with ``tabs``, that many conversations of
    ``messages`` stored messages each are open (restored as tabs at start)."""
    from stored_conversations import stored_conversation

    from tui.store import DATABASE_NAME, Store

    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as data:
            if tabs:
                store = Store(Path(data) / DATABASE_NAME)
                for tab in range(tabs):
                    stored_conversation(store, messages, title=f"tab {tab + 1}")
                store.close()
            env = {**os.environ, "ZOOTUI_DATA_DIR": data}
            started = time.time()
            result = subprocess.run(
                [sys.executable, "-c", FIRST_FRAME_PROBE], check=True, capture_output=True, text=True, cwd=ROOT, env=env
            )
            [painted] = [line for line in result.stderr.splitlines() if line.startswith("first frame at ")]
            times.append(float(painted.removeprefix("first frame at ")) - started)
    return statistics.median(times)


def run_phase(phase: str, args: argparse.Namespace) -> object:
    """One measurement, run in this process (see ``in_own_process``)."""
    model = default_model_path()
    settings = with_overrides(Settings(), "engine", n_threads=args.threads, n_ctx=2048, flash_attn=True)
    settings = with_overrides(settings, "chat", temperature=0.0, max_tokens=args.tokens, repeat_penalty=1.0)
    if phase.startswith("high-level-"):
        return high_level_loop(model, args.threads, args.tokens, flash=phase.endswith("on"))
    if phase == "engine":
        return engine_alone(model, settings, args.tokens)
    if phase.startswith("threads:"):
        _, decode, batch = phase.split(":")
        return engine_threads(model, int(decode), int(batch), args.tokens)
    if phase == "app":
        return asyncio.run(through_the_app(settings, args.tokens))
    if phase == "history":
        return asyncio.run(long_history(settings, HISTORY_MESSAGES))
    if phase == "engine-history":
        return engine_on_history(model, settings, args.tokens, HISTORY_MESSAGES)
    raise ValueError(phase)


def in_own_process(phase: str, args: argparse.Namespace) -> object:
    """Each measurement runs in a fresh process: llama.cpp's worker threads from an earlier model in the
    same process keep spinning for a while and would slow whatever is measured next."""
    result = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--threads", str(args.threads), "--tokens", str(args.tokens)],
        check=False,
        capture_output=True,
        text=True,
    )
    if result.returncode:
        sys.exit(f"the {phase} measurement failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@dataclass
class Spread:
    """The median of some rounds' figures, and their range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


@dataclass
class StreamedRounds:
    """Medians over rounds of: the engine alone, llama-bench into an empty context and after the reply's prompt,
    the app. A reply is decoded after its prompt, and llama.cpp's decode slows as its context fills (each token
    attends to every one before it), so llama-bench's tg is also run at the prompt's depth: the same positions
    in the context as the reply's tokens."""

    prompt_tokens: int
    engine: Spread
    app: Spread
    app_tokens: int
    ui_share_streaming: float
    ui_share_turn: float
    llama_bench: dict[int, Spread]
    app_by_round: Spread | None
    """Each round's app against the llama-bench run just before it, after the reply's prompt: this machine's
    speed drifts by tens of percent over a minute, and the two runs of a round are seconds apart."""
    last_app: dict


def streamed_rounds(args: argparse.Namespace, model: Path) -> StreamedRounds:
    engines, apps, benches = [], [], []
    for _ in range(args.rounds):
        engines.append(in_own_process("engine", args))
        depth = engines[-1]["prompt_tokens"]
        if not args.no_llama_bench:
            benches.append(llama_bench(model, args.threads, args.tokens, True, (0, depth)))
        apps.append(in_own_process("app", args))
    depths = (0, depth) if benches else ()
    return StreamedRounds(
        prompt_tokens=depth,
        engine=Spread.of([run["tokens_per_second"] for run in engines]),
        app=Spread.of([run["app_tokens_per_second"] for run in apps]),
        app_tokens=apps[-1]["app_tokens"],
        ui_share_streaming=statistics.median(run["ui_cpu_share_streaming"] for run in apps),
        ui_share_turn=statistics.median(run["ui_cpu_share"] for run in apps),
        llama_bench={d: Spread.of([run[d] for run in benches]) for d in depths},
        app_by_round=(
            Spread.of([app["app_tokens_per_second"] / bench[depth] for app, bench in zip(apps, benches, strict=True)])
            if benches
            else None
        ),
        last_app=apps[-1],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--rounds",
        type=int,
        choices=range(1, 21),
        metavar="1-20",
        default=3,
        help="rounds of the streamed measurements (llama-bench, engine, app)",
    )
    parser.add_argument("--no-llama-bench", action="store_true", help="skip building and running llama-bench")
    parser.add_argument(
        "--load", type=int, default=1, help="busy processes competing for the CPU in the thread comparison"
    )
    parser.add_argument("--threads-only", action="store_true", help="only compare the thread counts")
    parser.add_argument("--no-thread-choice", action="store_true", help="skip the thread-count comparison")
    parser.add_argument(
        "--only",
        choices=("history", "tabs", "stream"),
        help="only the long conversation's figures, only the tabs' first frame, or only a streamed reply's"
        " speed (llama-bench with flash attention, the engine alone, the app) and the UI CPU",
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args)))
        return
    load_at_start = os.getloadavg()[0]
    model = default_model_path()
    print(f"model {model.name}, {args.threads} threads, {args.tokens} tokens, prompt {PROMPT!r}")
    print(f"machine: {os.cpu_count()} CPUs, {sys.platform}; load average {load_at_start:.1f}")
    if args.only == "history":
        long_history_figures(args, None)
        return
    if args.only == "tabs":
        tabs_figures()
        return
    if not args.no_thread_choice and args.only != "stream":
        thread_choice(args)
    if args.threads_only:
        return

    rows = []
    if not args.no_llama_bench and args.only != "stream":
        rows.append(
            (f"llama-bench tg{args.tokens} (flash attn off)", llama_bench(model, args.threads, args.tokens, False)[0])
        )
    for flash in () if args.only == "stream" else ("off", "on"):
        rows.append(
            (
                f"llama-cpp-python create_completion stream (flash attn {flash})",
                in_own_process(f"high-level-{flash}", args),
            )
        )
    rounds = streamed_rounds(args, model)
    depth = rounds.prompt_tokens
    streamed = {}
    if not args.no_llama_bench:
        streamed[f"llama-bench tg{args.tokens} into an empty context (flash attn on)"] = rounds.llama_bench[0]
        streamed[f"llama-bench tg{args.tokens} after the reply's {depth} prompt tokens (flash attn on)"] = (
            rounds.llama_bench[depth]
        )
    streamed["zootui engine alone (flash attn on)"] = rounds.engine
    streamed[f"zootui app, headless Pilot ({rounds.app_tokens} tokens)"] = rounds.app
    rows += [(name, figures.median) for name, figures in streamed.items()]

    width = max(len(name) for name, _ in rows)
    print(f"\ndecode tokens/s (a row with a range: the median of {args.rounds} rounds, run one after the other)")
    for name, value in rows:
        figures = streamed.get(name)
        print(f"  {name:<{width}}  {value:7.1f}" + (f"  ({figures.low:.1f}-{figures.high:.1f})" if figures else ""))
    app_speed, engine_speed = rounds.app.median, rounds.engine.median
    baseline = dict(rows)
    if args.only != "stream":
        bare = baseline["llama-cpp-python create_completion stream (flash attn off)"]
        print(
            f"\n  app / llama-cpp-python high-level loop (its default, flash off): {app_speed / bare:.2f}  (goal ≥ 0.95)"
        )
        bare_fa = baseline["llama-cpp-python create_completion stream (flash attn on)"]
        print(f"  app / llama-cpp-python high-level loop (flash on):              {app_speed / bare_fa:.2f}")
    print(f"  app / engine alone (flash on):                                  {app_speed / engine_speed:.2f}")
    if not args.no_llama_bench:
        at_depth, empty = rounds.llama_bench[depth].median, rounds.llama_bench[0].median
        by_round = rounds.app_by_round
        print(f"  app / llama-bench tg after the reply's prompt (flash on):       {app_speed / at_depth:.2f}")
        print(
            f"    the same, round by round (each app run against the llama-bench run before it): {by_round.median:.2f}"
            f"  ({by_round.low:.2f}-{by_round.high:.2f}; goal ≥ 0.90)"
        )
        print(f"  engine alone / llama-bench tg after the reply's prompt:         {engine_speed / at_depth:.2f}")
        print(
            f"  app / llama-bench tg into an empty context:                     {app_speed / empty:.2f}"
            f"  (llama-bench itself, after {depth} tokens / into an empty context: {at_depth / empty:.2f})"
        )
    print(
        f"\nUI thread CPU as a share of generation CPU: {rounds.ui_share_streaming:.1%} while the reply streams"
        f" (goal ≤ 5%); {rounds.ui_share_turn:.1%} for the whole turn, from enter to the final render (medians)"
    )
    app = rounds.last_app
    if args.only == "stream":
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (at the start: {load_at_start:.1f})")
        return
    evaluated, total = app["second_turn"]
    print(f"second turn: {evaluated} of {total} prompt tokens evaluated")
    evaluated, total = app["switch_back"]
    print(f"back to a tab after another tab used the model: {evaluated} of {total} prompt tokens evaluated")
    long_history_figures(args, app_speed / engine_speed)
    print(f"\nzootui --version: {version_seconds() * 1000:.0f} ms median (goal < 300 ms)")
    print(f"launch to first painted frame: {first_frame_seconds() * 1000:.0f} ms median (goal < 1000 ms)")
    tabs_figures()
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (at the start: {load_at_start:.1f})")


def long_history_figures(args: argparse.Namespace, empty_ratio: float | None) -> None:
    history = in_own_process("history", args)
    engine = in_own_process("engine-history", args)
    print(f"\na conversation of {HISTORY_MESSAGES} messages (code blocks, tables, Chinese text):")
    print(
        f"  open, until the UI is idle: {history['open_long'] * 1000:.0f} ms (goal < 500 ms); a two-message one: "
        f"{history['open_short'] * 1000:.0f} ms; views mounted: {history['mounted'][0]} of {history['mounted'][1]}"
    )
    print(
        f"  open, until its views are mounted: {history['mounted_long'] * 1000:.0f} ms; a two-message one: "
        f"{history['mounted_short'] * 1000:.0f} ms"
    )
    presses, median, longest, reached = history["scroll"]
    print(
        f"  page-up to its first message: {presses} presses, {median * 1000:.0f} ms median and {longest * 1000:.0f} ms"
        f" at most from key to UI idle{'' if reached else ' (did not reach the first message)'};"
        f" at most {history['most_mounted']} views mounted on the way"
    )
    frame_median, frame_longest = history["scroll_frame"]
    print(
        f"  page-up, from key to the first frame drawn scrolled: {frame_median * 1000:.0f} ms median and"
        f" {frame_longest * 1000:.0f} ms at most (goal: no visible lag, under 100 ms)"
    )
    ratio = history["tokens_per_second"] / engine
    empty = f"; in an empty conversation: {empty_ratio:.2f}" if empty_ratio is not None else ""
    print(
        f"  a reply in it: {history['tokens_per_second']:.1f} tok/s, the engine alone on the same history "
        f"{engine:.1f} tok/s: app / engine {ratio:.2f}{empty}"
    )
    print(f"  UI thread CPU while it streams: {history['ui_cpu_share_streaming']:.1%} of generation CPU")


def tabs_figures() -> None:
    many = first_frame_seconds(runs=3, tabs=30)
    one = first_frame_seconds(runs=3, tabs=1)
    print(
        f"first painted frame with 30 open tabs of 20 messages: {many * 1000:.0f} ms median (goal < 1000 ms); "
        f"with one such tab: {one * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
