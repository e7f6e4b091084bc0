"""The ranking suite's strong baselines (EASE^R, RP3beta), its validation split and its bootstrap
intervals, each checked against a computation done independently here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from evals.movielens import Rating, time_split, validation_split
from evals.ranking.tuning import Tuned
from evals.recommenders import bootstrap_mean, bootstrap_ratio, ease, rp3beta
from tests.test_ranking import write_release


def test_ease_matches_the_closed_form_computed_directly() -> None:
    rng = np.random.default_rng(3)
    dense = (rng.random((12, 6)) < 0.4).astype(np.float64)
    lam = 2.5

    weights = ease(csr_matrix(dense), lam)

    p = np.linalg.inv(dense.T @ dense + lam * np.eye(6))
    expected = np.eye(6) - p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    assert weights == pytest.approx(expected, abs=1e-4)
    # The closed form is the constrained least-squares optimum: for each column j,
    # (XᵀX + λI) b_j = Xᵀx_j + μ e_j with b_jj = 0, so the residual off the diagonal vanishes.
    gram = dense.T @ dense
    residual = (gram + lam * np.eye(6)) @ weights - gram
    off_diagonal = residual - np.diag(np.diag(residual))
    assert off_diagonal == pytest.approx(np.zeros((6, 6)), abs=1e-3)


def test_ease_refuses_a_non_positive_regularization() -> None:
    with pytest.raises(ValueError, match="positive"):
        ease(csr_matrix(np.eye(3)), 0.0)


def test_rp3beta_on_a_graph_small_enough_to_walk_by_hand() -> None:
    # u1 rated a and b; u2 rated b and c.
    x = csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))

    walk = rp3beta(x, alpha=1.0, beta=0.0)
    # a -> u1 (prob 1) -> b (1/2); b -> u1 (1/2) -> a (1/2); b -> u2 (1/2) -> c (1/2); c -> b 1/2.
    expected = np.array([[0, 0.5, 0], [0.25, 0, 0.25], [0, 0.5, 0]])
    assert walk == pytest.approx(expected)

    # beta divides each arrival item's column by its popularity^beta (b is rated twice).
    assert rp3beta(x, alpha=1.0, beta=1.0) == pytest.approx(expected / [1, 2, 1])
    # alpha raises each transition probability: a -> u1 -> b is 1² · 0.5².
    assert rp3beta(x, alpha=2.0, beta=0.0)[0, 1] == pytest.approx(1.0 * 0.25)


def test_the_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    trials, covered_mean, covered_ratio = 200, 0, 0
    for trial in range(trials):
        # Skewed per-user values, like NDCG: mostly zeros, some hits.
        a = rng.binomial(1, 0.3, 150) * rng.random(150)  # mean 0.15
        b = rng.binomial(1, 0.25, 150) * rng.random(150)  # mean 0.125, ratio 1.2
        mean = bootstrap_mean(a, resamples=400, seed=trial)
        ratio = bootstrap_ratio(a, b, resamples=400, seed=trial)
        covered_mean += mean.low <= 0.15 <= mean.high
        covered_ratio += ratio.low <= 1.2 <= ratio.high
        assert mean.low <= mean.value <= mean.high
    assert 0.88 <= covered_mean / trials <= 0.99
    assert 0.86 <= covered_ratio / trials <= 0.99


def test_the_bootstrap_is_seeded() -> None:
    values = np.arange(50, dtype=float)
    assert bootstrap_mean(values, resamples=100, seed=7) == bootstrap_mean(
        values, resamples=100, seed=7
    )


def test_the_validation_split_never_holds_a_test_interaction(tmp_path: Path) -> None:
    split = time_split(write_release(tmp_path / "ml"), holdout=0.2)

    valid = validation_split(split, holdout=0.2)

    assert valid.users, "the validation split must evaluate someone"
    for user in split.train:
        train = {(r.movie, r.ts) for r in split.train[user]}
        test = {(r.movie, r.ts) for r in split.heldout.get(user, [])}
        used = {(r.movie, r.ts) for r in valid.train[user] + valid.heldout.get(user, [])}
        assert used <= train
        assert not used & test
        if user in valid.relevant:
            # Validation targets are the latest of the user's training ratings.
            newest_train = max(r.ts for r in valid.train[user])
            assert all(r.ts > newest_train for r in valid.heldout[user])
            assert valid.relevant[user] <= {r.movie for r in split.train[user]}


def test_rp3beta_walks_weighted_edges_in_proportion_and_skips_zero_weights() -> None:
    # u1 rated a (weight 1) and b (weight 0.25): it steps to a four times as often as to b.
    x = csr_matrix(np.array([[1, 0.25, 0], [0, 1, 1]], dtype=np.float32))
    walk = rp3beta(x, alpha=1.0, beta=0.0)
    # b -> u1 has 0.25 of b's weight 1.25; u1 -> a has 1 of u1's weight 1.25.
    assert walk[1, 0] == pytest.approx((0.25 / 1.25) * (1 / 1.25))
    # A stored zero is no edge: the walk equals the one on the graph without it.
    with_zero = csr_matrix(
        (np.array([1.0, 0.0, 1.0, 1.0]), (np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]))),
        shape=(2, 3),
    )
    without = csr_matrix(np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32))
    assert rp3beta(with_zero, 0.5, 0.3) == pytest.approx(rp3beta(without, 0.5, 0.3))


def test_every_baseline_reads_the_same_weighted_input(tmp_path: Path) -> None:
    """other_weight 0 leaves low ratings out of every model's input (no stored zeros), and a
    user left with nothing gets the most popular movies, not the first item ids."""
    split = time_split(write_release(tmp_path / "ml"), holdout=0.2)
    tuned = Tuned(split, {"baseline_als": {"iterations": 3}}, {"min_count": 1}, liked_min=4.0)

    dropped, kept = tuned.inputs(0.0), tuned.inputs(1.0)

    assert dropped.nnz == int((dropped.data > 0).sum())
    low = sum(
        1 for ratings in split.train.values() for r in ratings if r.rating < 4.0
    )  # each movie at most once per user in this release
    assert kept.nnz - dropped.nnz == low
    # A user whose every training rating is low: nothing counts for them at other_weight 0.
    user = split.users[0]
    split.train[user] = [Rating(r.user, r.movie, 1.0, r.ts) for r in split.train[user]]
    tuned = Tuned(split, {"baseline_als": {"iterations": 3}}, {"min_count": 1}, liked_min=4.0)
    seen = {r.movie for r in split.train[user]}
    popular = [m for m in tuned.data.by_popularity if m not in seen][:5]
    for kind, point in [
        ("ease", {"regularization": 10.0}),
        ("rp3beta", {"alpha": 0.5, "beta": 0.3}),
        ("als", {"factors": 4, "regularization": 0.1, "alpha": 2.0}),
    ]:
        recommend = tuned.baseline(kind, {**point, "other_weight": 0.0})
        assert recommend(user, seen, 5) == popular, kind


def test_recency_decay_weighs_each_rating_by_its_age(tmp_path: Path) -> None:
    """decay**age multiplies every rating's input weight, age 0 being the user's newest."""
    split = time_split(write_release(tmp_path / "ml"), holdout=0.2)
    tuned = Tuned(split, {}, {"min_count": 1}, liked_min=4.0)
    flat, decayed = tuned.inputs(1.0), tuned.inputs(1.0, 0.5)
    user = tuned.data.users[0]
    ratings = split.train[user]
    row = decayed[tuned.data.row[user]].toarray().ravel()
    for age, rating in enumerate(reversed(ratings)):
        column = tuned.data.column.get(rating.movie)
        if column is not None:
            assert row[column] == pytest.approx(0.5**age)
    assert flat.nnz == decayed.nnz
