"""ChatGLM2/3 and Dolly v1 (GPT-J) from the bundled catalog to a chat tab.

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
from support import ROOT, SIZE, send, views
from tinyzoo import repo_files

from converters.convert import STOP_STRINGS_KEY
from tui.app import ZooApp
from tui.store import DATABASE_NAME, Store
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
