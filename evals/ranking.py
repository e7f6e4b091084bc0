"""The `ranking` suite kind: top-k recommendation quality on a MovieLens-format dataset.

Systems (`type` in the suite file):

- `popularity`: most-rated in training, computed directly;
- `item-knn`: item-item cosine over training interactions, top-`neighbors` per item, computed
  directly (scipy) — the classic baseline;
- `ease`, `rp3beta`, `als`: the strong baselines of `evals.recommenders`, computed directly;
- `content`, `collab`: Attune's own retrieval through the service's path — items indexed on
  Qdrant Edge with their content vector (the configured embedder over title and genres) and
  collaborative vector (ALS, `retrieval.collab`), queried with `retrieval.hybrid.hybrid_search`
  and the person's training items excluded by a filter pushed into Qdrant;
- `hybrid`: Attune's hybrid — the fused Qdrant query (taste, collab, recent) fetches `pool`
  candidates, with every filter applied inside Qdrant; a re-ranking stage then scores those
  candidates with EASE^R and fuses the two orders by weighted reciprocal rank.

How the hybrid maps to serving: Qdrant stays the candidate source (filters, stock, eligibility
and the exclusions act there, as today). The re-ranking stage needs, per candidate j, the EASE
score Σ_i w_i B[i, j] over the person's recent items i: the service keeps B's rows for the items
in its catalog beside the collaborative model (trained offline like ALS) and reads only the
rows of the person's history and the candidate columns, a few hundred numbers per request. The
EASE input weighs an interaction by how strong it is: here a rating of `liked_min` or more
weighs 1 and a lower one `other_weight`; in the service, the event weights (a purchase over a
view). Nothing of the re-ranking needs the test split: its two weights are chosen on the
validation split, as are the baselines' parameters.

Fairness: the input weighting is not the hybrid's privilege. `other_weight` is a hyperparameter
of EASE^R, RP3beta and ALS too, searched over the same grid (`grids.inputs`) on the same
validation split; each system's own grid is multiplied by it.

Tuning: every tuned choice (EASE's λ, RP3beta's α and β, ALS's factors and regularization, the
hybrid's `ease_weight`, and every one's `other_weight`) is made on a validation split carved from the training
part only (`evals.movielens.validation_split`); the test split only scores.

Metrics at k: recall (hits / relevant), NDCG (binary gains), MRR; catalog coverage (share of
movies recommended to anyone) and novelty (mean self-information of recommended movies); NDCG and
recall with percentile bootstrap intervals over users, and the ratio of the hybrid's NDCG to the
best baseline's with its own paired bootstrap interval.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from evals.base import (
    DatasetSpec,
    Plot,
    Row,
    RunContext,
    SuiteError,
    SuiteResult,
    SystemSpec,
    embedder_label,
    register,
)
from evals.movielens import Split, novelty, popularity, time_split, validation_split
from evals.recommenders import (
    ALSRanker,
    InputWeights,
    ItemItem,
    UserItems,
    bootstrap_mean,
    bootstrap_ratio,
    ease,
    rerank,
    rp3beta,
)
from retrieval.collab import ALSParams, Interactions, fit
from retrieval.edge import EdgeIndex
from retrieval.embedder import Embedder, load_embedder
from retrieval.hybrid import HybridWeights, hybrid_search, hybrid_sources, taste_vector
from retrieval.index import COLLAB_VECTOR, ItemFilter
from store.schemas import Item

log = logging.getLogger("attune.evals")
Recommend = Callable[[str, set[str], int], list[str]]
"""(user, movies they rated in training, k) -> their top-k movies."""
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
        content: dict[str, np.ndarray],
        als: ALSParams,
        weights: HybridWeights,
        *,
        taste_items: int,
        liked_min: float,
    ) -> None:
        self.split, self.weights = split, weights
        self.taste_items, self.liked_min = taste_items, liked_min
        movies = list(split.movies.values())
        self.content = content
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


BASELINE_TYPES = {"popularity", "item-knn", "ease", "rp3beta", "als"}
TUNED_TYPES = {"ease", "rp3beta", "als", "hybrid"}
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "ease": {"regularization": [200.0, 500.0]},
    "rp3beta": {"alpha": [0.25, 0.5, 1.0], "beta": [0.1, 0.3, 0.6]},
    "als": {"factors": [32, 64, 128], "regularization": [0.01, 0.1], "alpha": [2.0, 10.0]},
    "hybrid": {"ease_weight": [0.0, 1.0, 3.0, 10.0]},
    "inputs": {"other_weight": [0.0, 0.1, 0.3, 1.0]},
}
"""Small grids on purpose: each point of the EASE grid is one matrix inverse."""


@dataclass
class Scored:
    row: Row
    per_user: dict[str, np.ndarray]  # metric -> value per evaluated user, in `split.users` order


class Tuned:
    """The tuned systems of one split, fitted on its training part.

    Every system reads the training ratings through `InputWeights` (ratings below `liked_min`
    count `other_weight`), a hyperparameter each tunes on the validation split. The hybrid
    re-ranks Attune's Qdrant candidates with EASE^R (see `rerank` and the module docstring);
    EASE models are fitted once per (regularization, other_weight) and shared by the `ease`
    baseline and the hybrid's re-ranking stage.
    """

    def __init__(
        self, split: Split, params: dict[str, Any], data_params: dict[str, int], liked_min: float
    ) -> None:
        self.split, self.params, self.liked_min = split, params, liked_min
        self.data = UserItems.from_split(split, **data_params)
        self._inputs: dict[float, csr_matrix] = {}
        self._ease: dict[tuple[float, float], ItemItem] = {}

    def inputs(self, other_weight: float) -> csr_matrix:
        """The training matrix with ratings below `liked_min` weighed `other_weight`."""
        if other_weight not in self._inputs:
            weights = InputWeights(self.liked_min, other_weight)
            self._inputs[other_weight] = self.data.weighted(self.split, weights)
        return self._inputs[other_weight]

    def ease(self, regularization: float, other_weight: float) -> ItemItem:
        key = (regularization, other_weight)
        if key not in self._ease:
            x = self.inputs(other_weight)
            self._ease[key] = ItemItem(self.data, ease(x, regularization), x)
        return self._ease[key]

    def baseline(self, kind: str, chosen: dict[str, Any]) -> Recommend:
        other = float(chosen.get("other_weight", 1.0))
        if kind == "ease":
            return self.ease(float(chosen["regularization"]), other).recommend
        x = self.inputs(other)
        if kind == "rp3beta":
            weights = rp3beta(x, float(chosen["alpha"]), float(chosen["beta"]))
            return ItemItem(self.data, weights, x).recommend
        model = {k: v for k, v in chosen.items() if k != "other_weight"}
        als = {**self.params.get("baseline_als", {}), **model}
        return ALSRanker(self.data, ALSParams(**als), x).recommend

    def hybrid(
        self, attune: AttuneRetrieval, regularization: float
    ) -> Callable[[dict[str, Any]], Recommend]:
        """The hybrid for a choice of `ease_weight` and `other_weight` (the EASE input weight of a
        rating below `liked_min`); Qdrant's candidates are fetched once per user."""
        pool = int(self.params.get("pool", 200))
        candidates: dict[str, list[str]] = {}

        def make(chosen: dict[str, Any]) -> Recommend:
            model = self.ease(regularization, float(chosen["other_weight"]))

            def recommend(user: str, seen: set[str], k: int) -> list[str]:
                if user not in candidates:
                    candidates[user] = attune.recommend(
                        "hybrid", user, seen, pool, frozenset(SOURCES["hybrid"])
                    )
                scores = model.scores(user)
                column = self.data.column
                ease_scores = {m: float(scores[column[m]]) for m in candidates[user] if m in column}
                return rerank(
                    candidates[user],
                    ease_scores,
                    ease_weight=float(chosen["ease_weight"]),
                    rrf_k=int(self.params.get("rrf_k", 60)),
                )[:k]

            return recommend

        return make


