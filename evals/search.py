"""Product search on a real catalog: BM25 alone, dense alone and Attune's hybrid, per query half.

The catalog (the Amazon UK toys sample by default: a header-less CSV of uniq_id, name, category
path, manufacturer, price, stock text, reviews, answered questions, rating) is rewritten with
the suite's category and description in the report folder and ingested through `attune ingest items`' own code
(`prepare_source` + `ingest_file`) with a field mapping, into a Qdrant Edge shard with the
configured embedder. Queries and their relevance rules come from a YAML file written before any
system ran (`evals/data/search_queries.yaml`): a product is relevant when a rule over its category
path and name holds. Metrics are precision@k and NDCG@k (binary gains), with percentile bootstrap
intervals over queries.

Systems: `bm25` (the lexical sparse vector alone), `dense` (the content vector alone), `hybrid`
(the served text match: both fused inside one Qdrant query, `retrieval.hybrid.text_match`). The
hybrid's fusion weights are tuned on the `tune` half only (a small grid, best mean NDCG@k); the
`test` half is reported apart as held out. With `select: served` the grid is only scored on the
tuning half (a sensitivity table) and every half is scored with the served weights.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import inspect
import itertools
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evals.base import Row, RunContext, SuiteError, SuiteResult, embedder_label, register
from evals.ranking.metrics import ranking_metrics
from retrieval.edge import EdgeIndex
from retrieval.embedder import MINILM, CachedEmbedder, Embedder, load_embedder
from retrieval.hybrid import HybridWeights, refined_match
from retrieval.index import LEXICAL_AVG_LEN, ItemFilter, Source, VectorIndex, lexical_text
from retrieval.ingest.run import ingest_file
from retrieval.ingest.source import prepare_source
from store.db import Database

SYSTEMS = ("bm25", "dense", "hybrid")
SPLITS = {
    "tune": "tuning",
    "test": "held-out",
    "fresh": "fresh held-out",
    "fresh2": "second fresh held-out",
}
"""Query halves: fusion is tuned on `tune` only; `test`, `fresh` and `fresh2` (a second and a
third set, each written and committed before any system ran on it, after the search code was
tuned, over other parts of the catalog) are held out."""
HELD_OUT = ("test", "fresh", "fresh2")
POOLED = "all held-out"
"""The held-out sets together, for the hybrid/baseline ratios only: every query no system,
weight or tokenizer was chosen on."""
# The rewritten catalog is header-less; ingest takes its columns by number and reads the price
# and stock text ("£3.99", "5 new") itself.
MAPPING = {"item_id": "1", "title": "2", "category": "3", "description": "4"}
MAPPING |= {"price": "5", "stock": "6"}
DEFAULTS = {"currency": "GBP", "price": "0.01"}
"""Search ignores prices, so a product without one is kept at a nominal price, and counted."""
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


@dataclass(frozen=True)
class Product:
    item_id: str
    name: str
    path: str


@dataclass(frozen=True)
class Query:
    id: str
    split: str
    text: str
    clauses: tuple[dict[str, list[str]], ...]

    def relevant(self, product: Product) -> bool:
        name, path = product.name.lower(), product.path.lower()
        for clause in self.clauses:
            if "path" in clause and not any(p.lower() in path for p in clause["path"]):
                continue
            if "name" in clause and not any(n.lower() in name for n in clause["name"]):
                continue
            if not all(n.lower() in name for n in clause.get("name_all", [])):
                continue
            return True
        return False


def load_queries(path: Path) -> list[Query]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    queries = []
    for i, entry in enumerate(data["queries"]):
        if entry.get("split") not in SPLITS or not entry.get("relevant"):
            raise SuiteError(f"{path}: queries[{i}] needs split ({', '.join(SPLITS)}) and relevant")
        clauses = tuple(entry["relevant"])
        for clause in clauses:
            if not set(clause) <= {"path", "name", "name_all"}:
                raise SuiteError(f"{path}: queries[{i}].relevant: use path, name and name_all")
        queries.append(Query(entry["id"], entry["split"], entry["text"], clauses))
    return queries


def _ratios(
    by_system: dict[str, dict[str, np.ndarray]],
    label: str,
    size: int,
    k: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """The hybrid's NDCG@k over each baseline's on the same queries, with a paired bootstrap
    95% interval of the ratio of means."""
    rows = []
    for baseline in ("bm25", "dense"):
        ratio, low, high = ratio_ci(
            by_system["hybrid"][f"ndcg@{k}"], by_system[baseline][f"ndcg@{k}"], rng
        )
        rows.append(
            {
                "queries": label,
                "n": size,
                "baseline": baseline,
                f"hybrid/baseline ndcg@{k}": round(ratio, 3),
                "ci_low": round(low, 3),
                "ci_high": round(high, 3),
            }
        )
    return rows


def read_products(path: Path) -> list[Product]:
    """The catalog's products (uniq_id, name, category path), from its header-less CSV."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [Product(row[0], row[1], row[2]) for row in csv.reader(handle) if row]


