"""ChatGLM2/3, Dolly v1 and GPT-JT-Moderation (GPT-J) from the bundled catalog to a chat tab.

Each variant's tiny fixture is published on the local Hub under the variant's real Hub id, so the pull
uses the catalog entry itself (architecture, prompt format, stop strings, end-of-answer token): it
downloads, converts (ChatGLM as llama.cpp's chatglm, GPT-J as phi2), quantizes to the default type,
smoke-tests and registers, and the app then chats with the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from hubserver import HubServer
from moderator import write_moderator
from support import ROOT, SIZE, send, views, wait_until
from tinyzoo import repo_files

from converters.convert import STOP_STRINGS_KEY
from tui.app import ZooApp
from tui.store import DATABASE_NAME, Store
from tui.widgets.prompt import PromptArea
from tui.zoo.catalog import load_catalog
from tui.zoo.jobs import Jobs
from tui.zoo.templates import prompt_format

TINY = ROOT / "tests" / "fixtures" / "tiny"
# variant id -> the fixture published as its Hub repo
PUBLISHED = {"chatglm2-6b": "chatglm2", "chatglm3-6b": "chatglm3", "dolly-v1-6b": "gptj"}
WEIGHT_SUFFIXES = (".bin", ".safetensors", ".model")


def publish(hub: HubServer, repo_id: str, fixture: str) -> None:
    files = repo_files(TINY / fixture)
    hub.add_repo(repo_id, files, lfs={name for name in files if name.endswith(WEIGHT_SUFFIXES)})


@pytest.mark.slow
@pytest.mark.parametrize("variant_id", PUBLISHED)
async def test_catalog_variant_is_pulled_converted_and_chatted_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path, fast_settings, variant_id: str
):
    catalog = load_catalog()
    _, variant = catalog.variant(variant_id)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        publish(hub, variant.hub_id, PUBLISHED[variant_id])
        store = Store(isolated_dirs / DATABASE_NAME)
        jobs = Jobs(store, isolated_dirs, catalog, hub_cache=tmp_path / "hub-cache", hub_token=False)
        model = jobs.get_model(variant_id)

    assert model.lockfile.smoke_test["passed"] and model.lockfile.quant == "q4_k_m"
    fields = {name: field.contents() for name, field in gguf.GGUFReader(model.path).fields.items()}
    chosen = prompt_format(variant.prompt_format)
    assert fields["tokenizer.chat_template"] == chosen.template
    stops = list(dict.fromkeys((*chosen.stop, *variant.stop)))
    assert (json.loads(fields[STOP_STRINGS_KEY]) if stops else fields.get(STOP_STRINGS_KEY)) == (stops or None)
    if chosen.eos:  # Dolly's answers end at "### End"
        assert fields["tokenizer.ggml.tokens"][fields["tokenizer.ggml.eos_token_id"]] == chosen.eos

    app = ZooApp(fast_settings, store, new_chat_model=model.name)
    async with app.run_test(size=SIZE) as pilot:
        chat = await send(pilot, "你好, tiny model")
        _, reply = views(chat)
        assert reply.state == "done"
    [conversation] = store.conversations()
    saved = store.messages(conversation.id)
    assert [(m.role, m.state) for m in saved] == [("user", "done"), ("assistant", "done")]
    assert saved[1].model == model.name and saved[1].stats["prompt_tokens"] > 0
    store.close()


@pytest.mark.slow
async def test_the_moderation_model_is_pulled_and_holds_a_reply_in_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path, fast_settings
):
    """GPT-JT-Moderation-6B from the catalog (a GPT-J-shaped moderator that answers "needs intervention"),
    used as the moderation model of a conversation with Dolly v1."""
    catalog = load_catalog()
    _, moderation_variant = catalog.variant("gpt-jt-moderation-6b")
    _, dolly = catalog.variant("dolly-v1-6b")
    published = write_moderator(tmp_path / "published", "needs intervention", tmp_path)
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        hub.add_repo(moderation_variant.hub_id, repo_files(published), lfs={"model.safetensors"})
        publish(hub, dolly.hub_id, "gptj")
        store = Store(isolated_dirs / DATABASE_NAME)
        jobs = Jobs(store, isolated_dirs, catalog, hub_cache=tmp_path / "hub-cache", hub_token=False)
        moderator = jobs.get_model("gpt-jt-moderation-6b")
        chat_model = jobs.get_model("dolly-v1-6b")
    assert moderator.lockfile.prompt_format == "openchatkit_moderation" and moderator.lockfile.smoke_test["passed"]

    conversation = store.create_conversation("moderated", chat_model.name)
    store.update_conversation(conversation.id, moderation_model=moderator.name)
    app = ZooApp(fast_settings, store)
    async with app.run_test(size=SIZE) as pilot:
        chat = app.active_chat
        await pilot.click(chat.query_one(PromptArea))
        await pilot.press(*"What do pandas eat?", "enter")
        await wait_until(pilot, lambda: chat.check_action("send_anyway", ()) is True)
        assert len(views(chat)) == 1
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: len(views(chat)) == 2 and not chat.generating)
    user, reply = store.messages(conversation.id)
    assert user.moderation["label"] == "needs intervention" and reply.state == "done"
    store.close()
