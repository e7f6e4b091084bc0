"""The `ranking` suite kind: top-k recommendation quality on a MovieLens-format dataset.

Systems (`type` in the suite file):

- `popularity`: most-rated in training, computed directly;
- `item-knn`: item-item cosine over training interactions, top-`neighbors` per item, computed
  directly (scipy) — the classic baseline;
- `content`, `collab`, `hybrid`: Attune's own retrieval through the service's path — items
  indexed on Qdrant Edge with their content vector (the configured embedder over title and
  genres) and collaborative vector (ALS, `retrieval.collab`), queried with
  `retrieval.hybrid.hybrid_search` and the person's training items excluded by a filter pushed
  into Qdrant.

Metrics at k: recall (hits / relevant), NDCG (binary gains), MRR; catalog coverage (share of
movies recommended to anyone) and novelty (mean self-information of recommended movies).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from evals.base import Plot, Row, RunContext, SuiteError, SuiteResult, SystemSpec, register
from evals.movielens import Split, novelty, popularity, time_split
from retrieval.collab import ALSParams, Interactions, fit
from retrieval.edge import EdgeIndex
from retrieval.embedder import Embedder, load_embedder
from retrieval.hybrid import HybridWeights, hybrid_search, hybrid_sources, taste_vector
from retrieval.index import COLLAB_VECTOR, ItemFilter
from store.schemas import Item

log = logging.getLogger("attune.evals")
Recommender = Callable[[str, int], list[str]]
ATTUNE_TYPES = {"content", "collab", "hybrid"}
SOURCES = {
    "content": ("taste",),
    "collab": ("collab",),
    "hybrid": ("taste", "collab", "recent"),
}  # a system's `params.sources` may choose others


def ranking_metrics(recommended: list[str], relevant: set[str], k: int) -> dict[str, float]:
    top = recommended[:k]
    gains = [1.0 if item in relevant else 0.0 for item in top]
    dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains))
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    first = next((rank for rank, g in enumerate(gains) if g), None)
    return {
        f"recall@{k}": sum(gains) / len(relevant),
        f"ndcg@{k}": dcg / ideal if ideal else 0.0,
        f"mrr@{k}": 1 / (first + 1) if first is not None else 0.0,
    }


class Baselines:
    """Most-popular and item-kNN over the training interactions, without Qdrant."""

    def __init__(self, split: Split, neighbors: int) -> None:
        counts = popularity(split)
        self.by_popularity = sorted(counts, key=lambda m: (-counts[m], m))
        self.items = sorted(counts)
        column = {m: i for i, m in enumerate(self.items)}
        users = sorted(split.train)
        rows, cols = [], []
        for row, user in enumerate(users):
            for r in split.train[user]:
                rows.append(row)
                cols.append(column[r.movie])
        x = csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)),
            shape=(len(users), len(self.items)),
        )
        x.sum_duplicates()
        x.data[:] = 1.0
        self.user_rows = {user: x.getrow(row) for row, user in enumerate(users)}
        self.similarity = _top_k_cosine(x, neighbors)

    def popular(self, seen: set[str], k: int) -> list[str]:
        return [m for m in self.by_popularity if m not in seen][:k]

    def item_knn(self, user: str, seen: set[str], k: int) -> list[str]:
        scores = np.asarray((self.user_rows[user] @ self.similarity).todense()).ravel()
        order = np.argsort(-scores, kind="stable")
        out = []
        for i in order:
            if scores[i] <= 0:
                break
            if self.items[i] not in seen:
                out.append(self.items[i])
                if len(out) == k:
                    break
        return out if len(out) == k else out + self.popular(seen | set(out), k - len(out))


def _top_k_cosine(x: csr_matrix, neighbors: int, chunk: int = 1024) -> csr_matrix:
    """Item-item cosine similarity keeping each item's `neighbors` most similar items."""
    norms = np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    xt = x.T.tocsr()
    n = x.shape[1]
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):
        block = np.asarray((xt[start : start + chunk] @ x).todense(), dtype=np.float32)
        block /= norms[start : start + chunk, None] * norms[None, :]
        for offset in range(block.shape[0]):
            block[offset, start + offset] = 0.0  # an item is not its own neighbour
        keep = min(neighbors, n - 1)
        top = np.argpartition(-block, keep, axis=1)[:, :keep]
        for offset, columns in enumerate(top):
            values = block[offset, columns]
            mask = values > 0
            rows.extend([start + offset] * int(mask.sum()))
            cols.extend(columns[mask].tolist())
            vals.extend(values[mask].tolist())
    return csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32)