def write_catalog(source: Path, target: Path) -> dict[str, int]:
    """Rewrites the header-less CSV with the text this suite indexes: the top of the category
    path as the category, and the path and maker as the description. Price and stock text are
    passed through for ingest to read; what the source lacks is counted (ingest's defaults
    fill it: "uncategorised", `DEFAULTS`, unknown stock)."""
    filled = {"no_category": 0, "no_price": 0, "no_stock": 0}
    with source.open(encoding="utf-8", newline="") as src, target.open("w", newline="") as out:
        writer = csv.writer(out)
        for row in csv.reader(src):
            if not row:
                continue
            uniq_id, name, path, maker, price_text, stock_text = row[:6]
            top = path.split(" > ")[0].strip()
            filled["no_category"] += not top
            filled["no_price"] += _NUMBER.search(price_text) is None
            filled["no_stock"] += _NUMBER.search(stock_text) is None
            description = f"{path.replace(' > ', ', ')}. By {maker}." if maker else path
            writer.writerow([uniq_id, name[:300], top[:64], description, price_text, stock_text])
    return filled


def build_index(catalog: Path, work: Path, embedder: Embedder) -> tuple[VectorIndex, Any]:
    csv_path = work / "catalog.csv"
    filled = write_catalog(catalog, csv_path)
    db = Database(f"sqlite:///{work / 'search.db'}")
    index = EdgeIndex(work / "edge", dim=embedder.dim)
    source = prepare_source(csv_path, mapping=MAPPING, defaults=DEFAULTS, header=False)
    report = ingest_file(db, embedder, index, source, checkpoints=work / "checkpoints")
    index.optimize()
    db.dispose()
    return index, {"ingest": report.summary(), "filled": filled}


