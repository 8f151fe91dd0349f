"""Battles: two models answer the same prompts with their names hidden, and a vote ends the battle.

As in FastChat's anonymous arena (``fastchat/serve/gradio_block_arena_anony.py``): the pair is two
different models, at random unless chosen, on sides drawn at random; every follow-up goes to both
sides; the vote (left, right, tie, both bad) reveals the names and closes the battle. The CLI (unattended
battles) and the arena screen both run battles through this service.

Both sides answer at once when the two models fit in memory together (``Engines.room_for``, from the fit
estimate); otherwise one after the other, and ``plan`` says why.
"""

from __future__ import annotations

import concurrent.futures
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tui.arena import RANDOM, ArenaError
from tui.arena.ratings import BOOTSTRAP_ROUNDS, BOOTSTRAP_SEED, Leaderboard, Vote, Winner, leaderboard
from tui.chat import default_params
from tui.config import Settings
from tui.engine import ChatEngine, ChatMessage, EngineError, Engines, ReplyStats, SamplingParams
from tui.store import Battle, Store
from tui.zoo.library import library_models

SIDES = ("a", "b")


@dataclass(frozen=True)
class Plan:
    together: bool
    """Both sides answer at once; otherwise A answers, then B."""
    reason: str

    def describe(self) -> str:
        if self.together:
            return "both answer at once"
        return f"they answer one after the other: the two models do not fit in memory together ({self.reason})"


@dataclass(frozen=True)
class Answer:
    text: str
    stats: ReplyStats | None
    error: str | None = None
    """Why the answer stopped short; what was generated before is kept."""
    bug: Exception | None = field(default=None, repr=False, compare=False)
    """An unexpected failure: a bug on one side must not lose the other side's answer, nor be hidden."""

    @property
    def state(self) -> str:
        if self.error is not None:
            return "error"
        if self.stats is not None and self.stats.finish_reason == "cancelled":
            return "stopped"
        return "done"


OnText = Callable[[str, str], None]
"""Called with (side, text delta) while the answers stream, from the generating threads."""


