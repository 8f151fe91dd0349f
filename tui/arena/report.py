"""The leaderboard as text: a table, bars with their intervals, and the win-rate matrix.

`zootui leaderboard` prints it and the leaderboard screen shows it, so both say the same.
"""

from __future__ import annotations

import math

from tui.arena.ratings import CONFIDENCE, ELO_K, Leaderboard

BAR_FULL, BAR_INTERVAL_BELOW, BAR_INTERVAL_ABOVE = "█", "▓", "░"
# The bars start a little below the lowest lower bound, rounded down to this step, so their lengths differ.
AXIS_STEP = 50
FEW_VOTES = 10


def table(board: Leaderboard) -> str:
    width = max([len("model")] + [len(s.model) for s in board.standings])
    interval = f"{CONFIDENCE:.0%} interval"
    lines = [
        f"{'rank':>4}  {'model':<{width}}  {'rating':>6}  {interval:>13}  {'elo':>5}  {'votes':>5}  won-lost-tie-bad"
    ]
    for s in board.standings:
        lines.append(
            f"{s.rank:>4}  {s.model:<{width}}  {s.rating:>6.0f}  {s.lower:>6.0f}–{s.upper:<6.0f}  {s.elo:>5.0f}"
            f"  {s.battles:>5}  {s.wins}-{s.losses}-{s.ties}-{s.both_bad}"
        )
    return "\n".join(lines)


def bars(board: Leaderboard, width: int = 40) -> str:
    """One bar per model: solid up to the interval's lower bound, shaded across the interval, the rating
    where the two shades meet."""
    if not board.standings:
        return ""
    start = math.floor(min(s.lower for s in board.standings) / AXIS_STEP) * AXIS_STEP - AXIS_STEP
    end = max(s.upper for s in board.standings)
    per_cell = max(end - start, 1.0) / width
    name_width = max(len(s.model) for s in board.standings)

    def cells(rating: float) -> int:
        return min(width, max(0, round((rating - start) / per_cell)))

    lines = []
    for s in board.standings:
        lower, middle, upper = cells(s.lower), cells(s.rating), cells(s.upper)
        bar = BAR_FULL * lower + BAR_INTERVAL_BELOW * (middle - lower) + BAR_INTERVAL_ABOVE * (upper - middle)
        lines.append(f"{s.model:<{name_width}}  {bar:<{width}}  {s.rating:.0f}")
    lines.append(f"{'':<{name_width}}  {start:<{width // 2}.0f}{end:>{width - width // 2}.0f}")
    lines.append(f"{'':<{name_width}}  {BAR_INTERVAL_BELOW}{BAR_INTERVAL_ABOVE}: the {CONFIDENCE:.0%} interval")
    return "\n".join(lines)


def matrix(board: Leaderboard) -> str:
    """Row beats column: the share of their decided votes (ties left out) the row's model won."""
    models = [s.model for s in board.standings]
    if len(models) < 2:
        return ""
    name_width = max(len(model) for model in models)
    header = f"{'':>{name_width + 4}}" + "".join(f"{column:>6}" for column in range(1, len(models) + 1))
    lines = ["share of decided votes the row won against the column (ties left out):", header]
    for row, model in enumerate(models, start=1):
        shares = board.win_rate[model]
        cells = "".join(
            f"{'':>6}" if other == model else f"{'–' if shares[other] is None else f'{shares[other]:.2f}':>6}"
            for other in models
        )
        lines.append(f"{row:>2}  {model:<{name_width}}{cells}")
    return "\n".join(lines)


def caution(board: Leaderboard) -> str:
    """A warning when some model has too few votes for its rating to mean much; empty otherwise."""
    fewest = min((s.battles for s in board.standings), default=0)
    if fewest >= FEW_VOTES:
        return ""
    return (
        f"Some models have fewer than {FEW_VOTES} votes: their ratings swing widely (a model that never lost "
        f"is rated far above the rest), and a bootstrap of so few votes understates the doubt."
    )


def render(board: Leaderboard, width: int = 80) -> str:
    if not board.standings:
        return "No votes yet: `zootui arena` starts battles; `zootui arena --import FILE` reads a FastChat battle log."
    name_width = max(len(s.model) for s in board.standings)
    parts = [
        f"{board.votes} votes; Bradley-Terry ratings (Elo scale) with {CONFIDENCE:.0%} intervals from "
        f"{board.bootstrap_rounds} bootstrap rounds, and online Elo (K {ELO_K:g}).",
        caution(board),
        table(board),
        bars(board, width=max(10, width - name_width - 10)),
        matrix(board),
    ]
    return "\n\n".join(part for part in parts if part) + "\n"
