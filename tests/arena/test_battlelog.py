"""Battles in SQLite, and FastChat's battle-log JSON out and in."""

import json

import pytest

from tui.arena.battlelog import MAX_LOG_BYTES, BattleLogError, export_log, read_log
from tui.store import SCHEMA_VERSION, Store

# The shape of one entry of FastChat's clean_battle_conv_*.json (fastchat/serve/monitor/clean_battle_data.py).
FASTCHAT_ENTRY = {
    "question_id": "5b6d1f9e2a3c4d8e",
    "model_a": "vicuna-13b",
    "model_b": "koala-13b",
    "winner": "tie (bothbad)",
    "judge": "arena_user_1",
    "conversation_a": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ],
    "conversation_b": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "5"},
    ],
    "turn": 1,
    "anony": True,
    "language": "English",
    "tstamp": 1682351591.1322,
}


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    yield store
    store.close()


def answered_battle(store, model_a="alpaca", model_b="dolly", winner=None):
    battle = store.create_battle(model_a, model_b, {"temperature": 0.7}, question_id=f"{model_a}-{model_b}")
    store.save_battle_conversations(
        battle.id,
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "state": "done", "stats": {"completion_tokens": 2}},
        ],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey", "state": "done"}],
    )
    return store.vote_battle(battle.id, winner) if winner else store.battle(battle.id)


def test_battles_are_stored_with_both_conversations_settings_and_times(store, tmp_path):
    battle = answered_battle(store, winner="model_b")
    reopened = Store(tmp_path / "db.sqlite3")
    again = reopened.battle(battle.id)
    reopened.close()
    assert again.model_a == "alpaca" and again.model_b == "dolly" and again.winner == "model_b"
    assert again.params == {"temperature": 0.7}
    assert again.prompt == "Hi" and again.turns == 1
    assert again.conversation_a[1]["stats"] == {"completion_tokens": 2}
    assert again.created_at <= again.voted_at
    assert store.schema_version() == SCHEMA_VERSION


def test_unvoted_battles_wait(store):
    waiting = answered_battle(store, "alpaca", "dolly")
    answered_battle(store, "koala", "baize", winner="tie")
    assert [b.id for b in store.battles(voted=False)] == [waiting.id]
    assert len(store.battles(voted=True)) == 1


def test_export_is_fastchat_shaped_and_imports_back(store, tmp_path):
    answered_battle(store, winner="model_a")
    answered_battle(store, "koala", "baize")  # not voted: not exported
    entries = json.loads(export_log(store.battles()))
    assert len(entries) == 1
    entry = entries[0]
    assert set(entry) == {
        "question_id", "model_a", "model_b", "winner", "judge", "conversation_a", "conversation_b", "turn", "anony", "tstamp"
    }  # fmt: skip
    assert entry["conversation_a"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert entry["turn"] == 1 and entry["anony"] is True and entry["winner"] == "model_a"
    path = tmp_path / "log.json"
    path.write_text(export_log(store.battles()), "utf-8")
    other = Store(tmp_path / "other.sqlite3")
    assert other.import_battles(read_log(path).battles) == 1
    assert other.import_battles(read_log(path).battles) == 0, "the same battles twice are added once"
    imported = other.battles()[0]
    other.close()
    assert (imported.model_a, imported.winner, imported.source) == ("alpaca", "model_a", "import")
    assert imported.conversation_b[1]["content"] == "Hey"


def test_reads_fastchat_battle_log_and_leaves_named_votes_out(tmp_path):
    named = {**FASTCHAT_ENTRY, "question_id": "named", "anony": False}
    no_id = {key: value for key, value in FASTCHAT_ENTRY.items() if key != "question_id"}
    path = tmp_path / "clean_battle_conv_20230424.json"
    path.write_text(json.dumps([FASTCHAT_ENTRY, named, no_id]), "utf-8")
    log = read_log(path)
    assert log.named == 1
    assert [b.winner for b in log.battles] == ["tie (bothbad)", "tie (bothbad)"]
    assert log.battles[0].question_id == "5b6d1f9e2a3c4d8e"
    assert log.battles[1].question_id == read_log(path).battles[1].question_id, "a missing id is derived, stably"
    assert log.battles[0].voted_at == FASTCHAT_ENTRY["tstamp"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"winner": "leftvote"}, r"battle 1: 'winner' is 'leftvote'; it must be one of 'model_a'"),
        ({"winner": []}, r"battle 1: 'winner' is \[\]; it must be one of"),  # found by the fuzzer
        ({"model_b": "vicuna-13b"}, "battle 1: model_a and model_b are both"),
        ({"model_a": ""}, "battle 1: 'model_a' must be a model name"),
        ({"tstamp": "yesterday"}, "battle 1: 'tstamp' must be the vote's time"),
        ({"tstamp": True}, "battle 1: 'tstamp' must be the vote's time"),
        ({"conversation_a": [{"role": "user"}]}, "battle 1: 'conversation_a' must be a list of"),
        ({"conversation_b": [{"role": "system", "content": "x"}]}, "battle 1: 'conversation_b' must be a list of"),
        ({"turn": -1}, "battle 1: 'turn' must be a whole number"),
        ({"anony": "yes"}, "battle 1: 'anony' must be true or false"),
        ({"question_id": 7}, "battle 1: 'question_id' must be a non-empty string"),
    ],
)
def test_bad_entries_are_one_line_naming_battle_and_key(tmp_path, change, message):
    path = tmp_path / "log.json"
    path.write_text(json.dumps([{**FASTCHAT_ENTRY, **change}]), "utf-8")
    with pytest.raises(BattleLogError, match=message) as raised:
        read_log(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b'{"battles": []}', "a battle log is a JSON list of battles"),
        (b"[1]", "battle 1 is not a JSON object"),
        (b"\xff\xfe[]", "is not UTF-8 text"),
    ],
)
def test_bad_files_are_one_line(tmp_path, content, message):
    path = tmp_path / "log.json"
    path.write_bytes(content)
    with pytest.raises(BattleLogError, match=message):
        read_log(path)


def test_oversized_and_missing_logs_are_refused(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:
        handle.truncate(MAX_LOG_BYTES + 1)
    with pytest.raises(BattleLogError, match="split it into smaller files"):
        read_log(big)
    with pytest.raises(BattleLogError, match="cannot read"):
        read_log(tmp_path / "missing.json")
