"""Personalized search: how far a person's signals may move a text's match, on the product-search
suite's catalog and queries (`evals/suites/search.yaml`, Amazon UK toys).

The suite scores the match alone (an anonymous search). A known person's search is that match
re-ordered by their signals (`tools.retrieve._match_search`: their sources' RRF terms over the
matched items, fused with the match order). Nobody's history comes with this catalog, so people
are simulated from its products, the signals built as the service builds its taste signal
(`retrieval.hybrid.taste_vector` over the content vectors of ten items):

- `random`: twenty people whose ten items are drawn from the whole catalog (seeded), the same
  twenty for every query. Their signals have nothing to do with the request: whatever they lift
  into the top 10 is there for the person, not the words. The figure is NDCG@10 of the
  re-ordered match (and the share of the anonymous top 10 they replaced, `moved`);
- `relevant`: per query, five people whose ten items are drawn from that query's relevant
  products: whether the signals still help when they agree with the request.

The service's three sources (taste on the content vector, the collaborative factor and the
collaborative recent mean) cannot be rebuilt without interactions, so all three are the
simulated taste vector on the content vector at the service's weights (1, 2, 1): three signals
that agree, the case where they weigh most. What is re-ordered and how is the served code
(`retrieval.hybrid.refined_match`, `match_sources`, `tools.retrieve._match_terms` and
`_reordered`), with the multiplier of the sources' weights `in_match` varied.

`in_match` is chosen on the tuning half only: the best `relevant` NDCG@10 among the grid's points
that keep `random` NDCG@10 at least `KEEP` of the anonymous one. The held-out halves (`test`,
`fresh`, `fresh2`) are reported for x1 (the sources at their own weights, as served before
session 20), the served value and anonymous, with 95% bootstrap intervals over queries.

    ATTUNE_DATA_DIR=../shared/data python -m evals.search_personal [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from evals.ranking.metrics import ranking_metrics
from evals.search import HELD_OUT, Query, bootstrap_ci, ingested, suite_data
from retrieval.hybrid import match_sources, refined_match, taste_vector
from retrieval.index import VECTOR_NAME, FusedSearch, Hit, ItemFilter, Source, VectorIndex
from tools.retrieve import WEIGHTS, _match_terms, _reordered

SUITE = Path(__file__).parent / "suites" / "search.yaml"
GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 48.0, 64.0, 128.0)
KEEP = 0.975
"""The share of the anonymous NDCG@10 a person with unrelated signals must keep."""
PEOPLE = 20
RELEVANT_PEOPLE = 5
HISTORY = 10
K = 10


def person(index: VectorIndex, item_ids: list[str]) -> dict[str, Source]:
    """The service's three sources at its weights, all from the taste vector of `item_ids`."""
    vectors = [h.vectors[VECTOR_NAME] for h in index.hits(item_ids) if VECTOR_NAME in h.vectors]
    taste = taste_vector(np.stack(vectors))
    return {
        name: Source(VECTOR_NAME, taste, getattr(WEIGHTS, name))
        for name in ("taste", "collab", "recent")
    }


def reordered(matched: list[Hit], match: Any, sources: dict[str, Source], scale: float) -> list:
    scaled = match_sources(replace(WEIGHTS, in_match=scale), sources)
    order = _reordered(matched, _match_terms(matched, match, scaled), len(matched))
    return [hit.item_id for hit in order]