def index_fingerprint(catalog: Path, embedder: Embedder) -> str:
    """What the ingested index depends on: the catalog's bytes, the embedder, and the code that
    turns a row into indexed text (a change to any of them gives a new fingerprint)."""
    digest = hashlib.sha256()
    with catalog.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    for part in (
        embedder.name,
        str(embedder.dim),
        json.dumps(MAPPING, sort_keys=True),
        str(LEXICAL_AVG_LEN),
        inspect.getsource(write_catalog),
        inspect.getsource(lexical_text),
    ):
        digest.update(part.encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def ingested(
    catalog: Path, embedder: Embedder, scratch: Path, cache: Path | None
) -> Iterator[tuple[VectorIndex, Any]]:
    """The catalog ingested into a Qdrant Edge shard. With a `cache` folder, a shard ingested
    earlier from the same catalog, embedder and indexing code (`index_fingerprint`) is reused,
    and a new one is kept there for the next run; without, it lives in a temporary folder."""
    if cache is None or embedder.degraded:
        with tempfile.TemporaryDirectory(dir=scratch) as work:
            fresh, info = build_index(catalog, Path(work), embedder)
            try:
                yield fresh, info
            finally:
                fresh.close()
        return
    folder = cache / index_fingerprint(catalog, embedder)
    done = folder / "ingested.json"
    if done.exists():
        info = {**json.loads(done.read_text(encoding="utf-8")), "cached": str(folder)}
        index: VectorIndex = EdgeIndex(folder / "edge", dim=embedder.dim)
    else:
        # A folder without the marker is an interrupted ingest: start it over.
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        index, info = build_index(catalog, folder, embedder)
        done.write_text(json.dumps(info), encoding="utf-8")
    try:
        yield index, info
    finally:
        index.close()


@dataclass(frozen=True)
class SuiteData:
    """What the scripts beside the suite (`evals.search_cv`, `evals.search_fields`,
    `evals.search_personal`) read of it: its params, the queries they asked for, the embedder,
    the catalog and each query's relevant products, and the shard cache folder."""

    params: dict[str, Any]
    queries: list[Query]
    embedder: Embedder
    catalog: Path
    products: list[Product]
    relevant: dict[str, set[str]]
    cache: Path
    seed: int


def suite_data(
    suite_path: Path, select: Callable[[list[Path]], list[Query]] | None = None
) -> SuiteData:
    """The suite at `suite_path` read as its runner reads it; `select` picks the queries from
    the suite's query files (all of them by default) before any relevance is computed."""
    from evals.runner import load_suite

    suite = load_suite(suite_path)
    params = suite.params
    files = [suite_path.parent / name for name in params["queries"]]
    queries = select(files) if select else [q for path in files for q in load_queries(path)]
    (dataset,) = suite.datasets
    context = RunContext(suite=suite, suite_dir=suite_path.parent, out_dir=Path("/tmp"))
    catalog = context.dataset_path(dataset)
    catalog = catalog / "products.csv" if catalog.is_dir() else catalog
    products = read_products(catalog)
    return SuiteData(
        params=params,
        queries=queries,
        embedder=CachedEmbedder(load_embedder(params.get("embedding_model", MINILM.name))),
        catalog=catalog,
        products=products,
        relevant={q.id: {p.item_id for p in products if q.relevant(p)} for q in queries},
        cache=(suite_path.parent / params["index_cache"]).resolve(),
        seed=suite.seed,
    )


def searcher(
    system: str, index: VectorIndex, embedder: Embedder, weights: HybridWeights, k: int
) -> Callable[[str], list[str]]:
    everything = ItemFilter()

    def bm25(text: str) -> list[str]:
        return [h.item_id for h in index.fused_search([Source.lexical(text)], k=k)]

    def dense(text: str) -> list[str]:
        return [h.item_id for h in index.search(embedder.embed_query(text), k=k)]

    def hybrid(text: str) -> list[str]:
        match = refined_match(index, weights, text, embedder.embed_query(text), everything)
        hits = index.fused_search([], k=k, flt=everything, prefetch=weights.prefetch, match=match)
        return [h.item_id for h in hits]

    return {"bm25": bm25, "dense": dense, "hybrid": hybrid}[system]


def per_query(
    search: Callable[[str], list[str]], queries: list[Query], relevant: dict[str, set[str]], k: int
) -> dict[str, np.ndarray]:
    precision, ndcg = [], []
    for query in queries:
        found = search(query.text)
        gains = relevant[query.id]
        precision.append(sum(item in gains for item in found[:k]) / k)
        ndcg.append(ranking_metrics(found, gains, k)[f"ndcg@{k}"])
    return {f"precision@{k}": np.array(precision), f"ndcg@{k}": np.array(ndcg)}


def bootstrap_ci(
    values: np.ndarray, rng: np.random.Generator, n: int = 2000
) -> tuple[float, float]:
    """The 95% percentile interval of the mean over queries."""
    draws = rng.integers(0, len(values), size=(n, len(values)))
    means = values[draws].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def ratio_ci(
    system: np.ndarray, baseline: np.ndarray, rng: np.random.Generator, n: int = 2000
) -> tuple[float, float, float]:
    """The ratio of two systems' mean over the same queries, and its 95% percentile interval
    (queries resampled in pairs)."""
    draws = rng.integers(0, len(system), size=(n, len(system)))
    ratios = system[draws].mean(axis=1) / np.maximum(baseline[draws].mean(axis=1), 1e-12)
    point = float(system.mean() / max(baseline.mean(), 1e-12))
    return point, float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))


def tune(
    index: VectorIndex,
    embedder: Embedder,
    queries: list[Query],
    relevant: dict[str, set[str]],
    k: int,
    grid: dict[str, list[Any]],
    base: HybridWeights,
) -> tuple[HybridWeights, list[dict[str, Any]]]:
    """The grid point with the best mean NDCG@k on `queries` (the tuning half only); of tied
    points, the first tried (the grid's lists in order, the first name varying slowest)."""
    names = list(grid)
    tried = []
    best, best_score = base, -1.0
    for values in itertools.product(*(grid[name] for name in names)):
        weights = replace(base, **dict(zip(names, values, strict=True)))
        scores = per_query(searcher("hybrid", index, embedder, weights, k), queries, relevant, k)
        score = float(scores[f"ndcg@{k}"].mean())
        tried.append({**dict(zip(names, values, strict=True)), f"ndcg@{k}": round(score, 4)})
        if score > best_score:
            best, best_score = weights, score
    return best, tried


def _served(weights: HybridWeights, grid: dict[str, list[Any]]) -> bool:
    """Whether the tuned point is what the service serves, on every tuned field."""
    from tools.retrieve import WEIGHTS

    return all(getattr(weights, name) == getattr(WEIGHTS, name) for name in grid)


