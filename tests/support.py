"""Helpers the tests share (a plain module: `conftest` names clash between test directories)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def collect_reply(events) -> tuple[str, object]:
    """An engine's streamed events as (the reply's text, its ReplyStats)."""
    from tui.engine import ReplyStats

    text, stats = [], None
    for event in events:
        if isinstance(event, ReplyStats):
            stats = event
        else:
            text.append(event)
    return "".join(text), stats


def zootui_command(*args: str) -> list[str]:
    """Run the CLI of this checkout the way an installed `zootui` does."""
    return [sys.executable, "-m", "tui", *args]


# Driving the app with Pilot.

from tui.widgets.chat_pane import ChatPane  # noqa: E402
from tui.widgets.message import MessageView  # noqa: E402
from tui.widgets.prompt import PromptArea  # noqa: E402

SIZE = (110, 36)


async def wait_until(pilot, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


async def send(pilot, text: str) -> ChatPane:
    """Type a message, press enter, and wait until its reply is complete (a short reply may beat any poll)."""
    app = pilot.app
    chat = app.active_chat
    before = len(views(chat))
    # The active tab's own prompt: a selector would match the first tab's, hidden behind it.
    await pilot.click(chat.query_one(PromptArea))
    await pilot.press(*text)
    await pilot.press("enter")
    await wait_until(
        pilot, lambda: len(views(chat)) == before + 2 and not chat.generating and views(chat)[-1].state != "streaming"
    )
    await pilot.pause()
    return chat


def views(chat: ChatPane) -> list[MessageView]:
    return list(chat.query(MessageView))
