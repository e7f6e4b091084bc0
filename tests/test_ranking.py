"""The MovieLens ranking suite: split, metrics, and the suite file run unchanged on another
release in the same CSV format (here a small synthetic one with a known structure)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from agents.settings import PROJECT_ROOT
from api.cli import app
from evals.base import RunContext
from evals.movielens import novelty, time_split, validation_split
from evals.ranking.metrics import ranking_metrics
from evals.runner import load_suite

SUITE = PROJECT_ROOT / "evals" / "suites" / "movielens.yaml"
GENRES = ["Comedy", "Drama", "Horror", "Sci-Fi"]


def write_release(folder: Path, *, users: int = 80, movies: int = 120, seed: int = 0) -> Path:
    """A MovieLens-format release where each user loves one genre and rates it highly."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "movies.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")  # the releases use CRLF
        writer.writerow(["movieId", "title", "genres"])
        for m in range(1, movies + 1):
            writer.writerow([m, f"Movie number {m} (19{m % 90 + 10})", GENRES[m % 4]])
    with (folder / "ratings.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for u in range(1, users + 1):
            genre = u % 4
            liked = [m for m in range(1, movies + 1) if m % 4 == genre]
            other = [m for m in range(1, movies + 1) if m % 4 != genre]
            picks = list(rng.choice(liked, 14, replace=False)) + list(
                rng.choice(other, 4, replace=False)
            )
            for n, m in enumerate(rng.permutation(picks)):
                rating = 5.0 if m % 4 == genre else 2.0
                writer.writerow([u, m, rating, 1_000_000 + u * 1000 + n])
    return folder


def test_time_split_holds_out_the_most_recent_ratings(tmp_path: Path) -> None:
    split = time_split(write_release(tmp_path / "ml"), holdout=0.2)
    for user in split.users:
        train_times = [r.ts for r in split.train[user]]
        held = split.heldout[user]
        assert max(train_times) < min(r.ts for r in held)
        assert split.relevant[user] == {r.movie for r in held if r.rating >= 4}
        assert not split.relevant[user] & {r.movie for r in split.train[user]}
        assert len(held) == round(18 * 0.2)


def test_ranking_metrics_by_hand() -> None:
    metrics = ranking_metrics(["a", "x", "b", "y"], {"a", "b", "c"}, k=4)
    assert metrics["recall@4"] == pytest.approx(2 / 3)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["ndcg@4"] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert metrics["mrr@4"] == 1.0
    assert ranking_metrics(["x", "a"], {"a"}, k=2)["mrr@2"] == 0.5
    assert ranking_metrics(["x"], {"a"}, k=1) == {"recall@1": 0, "ndcg@1": 0, "mrr@1": 0}


def test_novelty_is_higher_for_rarer_movies() -> None:
    counts = {"hit": 50, "niche": 2}
    assert novelty(["niche"], counts, 100) > novelty(["hit"], counts, 100)
    assert novelty(["hit"], counts, 100) == pytest.approx(-math.log2(0.5))


def test_the_suite_runs_unchanged_on_another_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = write_release(tmp_path / "ml-other")
    monkeypatch.setenv("ATTUNE_MOVIELENS_DIR", str(release))
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["eval", "run", str(SUITE), "--out", str(out), "--no-progress"]
    )
    assert result.exit_code in (0, 1), result.output
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {row["system"]: row["metrics"] for row in metrics["rows"]}
    assert set(rows) == {
        "most-popular",
        "item-knn",
        "ease",
        "rp3beta",
        "als",
        "content-only",
        "collab-only",
        "attune-hybrid",
    }
    # Users love one genre: learning it must beat recommending what is popular overall.
    for system in ("ease", "rp3beta", "als", "collab-only", "attune-hybrid"):
        assert rows[system]["ndcg@10"] > rows["most-popular"]["ndcg@10"], system
    # Every tuned system was tuned on the validation split, and the gate's ratio has an interval.
    details = metrics["details"]["movielens"]
    assert set(details["chosen_on_validation"]) == {"ease", "rp3beta", "als", "hybrid"}
    gate = details["ratio_to_best_baseline"]
    assert gate["95% CI low"] <= gate["ratio"] <= gate["95% CI high"]
    assert gate["best baseline"] == max(
        ("most-popular", "item-knn", "ease", "rp3beta", "als"), key=lambda s: rows[s]["ndcg@10"]
    )
    # The report names the dataset it ran on and the embedder, fallback or not.
    assert metrics["datasets"][0]["path"] == str(release)
    assert metrics["embedder"]["fallback"] == (metrics["embedder"]["reason"] is not None)
    report = (out / "report.md").read_text()
    assert f"`{release}`" in report
    assert f"`{metrics['embedder']['model']}`" in report
    for name in ("report.md", "report.html"):
        assert "attune-hybrid" in (out / name).read_text()
    assert list(out.glob("*.png"))
    assert (result.exit_code == 0) == metrics["passed"]


