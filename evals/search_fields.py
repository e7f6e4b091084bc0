"""A prototype of field weighting on the lexical side of product search, on the tuning half of
the product-search suite only (`evals/suites/search.yaml`).

`retrieval.index.lexical_text` gives BM25 an item's title, category, tags and description once
each. Here the ingested shard's items and content vectors are copied into new Qdrant Edge shards
whose BM25 text repeats the title (a title word then weighs more than a description word) or
leaves the description out, with `lexical_text` replaced for the copy only; BM25 and the served
hybrid are then scored on the tuning queries, per query, for each variant. Shipping a variant
would mean changing `retrieval.index.lexical_text` (and re-indexing); this only measures it.

    ATTUNE_DATA_DIR=../shared/data python -m evals.search_fields [--out F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import retrieval.index as index_module
from evals.search import ingested, searcher, suite_data
from evals.search_cv import SUITE, ndcg, tuning_queries
from retrieval.edge import EdgeIndex
from retrieval.hybrid import HybridWeights
from store.catalog import get_items
from store.db import Database
from store.schemas import Item

VARIANTS = {
    "served": (1, 1),
    "title x2": (2, 1),
    "title x3": (3, 1),
    "no description": (1, 0),
}
"""Name: (title copies, description copies)."""


def weighted_text(title_copies: int, description_copies: int) -> Any:
    def text(item: Item) -> str:
        category = item.category.replace("_", " ")
        return " ".join(
            [item.title] * title_copies
            + [category, " ".join(item.tags)]
            + [item.description] * description_copies
        )

    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.time()
    data = suite_data(SUITE, tuning_queries)
    params, queries, embedder = data.params, data.queries, data.embedder
    catalog, relevant, cache = data.catalog, data.relevant, data.cache
    k = int(params.get("k", 10))
    weights = HybridWeights()
    result: dict[str, Any] = {"queries": [q.id for q in queries], "variants": {}}
    original = index_module.lexical_text
    with ingested(catalog, embedder, Path("/tmp"), cache) as (index, info):
        folder = Path(info["cached"])
        db = Database(f"sqlite:///{folder / 'search.db'}")
        with db.session() as session:
            items = get_items(session, [p.item_id for p in data.products])
        db.dispose()
        ids = sorted(items)
        vectors = index.vectors(ids)
        ids = [i for i in ids if i in vectors]
        per_query: dict[str, dict[str, list[float]]] = {}
        for name, (title, description) in VARIANTS.items():
            with tempfile.TemporaryDirectory() as work:
                copy = EdgeIndex(Path(work) / "edge", dim=embedder.dim)
                index_module.lexical_text = weighted_text(title, description)
                try:
                    for start in range(0, len(ids), 512):
                        batch = ids[start : start + 512]
                        copy.upsert(
                            [items[i] for i in batch], np.stack([vectors[i] for i in batch])
                        )
                finally:
                    index_module.lexical_text = original
                copy.optimize()
                per_query[name] = {
                    system: ndcg(searcher(system, copy, embedder, weights, k), queries, relevant, k)
                    for system in ("bm25", "hybrid")
                }
                copy.close()
            scores = per_query[name]
            result["variants"][name] = {
                "bm25_ndcg": round(float(np.mean(scores["bm25"])), 4),
                "hybrid_ndcg": round(float(np.mean(scores["hybrid"])), 4),
                "hybrid_over_bm25": round(
                    float(np.mean(scores["hybrid"]) / np.mean(scores["bm25"])), 4
                ),
                "hybrid_vs_served_queries_better_worse": [
                    int(
                        np.sum(
                            np.array(scores["hybrid"])
                            > np.array(per_query["served"]["hybrid"]) + 1e-9
                        )
                    ),
                    int(
                        np.sum(
                            np.array(scores["hybrid"])
                            < np.array(per_query["served"]["hybrid"]) - 1e-9
                        )
                    ),
                ],
            }
            print(name, result["variants"][name], flush=True)
    result["items"] = len(ids)
    result["seconds"] = round(time.time() - started, 1)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
