"""Choose the ranking suite's parameters on a validation split, never on the test split.

The validation split is made from the training part of the suite's split only: each user's
training ratings are split again by time (most recent 20% held out). Candidate parameter sets are
scored there by NDCG@10; the suite file then pins the chosen ones.

    python -m evals.tune_ranking ../shared/data/movielens/ml-latest-small
"""

from __future__ import annotations

import csv
import itertools
import json
import sys
import tempfile
from pathlib import Path

from evals.base import RunContext, Suite
from evals.movielens import time_split
from evals.ranking import run_ranking


def validation_folder(folder: Path, out: Path) -> Path:
    split = time_split(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / "movies.csv").write_bytes((folder / "movies.csv").read_bytes())
    with (out / "ratings.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["userId", "movieId", "rating", "timestamp"])
        for ratings in split.train.values():
            for r in ratings:
                writer.writerow([r.user, r.movie, r.rating, r.ts])
    return out


def main(folder: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        valid = validation_folder(Path(folder), Path(tmp) / "valid")
        grid = {
            "factors": [32, 64],
            "regularization": [0.05, 0.5],
            "sources": [("collab", "recent"), ("taste", "collab", "recent")],
            "recent": [0.5, 1.0],
        }
        for values in itertools.product(*grid.values()):
            p = dict(zip(grid, values, strict=True))
            suite = Suite(
                name="tune",
                kind="ranking",
                datasets=[{"name": "valid", "path": str(valid)}],
                systems=[
                    {"name": "hybrid", "type": "hybrid", "params": {"sources": p["sources"]}},
                ],
                params={
                    "als": {
                        "factors": p["factors"],
                        "regularization": p["regularization"],
                        "alpha": 2.0,
                    },
                    "weights": {"taste": 0.25, "collab": 2.0, "recent": p["recent"]},
                },
            )
            result = run_ranking(RunContext(suite=suite, suite_dir=Path(tmp), out_dir=Path(tmp)))
            scores = {row.system: round(row.metrics["ndcg@10"], 4) for row in result.rows}
            print(json.dumps({"params": p, "ndcg@10": scores}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
