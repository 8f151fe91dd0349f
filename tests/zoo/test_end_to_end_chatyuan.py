"""ChatYuan-large v1 and v2 (T5) from the bundled catalog to a chat tab.

The ChatYuan-shaped tiny T5 (gated GELU, its own head, a pickled pytorch_model.bin with spiece.model) is
published on the local Hub under each variant's real Hub id, so the pull uses the catalog entry itself:
it downloads, converts to llama.cpp's t5 with ChatYuan's prompt format, quantizes to the default type,
smoke-tests through the encoder and registers; the app then chats with it through the encoder-decoder
engine, which encodes the whole dialog every turn.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from hubserver import HubServer
from support import ROOT, SIZE, send, views
from tinyzoo import repo_files

from converters import PROMPT_FORMAT_KEY
from tui.app import ZooApp
from tui.engine.encdec import EncoderDecoderEngine
from tui.store import DATABASE_NAME, Store
from tui.zoo.catalog import Status, load_catalog
from tui.zoo.jobs import Jobs
from tui.zoo.templates import prompt_format

CHATYUAN_TINY = ROOT / "tests" / "fixtures" / "tiny" / "t5_gated"
VARIANTS = ["chatyuan-large-v1", "chatyuan-large-v2"]


@pytest.mark.slow
@pytest.mark.parametrize("variant_id", VARIANTS)
async def test_chatyuan_is_pulled_converted_and_chatted_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path, fast_settings, variant_id: str
):
    catalog = load_catalog()
    _, variant = catalog.variant(variant_id)
    assert variant.status is Status.SUPPORTED
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        hub.add_repo(variant.hub_id, repo_files(CHATYUAN_TINY), lfs={"pytorch_model.bin", "spiece.model"})
        store = Store(isolated_dirs / DATABASE_NAME)
        jobs = Jobs(store, isolated_dirs, catalog, hub_cache=tmp_path / "hub-cache", hub_token=False)
        model = jobs.get_model(variant_id)

    smoke = model.lockfile.smoke_test
    assert smoke["passed"] and smoke["tokens"] > 0 and model.lockfile.quant == "q4_k_m"
    fields = {name: field.contents() for name, field in gguf.GGUFReader(model.path).fields.items()}
    assert fields["general.architecture"] == "t5" and fields["tokenizer.ggml.model"] == "t5"
    assert fields["tokenizer.chat_template"] == prompt_format("chatyuan").template
    assert fields[PROMPT_FORMAT_KEY] == "chatyuan"

    app = ZooApp(fast_settings, store, new_chat_model=model.name)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.engines.for_model(model.name), EncoderDecoderEngine)
        chat = await send(pilot, "动物园几点开门？")
        _, first = views(chat)
        assert first.state == "done"
        chat = await send(pilot, "谢谢")
        _, _, _, second = views(chat)
        assert second.state == "done"
    [conversation] = store.conversations()
    saved = store.messages(conversation.id)
    assert [(m.role, m.state) for m in saved] == [("user", "done"), ("assistant", "done")] * 2
    first_stats, second_stats = saved[1].stats, saved[3].stats
    # Every turn encodes the whole dialog: the second turn encodes the first one again.
    assert first_stats["encoded_tokens"] == first_stats["prompt_tokens"] > 0
    assert second_stats["encoded_tokens"] > first_stats["encoded_tokens"] + first_stats["completion_tokens"]
    store.close()
