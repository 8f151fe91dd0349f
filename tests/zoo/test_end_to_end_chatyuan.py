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
from support import ROOT, chat_in_app
from tinyzoo import pull_from_local_hub, repo_files

from converters import PROMPT_FORMAT_KEY
from tui.engine import Engines
from tui.engine.encdec import EncoderDecoderEngine
from tui.zoo.catalog import Status, load_catalog
from tui.zoo.templates import prompt_format

CHATYUAN_TINY = ROOT / "tests" / "fixtures" / "tiny" / "t5_gated"
VARIANTS = ["chatyuan-large-v1", "chatyuan-large-v2"]


@pytest.mark.slow
@pytest.mark.parametrize("variant_id", VARIANTS)
async def test_chatyuan_is_pulled_converted_and_chatted_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path, fast_settings, variant_id: str
):
    assert load_catalog().variant(variant_id)[1].status is Status.SUPPORTED
    model, store = pull_from_local_hub(variant_id, repo_files(CHATYUAN_TINY), tmp_path, monkeypatch, isolated_dirs)

    smoke = model.lockfile.smoke_test
    assert smoke["passed"] and smoke["tokens"] > 0 and model.lockfile.quant == "q4_k_m"
    fields = {name: field.contents() for name, field in gguf.GGUFReader(model.path).fields.items()}
    assert fields["general.architecture"] == "t5" and fields["tokenizer.ggml.model"] == "t5"
    assert fields["tokenizer.chat_template"] == prompt_format("chatyuan").template
    assert fields[PROMPT_FORMAT_KEY] == "chatyuan"

    assert isinstance(Engines(fast_settings, isolated_dirs).for_model(model.name), EncoderDecoderEngine)
    saved = await chat_in_app(fast_settings, store, model.name, "动物园几点开门？", "谢谢")
    first_stats, second_stats = saved[1].stats, saved[3].stats
    # Every turn encodes the whole dialog: the second turn encodes the first one again.
    assert first_stats["encoded_tokens"] == first_stats["prompt_tokens"] > 0
    assert second_stats["encoded_tokens"] > first_stats["encoded_tokens"] + first_stats["completion_tokens"]
    store.close()
