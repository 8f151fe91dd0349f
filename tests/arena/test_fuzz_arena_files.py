"""Fuzzing the readers of files a user brings to the arena: battle logs and prompt files.

Any JSON (and any bytes, for a prompt file's lines) must be read or refused with the reader's own
one-line error, within bounded time and memory.
"""

from __future__ import annotations

import json
import time

from fuzzing import EXAMPLE_GROWTH_KIB, EXAMPLE_SECONDS, peak_rss_kib
from hypothesis import event, given
from hypothesis import strategies as st
from test_battlelog import FASTCHAT_ENTRY

from tui.arena.battlelog import BattleLogError, read_log
from tui.arena.prompts import PromptsError, read_prompts

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
# Battles that are FastChat's shape but for some keys: most of them get past the first check.
near_battles = st.dictionaries(st.sampled_from(sorted(FASTCHAT_ENTRY)), json_values, max_size=4).map(
    lambda changes: {**FASTCHAT_ENTRY, **changes}
)


def read_or_refuse(reader, error_type, path) -> None:
    started, grown_from = time.monotonic(), peak_rss_kib()
    try:
        reader(path)
        event("accepted")
    except error_type as error:
        assert "\n" not in str(error) and str(path) in str(error)
        event("refused")
    assert time.monotonic() - started < EXAMPLE_SECONDS
    assert peak_rss_kib() - grown_from < EXAMPLE_GROWTH_KIB


@given(st.one_of(json_values, st.lists(near_battles, max_size=4)))
def test_fuzz_battle_logs(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("fuzz") / "log.json"
    path.write_text(json.dumps(document), "utf-8")
    read_or_refuse(read_log, BattleLogError, path)


@given(
    st.lists(
        st.one_of(json_values.map(json.dumps), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))), max_size=6
    )
)
def test_fuzz_prompt_files(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "prompts.jsonl"
    path.write_text("\n".join(lines), "utf-8")
    read_or_refuse(read_prompts, PromptsError, path)