class ArenaService:
    def __init__(self, store: Store, settings: Settings, engines: Engines, rng: random.Random | None = None):
        self.store = store
        self.settings = settings
        self.engines = engines
        self._rng = rng or random.Random()
        # Two long-lived threads answer for the sides: llama.cpp's OpenMP team belongs to the thread that
        # computes, and a new thread per answer would build a new team each time while the last one's
        # workers may still spin.
        self._sides = concurrent.futures.ThreadPoolExecutor(max_workers=len(SIDES), thread_name_prefix="arena-side")

    def close(self) -> None:
        self._sides.shutdown(wait=False, cancel_futures=True)

    def models(self) -> list[str]:
        """The library models a battle can pick."""
        return [model.name for model in library_models(self.engines.data_dir)]

    def pick_pair(self, first: str = RANDOM, second: str = RANDOM) -> tuple[str, str]:
        """Two different models (RANDOM: any library model), on sides drawn at random so that the chooser
        does not know which is which."""
        library = self.models()
        chosen = [name for name in (first, second) if name != RANDOM]
        for name in chosen:
            self._engine(name)  # an unknown model is an error now, not halfway through a battle
        if len(chosen) == 2 and chosen[0] == chosen[1]:
            raise ArenaError(f"both sides are {chosen[0]}; a battle needs two different models.")
        others = [name for name in library if name not in chosen]
        missing = 2 - len(chosen)
        if len(others) < missing:
            raise ArenaError(
                f"a battle needs two different models and the library has {len(library)}; "
                f"get another one with `zootui pull` or the model browser (ctrl+b)."
            )
        pair = chosen + self._rng.sample(others, missing)
        self._rng.shuffle(pair)
        return pair[0], pair[1]

    def start(self, model_a: str, model_b: str, *, source: str = "arena") -> Battle:
        params = {**default_params(self.settings).to_dict(), "system_prompt": self.settings.chat.system_prompt}
        return self.store.create_battle(model_a, model_b, params, question_id=uuid.uuid4().hex, source=source)

    def _engine(self, model: str) -> ChatEngine:
        try:
            return self.engines.for_model(model)
        except EngineError as error:
            raise ArenaError(str(error)) from error

    def plan(self, battle: Battle) -> Plan:
        room = self.engines.room_for(
            [self._engine(battle.model_a), self._engine(battle.model_b)], self._params(battle).n_ctx
        )
        return Plan(room.fits, room.reason)

    def _params(self, battle: Battle) -> SamplingParams:
        return SamplingParams.from_dict(battle.params, default_params(self.settings))

    def _history(self, battle: Battle, conversation: list[dict]) -> list[ChatMessage]:
        system = battle.params.get("system_prompt", "")
        messages: list[ChatMessage] = [{"role": "system", "content": system}] if system.strip() else []
        return messages + [{"role": m["role"], "content": m["content"]} for m in conversation]

    def answer(
        self, battle: Battle, prompt: str, cancel: threading.Event, on_text: OnText = lambda side, text: None
    ) -> tuple[Battle, dict[str, Answer]]:
        """Send ``prompt`` to both sides and stream their answers; both are saved with the battle."""
        if battle.winner is not None:
            raise ArenaError("this battle has been voted on; start a new one.")
        if not prompt.strip():
            raise ArenaError("the prompt is empty.")
        battle = self.store.battle(battle.id)
        conversations = {
            "a": battle.conversation_a + [{"role": "user", "content": prompt}],
            "b": battle.conversation_b + [{"role": "user", "content": prompt}],
        }
        self.store.save_battle_conversations(battle.id, conversations["a"], conversations["b"])
        engines = {"a": self._engine(battle.model_a), "b": self._engine(battle.model_b)}
        params = self._params(battle)
        answers: dict[str, Answer] = {}

        def run(side: str) -> Answer:
            history = self._history(battle, conversations[side])
            return self._stream(engines[side], history, params, cancel, lambda text: on_text(side, text))

        together = self.plan(battle).together
        running = {}
        try:
            for side in SIDES:
                running[side] = self._sides.submit(run, side)
                if not together:
                    answers[side] = running[side].result()
            for side in SIDES:
                answers[side] = running[side].result()
        finally:
            if len(answers) < len(SIDES):  # interrupted (ctrl+c): both sides stop, and are waited for
                cancel.set()
                concurrent.futures.wait(running.values())
        for side in SIDES:
            answer = answers[side]
            entry: dict = {"role": "assistant", "content": answer.text, "state": answer.state}
            if answer.stats is not None:
                entry["stats"] = answer.stats.to_dict()
            if answer.error is not None:
                entry["error"] = answer.error
            conversations[side].append(entry)
        self.store.save_battle_conversations(battle.id, conversations["a"], conversations["b"])
        bug = next((answer.bug for answer in answers.values() if answer.bug is not None), None)
        if bug is not None:
            raise bug
        return self.store.battle(battle.id), answers

    @staticmethod
    def _stream(engine, history, params, cancel: threading.Event, on_text: Callable[[str], None]) -> Answer:
        parts: list[str] = []
        stats = None
        try:
            for event in engine.stream(history, params, cancel):
                if isinstance(event, ReplyStats):
                    stats = event
                elif isinstance(event, str):  # progress before the first token is not part of the answer
                    parts.append(event)
                    on_text(event)
        except EngineError as error:
            return Answer("".join(parts), stats, str(error))
        except Exception as error:  # noqa: BLE001 - raised again once both sides are saved
            return Answer("".join(parts), stats, f"the answer failed unexpectedly: {error!r}", bug=error)
        return Answer("".join(parts), stats)

    def vote(self, battle: Battle, winner: Winner) -> Battle:
        if battle.winner is not None:
            raise ArenaError("this battle has been voted on already.")
        if not battle.conversation_a:
            raise ArenaError("nothing to vote on yet: send a prompt first.")
        return self.store.vote_battle(battle.id, winner.value)

    def waiting(self) -> list[Battle]:
        """Battles answered but not voted on (unattended runs, battles left without a vote), oldest first."""
        return [b for b in self.store.battles(voted=False) if any(m["role"] == "assistant" for m in b.conversation_a)]

    def votes(self) -> list[Vote]:
        return [Vote(a, b, Winner(winner), voted_at) for a, b, winner, voted_at in self.store.battle_votes()]

    def leaderboard(self, rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED) -> Leaderboard:
        return leaderboard(self.votes(), rounds, seed)
