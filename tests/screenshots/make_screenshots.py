"""Regenerate the README's screenshots: a chat tab after a real exchange with the default model, and the
model browser.

    .venv/bin/python tests/screenshots/make_screenshots.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tui.app import ZooApp  # noqa: E402
from tui.config import Settings, with_overrides  # noqa: E402
from tui.store import DATABASE_NAME, Store  # noqa: E402
from tui.widgets.prompt import PromptArea  # noqa: E402


async def main() -> None:
    data = Path(tempfile.mkdtemp())
    os.environ["ZOOTUI_DATA_DIR"] = str(data)
    settings = with_overrides(Settings(), "chat", temperature=0.0, max_tokens=160)
    store = Store(data / DATABASE_NAME)
    earlier = store.create_conversation("Vicuna prompt format", "smollm2-135m-instruct")
    store.add_message(earlier.id, "user", "How does Vicuna format a prompt?")
    app = ZooApp(settings, store)
    async with app.run_test(size=(110, 34)) as pilot:
        app.theme = "zoo-savanna"
        await pilot.press("ctrl+n")
        chat = app.active_chat
        chat.query_one(PromptArea).text = "Write a Python function that checks whether a number is prime."
        await pilot.press("enter")
        while not chat.generating:
            await asyncio.sleep(0.05)
        while chat.generating:
            await asyncio.sleep(0.05)
        await pilot.pause(0.5)
        app.save_screenshot(filename="chat.svg", path=str(HERE))
        await pilot.press("ctrl+b")
        await pilot.pause()
        await pilot.press(*"vicuna")  # typing goes to the filter
        await pilot.press("down")
        await pilot.pause(1.0)
        app.save_screenshot(filename="browser.svg", path=str(HERE))
    print(HERE / "chat.svg", HERE / "browser.svg")


if __name__ == "__main__":
    asyncio.run(main())
