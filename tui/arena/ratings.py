"""Ratings from pairwise votes, counted the way FastChat's Chatbot Arena counts them.

From lm-sys/FastChat ``fastchat/serve/monitor/elo_analysis.py``:

- online Elo: one pass over the votes in time order, every model starting at 1000; A's expected score
  is 1 / (1 + 10 ** ((R_b - R_a) / 400)) and both ratings move by K = 4 times (actual - expected);
- Bradley-Terry: the ratings that make the votes most likely under that same curve, fitted on a
  natural scale r (log-odds ln(10) * (r_a - r_b)) from r = 0 and shown as 400 * r + 1000, so they
  average 1000; the 95% interval is the 2.5% and 97.5% quantiles of fits to the votes resampled with
  replacement; a model's rank is 1 + the number of models whose interval lies wholly above its own;
- a tie and a "both bad" vote both count as half a win for each side, in both ratings;
- the pairwise win-rate matrix leaves ties out.

FastChat anchors one of its models (mixtral-8x7b-instruct at 1114); none of the zoo is that model,
so nothing here is anchored. numpy only: the fit is Newton's method, not scikit-learn or scipy. numpy
is imported where it is used, so the command line's start does not pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from tui.compat import StrEnum

if TYPE_CHECKING:
    import numpy as np

ELO_K = 4.0
ELO_SCALE = 400.0
ELO_BASE = 10.0
INITIAL_RATING = 1000.0
BOOTSTRAP_ROUNDS = 1000
BOOTSTRAP_SEED = 42  # FastChat seeds numpy with 42 before its bootstrap
CONFIDENCE = 0.95
# A weak Gaussian prior on the natural-scale ratings (standard deviation 1000, i.e. 400 000 Elo
# points): it moves a rating fitted from a handful of votes by far less than a point, and keeps the
# rating of a model that has never lost (or never won) finite, where the likelihood has no maximum.
PRIOR_PRECISION = 1e-6
NEWTON_STEPS = 100
NEWTON_TOLERANCE = 1e-10


class Winner(StrEnum):
    """A vote, as FastChat's battle log writes it."""

    MODEL_A = "model_a"
    MODEL_B = "model_b"
    TIE = "tie"
    BOTH_BAD = "tie (bothbad)"

    @property
    def score_a(self) -> float:
        """Model A's share of the win; both kinds of tie are half a win (FastChat's sa = 0.5)."""
        if self is Winner.MODEL_A:
            return 1.0
        if self is Winner.MODEL_B:
            return 0.0
        return 0.5


@dataclass(frozen=True)
class Vote:
    model_a: str
    model_b: str
    winner: Winner
    tstamp: float

    def __post_init__(self) -> None:
        if self.model_a == self.model_b:
            raise ValueError(f"a vote needs two different models, not {self.model_a!r} twice")


def online_elo(votes: Iterable[Vote]) -> dict[str, float]:
    """FastChat's online Elo: each vote, in time order, moves both ratings."""
    ratings: dict[str, float] = {}
    for vote in sorted(votes, key=lambda vote: vote.tstamp):
        rating_a = ratings.setdefault(vote.model_a, INITIAL_RATING)
        rating_b = ratings.setdefault(vote.model_b, INITIAL_RATING)
        expected_a = 1 / (1 + ELO_BASE ** ((rating_b - rating_a) / ELO_SCALE))
        score_a = vote.winner.score_a
        ratings[vote.model_a] = rating_a + ELO_K * (score_a - expected_a)
        ratings[vote.model_b] = rating_b + ELO_K * ((1 - score_a) - (1 - expected_a))
    return ratings


@dataclass(frozen=True)
class _Outcomes:
    """Votes folded into distinct (model A, model B, A's score) outcomes with how often each occurred."""

    models: list[str]
    first: np.ndarray
    second: np.ndarray
    score: np.ndarray
    count: np.ndarray


