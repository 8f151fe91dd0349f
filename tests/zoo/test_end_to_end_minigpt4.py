"""MiniGPT-4 from the bundled catalog to a chat about a picture, and the picture still there after a relaunch.

Every part is published on the local Hub under the variant's real Hub id: the Vicuna v0 delta and the
LLaMA base (the tiny LLaMA and a random delta), BLIP-2 in Hugging Face form (the tiny vision fixture,
three shards of which only two hold the vision side) and the projection checkpoint (in a model repo
for 13B, in the authors' Space for 7B). The pull rebuilds and quantizes the language model, writes the
vision file, smoke-tests both and registers them; the app then attaches a generated PNG with ctrl+t,
gets a reply, and shows the image again in the history of a new app on the same database.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hubserver import HubServer
from PIL import Image
from support import SIZE, views, wait_until
from textual_image.widget import Image as ImageWidget
from tinyminigpt4 import BLIP2, PROJECTION
from tinyzoo import LFS_FILES, TINY_LLAMA, _write_delta, repo_files

from tui.app import ZooApp
from tui.screens.attach import AttachScreen
from tui.store import DATABASE_NAME, Store
from tui.widgets.prompt import PromptArea
from tui.zoo.catalog import load_catalog
from tui.zoo.jobs import Jobs
from tui.zoo.library import VISION_SUFFIX


def picture(path: Path) -> Path:
    y, x = np.mgrid[0:90, 0:120]
    Image.fromarray(np.stack([x * 2, y * 2, 255 - x], axis=-1).astype(np.uint8), "RGB").save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("variant_id", ["minigpt4-vicuna0-7b", "minigpt4-vicuna0-13b"])
async def test_minigpt4_is_pulled_and_chats_about_a_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path, fast_settings, variant_id: str
):
    catalog = load_catalog()
    _, variant = catalog.variant(variant_id)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        _write_delta(tmp_path / "delta")
        hub.add_repo(variant.hub_id, repo_files(tmp_path / "delta"), lfs=LFS_FILES)
        hub.add_repo(variant.base_hub_id, repo_files(TINY_LLAMA), lfs=LFS_FILES)
        blip2 = repo_files(BLIP2)
        hub.add_repo(variant.vision_hub_id, blip2, lfs={name for name in blip2 if name.endswith(".bin")})
        projection = {variant.projection_file: PROJECTION.read_bytes(), "app.py": b"import gradio\n"}
        hub.add_repo(variant.projection_hub_id, projection, lfs={variant.projection_file})
        store = Store(isolated_dirs / DATABASE_NAME)
        jobs = Jobs(store, isolated_dirs, catalog, hub_cache=tmp_path / "hub-cache", hub_token=False)
        model = jobs.get_model(variant_id)
        fetched = {request.path for request in hub.requests if request.method == "GET"}

    # Only the BLIP-2 shards holding the vision side were downloaded, never the language model's one.
    assert not any(path.endswith("pytorch_model-00003-of-00003.bin") for path in fetched)
    assert any(path.endswith("pytorch_model-00002-of-00003.bin") for path in fetched)
    lockfile = model.lockfile
    assert lockfile.smoke_test["passed"] and lockfile.prompt_format == "minigpt4"
    assert lockfile.vision_encoder == model.name + VISION_SUFFIX
    assert model.path.with_name(lockfile.vision_encoder).is_file() and len(lockfile.vision_encoder_sha256) == 64
    assert {s["role"]: s["repo"] for s in lockfile.sources} == {
        "model": variant.hub_id,
        "base": variant.base_hub_id,
        "vision": variant.vision_hub_id,
        "projection": variant.projection_hub_id,
    }

    photo = picture(tmp_path / "animal.png")
    app = ZooApp(fast_settings, store, new_chat_model=model.name)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.active_chat is not None and app.active_chat.query(PromptArea))
        chat = app.active_chat
        await pilot.click(chat.query_one(PromptArea))
        await pilot.press("ctrl+t")
        await wait_until(pilot, lambda: isinstance(app.screen, AttachScreen))
        await pilot.press(*str(photo), "enter")
        await wait_until(pilot, lambda: chat._pending_image is not None)
        await pilot.press(*"What animal is this?", "enter")
        await wait_until(pilot, lambda: len(views(chat)) == 2 and views(chat)[1].state != "streaming")
        user, reply = views(chat)
        assert reply.state == "done" and reply.content
        assert user.query(ImageWidget) and chat._pending_image is None
    [conversation] = store.conversations()
    question, answer = store.messages(conversation.id)
    assert question.image is not None and question.image.name == "animal.png"
    assert answer.stats["prompt_tokens"] > 32  # the image's 32 positions and the text around them

    again = ZooApp(fast_settings, store)
    async with again.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: again.active_chat is not None)
        chat = again.active_chat
        await wait_until(pilot, lambda: len(views(chat)) == 2)
        [shown] = views(chat)[0].query(ImageWidget)
        assert Path(shown.image) == question.image.path(isolated_dirs)
    store.close()

    vision_file = model.path.with_name(lockfile.vision_encoder)
    jobs.delete_model(model.name)
    assert not model.path.exists() and not vision_file.exists()