class AttuneRetrieval:
    """The movies indexed on Qdrant Edge with content and collab vectors, queried as the service
    queries them."""

    def __init__(
        self,
        split: Split,
        folder: Path,
        embedder: Embedder,
        als: ALSParams,
        weights: HybridWeights,
        *,
        taste_items: int,
        liked_min: float,
    ) -> None:
        self.split, self.weights = split, weights
        self.taste_items, self.liked_min = taste_items, liked_min
        movies = list(split.movies.values())
        self.content = dict(
            zip(
                (m.movie_id for m in movies),
                embedder.embed([m.text() for m in movies]),
                strict=True,
            )
        )
        self.model = fit(
            Interactions.from_triples(
                (user, movie, 1.0) for user, movie, _ in split.train_triples()
            ),
            als,
        )
        self.index = EdgeIndex(folder, dim=embedder.dim, collab_dim=als.factors)
        items = [
            Item(
                item_id=m.movie_id,
                title=m.title[:300] or m.movie_id,
                description=", ".join(m.genres),
                category=(m.genres[0] if m.genres else "unknown").lower()[:64],
                tags=list(m.genres),
                price=1.0,
                margin=0.0,
                stock=1,
            )
            for m in movies
        ]
        self.index.upsert(items, np.stack([self.content[m.movie_id] for m in movies]))
        self.index.set_vectors(COLLAB_VECTOR, self.model.item_vectors())
        self.index.optimize()

    def recommend(
        self, kind: str, user: str, seen: set[str], k: int, use: frozenset[str]
    ) -> list[str]:
        history = self.split.train[user]
        liked = [r for r in history if r.rating >= self.liked_min] or history
        recent = [r.movie for r in reversed(liked)][: self.taste_items]
        taste = recent_collab = None
        if recent and "taste" in use:
            taste = taste_vector(np.stack([self.content[m] for m in recent]))
        factors = self.model.item_vectors(recent)
        if "recent" in use and factors:
            recent_collab = taste_vector(
                np.stack([factors[m] for m in recent if m in factors]), normalize=False
            )
        sources = hybrid_sources(
            self.weights,
            taste=taste,
            collab=self.model.user_vector(user) if "collab" in use else None,
            recent=recent_collab,
        )
        flt = ItemFilter(exclude_ids=tuple(seen))
        hits = hybrid_search(self.index, sources, k=k, flt=flt, prefetch=self.weights.prefetch)
        return [hit.item_id for hit in hits]

    def close(self) -> None:
        self.index.close()