def score_queries(
    index: VectorIndex,
    embedder: Any,
    queries: list[Query],
    relevant: dict[str, set[str]],
    randoms: list[dict[str, Source]],
    rng: np.random.Generator,
) -> dict[str, dict[str, np.ndarray]]:
    """Per query: anonymous NDCG@10, and for each grid point the mean NDCG@10 (and `moved`) over
    the random people and over the query's relevant people."""
    out: dict[str, dict[str, list[float]]] = {"anonymous": {"ndcg": []}}
    for scale in GRID:
        out[str(scale)] = {"random": [], "moved": [], "relevant": []}
    for query in queries:
        gains = relevant[query.id]
        match = refined_match(
            index, WEIGHTS, query.text, embedder.embed_query(query.text), ItemFilter()
        )
        [matched] = index.fused_searches(
            [
                FusedSearch(
                    (),
                    WEIGHTS.match_limit,
                    ItemFilter(),
                    WEIGHTS.prefetch,
                    with_vectors=True,
                    match=match,
                )
            ]
        )
        anonymous = [hit.item_id for hit in matched]
        out["anonymous"]["ndcg"].append(ranking_metrics(anonymous, gains, K)[f"ndcg@{K}"])
        pool = sorted(gains)
        fans = [
            person(index, list(rng.choice(pool, min(HISTORY, len(pool)), replace=False)))
            for _ in range(RELEVANT_PEOPLE)
        ]
        for scale in GRID:
            row = out[str(scale)]
            orders = [reordered(matched, match, p, scale) for p in randoms]
            row["random"].append(
                float(np.mean([ranking_metrics(o, gains, K)[f"ndcg@{K}"] for o in orders]))
            )
            row["moved"].append(
                float(np.mean([len(set(o[:K]) - set(anonymous[:K])) / K for o in orders]))
            )
            row["relevant"].append(
                float(
                    np.mean(
                        [
                            ranking_metrics(reordered(matched, match, p, scale), gains, K)[
                                f"ndcg@{K}"
                            ]
                            for p in fans
                        ]
                    )
                )
            )
    return {s: {m: np.array(v) for m, v in row.items()} for s, row in out.items()}


def summary(values: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    low, high = bootstrap_ci(values, rng)
    return {"mean": round(float(values.mean()), 4), "ci95": [round(low, 4), round(high, 4)]}


def choose(scored: dict[str, dict[str, np.ndarray]]) -> float:
    """The grid point with the best `relevant` NDCG@10 among those keeping `KEEP` of the
    anonymous NDCG@10 for random people (tuning half only); ties go to the lower multiplier."""
    floor = KEEP * float(scored["anonymous"]["ndcg"].mean())
    kept = [s for s in GRID if scored[str(s)]["random"].mean() >= floor]
    if not kept:
        return GRID[-1]
    return max(kept, key=lambda s: (round(float(scored[str(s)]["relevant"].mean()), 6), -s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.time()
    data = suite_data(SUITE)
    queries, embedder, products = data.queries, data.embedder, data.products
    catalog, relevant, cache = data.catalog, data.relevant, data.cache
    rng = np.random.default_rng(data.seed)
    result: dict[str, Any] = {
        "embedder": embedder.name,
        "degraded": embedder.degraded,
        "served_in_match": WEIGHTS.in_match,
        "keep": KEEP,
        "people": PEOPLE,
        "relevant_people_per_query": RELEVANT_PEOPLE,
        "splits": {},
    }
    with ingested(catalog, embedder, Path("/tmp"), cache) as (index, _info):
        ids = [p.item_id for p in products]
        randoms = [
            person(index, list(rng.choice(ids, HISTORY, replace=False))) for _ in range(PEOPLE)
        ]
        for split in ("tune", *HELD_OUT):
            chosen = [q for q in queries if q.split == split]
            scored = score_queries(index, embedder, chosen, relevant, randoms, rng)
            entry: dict[str, Any] = {
                "queries": len(chosen),
                "anonymous_ndcg@10": summary(scored["anonymous"]["ndcg"], rng),
            }
            shown = GRID if split == "tune" else (1.0, WEIGHTS.in_match)
            entry["in_match"] = {
                str(s): {m: summary(v, rng) for m, v in scored[str(s)].items()} for s in shown
            }
            if split == "tune":
                entry["chosen_on_this_split"] = choose(scored)
            result["splits"][split] = entry
    result["seconds"] = round(time.time() - started, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
