"""The arena: two hidden models answer side by side; a vote names them. Thin over ``tui.arena.service``."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, Select

from tui.arena import RANDOM, ArenaError
from tui.arena.ratings import Winner
from tui.arena.service import SIDES, Answer, ArenaService, Plan
from tui.collector import COLLECTOR
from tui.store import Battle
from tui.widgets.chat_pane import DeltaBatcher
from tui.widgets.message import MessageView
from tui.widgets.prompt import PromptArea

VOTES = (
    ("1", Winner.MODEL_A, "A is better"),
    ("2", Winner.MODEL_B, "B is better"),
    ("3", Winner.TIE, "Tie"),
    ("4", Winner.BOTH_BAD, "Both are bad"),
)
VOTE_LABELS = {winner: label for _, winner, label in VOTES}


class ArenaScreen(Screen):
    DEFAULT_CSS = """
    ArenaScreen .pair { height: auto; }
    ArenaScreen .pair Select { width: 1fr; }
    ArenaScreen .sides { height: 1fr; }
    ArenaScreen .side { width: 1fr; border: round $primary 50%; }
    ArenaScreen .side-title { width: 1fr; padding: 0 1; text-style: bold; }
    ArenaScreen .side-messages { height: 1fr; padding: 0 1; }
    ArenaScreen .votes { height: auto; }
    ArenaScreen .votes Button { width: 1fr; }
    ArenaScreen .status { width: 1fr; height: auto; max-height: 3; padding: 0 1; color: $text-muted; background: $boost; }
    ArenaScreen PromptArea { height: auto; min-height: 3; max-height: 8; border: tall $primary 50%; }
    ArenaScreen PromptArea:focus { border: tall $primary; }
    """
    BINDINGS = [
        Binding("escape", "stop_or_close", "Stop / close"),
        Binding("ctrl+n", "new_battle", "New battle"),
        Binding("ctrl+o", "open_waiting", "Vote on waiting"),
        Binding("ctrl+l", "leaderboard", "Leaderboard"),
        *(Binding(key, f"vote('{winner.value}')", label, show=False) for key, winner, label in VOTES),
    ]

    @dataclass
    class Planned(Message):
        plan: Plan

    @dataclass
    class Delta(Message):
        side: str
        text: str

    @dataclass
    class Answered(Message):
        battle: Battle
        answers: dict[str, Answer]

    @dataclass
    class Failed(Message):
        error: str

    def __init__(self, service: ArenaService, first: str = RANDOM, second: str = RANDOM):
        super().__init__()
        self.service = service
        self._choice = (first, second)
        self.battle: Battle | None = None
        self._cancel: threading.Event | None = None
        self._answer_views: dict[str, MessageView] = {}
        self._plan: Plan | None = None

    @property
    def generating(self) -> bool:
        return self._cancel is not None

    def compose(self) -> ComposeResult:
        models = self.service.models()
        with Horizontal(classes="pair"):
            for side, chosen in zip(SIDES, self._choice, strict=True):
                options = [(f"Model {side.upper()}: any, at random", RANDOM)] + [(name, name) for name in models]
                yield Select(
                    options,
                    value=chosen if chosen in models else RANDOM,
                    allow_blank=False,
                    compact=True,
                    id=f"pick-{side}",
                )
        with Horizontal(classes="sides"):
            for side in SIDES:
                with Vertical(classes="side", id=f"side-{side}"):
                    # Model names and error text are shown as written, never read as markup.
                    yield Label(f"Model {side.upper()}", classes="side-title", id=f"title-{side}", markup=False)
                    yield VerticalScroll(classes="side-messages", id=f"messages-{side}")
        with Horizontal(classes="votes"):
            for key, winner, label in VOTES:
                yield Button(f"{key} {label}", id=f"vote-{key}", name=winner.value, compact=True, disabled=True)
        yield Label("", classes="status", markup=False)
        yield PromptArea(placeholder="A prompt for both models (enter sends)")
        yield Footer()

    def on_mount(self) -> None:
        waiting = len(self.service.waiting())
        note = f" {waiting} battle(s) wait for your vote: ctrl+o." if waiting else ""
        self._status(f"Two models, names hidden until you vote. Type a prompt.{note}")
        self.query_one(PromptArea).focus()

    def _status(self, text: str) -> None:
        self.query_one(".status", Label).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "vote":
            return self._can_vote()
        return True

    def _busy(self) -> bool:
        # The keys stay enabled while answers stream: a disabled ctrl+n would fall through to "new chat".
        if self.generating:
            self.notify("Both answers are still streaming: wait, or press escape to stop them.", severity="warning")
        return self.generating

    def _can_vote(self) -> bool:
        return (
            self.battle is not None
            and self.battle.winner is None
            and not self.generating
            and any(m["role"] == "assistant" for m in self.battle.conversation_a)
        )

    def _refresh_votes(self) -> None:
        votable = self._can_vote()
        for button in self.query(".votes Button"):
            button.disabled = not votable
        for select in self.query(Select):
            select.disabled = self.battle is not None and self.battle.winner is None
        self.refresh_bindings()

    async def _show_battle(self, battle: Battle | None) -> None:
        """Empty both sides, or show a battle's conversations so far (names hidden while it waits for a vote)."""
        self.battle = battle
        for side in SIDES:
            self.query_one(f"#title-{side}", Label).update(f"Model {side.upper()}")
            messages = self.query_one(f"#messages-{side}", VerticalScroll)
            await messages.remove_children()
            if battle is not None:
                conversation = battle.conversation_a if side == "a" else battle.conversation_b
                await messages.mount_all(
                    [MessageView(m["role"], m["content"], state=m.get("state", "done")) for m in conversation]
                )
                messages.scroll_end(animate=False)
        self._refresh_votes()

    @on(PromptArea.Submitted)
    async def send(self, event: PromptArea.Submitted) -> None:
        event.stop()
        # The prompt box empties itself on enter; a prompt that is not sent goes back into it.
        if self._busy():
            event.prompt.restore(event.text)
            return
        text = event.text
        if self.battle is None or self.battle.winner is not None:
            try:
                pair = self.service.pick_pair(*(str(self.query_one(f"#pick-{side}", Select).value) for side in SIDES))
            except ArenaError as error:
                event.prompt.restore(text)
                self.notify(str(error), title="No battle", severity="error", timeout=10, markup=False)
                return
            await self._show_battle(self.service.start(*pair))
        for side in SIDES:
            messages = self.query_one(f"#messages-{side}", VerticalScroll)
            view = self._answer_views[side] = MessageView("assistant", state="streaming")
            await messages.mount_all([MessageView("user", text), view])
            # Not anchor(): that keeps short content at the bottom, and the two sides are read top to top.
            messages.scroll_end(animate=False)
        self._cancel = threading.Event()
        self._status("Working out whether both models fit in memory together…")
        self._refresh_votes()
        self._answer(self.battle, text, self._cancel)

    @work(thread=True, exit_on_error=False, group="arena", description="Both models answering")
    def _answer(self, battle: Battle, prompt: str, cancel: threading.Event) -> None:
        batchers = {
            side: DeltaBatcher(lambda text, side=side: self.post_message(self.Delta(side, text))) for side in SIDES
        }

        def flush() -> None:
            for batcher in batchers.values():
                batcher.flush()

        try:
            self.post_message(self.Planned(self.service.plan(battle)))
            with COLLECTOR.streaming():
                battle, answers = self.service.answer(
                    battle, prompt, cancel, lambda side, text: batchers[side].add(text)
                )
        except ArenaError as error:
            flush()
            self.post_message(self.Failed(str(error)))
            return
        except Exception as error:  # a bug must not leave the arena stuck answering
            flush()
            self.post_message(self.Failed(f"the answers failed unexpectedly: {error!r}"))
            raise
        flush()
        self.post_message(self.Answered(battle, answers))

    def on_arena_screen_planned(self, event: Planned) -> None:
        self._plan = event.plan
        self._status(f"Answering: {event.plan.describe()}. escape stops.")

    async def on_arena_screen_delta(self, event: Delta) -> None:
        view = self._answer_views.get(event.side)
        if view is not None:
            messages = self.query_one(f"#messages-{event.side}", VerticalScroll)
            following = messages.is_vertical_scroll_end or messages.max_scroll_y == 0
            await view.append(event.text)
            if following:  # a reader who scrolled up to compare stays where they are
                messages.scroll_end(animate=False)

    async def on_arena_screen_answered(self, event: Answered) -> None:
        self._cancel = None
        self.battle = event.battle
        errors = []
        for side in SIDES:
            view = self._answer_views.pop(side, None)
            answer = event.answers[side]
            if view is not None:
                await view.finish()
                # Speed and length could give the models away: the figures come with the names.
                view.set_footer("", state=answer.state)
            if answer.error:
                errors.append(f"{side.upper()}: {answer.error}")
        if errors:
            self.notify("; ".join(errors), title="An answer failed", severity="error", timeout=10, markup=False)
        plan = f"{self._plan.describe().capitalize()}. " if self._plan is not None else ""
        self._status(f"{plan}Vote with 1 to 4, or tab to the prompt for a follow-up.")
        self._refresh_votes()
        self.query_one("#vote-1", Button).focus()

    async def on_arena_screen_failed(self, event: Failed) -> None:
        self._cancel = None
        for view in self._answer_views.values():
            await view.finish()
            view.set_footer("", state="error")
        self._answer_views.clear()
        if self.battle is not None:
            self.battle = self.service.store.battle(self.battle.id)
        self._status(f"error: {event.error}")
        self.notify(event.error, title="The answers failed", severity="error", timeout=10, markup=False)
        self._refresh_votes()

    @on(Button.Pressed, ".votes Button")
    def vote_button(self, event: Button.Pressed) -> None:
        self.action_vote(str(event.button.name))

    def action_vote(self, winner: str) -> None:
        if not self._can_vote() or self.battle is None:
            return
        chosen = Winner(winner)
        try:
            battle = self.battle = self.service.vote(self.battle, chosen)
        except ArenaError as error:
            self.notify(str(error), severity="warning", markup=False)
            return
        for side, name in (("a", battle.model_a), ("b", battle.model_b)):
            won = (chosen is Winner.MODEL_A) == (side == "a") and chosen in (Winner.MODEL_A, Winner.MODEL_B)
            self.query_one(f"#title-{side}", Label).update(f"{'★ ' if won else ''}Model {side.upper()}: {name}")
            conversation = battle.conversation_a if side == "a" else battle.conversation_b
            answers = [m for m in conversation if m["role"] == "assistant"]
            views = [
                v
                for v in self.query_one(f"#messages-{side}", VerticalScroll).query(MessageView)
                if v.role == "assistant"
            ]
            for view, message in zip(views, answers, strict=False):
                view.set_footer(_figures(message))
        self._status(
            f"You voted: {VOTE_LABELS[chosen]}. A was {battle.model_a}, B was {battle.model_b}. "
            f"Type a prompt for a new battle (ctrl+l: leaderboard)."
        )
        self._refresh_votes()
        self.query_one(PromptArea).focus()

    def action_stop_or_close(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._status("stopping both answers…")
        else:
            self.app.pop_screen()

    async def action_new_battle(self) -> None:
        if self._busy():
            return
        left = self.battle is not None and self.battle.winner is None and self._can_vote()
        await self._show_battle(None)
        self._status("New battle: pick the models or leave them at random, and type a prompt.")
        if left:
            self.notify("The battle you left waits for your vote: ctrl+o brings it back.", timeout=6)
        self.query_one(PromptArea).focus()

    async def action_open_waiting(self) -> None:
        if self._busy():
            return
        current = self.battle.id if self.battle is not None else None
        waiting = [battle for battle in self.service.waiting() if battle.id != current]
        if not waiting:
            self.notify("No battle waits for a vote.", timeout=4)
            return
        await self._show_battle(waiting[0])
        self._status(
            f"A battle waiting for your vote ({len(waiting)} in all): 1 A is better · 2 B is better · 3 tie · "
            f"4 both bad — or send a follow-up."
        )
        self.query_one("#vote-1", Button).focus()

    def action_leaderboard(self) -> None:
        from tui.screens.leaderboard import LeaderboardScreen

        self.app.push_screen(LeaderboardScreen(self.service))

    def on_unmount(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        self.service.close()


def _figures(message: dict) -> str:
    stats = message.get("stats") or {}
    if not stats:
        return ""
    return f"{stats.get('tokens_per_second', 0):.1f} tok/s · {stats.get('completion_tokens', 0)} tokens"
