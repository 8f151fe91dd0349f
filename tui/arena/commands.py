"""`zootui arena` (its headless parts) and `zootui leaderboard`: arguments in, service calls, console out.

Every user error is an ArenaError with one line; the CLI turns it into exit code 2. What the commands
use is imported inside them: building the parser must stay quick.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from converters import EXIT_FAILED
from tui.arena import RANDOM, ArenaError
from tui.arena.ratings import BOOTSTRAP_ROUNDS, BOOTSTRAP_SEED

if TYPE_CHECKING:
    from tui.arena.service import ArenaService


def add_arena_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        metavar="A,B",
        help=f"the two models (library names; {RANDOM} for any); default: two at random",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE.jsonl",
        help='run a battle per line unattended (a JSON string, {"prompt": ...} or {"turns": [...]}), to vote on later',
    )
    mode.add_argument("--export", metavar="FILE", help='write the voted battles as a FastChat battle log ("-": stdout)')
    mode.add_argument(
        "--import", dest="import_path", type=Path, metavar="FILE", help="add a FastChat battle log's votes"
    )


def pair_choice(models: str | None) -> tuple[str, str]:
    if models is None:
        return RANDOM, RANDOM
    names = [name.strip() for name in models.split(",")]
    if len(names) != 2 or not all(names):
        raise ArenaError(f"--models takes two names separated by a comma (A,B; {RANDOM} for any), not {models!r}.")
    return names[0], names[1]


def is_headless(args: argparse.Namespace) -> bool:
    return bool(args.prompts or args.export or args.import_path)


def run_headless(args: argparse.Namespace, service: ArenaService) -> int:
    if args.export:
        return _export(args.export, service)
    if args.import_path:
        return _import(args.import_path, service)
    return _unattended(args.prompts, pair_choice(args.models), service)


def _export(target: str, service: ArenaService) -> int:
    from tui.arena.battlelog import export_log

    battles = service.store.battles(voted=True)
    text = export_log(battles)
    if target == "-":
        sys.stdout.write(text)
    else:
        from tui.files import write_atomically

        try:
            write_atomically(Path(target), text)
        except OSError as error:
            raise ArenaError(f"cannot write {target}: {error.strerror or error}") from error
        print(f"Wrote {len(battles)} battles to {target}", file=sys.stderr)
    return 0


def _import(path: Path, service: ArenaService) -> int:
    from tui.arena.battlelog import BattleLogError, read_log

    try:
        log = read_log(path)
    except BattleLogError as error:
        raise ArenaError(str(error)) from error
    added = service.store.import_battles(log.battles)
    notes = [f"{len(log.battles) - added} already here"] if added < len(log.battles) else []
    if log.named:
        notes.append(f"{log.named} left out: their voters saw the names (FastChat counts only anonymous votes)")
    print(f"Imported {added} battles from {path}" + (f" ({'; '.join(notes)})" if notes else ""), file=sys.stderr)
    return 0


def _unattended(path: Path, pair: tuple[str, str], service: ArenaService) -> int:
    from tui.arena.prompts import PromptsError, read_prompts

    try:
        prompts = read_prompts(path)
    except PromptsError as error:
        raise ArenaError(str(error)) from error
    cancel = threading.Event()
    failed = 0
    for number, turns in enumerate(prompts, start=1):
        # Names stay out of the output: the vote comes later, and blind.
        battle = service.start(*service.pick_pair(*pair), source="unattended")
        if number == 1 or pair[0] == RANDOM or pair[1] == RANDOM:
            print(f"battle {number}: {service.plan(battle).describe()}", file=sys.stderr)
        started = time.monotonic()
        for turn in turns:
            battle, answers = service.answer(battle, turn, cancel)
            error = next((answer.error for answer in answers.values() if answer.error), None)
            if error is not None:
                failed += 1
                print(f"battle {number} of {len(prompts)}: an answer failed: {error}", file=sys.stderr)
                break
        else:
            print(
                f"battle {number} of {len(prompts)} answered ({len(turns)} turns, {time.monotonic() - started:.1f} s)",
                file=sys.stderr,
            )
    print(
        f"{len(prompts) - failed} battles wait for your vote: open the arena (`zootui arena`) and press v.",
        file=sys.stderr,
    )
    return EXIT_FAILED if failed else 0


def add_leaderboard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--rounds",
        type=int,
        default=BOOTSTRAP_ROUNDS,
        metavar="N",
        help=f"bootstrap rounds for the intervals (default {BOOTSTRAP_ROUNDS})",
    )
    parser.add_argument(
        "--seed", type=int, default=BOOTSTRAP_SEED, metavar="S", help=f"bootstrap seed (default {BOOTSTRAP_SEED})"
    )


def run_leaderboard(args: argparse.Namespace, service: ArenaService) -> int:
    from tui.arena.report import render

    if args.rounds < 1:
        raise ArenaError(f"--rounds must be at least 1, not {args.rounds}.")
    board = service.leaderboard(args.rounds, args.seed)
    if args.json:
        print(json.dumps(board.to_dict(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(render(board))
    return 0