def _outcomes(votes: Sequence[Vote]) -> _Outcomes:
    import numpy as np

    models = sorted({vote.model_a for vote in votes} | {vote.model_b for vote in votes})
    index = {model: position for position, model in enumerate(models)}
    # A's score doubled, so that the three outcomes are the integers 0, 1, 2 and np.unique can count them.
    rows = np.array(
        [(index[vote.model_a], index[vote.model_b], round(2 * vote.winner.score_a)) for vote in votes], dtype=np.int64
    ).reshape(-1, 3)
    distinct, counts = np.unique(rows, axis=0, return_counts=True)
    return _Outcomes(models, distinct[:, 0], distinct[:, 1], distinct[:, 2] / 2.0, counts.astype(np.float64))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow, unlike 1 / (1 + exp(-x))


def _fit(outcomes: _Outcomes, weight: np.ndarray) -> np.ndarray:
    """Natural-scale Bradley-Terry ratings for outcomes weighted by ``weight`` (Newton's method)."""
    import numpy as np

    n = len(outcomes.models)
    alpha = math.log(ELO_BASE)
    # won[i, j]: i's score against j (a tie gives each half); games[i, j]: votes between them.
    won = np.zeros((n, n))
    games = np.zeros((n, n))
    np.add.at(won, (outcomes.first, outcomes.second), outcomes.score * weight)
    np.add.at(won, (outcomes.second, outcomes.first), (1 - outcomes.score) * weight)
    np.add.at(games, (outcomes.first, outcomes.second), weight)
    np.add.at(games, (outcomes.second, outcomes.first), weight)

    def objective(ratings: np.ndarray) -> float:
        logits = alpha * (ratings[:, None] - ratings[None, :])
        # Log-likelihood: each vote gives A's score times log P(A beats B) plus B's score times log P(B beats A).
        log_likelihood = -(won * np.logaddexp(0.0, -logits)).sum()
        return float(log_likelihood - 0.5 * PRIOR_PRECISION * ratings @ ratings)

    ratings = np.zeros(n)
    value = objective(ratings)
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(alpha * (ratings[:, None] - ratings[None, :]))
        gradient = alpha * (won - games * p).sum(axis=1) - PRIOR_PRECISION * ratings
        curvature = alpha**2 * games * p * (1 - p)
        hessian = curvature - np.diag(curvature.sum(axis=1) + PRIOR_PRECISION)
        # The likelihood ignores a common shift, so the hessian is nearly singular along it (only the
        # prior curves it) and rounding would wander there; the maximum has mean zero, so the step does too.
        step = np.linalg.solve(hessian, -gradient)
        step -= step.mean()
        # Halving keeps every step uphill: a full Newton step can overshoot on lopsided records. Near the
        # maximum the gain is below float resolution, so "no worse than rounding" counts as uphill.
        size = 1.0
        while True:
            candidate = ratings + size * step
            candidate_value = objective(candidate)
            if candidate_value >= value - 1e-12 * max(1.0, abs(value)) or size < 1e-8:
                break
            size /= 2
        ratings, value = candidate, candidate_value
        if np.max(np.abs(size * step)) < NEWTON_TOLERANCE:
            break
    return ratings


def _to_elo_scale(ratings: np.ndarray) -> np.ndarray:
    return ELO_SCALE * ratings + INITIAL_RATING


