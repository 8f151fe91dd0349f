"""The leaderboard: ratings from the arena's votes as a table, as bars, and as a win-rate matrix."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static

from tui.arena import report
from tui.arena.ratings import CONFIDENCE, Leaderboard
from tui.arena.service import ArenaService


class LeaderboardScreen(Screen):
    DEFAULT_CSS = """
    LeaderboardScreen .summary { width: 1fr; height: auto; padding: 0 1; color: $text-muted; background: $boost; }
    LeaderboardScreen #standings { height: auto; max-height: 16; }
    LeaderboardScreen .chart { padding: 1 1 0 1; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Close")]

    def __init__(self, service: ArenaService):
        super().__init__()
        self.service = service

    def compose(self) -> ComposeResult:
        yield Label("Computing the ratings (bootstrap)…", classes="summary")
        with VerticalScroll():
            yield DataTable(id="standings", cursor_type="row", zebra_stripes=True)
            yield Static("", id="bars", classes="chart", markup=False)
            yield Static("", id="matrix", classes="chart", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._compute()

    @work(thread=True, exit_on_error=False, group="leaderboard", description="Computing the ratings")
    def _compute(self) -> None:
        try:
            board = self.service.leaderboard()
        except Exception as error:  # the screen must not stay on "computing" whatever happens
            self.app.call_from_thread(self.query_one(".summary", Label).update, f"The ratings failed: {error!r}")
            raise
        self.app.call_from_thread(self._show, board)

    def _show(self, board: Leaderboard) -> None:
        summary = self.query_one(".summary", Label)
        if not board.standings:
            summary.update(
                "No votes yet: vote in the arena (f3), or import a FastChat battle log (`zootui arena --import FILE`)."
            )
            return
        summary.update(
            f"{board.votes} votes · Bradley-Terry ratings on the Elo scale with {CONFIDENCE:.0%} intervals "
            f"({board.bootstrap_rounds} bootstrap rounds) · online Elo · ties and both-bad count half a win. "
            + report.caution(board)
        )
        table = self.query_one("#standings", DataTable)
        table.add_columns(
            "Rank", "Model", "Rating", f"{CONFIDENCE:.0%} interval", "Elo", "Votes", "Won", "Lost", "Tie", "Both bad"
        )
        for s in board.standings:
            table.add_row(
                s.rank, s.model, f"{s.rating:.0f}", f"{s.lower:.0f}–{s.upper:.0f}", f"{s.elo:.0f}",
                s.battles, s.wins, s.losses, s.ties, s.both_bad,
            )  # fmt: skip
        name_width = max(len(s.model) for s in board.standings)
        self.query_one("#bars", Static).update(report.bars(board, width=max(10, self.size.width - name_width - 14)))
        self.query_one("#matrix", Static).update(report.matrix(board))
