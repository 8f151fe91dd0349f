"""Helpers the tests share (a plain module: `conftest` names clash between test directories)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

from tui.glm_runtime import chatglm_cpp_missing

ROOT = Path(__file__).resolve().parent.parent

# Tests that run a model in chatglm.cpp: without the glm extra there is nothing to run it on.
needs_glm_extra = pytest.mark.skipif(
    chatglm_cpp_missing() is not None, reason="needs chatglm-cpp, the glm extra: pip install -e '.[test,glm]'"
)


def collect_reply(events) -> tuple[str, object]:
    """An engine's streamed events as (the reply's text, its ReplyStats)."""
    from tui.engine import ReplyStats

    text, stats = [], None
    for event in events:
        if isinstance(event, ReplyStats):
            stats = event
        elif isinstance(event, str):  # progress before the first token is left out
            text.append(event)
    return "".join(text), stats


def zootui_command(*args: str) -> list[str]:
    """Run the CLI of this checkout the way an installed `zootui` does."""
    return [sys.executable, "-m", "tui", *args]


def free_port() -> int:
    """A loopback port nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerDidNotStart(Exception):
    pass


def wait_for_server(url: str, process, log_path: Path, timeout: float = 120.0) -> None:
    """Wait until the OpenAI-compatible server at url answers (a refusal for want of a key counts)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/models", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError as error:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log = log_path.read_text(errors="replace")[-2000:]
                raise ServerDidNotStart(f"{url} did not start: {log}") from error
            time.sleep(0.3)


def fill_disk(directory: Path) -> Path:
    """Take every free byte of the filesystem holding ``directory``; returns the file to remove."""
    filler = directory / "filler"
    with filler.open("wb") as stream:
        while free := shutil.disk_usage(directory).free:
            try:
                stream.write(b"\0" * min(free, 1 << 20))
                stream.flush()
            except OSError:
                break
    return filler


# Driving the app with Pilot.

from tui.widgets.chat_pane import ChatPane  # noqa: E402
from tui.widgets.message import MessageView  # noqa: E402
from tui.widgets.prompt import PromptArea  # noqa: E402

SIZE = (110, 36)


def make_app(settings, data_dir, **kwargs):
    """The app on a real SQLite file in the test's data dir."""
    from tui.app import ZooApp
    from tui.store import DATABASE_NAME, Store

    return ZooApp(settings, Store(data_dir / DATABASE_NAME), **kwargs)


def app_with_chat(settings, data_dir, *messages: tuple[str, str], title: str = "chat", **kwargs):
    """The app with one stored conversation of (role, content) messages, open as its tab."""
    app = make_app(settings, data_dir, **kwargs)
    conversation = app.store.create_conversation(title, "smollm2-135m-instruct")
    for role, content in messages:
        app.store.add_message(conversation.id, role, content)
    return app


async def shown(pilot, count: int):
    """Wait until the active tab shows count messages; returns the tab."""
    chat = pilot.app.active_chat
    await wait_until(pilot, lambda: len(views(chat)) == count)
    await pilot.pause()
    return chat


async def wait_until(pilot, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


async def send(pilot, text: str) -> ChatPane:
    """Put a message in the prompt, press enter, and wait until its reply is complete (a short reply may beat any
    poll). The text goes in at once, as its typed characters would: Pilot waits ~100 ms a key for the app to
    idle. Tests of what keys do press their own."""
    app = pilot.app
    chat = app.active_chat
    before = len(views(chat))
    # The active tab's own prompt: a selector would match the first tab's, hidden behind it.
    prompt = chat.query_one(PromptArea)
    await pilot.click(prompt)
    assert app.focused is prompt, "a click on the active tab's prompt focuses it"
    prompt.insert(text)
    await pilot.press("enter")
    await wait_until(
        pilot, lambda: len(views(chat)) == before + 2 and not chat.generating and views(chat)[-1].state != "streaming"
    )
    await pilot.pause()
    return chat


def views(chat: ChatPane) -> list[MessageView]:
    return list(chat.query(MessageView))


def footer_key(app, action: str):
    """The footer's key for an action (to click it)."""
    from textual.widgets._footer import FooterKey

    return next(key for key in app.screen.query(FooterKey) if key.action == action)


def footer_actions(app) -> list[str]:
    """The actions the footer offers now, left to right."""
    from textual.widgets._footer import FooterKey

    return [key.action for key in app.screen.query(FooterKey)]


def footer_text(app) -> str:
    """The footer as a user reads it."""
    from textual.widgets import Footer

    footer = app.screen.query_one(Footer)
    return " ".join(str(key.render()) for key in footer.children)


async def chat_in_app(settings, store, model: str, *texts: str) -> list:
    """Open the app on a new tab for ``model``, send each text and wait for its reply; the saved messages.

    Every reply must end done, and the conversation must hold exactly these turns."""
    from tui.app import ZooApp

    app = ZooApp(settings, store, new_chat_model=model)
    async with app.run_test(size=SIZE) as pilot:
        for text in texts:
            chat = await send(pilot, text)
            assert views(chat)[-1].state == "done"
    [conversation] = store.conversations()
    saved = store.messages(conversation.id)
    assert [(m.role, m.state) for m in saved] == [("user", "done"), ("assistant", "done")] * len(texts)
    assert all(m.model == model for m in saved[1::2])
    return saved
