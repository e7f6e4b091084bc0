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
  candidates, with every filter applied inside Qdrant; the service's item-item model
  (`retrieval.sequence.ItemItemModel`: EASE^R plus a next-item transition model over each
  user's time-ordered history) then re-ranks those candidates.

How the hybrid maps to serving: Qdrant stays the candidate source (filters, stock, eligibility
and the exclusions act there, as today). `retrieval.sequence` fits the item-item model from the
event store (`fit_from_store`, events in time order per person, weighted by event type), saves
it beside the collaborative model and re-ranks a request's candidates with `rerank`, reading
only the rows of the person's history and the candidates' columns. The test run calls exactly
that `rerank`. The EASE input weighs an interaction by how strong it is: here a rating of
`liked_min` or more weighs 1 and a lower one `other_weight`; in the service, the event weights
(a purchase over a view). Nothing of the re-ranking needs the test split: its weights are chosen
on the validation split, as are the baselines' parameters.

Metrics at k: recall (hits / relevant), NDCG (binary gains), MRR; catalog coverage (share of
movies recommended to anyone) and novelty (mean self-information of recommended movies); NDCG and
recall with percentile bootstrap intervals over users, and the ratio of the hybrid's NDCG to the
best baseline's with its own paired bootstrap interval.

The systems are in `baselines` and `attune_retrieval`, the grids and tuning in `tuning`, the
per-person metrics in `metrics`.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

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
from evals.ranking.attune_retrieval import ATTUNE_TYPES, SOURCES, AttuneRetrieval
from evals.ranking.baselines import Baselines
from evals.ranking.metrics import Recommend, mean_ndcg, ranking_metrics
from evals.ranking.tuning import (
    BASELINE_TYPES,
    Scored,
    Tuned,
    best_point,
    grid_points,
    recency_points,
)
from evals.recommenders import (
    bootstrap_mean,
    bootstrap_ratio,
)
from retrieval.collab import ALSParams
from retrieval.embedder import Embedder, load_embedder
from retrieval.hybrid import HybridWeights

log = logging.getLogger("attune.evals")


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
            " service's hybrid query; the hybrid then re-ranks Qdrant's candidates with the"
            " service's item-item model (retrieval.sequence): EASE^R plus next-item transitions"
            " from each user's time-ordered training ratings, each scaled to at most 1 over the"
            " candidates and added with `transition_weight` (and Qdrant's rank with"
            " `qdrant_weight`).",
            "Inputs: every tuned system (EASE^R, RP3beta, ALS and the hybrid's EASE stage) counts"
            " a training rating >= liked_min as 1 and a lower one as `other_weight`, tuned per"
            " system on the validation split over the same grid (0 leaves low ratings out);"
            " recency weighting (each rating times decay**age) is tried at each baseline's best"
            " point and kept where it wins on validation.",
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
            score = partial(_score_baseline, valid, on_valid, kind, k)
            chosen[kind] = best_point(grid_points(params, kind), score, points)
            # Recency weighting, offered to every baseline: tried at its best point.
            best_score = max(point["validation ndcg"] for point in points)
            recency = [p for p in recency_points(params, chosen[kind]) if p["decay"] != 1.0]
            if recency:
                tried: list[dict[str, Any]] = []
                with_decay = best_point(recency, score, tried)
                if max(point["validation ndcg"] for point in tried) > best_score:
                    chosen[kind] = with_decay
                points += tried
            tuning += [{"system": kind, **point} for point in points]
        if "hybrid" in kinds:
            regularization = float(
                chosen.get("ease", grid_points(params, "ease")[0])["regularization"]
            )
            attune = attune_on(valid, Path(folder) / "valid")
            try:
                make = on_valid.hybrid(attune, regularization)
                points = []
                chosen["hybrid"] = best_point(
                    grid_points(params, "hybrid"),
                    lambda point: mean_ndcg(valid, make(point), k),
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
    if "hybrid" in chosen:
        details[dataset.name]["served_itemitem"] = _served_check(on_test, chosen["hybrid"])
    intervals, gate = _intervals(ctx, dataset.name, systems, scored, k, resamples)
    tables[f"{dataset.name}: test split, 95% bootstrap intervals over users"] = intervals
    if gate:
        tables[f"{dataset.name}: hybrid / best baseline, NDCG@{k} on the test split"] = [gate]
        details[dataset.name]["ratio_to_best_baseline"] = gate


def _served_check(tuned: Tuned, chosen: dict[str, Any]) -> dict[str, Any]:
    """The item-item parameters the service runs (`ItemItemParams`' defaults) beside the ones the
    hybrid was measured with, and whether the service runs what was measured."""
    served = asdict(tuned.served())
    measured = asdict(tuned.item_item(float(chosen["regularization"]), chosen)[0].params)
    return {"served": served, "measured": measured, "same": served == measured}


def _score_baseline(split: Split, tuned: Tuned, kind: str, k: int, point: dict[str, Any]) -> float:
    return mean_ndcg(split, tuned.baseline(kind, point), k)


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
        return _served_hybrid(attune, tuned, chosen["hybrid"])
    use = frozenset(system.params.get("sources", SOURCES[system.type]))
    unknown = use - {"taste", "collab", "recent"}
    if unknown:
        raise SuiteError(f"systems: {system.name!r} has unknown sources {sorted(unknown)}")
    return lambda user, seen, k: attune.recommend(system.type, user, seen, k, use)


def _served_hybrid(attune: AttuneRetrieval, tuned: Tuned, point: dict[str, Any]) -> Recommend:
    """The hybrid as the service runs it: Qdrant's candidates, then `ItemItemModel.rerank`."""
    model, weigh = tuned.item_item(float(point["regularization"]), point)
    pool = model.params.pool

    def recommend(user: str, seen: set[str], k: int) -> list[str]:
        candidates = attune.recommend("hybrid", user, seen, pool, frozenset(SOURCES["hybrid"]))
        ratings = tuned.split.train[user]
        history = [(r.movie, weigh(r, len(ratings) - 1 - i)) for i, r in enumerate(ratings)]
        return model.rerank(candidates, history)[:k]

    return recommend


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
