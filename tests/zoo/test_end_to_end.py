"""From a catalog entry to a chat tab: download base and delta from a local Hub, rebuild, convert,
smoke-test, register, then chat with the result in the app.

Everything is real: the HTTP server huggingface_hub talks to, SQLite, the converters, llama.cpp
and the Textual app driven through Pilot.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from support import SIZE, send, views
from tinyzoo import VARIANT, serve_tiny_zoo

from tui.app import ZooApp
from tui.store import DATABASE_NAME, Store
from tui.zoo.library import converted_quants, resolve_model

# Tensors the LLaMA converter copies row for row (Q and K rows are reordered for llama.cpp's rotary layout).
SAME_LAYOUT = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output.weight": "lm_head.weight",
    "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
    "blk.1.ffn_down.weight": "model.layers.1.mlp.down_proj.weight",
    "output_norm.weight": "model.norm.weight",
}


async def test_a_catalog_delta_is_rebuilt_registered_and_chatted_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path, fast_settings
):
    with serve_tiny_zoo(tmp_path, monkeypatch) as zoo:
        model = zoo.jobs(isolated_dirs).get_model(VARIANT, "f16")
        expected = zoo.expected_weights()

    tensors = {t.name: t for t in gguf.GGUFReader(model.path).tensors}
    for gguf_name, checkpoint_name in SAME_LAYOUT.items():
        np.testing.assert_array_equal(
            tensors[gguf_name].data, expected[checkpoint_name].astype(tensors[gguf_name].data.dtype)
        )
    assert model.lockfile.smoke_test["passed"]
    assert converted_quants(isolated_dirs) == {VARIANT: ["f16"]}
    assert resolve_model(model.name, isolated_dirs).path == model.path

    store = Store(isolated_dirs / DATABASE_NAME)
    app = ZooApp(fast_settings, store, new_chat_model=model.name)
    async with app.run_test(size=SIZE) as pilot:
        chat = await send(pilot, "Hello, tiny model")
        _, reply = views(chat)
        assert reply.content and reply.state == "done"
    [conversation] = store.conversations()
    assert conversation.model == model.name
    saved = store.messages(conversation.id)
    assert [(m.role, m.content) for m in saved] == [("user", "Hello, tiny model"), ("assistant", reply.content)]
    assert saved[1].model == model.name and saved[1].state == "done"
    store.close()