def test_the_suite_honours_attune_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_release(tmp_path / "data" / "movielens" / "ml-latest-small")
    monkeypatch.delenv("ATTUNE_MOVIELENS_DIR", raising=False)
    monkeypatch.setenv("ATTUNE_DATA_DIR", str(tmp_path / "data"))

    suite = load_suite(SUITE)

    (dataset,) = suite.datasets
    context = RunContext(suite=suite, suite_dir=SUITE.parent, out_dir=tmp_path)
    assert context.dataset_path(dataset) == tmp_path / "data" / "movielens" / "ml-latest-small"
    monkeypatch.setenv("ATTUNE_MOVIELENS_DIR", str(tmp_path / "other"))
    assert load_suite(SUITE).datasets[0].path == tmp_path / "other"


# The suite's own default (`${ATTUNE_DATA_DIR:-../shared/data}`), so a checkout elsewhere can point
# at the data.
REAL_RELEASE = (
    Path(os.environ.get("ATTUNE_DATA_DIR") or PROJECT_ROOT.parent / "shared" / "data")
    / "movielens"
    / "ml-latest-small"
)


@pytest.mark.skipif(not REAL_RELEASE.is_dir(), reason=f"{REAL_RELEASE} is not on this machine")
def test_the_real_suite_runs_on_a_sample_and_reports_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite file, unchanged but for a 100-user sample and one-point grids, on the real
    release. The gate is not asserted here: a 100-user sample does not measure it. The full run
    (README, Evaluation) is `attune eval run evals/suites/movielens.yaml`."""
    suite = yaml.safe_load(SUITE.read_text())
    suite["params"].update(
        sample_users=100,
        max_items=1500,
        bootstrap=200,
        grids={
            "ease": {"regularization": [200.0]},
            "rp3beta": {"alpha": [0.5], "beta": [0.3]},
            "als": {"factors": [32], "regularization": [0.1], "alpha": [2.0]},
            "hybrid": {"transition_weight": [0.0, 0.2], "qdrant_weight": [0.0]},
            "inputs": {"other_weight": [0.0, 1.0]},
            "recency": {"decay": [1.0, 0.95]},
        },
    )
    small = tmp_path / "movielens-sample.yaml"
    small.write_text(yaml.safe_dump(suite))
    monkeypatch.setenv("ATTUNE_MOVIELENS_DIR", str(REAL_RELEASE))
    out = tmp_path / "report"

    result = CliRunner().invoke(
        app, ["eval", "run", str(small), "--out", str(out), "--no-progress"]
    )

    assert result.exit_code in (0, 1), result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (result.exit_code == 0) == metrics["passed"]
    details = metrics["details"]["movielens"]
    assert 0 < details["evaluated_users"] <= 100
    # Every tuned system chose its input weighting on the validation split, from the same grid.
    chosen = details["chosen_on_validation"]
    assert set(chosen) == {"ease", "rp3beta", "als", "hybrid"}
    assert all(point["other_weight"] in (0.0, 1.0) for point in chosen.values())
    tuning = metrics["tables"]["movielens: tuning on the validation split (NDCG@10)"]
    for system in chosen:
        assert {row["other_weight"] for row in tuning if row["system"] == system} == {0.0, 1.0}
    # Recency weighting was offered to every baseline, on the validation split too.
    for system in ("ease", "rp3beta", "als"):
        assert {row.get("decay", 1.0) for row in tuning if row["system"] == system} == {1.0, 0.95}
    assert {row["transition_weight"] for row in tuning if row["system"] == "hybrid"} == {0.0, 0.2}
    # The ratio to the best baseline and its interval are reported, on the test split.
    gate = details["ratio_to_best_baseline"]
    rows = {row["system"]: row["metrics"]["ndcg@10"] for row in metrics["rows"]}
    best = max(("most-popular", "item-knn", "ease", "rp3beta", "als"), key=rows.__getitem__)
    assert gate["best baseline"] == best
    assert gate["ratio"] == pytest.approx(rows["attune-hybrid"] / rows[best])
    assert gate["95% CI low"] <= gate["ratio"] <= gate["95% CI high"]
    assert "hybrid / best baseline" in (out / "report.md").read_text()


def test_tune_ranking_scores_the_qdrant_query_on_the_validation_split_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from evals import tune_ranking

    release = write_release(tmp_path / "ml")
    monkeypatch.setattr(
        tune_ranking, "GRID", {"factors": [8], "regularization": [0.05], "recent": [0.5]}
    )
    scored: list[set[str]] = []
    real_mean_ndcg = tune_ranking.mean_ndcg

    def spy(split, recommend, k):  # type: ignore[no-untyped-def]
        scored.append(set(split.users))
        return real_mean_ndcg(split, recommend, k)

    monkeypatch.setattr(tune_ranking, "mean_ndcg", spy)

    tune_ranking.main(str(release))

    (line,) = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["params"] == {"factors": 8, "regularization": 0.05, "recent": 0.5}
    assert 0 < result["validation ndcg@10"] <= 1
    # Scored once, on the validation split of the suite's split, not on a split of it.
    test_split = time_split(release)
    assert scored == [set(validation_split(test_split).users)]
