"""Koala from the bundled catalog to a chat tab: the EasyLM diff recipe end to end.

The committed EasyLM-format diff against the tiny LLaMA is published on the local Hub as the
variant's file in ``young-geng/koala`` (the repo's other diffs as garbage, so picking the wrong file
fails), and the tiny LLaMA as the variant's base repo. The pull downloads both, adds the diff in
the base's layout, converts to f32, smoke-tests and registers; llama.cpp's logits on the result
must be transformers' on EasyLM's own recovery, and the app then chats with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hubserver import HubServer
from logits import llama_logits, relative_error
from support import ROOT, SIZE, send, views
from tinyzoo import LFS_FILES, TINY_LLAMA, repo_files

from tui.app import ZooApp
from tui.store import DATABASE_NAME, Store
from tui.zoo.catalog import Recipe, Status, load_catalog
from tui.zoo.jobs import Jobs

KOALA = ROOT / "tests" / "fixtures" / "tiny" / "koala_diff"
KOALA_VARIANTS = [v.id for _, v in load_catalog().variants() if v.recipe is Recipe.EASYLM_DIFF]


def test_every_koala_variant_is_covered():
    assert KOALA_VARIANTS == ["koala-7b-v2", "koala-13b-v1", "koala-13b-v2"]


@pytest.mark.slow
@pytest.mark.parametrize("variant_id", KOALA_VARIANTS)
async def test_a_koala_diff_is_recovered_converted_and_chatted_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path, fast_settings, variant_id: str
):
    catalog = load_catalog()
    _, variant = catalog.variant(variant_id)
    assert variant.status is Status.SUPPORTED
    diffs = {
        f"koala_{size}_diff_{version}": b"another variant's diff"
        for size, version in (("7b", "v2"), ("13b", "v1"), ("13b", "v2"))
    }
    [wanted] = variant.files
    diffs[wanted] = (KOALA / "koala_tiny_diff").read_bytes()
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        hub.add_repo(variant.hub_id, diffs, lfs=set(diffs))
        hub.add_repo(variant.base_hub_id, repo_files(TINY_LLAMA), lfs=LFS_FILES)
        store = Store(isolated_dirs / DATABASE_NAME)
        jobs = Jobs(store, isolated_dirs, catalog, hub_cache=tmp_path / "hub-cache", hub_token=False)
        model = jobs.get_model(variant_id, "f32")

    assert model.lockfile.recipe == "easylm-diff" and model.lockfile.smoke_test["passed"]
    assert {s.get("repo") for s in model.lockfile.sources} == {variant.hub_id, variant.base_hub_id}
    assert f"{variant.hub_id}/{wanted}" in model.lockfile.inputs
    assert not any(f"{variant.hub_id}/{name}" in model.lockfile.inputs for name in diffs if name != wanted)
    reference = np.load(KOALA / "reference.npz")
    assert relative_error(llama_logits(model.path, reference["ids"]), reference["logits"]) < 1e-3

    app = ZooApp(fast_settings, store, new_chat_model=model.name)
    async with app.run_test(size=SIZE) as pilot:
        chat = await send(pilot, "Hello, koala")
        _, reply = views(chat)
        assert reply.state == "done"
    [conversation] = store.conversations()
    saved = store.messages(conversation.id)
    assert [(m.role, m.state) for m in saved] == [("user", "done"), ("assistant", "done")]
    assert saved[1].model == model.name
    store.close()
