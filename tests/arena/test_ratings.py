"""Ratings against values computed another way, on vote logs whose true strengths are known."""

import math

import numpy as np
import pytest

from tui.arena.ratings import (
    Vote,
    Winner,
    bootstrap_intervals,
    bradley_terry,
    leaderboard,
    online_elo,
    win_rates,
)

TRUE_RATINGS = {"alpaca": 1250.0, "vicuna": 1100.0, "dolly": 1000.0, "koala": 850.0}


def synthetic_votes(count: int, seed: int, tie_share: float = 0.0) -> list[Vote]:
    """Votes drawn from the Bradley-Terry model with TRUE_RATINGS; a share of them ties, half of those both bad."""
    generator = np.random.default_rng(seed)
    names = list(TRUE_RATINGS)
    votes = []
    for tstamp in range(count):
        first, second = generator.choice(len(names), 2, replace=False)
        a, b = names[first], names[second]
        if generator.random() < tie_share:
            winner = Winner.TIE if generator.random() < 0.5 else Winner.BOTH_BAD
        else:
            a_wins = 1 / (1 + 10 ** ((TRUE_RATINGS[b] - TRUE_RATINGS[a]) / 400))
            winner = Winner.MODEL_A if generator.random() < a_wins else Winner.MODEL_B
        votes.append(Vote(a, b, winner, float(tstamp)))
    return votes


def zermelo(votes: list[Vote], iterations: int = 5000) -> dict[str, float]:
    """Bradley-Terry by Zermelo's fixed point (Hunter's MM algorithm), ties as half a win each, on the Elo scale."""
    names = sorted({v.model_a for v in votes} | {v.model_b for v in votes})
    wins = dict.fromkeys(names, 0.0)
    games: dict[tuple[str, str], int] = {}
    for vote in votes:
        share = {Winner.MODEL_A: 1.0, Winner.MODEL_B: 0.0}.get(vote.winner, 0.5)
        wins[vote.model_a] += share
        wins[vote.model_b] += 1 - share
        for pair in ((vote.model_a, vote.model_b), (vote.model_b, vote.model_a)):
            games[pair] = games.get(pair, 0) + 1
    strength = dict.fromkeys(names, 1.0)
    for _ in range(iterations):
        strength = {
            i: wins[i] / sum(n / (strength[i] + strength[j]) for (k, j), n in games.items() if k == i) for i in names
        }
        mean_log = sum(math.log10(s) for s in strength.values()) / len(names)
        strength = {i: 10 ** (math.log10(s) - mean_log) for i, s in strength.items()}
    return {i: 400 * math.log10(s) + 1000 for i, s in strength.items()}


def centred(ratings: dict[str, float]) -> dict[str, float]:
    mean = sum(ratings.values()) / len(ratings)
    return {model: rating - mean + 1000 for model, rating in ratings.items()}


def test_online_elo_follows_fastchat_update_by_hand():
    votes = [
        Vote("a", "b", Winner.MODEL_A, 1.0),
        Vote("b", "c", Winner.TIE, 2.0),
        Vote("c", "a", Winner.BOTH_BAD, 3.0),
    ]
    # Vote 1, both at 1000: expected 0.5, K = 4: a 1002, b 998.
    a, b, c = 1002.0, 998.0, 1000.0
    # Vote 2, a tie is half a win: b (998) against c (1000).
    expected_b = 1 / (1 + 10 ** ((c - b) / 400))
    b, c = b + 4 * (0.5 - expected_b), c + 4 * (0.5 - (1 - expected_b))
    # Vote 3, both bad is a tie too: c against a.
    expected_c = 1 / (1 + 10 ** ((a - c) / 400))
    c, a = c + 4 * (0.5 - expected_c), a + 4 * (0.5 - (1 - expected_c))
    assert online_elo(votes) == pytest.approx({"a": a, "b": b, "c": c}, abs=1e-9)


def test_online_elo_takes_votes_in_time_order():
    early, late = Vote("a", "b", Winner.MODEL_A, 1.0), Vote("a", "b", Winner.MODEL_B, 2.0)
    assert online_elo([late, early]) == online_elo([early, late])
    assert online_elo([early, late])["b"] > 1000  # the later vote, against a risen a, counts more