@register("ranking")
def run_ranking(ctx: RunContext) -> SuiteResult:
    params = ctx.suite.params
    k = int(params.get("k", 10))
    rows: list[Row] = []
    details: dict[str, Any] = {}
    systems = ctx.suite.systems
    unknown = [s.type for s in systems if s.type not in {"popularity", "item-knn"} | ATTUNE_TYPES]
    if unknown:
        raise ValueError(
            f"unknown system types {unknown}: use popularity, item-knn, {ATTUNE_TYPES}"
        )
    split_params = {
        "holdout": float(params.get("holdout", 0.2)),
        "relevant_min": float(params.get("relevant_min", 4.0)),
        "max_users": params.get("max_users"),
    }
    embedder = load_embedder(
        params.get("embedding_model", "sentence-transformers/all-MiniLM-L6-v2")
    )
    for dataset in ctx.suite.datasets:
        split = time_split(ctx.dataset_path(dataset), **{**split_params, **dataset.params})
        users = split.users
        ctx.set_total(len(users) * len(systems) * len(ctx.suite.datasets))
        details[dataset.name] = {
            "movies": len(split.movies),
            "train_ratings": sum(len(r) for r in split.train.values()),
            "evaluated_users": len(users),
            "relevant_per_user": float(np.mean([len(split.relevant[u]) for u in users])),
            "embedder": embedder.name,
            "embedder_degraded": embedder.degraded,
        }
        counts = popularity(split)
        baselines = Baselines(split, int(params.get("neighbors", 100)))
        with tempfile.TemporaryDirectory(dir=ctx.out_dir) as folder:
            attune = None
            if any(s.type in ATTUNE_TYPES for s in systems):
                attune = AttuneRetrieval(
                    split,
                    Path(folder) / "index",
                    embedder,
                    ALSParams(**params.get("als", {})),
                    HybridWeights(**params.get("weights", {})),
                    taste_items=int(params.get("taste_items", 20)),
                    liked_min=float(params.get("liked_min", 4.0)),
                )
            try:
                for system in systems:
                    recommend = _recommender(system, baselines, attune)
                    rows.append(_evaluate(ctx, dataset.name, system, split, recommend, counts, k))
            finally:
                if attune is not None:
                    attune.close()
    return SuiteResult(
        rows=rows,
        plots=[_ndcg_plot(rows, k)],
        notes=[
            "Split: per user, the most recent 20% of ratings held out (time order); relevant ="
            " held-out ratings >= 4; candidates = every movie not rated in training. Baselines"
            " are computed directly; Attune's systems run through Qdrant Edge with the"
            " service's hybrid query."
        ],
        details=details,
    )


def _recommender(
    system: SystemSpec, baselines: Baselines, attune: AttuneRetrieval | None
) -> Callable[[str, set[str], int], list[str]]:
    if system.type == "popularity":
        return lambda user, seen, k: baselines.popular(seen, k)
    if system.type == "item-knn":
        return baselines.item_knn
    assert attune is not None
    use = frozenset(system.params.get("sources", SOURCES[system.type]))
    unknown = use - {"taste", "collab", "recent"}
    if unknown:
        raise SuiteError(f"systems: {system.name!r} has unknown sources {sorted(unknown)}")
    return lambda user, seen, k: attune.recommend(system.type, user, seen, k, use)


def _evaluate(
    ctx: RunContext,
    dataset: str,
    system: SystemSpec,
    split: Split,
    recommend: Callable[[str, set[str], int], list[str]],
    counts: dict[str, int],
    k: int,
) -> Row:
    totals: dict[str, list[float]] = {}
    recommended: set[str] = set()
    novelties = []
    for user in split.users:
        seen = {r.movie for r in split.train[user]}
        top = recommend(user, seen, k)
        for name, value in ranking_metrics(top, split.relevant[user], k).items():
            totals.setdefault(name, []).append(value)
        recommended.update(top)
        novelties.append(novelty(top, counts, len(split.train)))
        ctx.progress(1)
    metrics = {name: float(np.mean(values)) for name, values in totals.items()}
    metrics["coverage"] = len(recommended) / len(split.movies)
    metrics["novelty"] = float(np.mean(novelties))
    spread = {
        name: float(np.std(values, ddof=1) / math.sqrt(len(values)))
        for name, values in totals.items()
    }
    return Row(dataset=dataset, system=system.name, metrics=metrics, spread=spread)


def _ndcg_plot(rows: list[Row], k: int) -> Plot:
    def draw(ax: Any) -> None:
        labels = [f"{row.system}\n({row.dataset})" for row in rows]
        values = [row.metrics[f"ndcg@{k}"] for row in rows]
        errors = [row.spread.get(f"ndcg@{k}", 0.0) for row in rows]
        ax.bar(range(len(rows)), values, yerr=errors, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylabel(f"NDCG@{k} (± standard error)")

    return Plot(name=f"ndcg-at-{k}", title=f"NDCG@{k} by system", draw=draw)
