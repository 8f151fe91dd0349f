"""Prompt files for unattended battles: JSON Lines, one battle a line.

A line is a JSON string (one prompt), an object with "prompt" (one prompt), or an object with "turns"
(a list of prompts sent one after the other, as in FastChat's MT-bench question.jsonl). Blank lines are
skipped. A bad line ends in one line naming the file, the line and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_PROMPTS_BYTES = 16 * 2**20
SHAPE = 'each line must be a JSON string, {"prompt": "..."} or {"turns": ["...", ...]}'


class PromptsError(ValueError):
    pass


def read_prompts(path: Path) -> list[list[str]]:
    """The battles a prompts file asks for, each as its list of turns."""
    try:
        if path.stat().st_size > MAX_PROMPTS_BYTES:
            raise PromptsError(f"{path} is larger than {MAX_PROMPTS_BYTES // 2**20} MB; split it into smaller files.")
        lines = path.read_text("utf-8").splitlines()
    except OSError as error:
        raise PromptsError(f"cannot read {path}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise PromptsError(f"{path} is not UTF-8 text; {SHAPE}.") from error
    battles = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptsError(f"{path}:{number}: not JSON ({error.msg}); {SHAPE}.") from error
        if isinstance(value, dict):
            value = value.get("turns", value.get("prompt"))
        turns = [value] if isinstance(value, str) else value
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise PromptsError(f"{path}:{number}: {SHAPE}, with no empty prompt.")
        battles.append(turns)
    if not battles:
        raise PromptsError(f"{path} holds no prompts; {SHAPE}.")
    return battles
