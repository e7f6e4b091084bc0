"""The search suite's tuning-half cross-validation (`evals.search_cv`): it reads no held-out
query, and it scores a tuning procedure on queries its choice did not see."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evals.search_cv import cross_validate, tuning_queries

QUERIES = """
queries:
  - {id: a, split: tune, text: wooden train, relevant: [{path: [Trains]}]}
  - {id: b, split: test, text: chess, relevant: [{path: [Chess]}]}
  - {id: c, split: fresh, text: kite, relevant: [{path: [Kites]}]}
  - {id: d, split: tune, text: dice, relevant: [{path: [Dice]}]}
"""


def test_only_the_tuning_half_is_read(tmp_path: Path) -> None:
    path = tmp_path / "queries.yaml"
    path.write_text(QUERIES)

    assert [q.id for q in tuning_queries([path])] == ["a", "d"]


def test_cross_validation_scores_each_query_with_a_point_chosen_without_it() -> None:
    # Point 0 is best on every query but the last; point 1 only on the last, by a lot, so that
    # it is the best in sample. Chosen without the last query, point 0 scores it 0.
    scores = np.array([[1.0, 1.0, 1.0, 0.0], [0.9, 0.9, 0.9, 1.0]])

    cv = cross_validate(scores, [0, 1], folds=4, repeats=3, seed=0)

    assert cv["loo"].tolist() == [0.9, 0.9, 0.9, 0.0]
    assert cv["kfold"].shape == (3, 4)
    assert cv["kfold"].mean() < scores[1].mean()  # below the in-sample best
