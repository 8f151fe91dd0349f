"""Battles in FastChat's battle-log JSON, out and in.

The shape is the one lm-sys/FastChat's ``fastchat/serve/monitor/clean_battle_data.py`` writes and its
``elo_analysis.py`` reads: a JSON list, oldest first, of

    {"question_id": str, "model_a": str, "model_b": str,
     "winner": "model_a" | "model_b" | "tie" | "tie (bothbad)", "judge": str,
     "conversation_a": [{"role": "user" | "assistant", "content": str}, ...], "conversation_b": [...],
     "turn": int (user turns), "anony": bool, "tstamp": float (the vote, Unix seconds)}

FastChat's leaderboard counts only anonymous battles (``anony`` true), so an import leaves the others out.
Other keys (language, conv_metadata, ...) are ignored. A bad file ends in one line naming the file, the
battle and the key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui.arena.ratings import Winner
from tui.store import Battle

# A log of a hundred thousand multi-turn battles is a few hundred MB; json.load holds several times a
# file's size, so a bound keeps a wrong file from taking the machine's memory.
MAX_LOG_BYTES = 256 * 2**20
MAX_NAME_LENGTH = 200
JUDGE = "zootui"
ROLES = ("user", "assistant")


class BattleLogError(ValueError):
    """A battle log that cannot be read; the message names the file, the battle and the fix."""


def export_log(battles: list[Battle]) -> str:
    """Voted battles as a FastChat battle log (JSON text)."""
    voted = sorted((battle for battle in battles if battle.winner is not None), key=lambda b: b.voted_at or 0.0)
    entries = [
        {
            "question_id": battle.question_id,
            "model_a": battle.model_a,
            "model_b": battle.model_b,
            "winner": battle.winner,
            "judge": JUDGE,
            "conversation_a": _plain(battle.conversation_a),
            "conversation_b": _plain(battle.conversation_b),
            "turn": battle.turns,
            "anony": True,  # names are hidden until the vote in zootui's arena
            "tstamp": battle.voted_at,
        }
        for battle in voted
    ]
    return json.dumps(entries, ensure_ascii=False, indent=2) + "\n"


def _plain(conversation: list[dict[str, Any]]) -> list[dict[str, str]]:
    """FastChat's conversation entries: the user and assistant turns, role and content only."""
    return [{"role": m["role"], "content": m["content"]} for m in conversation if m["role"] in ROLES]


@dataclass(frozen=True)
class ImportedLog:
    battles: list[Battle]
    """Anonymous battles, ready for ``Store.import_battles``."""
    named: int
    """Battles left out because the voter saw the names (``anony`` false)."""


def read_log(path: Path) -> ImportedLog:
    try:
        size = path.stat().st_size
        if size > MAX_LOG_BYTES:
            raise BattleLogError(
                f"{path}: {size / 2**20:.0f} MB is more than the {MAX_LOG_BYTES // 2**20} MB a battle log may be; "
                f"split it into smaller files."
            )
        document = json.loads(path.read_text("utf-8"))
    except OSError as error:
        raise BattleLogError(f"cannot read {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise BattleLogError(f"{path} is not UTF-8 text; a battle log is JSON.") from error
    except json.JSONDecodeError as error:
        raise BattleLogError(f"{path} is not valid JSON ({error}); a battle log is a JSON list of battles.") from error
    if not isinstance(document, list):
        raise BattleLogError(
            f"{path}: a battle log is a JSON list of battles (FastChat's clean_battle format), not a {type(document).__name__}."
        )
    battles: list[Battle] = []
    named = 0
    for position, entry in enumerate(document, start=1):
        where = f"{path}: battle {position}"
        if not isinstance(entry, dict):
            raise BattleLogError(
                f"{where} is not a JSON object; each battle is an object with model_a, model_b, winner, ..."
            )
        anony = entry.get("anony", True)
        if not isinstance(anony, bool):
            raise BattleLogError(f"{where}: 'anony' must be true or false.")
        battle = _battle(entry, where)
        if anony:
            battles.append(battle)
        else:
            named += 1
    return ImportedLog(battles, named)


def _battle(entry: dict[str, Any], where: str) -> Battle:
    model_a, model_b = _name(entry, "model_a", where), _name(entry, "model_b", where)
    if model_a == model_b:
        raise BattleLogError(f"{where}: model_a and model_b are both {model_a!r}; a battle needs two models.")
    winner = entry.get("winner")
    if not isinstance(winner, str) or winner not in {w.value for w in Winner}:
        raise BattleLogError(
            f"{where}: 'winner' is {winner!r}; it must be one of {', '.join(repr(w.value) for w in Winner)}."
        )
    tstamp = entry.get("tstamp")
    if isinstance(tstamp, bool) or not isinstance(tstamp, (int, float)) or not math.isfinite(tstamp) or tstamp < 0:
        raise BattleLogError(f"{where}: 'tstamp' must be the vote's time in Unix seconds (a number), not {tstamp!r}.")
    conversation_a = _conversation(entry, "conversation_a", where)
    conversation_b = _conversation(entry, "conversation_b", where)
    turn = entry.get("turn")
    if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int) or turn < 0):
        raise BattleLogError(f"{where}: 'turn' must be a whole number of turns, not {turn!r}.")
    question_id = entry.get("question_id")
    if question_id is None:
        # A log without ids still imports once only: the battle's own content names it.
        canonical = json.dumps([model_a, model_b, winner, tstamp, conversation_a, conversation_b], ensure_ascii=False)
        question_id = "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    elif not isinstance(question_id, str) or not question_id:
        raise BattleLogError(f"{where}: 'question_id' must be a non-empty string.")
    return Battle(
        id=0,
        question_id=question_id,
        model_a=model_a,
        model_b=model_b,
        conversation_a=conversation_a,
        conversation_b=conversation_b,
        winner=winner,
        source="import",
        created_at=float(tstamp),
        voted_at=float(tstamp),
    )


def _name(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        raise BattleLogError(f"{where}: {key!r} must be a model name (a string of 1 to {MAX_NAME_LENGTH} characters).")
    return value


def _conversation(entry: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in value
    ):
        raise BattleLogError(
            f'{where}: {key!r} must be a list of {{"role": "user" or "assistant", "content": text}} messages.'
        )
    return [{"role": m["role"], "content": m["content"]} for m in value]