@register("search")
def run_search(ctx: RunContext) -> SuiteResult:
    params = ctx.suite.params
    k = int(params.get("k", 10))
    files = params.get("queries", "../data/search_queries.yaml")
    files = [files] if isinstance(files, str) else files
    queries = [q for name in files for q in load_queries(ctx.suite_dir / name)]
    embedder = CachedEmbedder(load_embedder(params.get("embedding_model", MINILM.name)))
    base = HybridWeights(**params.get("weights", {}))
    grid = params.get("tune", {})
    select = params.get("select", "best")
    if select not in ("best", "served"):
        raise SuiteError(f"params.select must be 'best' or 'served', got {select!r}")
    rng = np.random.default_rng(ctx.suite.seed)
    cache = (ctx.suite_dir / params["index_cache"]).resolve() if params.get("index_cache") else None
    rows: list[Row] = []
    tables: dict[str, list[dict[str, Any]]] = {}
    details: dict[str, Any] = {"embedder": embedder.name, "degraded": embedder.degraded}
    notes = [
        f"Embedder: `{embedder.name}`"
        + (f" — **fallback**: {embedder.degraded}" if embedder.degraded else " (no fallback).")
    ]
    for dataset in ctx.suite.datasets:
        catalog = ctx.dataset_path(dataset)
        if catalog.is_dir():
            catalog = catalog / "products.csv"
        products = read_products(catalog)
        relevant = {q.id: {p.item_id for p in products if q.relevant(p)} for q in queries}
        empty = [q.id for q in queries if not relevant[q.id]]
        if empty:
            raise SuiteError(f"queries {empty} have no relevant product in {catalog}")
        with ingested(catalog, embedder, ctx.out_dir, cache) as (index, info):
            halves = {s: [q for q in queries if q.split == s] for s in SPLITS}
            weights, tried = (
                tune(index, embedder, halves["tune"], relevant, k, grid, base)
                if grid
                else (base, [])
            )
            if select == "served":
                # The grid is scored on the tuning half for its table only: the held-out sets
                # are scored with the served weights (`base`), not the grid's best point.
                weights = base
            ctx.set_total(len(SYSTEMS) * len(SPLITS))
            ratios = []
            scored: dict[str, dict[str, dict[str, np.ndarray]]] = {}
            for split, label in SPLITS.items():
                if not halves[split]:
                    continue
                by_system = scored[split] = {}
                for system in SYSTEMS:
                    scores = by_system[system] = per_query(
                        searcher(system, index, embedder, weights, k),
                        halves[split],
                        relevant,
                        k,
                    )
                    metrics, spread = {}, {}
                    for metric, values in scores.items():
                        low, high = bootstrap_ci(values, rng)
                        metrics[metric] = float(values.mean())
                        metrics[f"{metric}_ci_low"] = low
                        metrics[f"{metric}_ci_high"] = high
                        spread[metric] = (high - low) / 2
                    rows.append(Row(f"{dataset.name}/{label}", system, metrics, spread))
                    ctx.progress(1)
                ratios += _ratios(by_system, label, len(halves[split]), k, rng)
            held = [scored[split] for split in HELD_OUT if split in scored]
            if len(held) > 1:
                pooled = {
                    system: {
                        metric: np.concatenate([one[system][metric] for one in held])
                        for metric in held[0][system]
                    }
                    for system in SYSTEMS
                }
                size = sum(len(halves[split]) for split in HELD_OUT)
                ratios += _ratios(pooled, POOLED, size, k, rng)
            tables[f"{dataset.name} hybrid / baseline, NDCG@{k} (paired bootstrap)"] = ratios
        details[dataset.name] = {
            **info,
            "products": len(products),
            "queries": {s: len(v) for s, v in halves.items()},
            "relevant_per_query": float(np.mean([len(v) for v in relevant.values()])),
            "tuned_weights": {name: getattr(weights, name) for name in grid},
            "tuned_is_served": _served(weights, grid),
        }
        tables[f"{dataset.name} fusion grid (tuning half)"] = tried
        notes.append(
            f"{dataset.name}: {len(products)} products, {len(queries)} queries "
            f"({len(halves['tune'])} tuning, {len(halves['test'])} held out, "
            f"{len(halves['fresh'])} fresh held out, {len(halves['fresh2'])} second fresh held "
            "out); catalog gaps "
            f"filled at ingest: {info['filled']}; "
            + (
                "scored with the served weights (the fusion grid table is the tuning half's "
                "sensitivity, not a choice): "
                if select == "served"
                else "fusion chosen on the tuning half: "
            )
            + f"{details[dataset.name]['tuned_weights']}"
            + (
                " — the service's default (`tools.retrieve.WEIGHTS`)."
                if details[dataset.name]["tuned_is_served"]
                else " — **not** the service's default (`tools.retrieve.WEIGHTS`)."
            )
        )
    return SuiteResult(
        rows=rows, notes=notes, tables=tables, details=details, embedder=embedder_label(embedder)
    )
