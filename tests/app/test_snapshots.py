"""What the main screens look like, at 80×24 and 120×36, against reviewed SVG snapshots (pytest-textual-snapshot).

A change that alters a screen fails here with a side-by-side report; when the change is meant, look at it and
update the snapshots: `.venv/bin/python -m pytest tests/app/test_snapshots.py --snapshot-update`.
Nothing here loads a model: the reply on screen is a stored one, and everything the screens show that
depends on the machine (threads, free RAM and disk) is fixed, so the snapshots are the same everywhere.
"""

from __future__ import annotations

import pytest
from support import wait_until
from textual.widgets import Input, Markdown, OptionList

from tui.app import ZooApp
from tui.config import Settings, with_overrides
from tui.screens.browser import ModelBrowser
from tui.store import DATABASE_NAME, Store
from tui.zoo import catalog, fit
from tui.zoo.library import DEFAULT_MODEL_NAME

SIZES = pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])

QUESTION = "How tall is a giraffe, and how would I print that in Python?"
ANSWER = """An adult giraffe stands **4.3 to 5.7 m** tall; males are taller than females.

| animal | height |
| --- | --- |
| giraffe | 5.5 m |
| elephant | 3.3 m |

```python
print("A giraffe is about 5.5 m tall.")
```"""
STATS = {
    "finish_reason": "stop",
    "prompt_tokens": 52,
    "prompt_tokens_evaluated": 52,
    "completion_tokens": 81,
    "seconds_to_first_token": 0.21,
    "decode_seconds": 0.8,
    "context_size": 2048,
}


@pytest.fixture
def app(isolated_dirs, monkeypatch) -> ZooApp:
    """The app with one conversation holding a question and its stored reply, as a returning user sees it."""
    monkeypatch.setattr(
        fit, "free_resources", lambda data_dir: fit.Resources(ram_bytes=16 << 30, disk_bytes=200 << 30, vram_bytes=None)
    )
    # The browser's status column is as wide as its widest status, which for ChatGLM-6B says whether the
    # optional glm extra is installed: the screens are those of the README's install, which has it.
    monkeypatch.setattr(catalog, "chatglm_cpp_missing", lambda: None)
    settings = with_overrides(Settings(), "engine", n_threads=2, n_threads_batch=2)
    store = Store(isolated_dirs / DATABASE_NAME)
    conversation = store.create_conversation("Giraffes", DEFAULT_MODEL_NAME)
    store.add_message(conversation.id, "user", QUESTION)
    store.add_message(conversation.id, "assistant", ANSWER, stats=STATS)
    return ZooApp(settings, store)


async def chat_shown(pilot) -> None:
    await wait_until(pilot, lambda: len(pilot.app.active_chat.log.views) == 2)
    await pilot.pause()


async def steady(pilot) -> None:
    """Stop the cursors blinking: a snapshot taken mid-blink would differ from the one before."""
    for box in pilot.app.screen.query("Input, TextArea"):
        box.cursor_blink = False
    await pilot.pause()


@SIZES
def test_chat_with_a_reply(app, snap_compare, size):
    async def shown(pilot) -> None:
        await chat_shown(pilot)
        await steady(pilot)

    assert snap_compare(app, terminal_size=size, run_before=shown)


@SIZES
def test_settings_panel(app, snap_compare, size):
    async def open_settings(pilot) -> None:
        await chat_shown(pilot)
        await pilot.press("ctrl+s")
        await steady(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_settings)


@SIZES
def test_browser_with_details(app, snap_compare, size):
    async def open_details(pilot) -> None:
        await chat_shown(pilot)
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ModelBrowser))
        pilot.app.screen.query_one("#filter", Input).value = "vicuna-7b-v1.3"
        await wait_until(pilot, lambda: "vicuna-7b-v1.3" in pilot.app.screen.query_one("#detail", Markdown).source)
        await wait_until(
            pilot, lambda: "still being worked out" not in pilot.app.screen.query_one("#detail", Markdown).source
        )
        await steady(pilot)

    assert snap_compare(app, terminal_size=size, run_before=open_details)


@SIZES
def test_search(app, snap_compare, size):
    async def search(pilot) -> None:
        await chat_shown(pilot)
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: isinstance(pilot.app.focused, Input))
        pilot.app.focused.insert_text_at_cursor("giraffe")
        await wait_until(pilot, lambda: pilot.app.screen.query_one(OptionList).option_count == 2)
        await steady(pilot)

    assert snap_compare(app, terminal_size=size, run_before=search)