def bradley_terry(votes: Sequence[Vote]) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry ratings on the Elo scale (400 points: 10 to 1 odds), averaging 1000."""
    if not votes:
        return {}
    outcomes = _outcomes(votes)
    return dict(zip(outcomes.models, _to_elo_scale(_fit(outcomes, outcomes.count)).tolist(), strict=True))


def bootstrap_intervals(
    votes: Sequence[Vote], rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED
) -> dict[str, tuple[float, float]]:
    """The 95% interval of each Bradley-Terry rating over fits to ``rounds`` resamplings of the votes."""
    import numpy as np

    if not votes:
        return {}
    outcomes = _outcomes(votes)
    total = int(outcomes.count.sum())
    generator = np.random.default_rng(seed)
    # Resampling votes with replacement only changes how often each distinct outcome occurs.
    resampled = generator.multinomial(total, outcomes.count / total, size=rounds).astype(np.float64)
    fits = np.array([_to_elo_scale(_fit(outcomes, weight)) for weight in resampled])
    tail = (1 - CONFIDENCE) / 2
    lower, upper = np.quantile(fits, tail, axis=0), np.quantile(fits, 1 - tail, axis=0)
    return {model: (float(lower[i]), float(upper[i])) for i, model in enumerate(outcomes.models)}


@dataclass(frozen=True)
class Standing:
    model: str
    rank: int
    """1 + the number of models whose whole interval lies above this one's (FastChat's final ranking)."""
    rating: float
    """Bradley-Terry, Elo scale."""
    lower: float
    upper: float
    elo: float
    """Online Elo."""
    battles: int
    wins: int
    losses: int
    ties: int
    both_bad: int


@dataclass(frozen=True)
class Leaderboard:
    standings: list[Standing]
    """Best Bradley-Terry rating first."""
    win_rate: dict[str, dict[str, float | None]]
    """win_rate[row][column]: the share of row's votes against column that row won, ties left out; None
    when they have no such vote."""
    votes: int
    bootstrap_rounds: int

    def to_dict(self) -> dict[str, object]:
        return {
            "votes": self.votes,
            "bootstrap_rounds": self.bootstrap_rounds,
            "confidence": CONFIDENCE,
            "elo": {"k": ELO_K, "scale": ELO_SCALE, "base": ELO_BASE, "initial_rating": INITIAL_RATING},
            "standings": [asdict(standing) for standing in self.standings],
            "win_rate": self.win_rate,
        }


def win_rates(votes: Iterable[Vote]) -> dict[str, dict[str, float | None]]:
    """Share of decided votes (ties left out) each model won against each other model."""
    won: dict[tuple[str, str], int] = {}
    decided: dict[tuple[str, str], int] = {}
    models: set[str] = set()
    for vote in votes:
        models.update((vote.model_a, vote.model_b))
        if vote.winner not in (Winner.MODEL_A, Winner.MODEL_B):
            continue
        winner, loser = (vote.model_a, vote.model_b) if vote.winner is Winner.MODEL_A else (vote.model_b, vote.model_a)
        won[winner, loser] = won.get((winner, loser), 0) + 1
        for pair in ((winner, loser), (loser, winner)):
            decided[pair] = decided.get(pair, 0) + 1
    return {
        row: {
            column: won.get((row, column), 0) / decided[row, column] if decided.get((row, column)) else None
            for column in sorted(models)
            if column != row
        }
        for row in sorted(models)
    }


def leaderboard(votes: Sequence[Vote], rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED) -> Leaderboard:
    ratings = bradley_terry(votes)
    intervals = bootstrap_intervals(votes, rounds, seed)
    elo = online_elo(votes)
    counts = {model: {"battles": 0, "wins": 0, "losses": 0, "ties": 0, "both_bad": 0} for model in ratings}
    for vote in votes:
        for model, score in ((vote.model_a, vote.winner.score_a), (vote.model_b, 1 - vote.winner.score_a)):
            tally = counts[model]
            tally["battles"] += 1
            if vote.winner is Winner.BOTH_BAD:
                tally["both_bad"] += 1
            elif vote.winner is Winner.TIE:
                tally["ties"] += 1
            else:
                tally["wins" if score == 1 else "losses"] += 1
    ordered = sorted(ratings, key=lambda model: -ratings[model])
    standings = [
        Standing(
            model=model,
            rank=1 + sum(intervals[other][0] > intervals[model][1] for other in ordered if other != model),
            rating=ratings[model],
            lower=intervals[model][0],
            upper=intervals[model][1],
            elo=elo[model],
            **counts[model],
        )
        for model in ordered
    ]
    return Leaderboard(standings, win_rates(votes), len(votes), rounds)
