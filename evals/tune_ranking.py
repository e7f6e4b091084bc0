"""Choose the hybrid's Qdrant query (ALS factors and regularization, the weight of the recent
source) on the validation split, never on the test split; the suite file pins the result
(`params.als`, `params.weights`). Everything else the suite tunes at run time.

The validation split is the suite's own (`evals.movielens.validation_split` of the suite's time
split): each user's training ratings split again by time. Each point is scored by the NDCG@10 of
the Qdrant stage alone (no EASE re-ranking) on that split's held-out ratings.

    python -m evals.tune_ranking ../shared/data/movielens/ml-latest-small
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from evals.movielens import Movie, time_split, validation_split
from evals.ranking.attune_retrieval import SOURCES, AttuneRetrieval
from evals.ranking.metrics import mean_ndcg
from retrieval.collab import ALSParams
from retrieval.embedder import load_embedder
from retrieval.hybrid import HybridWeights

GRID: dict[str, list[Any]] = {
    "factors": [32, 64],
    "regularization": [0.05, 0.5],
    "recent": [0.5, 1.0],
}


def main(folder: str, *, k: int = 10, liked_min: float = 4.0) -> None:
    valid = validation_split(time_split(Path(folder)))
    embedder = load_embedder("sentence-transformers/all-MiniLM-L6-v2")
    movies: list[Movie] = list(valid.movies.values())
    content = dict(
        zip((m.movie_id for m in movies), embedder.embed([m.text() for m in movies]), strict=True)
    )
    use = frozenset(SOURCES["hybrid"])
    for values in itertools.product(*GRID.values()):
        point = dict(zip(GRID, values, strict=True))
        with tempfile.TemporaryDirectory() as tmp:
            attune = AttuneRetrieval(
                valid,
                Path(tmp),
                embedder,
                content,
                ALSParams(
                    factors=point["factors"], regularization=point["regularization"], alpha=2.0
                ),
                HybridWeights(taste=0.25, collab=2.0, recent=point["recent"]),
                taste_items=20,
                liked_min=liked_min,
            )
            try:
                score = mean_ndcg(valid, partial(attune.recommend, "hybrid", use=use), k)
            finally:
                attune.close()
        print(json.dumps({"params": point, "validation ndcg@10": round(score, 4)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