def _grid(params: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The system's own grid times the input grid (`other_weight`), shared by every system."""
    grids = params.get("grids", {})
    grid = {
        **DEFAULT_GRIDS[kind],
        **grids.get(kind, {}),
        **DEFAULT_GRIDS["inputs"],
        **grids.get("inputs", {}),
    }
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def _best(
    grid: list[dict[str, Any]], score: Callable[[dict[str, Any]], float], log_to: list[dict]
) -> dict[str, Any]:
    scores = []
    for point in grid:
        scores.append(score(point))
        log_to.append({**point, "validation ndcg": scores[-1]})
    return grid[int(np.argmax(scores))]


@register("ranking")
def run_ranking(ctx: RunContext) -> SuiteResult:
    params = ctx.suite.params
    k = int(params.get("k", 10))
    systems = ctx.suite.systems
    unknown = [s.type for s in systems if s.type not in BASELINE_TYPES | ATTUNE_TYPES]
    if unknown:
        raise SuiteError(
            f"systems: unknown types {unknown}: use {sorted(BASELINE_TYPES | ATTUNE_TYPES)}"
        )
    split_params = {
        "holdout": float(params.get("holdout", 0.2)),
        "relevant_min": float(params.get("relevant_min", 4.0)),
    }
    data_params = {
        "min_count": int(params.get("min_count", 2)),
        "max_items": int(params.get("max_items", 10_000)),
    }
    liked_min = float(params.get("liked_min", 4.0))
    resamples = int(params.get("bootstrap", 1000))
    embedder = load_embedder(
        params.get("embedding_model", "sentence-transformers/all-MiniLM-L6-v2")
    )
    rows: list[Row] = []
    details: dict[str, Any] = {"embedder": embedder_label(embedder)}
    tables: dict[str, list[dict[str, Any]]] = {}
    setup = {
        "k": k,
        "liked_min": liked_min,
        "resamples": resamples,
        "split_params": split_params,
        "data_params": data_params,
    }
    for dataset in ctx.suite.datasets:
        _run_dataset(ctx, dataset, embedder, setup, rows, details, tables)
    return SuiteResult(
        rows=rows,
        plots=[_ndcg_plot(rows, k)],
        notes=[
            "Split: per user, the most recent 20% of ratings held out (time order); relevant ="
            " held-out ratings >= 4; candidates = every movie not rated in training. Every"
            " figure in the tables above the tuning table is on this test split.",
            "Tuning: EASE^R, RP3beta, ALS and the hybrid's fusion are chosen on a validation"
            " split carved from the training part only (each user's training ratings split"
            " again by time, the most recent 20% held out); the test split is never used to"
            " choose anything. The tuning table's figures are validation figures.",
            "Baselines are computed directly; Attune's systems run through Qdrant Edge with the"
            " service's hybrid query; the hybrid then re-ranks Qdrant's candidates with EASE^R"
            " fused with Qdrant's order by weighted reciprocal rank.",
            "Inputs: every tuned system (EASE^R, RP3beta, ALS and the hybrid's EASE stage) counts"
            " a training rating >= liked_min as 1 and a lower one as `other_weight`, tuned per"
            " system on the validation split over the same grid (0 leaves low ratings out).",
        ],
        details=details,
        tables=tables,
        embedder=embedder_label(embedder),
    )


def _run_dataset(
    ctx: RunContext,
    dataset: DatasetSpec,
    embedder: Embedder,
    setup: dict[str, Any],
    rows: list[Row],
    details: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
) -> None:
    """Tune on the validation split of one dataset, then score every system on its test split."""
    params, systems, kinds = (
        ctx.suite.params,
        ctx.suite.systems,
        {s.type for s in ctx.suite.systems},
    )
    k, liked_min, resamples = setup["k"], setup["liked_min"], setup["resamples"]
    split_params, data_params = setup["split_params"], setup["data_params"]

    split = time_split(
        ctx.dataset_path(dataset),
        max_users=params.get("max_users"),
        sample_users=params.get("sample_users"),
        **{**split_params, **dataset.params},
    )
    valid = validation_split(split, **split_params)
    ctx.set_total(len(split.users) * len(systems) * len(ctx.suite.datasets))
    movies = list(split.movies.values())
    content = dict(
        zip(
            (m.movie_id for m in movies),
            embedder.embed([m.text() for m in movies]),
            strict=True,
        )
    )

    def attune_on(part: Split, folder: Path) -> AttuneRetrieval:
        return AttuneRetrieval(
            part,
            folder,
            embedder,
            content,
            ALSParams(**params.get("als", {})),
            HybridWeights(**params.get("weights", {})),
            taste_items=int(params.get("taste_items", 20)),
            liked_min=liked_min,
        )

    # Tuning: every choice is made on `valid`, carved from the training part only.
    chosen: dict[str, dict[str, Any]] = {}
    tuning: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=ctx.out_dir) as folder:
        on_valid = Tuned(valid, params, data_params, liked_min)
        for kind in sorted(kinds & {"ease", "rp3beta", "als"}):
            points: list[dict[str, Any]] = []
            chosen[kind] = _best(
                _grid(params, kind),
                partial(_score_baseline, valid, on_valid, kind, k),
                points,
            )
            tuning += [{"system": kind, **point} for point in points]
        if "hybrid" in kinds:
            regularization = float(chosen.get("ease", _grid(params, "ease")[0])["regularization"])
            attune = attune_on(valid, Path(folder) / "valid")
            try:
                make = on_valid.hybrid(attune, regularization)
                points = []
                chosen["hybrid"] = _best(
                    _grid(params, "hybrid"),
                    lambda point: _mean_ndcg(valid, make(point), k),
                    points,
                )
                chosen["hybrid"]["regularization"] = regularization
                tuning += [{"system": "hybrid", **point} for point in points]
            finally:
                attune.close()
        del on_valid
    tables[f"{dataset.name}: tuning on the validation split (NDCG@{k})"] = tuning

    # Test: fit on the whole training part with the chosen parameters, score held-out.
    counts = popularity(split)
    baselines = Baselines(split, int(params.get("neighbors", 100)))
    on_test = Tuned(split, params, data_params, liked_min)
    scored: dict[str, Scored] = {}
    with tempfile.TemporaryDirectory(dir=ctx.out_dir) as folder:
        served = attune_on(split, Path(folder) / "index") if kinds & ATTUNE_TYPES else None
        try:
            for system in systems:
                recommend = _recommender(system, baselines, served, on_test, chosen, liked_min)
                scored[system.name] = _evaluate(
                    ctx, dataset.name, system, split, recommend, counts, k
                )
                rows.append(scored[system.name].row)
        finally:
            if served is not None:
                served.close()
    details[dataset.name] = {
        "path": str(ctx.dataset_path(dataset)),
        "movies": len(split.movies),
        "train_ratings": sum(len(r) for r in split.train.values()),
        "evaluated_users": len(split.users),
        "validation_users": len(valid.users),
        "relevant_per_user": float(np.mean([len(split.relevant[u]) for u in split.users])),
        "chosen_on_validation": chosen,
    }
    intervals, gate = _intervals(ctx, dataset.name, systems, scored, k, resamples)
    tables[f"{dataset.name}: test split, 95% bootstrap intervals over users"] = intervals
    if gate:
        tables[f"{dataset.name}: hybrid / best baseline, NDCG@{k} on the test split"] = [gate]
        details[dataset.name]["ratio_to_best_baseline"] = gate


