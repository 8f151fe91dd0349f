"""`zootui arena` headless (unattended battles, battle-log export and import) and `zootui leaderboard`."""

import json
import subprocess

import pytest
from support import zootui_command
from test_ratings import TRUE_RATINGS, synthetic_votes

from tui.arena.ratings import bradley_terry
from tui.store import DATABASE_NAME, Store


def run(cli_env, *args, check=True):
    result = subprocess.run(
        zootui_command(*args), env=cli_env, capture_output=True, text=True, timeout=300, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def fastchat_log(path, votes):
    entries = [
        {
            "model_a": v.model_a,
            "model_b": v.model_b,
            "winner": v.winner.value,
            "conversation_a": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
            "conversation_b": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "b"}],
            "turn": 1,
            "anony": True,
            "tstamp": v.tstamp,
        }
        for i, v in enumerate(votes)
    ]
    path.write_text(json.dumps(entries), "utf-8")


@pytest.mark.slow  # answers with the real default model
def test_unattended_battles_wait_for_a_vote_and_name_no_model(cli_env, isolated_dirs, two_models, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"Name a fruit."\n\n{"prompt": "Name a tree."}\n{"turns": ["Name a bird.", "And a fish?"]}\n')
    result = run(cli_env, "arena", "--models", ",".join(two_models), "--prompts", str(prompts), "--threads", "2")
    assert "battle 3 of 3 answered (2 turns" in result.stderr
    assert "3 battles wait for your vote" in result.stderr
    for name in two_models:
        assert name not in result.stderr + result.stdout, "the vote comes later, blind"
    store = Store(isolated_dirs / DATABASE_NAME)
    battles = store.battles(voted=False)
    assert [b.source for b in battles] == ["unattended"] * 3
    assert {frozenset((b.model_a, b.model_b)) for b in battles} == {frozenset(two_models)}
    assert [b.prompt for b in battles] == ["Name a fruit.", "Name a tree.", "Name a bird."]
    assert all(m["content"] for b in battles for m in b.conversation_b)
    store.vote_battle(battles[0].id, "model_a")
    store.close()
    exported = json.loads(run(cli_env, "arena", "--export", "-").stdout)
    assert [entry["winner"] for entry in exported] == ["model_a"]
    assert exported[0]["conversation_a"][0] == {"role": "user", "content": "Name a fruit."}


def test_bad_prompts_file_is_one_line_and_exit_2(cli_env, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"fine"\n{"question": "no"}\n')
    result = run(cli_env, "arena", "--models", "a,b", "--prompts", str(prompts), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert f"{prompts}:2:" in result.stderr and '{"turns": ' in result.stderr


def test_models_option_needs_two_names(cli_env):
    result = run(cli_env, "arena", "--models", "only-one", "--export", "-", check=False)
    assert result.returncode == 2 and "--models takes two names" in result.stderr


def test_imported_log_gives_the_leaderboard(cli_env, tmp_path):
    votes = synthetic_votes(600, seed=21, tie_share=0.2)
    log = tmp_path / "clean_battle.json"
    fastchat_log(log, votes)
    assert "Imported 600 battles" in run(cli_env, "arena", "--import", str(log)).stderr
    assert "Imported 0 battles" in run(cli_env, "arena", "--import", str(log)).stderr
    board = json.loads(run(cli_env, "leaderboard", "--json", "--rounds", "50").stdout)
    assert board["votes"] == 600
    expected = bradley_terry(votes)
    assert [s["model"] for s in board["standings"]] == list(TRUE_RATINGS)
    for standing in board["standings"]:
        assert standing["rating"] == pytest.approx(expected[standing["model"]], abs=1e-6)
        assert standing["lower"] <= standing["rating"] <= standing["upper"]
    text = run(cli_env, "leaderboard", "--rounds", "50").stdout
    assert "alpaca" in text and "█" in text and "95% interval" in text
    assert "share of decided votes the row won" in text


def test_bad_battle_log_is_one_line_and_exit_2(cli_env, tmp_path):
    log = tmp_path / "log.json"
    log.write_text('[{"model_a": "x", "model_b": "y", "winner": "leftvote", "tstamp": 1}]')
    result = run(cli_env, "arena", "--import", str(log), check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"zootui: {log}: battle 1: 'winner' is 'leftvote'; it must be one of 'model_a', 'model_b', 'tie', 'tie (bothbad)'."
    )


def test_leaderboard_without_votes_says_how_to_get_some(cli_env):
    assert "No votes yet" in run(cli_env, "leaderboard").stdout


def test_arena_with_an_unknown_model_is_one_line_before_the_app_opens(cli_env):
    result = run(cli_env, "arena", "--models", "vicuna-99b,random", check=False)
    assert result.returncode == 2 and "no model named 'vicuna-99b'" in result.stderr