def test_bradley_terry_equals_zermelo_on_a_log_with_ties():
    votes = synthetic_votes(1500, seed=3, tie_share=0.2)
    assert bradley_terry(votes) == pytest.approx(zermelo(votes), abs=0.05)


def test_bradley_terry_recovers_known_strengths_within_its_intervals():
    votes = synthetic_votes(4000, seed=11)
    ratings = bradley_terry(votes)
    intervals = bootstrap_intervals(votes, rounds=300, seed=5)
    truth = centred(TRUE_RATINGS)
    for model, rating in ratings.items():
        lower, upper = intervals[model]
        assert lower < rating < upper
        assert 4 < upper - lower < 60, "4000 votes pin a rating to a few tens of points"
        assert abs(rating - truth[model]) < 25
    assert sum(ratings.values()) / len(ratings) == pytest.approx(1000, abs=1e-6)


def test_online_elo_orders_known_strengths():
    elo = online_elo(synthetic_votes(4000, seed=12))
    assert sorted(elo, key=elo.get, reverse=True) == list(TRUE_RATINGS)


def test_both_bad_counts_exactly_as_a_tie():
    votes = synthetic_votes(600, seed=4, tie_share=0.3)
    as_ties = [
        Vote(v.model_a, v.model_b, Winner.TIE if v.winner is Winner.BOTH_BAD else v.winner, v.tstamp) for v in votes
    ]
    assert bradley_terry(votes) == pytest.approx(bradley_terry(as_ties), abs=1e-9)
    assert online_elo(votes) == pytest.approx(online_elo(as_ties), abs=1e-9)


def test_only_ties_leave_two_models_level():
    votes = [Vote("a", "b", Winner.TIE, 1.0), Vote("b", "a", Winner.BOTH_BAD, 2.0)] * 5
    assert bradley_terry(votes) == pytest.approx({"a": 1000.0, "b": 1000.0}, abs=1e-6)
    assert win_rates(votes) == {"a": {"b": None}, "b": {"a": None}}


def test_unbeaten_model_stays_finite_and_first():
    ratings = bradley_terry([Vote("a", "b", Winner.MODEL_A, 1.0), Vote("b", "a", Winner.MODEL_B, 2.0)])
    assert all(math.isfinite(rating) for rating in ratings.values())
    assert ratings["a"] > ratings["b"]


def test_win_rate_leaves_ties_out_and_counts_both_sides():
    votes = [
        Vote("a", "b", Winner.MODEL_A, 1.0),
        Vote("b", "a", Winner.MODEL_A, 2.0),
        Vote("b", "a", Winner.MODEL_B, 3.0),
        Vote("a", "b", Winner.TIE, 4.0),
        Vote("a", "c", Winner.MODEL_B, 5.0),
    ]
    rates = win_rates(votes)
    assert rates["a"] == {"b": pytest.approx(2 / 3), "c": 0.0}
    assert rates["b"] == {"a": pytest.approx(1 / 3), "c": None}
    assert rates["c"]["a"] == 1.0


def test_leaderboard_counts_ranks_and_is_reproducible():
    votes = synthetic_votes(800, seed=8, tie_share=0.25)
    board = leaderboard(votes, rounds=200)
    assert board == leaderboard(votes, rounds=200), "the bootstrap is seeded"
    assert [s.model for s in board.standings] == list(TRUE_RATINGS)
    by_model = {s.model: s for s in board.standings}
    for model in TRUE_RATINGS:
        mine = [v for v in votes if model in (v.model_a, v.model_b)]
        standing = by_model[model]
        assert standing.battles == len(mine)
        assert standing.ties == sum(v.winner is Winner.TIE for v in mine)
        assert standing.both_bad == sum(v.winner is Winner.BOTH_BAD for v in mine)
        assert standing.wins + standing.losses + standing.ties + standing.both_bad == standing.battles
    # Rank 1 + the number of models whose interval lies wholly above: alpaca is far ahead of koala.
    assert by_model["alpaca"].rank == 1 and by_model["koala"].rank == 4
    assert board.to_dict()["elo"] == {"k": 4.0, "scale": 400.0, "base": 10.0, "initial_rating": 1000.0}


def test_a_vote_needs_two_models():
    with pytest.raises(ValueError, match="two different models"):
        Vote("a", "a", Winner.TIE, 0.0)