def _score_baseline(split: Split, tuned: Tuned, kind: str, k: int, point: dict[str, Any]) -> float:
    return _mean_ndcg(split, tuned.baseline(kind, point), k)


def _mean_ndcg(split: Split, recommend: Recommend, k: int) -> float:
    values = []
    for user in split.users:
        seen = {r.movie for r in split.train[user]}
        values.append(
            ranking_metrics(recommend(user, seen, k), split.relevant[user], k)[f"ndcg@{k}"]
        )
    return float(np.mean(values))


def _intervals(
    ctx: RunContext,
    dataset: str,
    systems: list[SystemSpec],
    scored: dict[str, Scored],
    k: int,
    resamples: int,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    seed = ctx.suite.seed
    table = []
    for name, result in scored.items():
        entry: dict[str, Any] = {"system": name}
        for metric in (f"ndcg@{k}", f"recall@{k}"):
            interval = bootstrap_mean(result.per_user[metric], resamples=resamples, seed=seed)
            entry[metric] = interval.value
            entry[f"{metric} 95% CI"] = f"[{interval.low:.4f}, {interval.high:.4f}]"
        table.append(entry)
    hybrid = next((s.name for s in systems if s.type == "hybrid"), None)
    others = [s.name for s in systems if s.type in BASELINE_TYPES]
    if hybrid is None or not others:
        return table, None
    metric = f"ndcg@{k}"
    best = max(others, key=lambda name: scored[name].row.metrics[metric])
    ratio = bootstrap_ratio(
        scored[hybrid].per_user[metric],
        scored[best].per_user[metric],
        resamples=resamples,
        seed=seed,
    )
    gate = {
        "system": hybrid,
        "best baseline": best,
        "ratio": ratio.value,
        "95% CI low": ratio.low,
        "95% CI high": ratio.high,
        "resamples": resamples,
        "seed": seed,
    }
    return table, gate


def _recommender(
    system: SystemSpec,
    baselines: Baselines,
    attune: AttuneRetrieval | None,
    tuned: Tuned,
    chosen: dict[str, dict[str, Any]],
    liked_min: float,
) -> Recommend:
    if system.type == "popularity":
        return lambda user, seen, k: baselines.popular(seen, k)
    if system.type == "item-knn":
        return baselines.item_knn
    if system.type in {"ease", "rp3beta", "als"}:
        return tuned.baseline(system.type, chosen[system.type])
    assert attune is not None
    if system.type == "hybrid":
        point = chosen["hybrid"]
        return tuned.hybrid(attune, float(point["regularization"]))(point)
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
    recommend: Recommend,
    counts: dict[str, int],
    k: int,
) -> Scored:
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
    row = Row(dataset=dataset, system=system.name, metrics=metrics, spread=spread)
    return Scored(row=row, per_user={name: np.asarray(v) for name, v in totals.items()})


def _ndcg_plot(rows: list[Row], k: int) -> Plot:
    def draw(ax: Any) -> None:
        labels = [f"{row.system}\n({row.dataset})" for row in rows]
        values = [row.metrics[f"ndcg@{k}"] for row in rows]
        errors = [row.spread.get(f"ndcg@{k}", 0.0) for row in rows]
        ax.bar(range(len(rows)), values, yerr=errors, capsize=3, color="#4c72b0")
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylabel(f"NDCG@{k} (± standard error)")

    return Plot(name=f"ndcg-at-{k}", title=f"NDCG@{k} by system", draw=draw)
