"""Soak: many tabs, many turns on the default model through the running app, with random stops and tab switches.

    nice .venv/bin/python tests/bench/soak.py [--tabs 10] [--turns 100] [--max-tokens 16] [--seed 1]

Each turn picks a tab at random, sends a prompt there and then, at random, lets the reply finish, stops it
with escape after a moment, or switches to another tab while it streams. At the end it prints the database's
integrity check, the messages each conversation holds against what the turns should have left, any reply left
streaming, the turn time per hundred turns and the process's RSS at the start (model loaded, first turn done),
every hundred turns, at its peak and at the end, against the bound the engine's state cache allows
([engine] state_cache_mb) plus RSS_SLACK_MB. It exits 1 when the integrity check or a count is wrong or RSS grew
past that. Not part of the test run: it takes a while (2-3 s a turn on the shared two-core machine, 1000 turns).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tui.config import Settings, with_overrides  # noqa: E402

RSS_SLACK_MB = 256
"""Growth allowed past the state cache's bound: what the app itself keeps as the conversations grow (the
message views of the tabs, SQLite's page cache, Python's heap), and the tokens each saved history is keyed by."""

PROMPTS = (
    "Tell me about giraffes.",
    "Write a haiku about a penguin.",
    "What do red pandas eat?",
    "Give me three names for a zoo cat.",
    "Explain in one sentence why elephants are big.",
    "写一句关于熊猫的话。",
    "List two facts about owls.",
    "How long do tortoises live?",
)


def state_cache_mb(app) -> float:
    """What the state caches of the loaded models hold (the bytes they count against [engine] state_cache_mb)."""
    caches = [model.state_cache for model in app.engines.pool._models.values() if model.state_cache is not None]
    return sum(cache.held_bytes for cache in caches) / 2**20


def rss_mb(field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS), or at its peak so far (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


async def soak(args: argparse.Namespace) -> dict:
    from tui.app import ZooApp
    from tui.store import DATABASE_NAME, MessageState, Store
    from tui.widgets.prompt import PromptArea

    data = Path(tempfile.mkdtemp(prefix="zootui-soak-"))
    os.environ["ZOOTUI_DATA_DIR"] = str(data)
    settings = with_overrides(Settings(), "engine", n_threads=args.threads)
    if args.state_cache_mb is not None:
        settings = with_overrides(settings, "engine", state_cache_mb=args.state_cache_mb)
    settings = with_overrides(settings, "chat", max_tokens=args.max_tokens)
    store = Store(data / DATABASE_NAME)
    app = ZooApp(settings, store)
    chance = random.Random(args.seed)
    sent = {}  # conversation id -> turns sent there
    stopped = {}  # conversation id -> replies stopped there (one stopped before its first token leaves none)
    outcomes = {"finished": 0, "stopped": 0, "switched away": 0}
    turn_seconds: list[float] = []
    figures: dict = {"data_dir": str(data)}

    async def wait_for_replies(pilot) -> None:
        await app.workers.wait_for_complete()
        await pilot.pause()

    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        for _ in range(args.tabs - 1):
            await pilot.press("ctrl+n")
            await pilot.pause()
        pane_ids = [pane.id for pane in app.tabs.query("TabPane")]
        for turn in range(args.turns * args.tabs):
            started = time.monotonic()
            app.tabs.active = chance.choice(pane_ids)
            await pilot.pause()
            chat = app.active_chat
            prompt = chat.query_one(PromptArea)
            prompt.focus()
            prompt.text = chance.choice(PROMPTS)
            await pilot.press("enter")
            sent[chat.conversation.id] = sent.get(chat.conversation.id, 0) + 1
            what = chance.random()
            if what < 0.15:
                await asyncio.sleep(chance.uniform(0.0, 0.4))
                await pilot.press("escape")
                outcomes["stopped"] += 1
                stopped[chat.conversation.id] = stopped.get(chat.conversation.id, 0) + 1
            elif what < 0.3:
                await asyncio.sleep(chance.uniform(0.0, 0.4))
                app.tabs.active = chance.choice(pane_ids)
                outcomes["switched away"] += 1
            else:
                outcomes["finished"] += 1
            await wait_for_replies(pilot)
            turn_seconds.append(time.monotonic() - started)
            if turn == 0:
                figures["rss_start_mb"] = rss_mb()
            if (turn + 1) % 100 == 0:
                print(
                    f"  turns {turn - 98:>4}–{turn + 1:<4} median {statistics.median(turn_seconds[-100:]):.2f} s/turn, "
                    f"RSS {rss_mb():.0f} MB (state cache {state_cache_mb(app):.0f} MB), load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        figures["rss_end_mb"] = rss_mb()
        figures["rss_peak_mb"] = rss_mb("VmHWM")
        figures["cache_end_mb"] = state_cache_mb(app)
        figures["notifications"] = [n.message for n in app._notifications if n.severity == "error"]
    store.close()

    database = sqlite3.connect(data / DATABASE_NAME)
    figures["integrity"] = database.execute("PRAGMA integrity_check").fetchone()[0]
    database.close()
    store = Store(data / DATABASE_NAME)
    counts = []
    for conversation in store.conversations():
        messages = store.messages(conversation.id)
        users = sum(message.role == "user" for message in messages)
        replies = sum(message.role == "assistant" for message in messages)
        streaming = sum(message.state is MessageState.STREAMING for message in messages)
        turns = sent.get(conversation.id, 0)
        counts.append((conversation.id, turns, turns - stopped.get(conversation.id, 0), users, replies, streaming))
    store.close()
    figures["counts"] = counts
    figures["outcomes"] = outcomes
    figures["turn_seconds"] = turn_seconds
    figures["state_cache_mb"] = settings.engine.state_cache_mb
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabs", type=int, default=10)
    parser.add_argument("--turns", type=int, default=100, help="turns per tab")
    parser.add_argument("--max-tokens", type=int, default=16, help="reply length (short, so 1000 turns fit in an hour)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1, help="seed of the random schedule")
    parser.add_argument(
        "--state-cache-mb", type=int, help="[engine] state_cache_mb (default: the default); 0 measures the app alone"
    )
    args = parser.parse_args()
    print(
        f"{args.tabs} tabs x {args.turns} turns, default model, {args.threads} threads, max {args.max_tokens} tokens, "
        f"load {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)",
        flush=True,
    )
    started = time.monotonic()
    figures = asyncio.run(soak(args))
    print(f"\nran {time.monotonic() - started:.0f} s; outcomes: {figures['outcomes']}")
    print(f"database integrity_check: {figures['integrity']}")
    problems = 0
    print("conversation  turns sent  user messages  replies expected  replies  left streaming")
    for conversation_id, turns, least_replies, users, replies, streaming in figures["counts"]:
        # Every turn leaves its user message and a reply, but a reply stopped before its first token leaves none.
        ok = users == turns and least_replies <= replies <= turns and streaming == 0
        problems += not ok
        print(
            f"  {conversation_id:>10}  {turns:>10}  {users:>13}  {least_replies:>9}-{turns:<6}  {replies:>7}"
            f"  {streaming:>14}{'' if ok else '  <- wrong'}"
        )
    print(
        f"messages: {sum(c[3] + c[4] for c in figures['counts'])} found, user messages expected"
        f" {sum(c[1] for c in figures['counts'])}, found {sum(c[3] for c in figures['counts'])}"
    )
    seconds = figures["turn_seconds"]
    print(
        f"turn time: median {statistics.median(seconds):.2f} s; first hundred {statistics.median(seconds[:100]):.2f} s, "
        f"last hundred {statistics.median(seconds[-100:]):.2f} s"
    )
    start, peak, end = figures["rss_start_mb"], figures["rss_peak_mb"], figures["rss_end_mb"]
    allowed = figures["state_cache_mb"] + RSS_SLACK_MB
    grew_too_much = max(peak, end) - start > allowed
    print(
        f"RSS: start {start:.0f} MB (after the first turn), peak {peak:.0f} MB, end {end:.0f} MB: growth {end - start:.0f} MB"
        f" (peak {peak - start:.0f} MB); allowed {allowed} MB = [engine] state_cache_mb {figures['state_cache_mb']}"
        f" + {RSS_SLACK_MB}{'  <- too much' if grew_too_much else ''}; the state cache holds {figures['cache_end_mb']:.0f} MB"
    )
    if figures["notifications"]:
        print(f"errors shown: {figures['notifications']}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    if figures["integrity"] != "ok" or problems or grew_too_much:
        sys.exit(1)


if __name__ == "__main__":
    main()
