"""The product-search suite: relevance rules, catalog preparation, and a run on a small catalog."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evals.runner import run_suite
from evals.search import DEFAULTS, MAPPING, Product, Query, write_catalog
from retrieval.ingest.records import read_records
from retrieval.ingest.source import Lines, prepare_source
from store.schemas import Item

PRODUCTS = [
    # uniq_id, name, category path, manufacturer, price, stock text, reviews, answers, rating
    (
        "p01",
        "Wooden Train Set with Bridge",
        "Hobbies > Model Trains > Trains",
        "Brio",
        "30",
        "5 new",
    ),
    ("p02", "Wooden Railway Engine", "Hobbies > Model Trains > Trains", "Bigjigs", "12", ""),
    ("p03", "Plastic Train Set", "Hobbies > Model Trains > Trains", "Hornby", "", "2 new"),
    ("p04", "Pirate Costume for Kids", "Fancy Dress > Costumes", "Rubies", "15", "1 new"),
    ("p05", "Pirate Hat", "Fancy Dress > Accessories", "Rubies", "4", ""),
    ("p06", "Wooden Pirate Ship", "Figures & Playsets > Pirates", "Plan", "45", ""),
    ("p07", "Chess Set in a Box", "Games > Chess", "Jaques", "25", ""),
    ("p08", "Magnetic Travel Chess", "Games > Chess", "Jaques", "9", ""),
    ("p09", "Kite for Beginners", "Sports Toys & Outdoor > Kites & Flight Toys", "Hq", "11", ""),
    ("p10", "Stunt Kite", "Sports Toys & Outdoor > Kites & Flight Toys", "Hq", "35", ""),
    ("p11", "Party Balloons", "", "Amscan", "3", ""),
    ("p12", "Dice Set", "Games > Dice & Dice Games", "Koplow", "6", ""),
]
QUERIES = """
queries:
  - {id: a, split: tune, text: wooden train, relevant: [{path: [Trains], name: [wood]}]}
  - {id: b, split: tune, text: chess, relevant: [{path: [Chess]}]}
  - {id: c, split: test, text: pirate costume, relevant: [{path: [Fancy Dress], name: [pirate]}]}
  - {id: d, split: test, text: kite, relevant: [{path: [Kites]}]}
  - {id: e, split: fresh, text: chess board, relevant: [{path: [Chess]}]}
  - {id: f, split: fresh2, text: stunt kite, relevant: [{path: [Kites]}]}
"""


@pytest.mark.parametrize(
    "clauses, product, expected",
    [
        ([{"path": ["Trains"], "name": ["wood"]}], ("Wooden Engine", "Hobbies > Trains"), True),
        ([{"path": ["Trains"], "name": ["wood"]}], ("Plastic Engine", "Hobbies > Trains"), False),
        ([{"path": ["Chess"]}, {"name": ["chess"]}], ("Travel Chess", ""), True),
        ([{"name_all": ["star wars", "figure"]}], ("Star Wars Figure", "x"), True),
        ([{"name_all": ["star wars", "figure"]}], ("Star Wars Mug", "x"), False),
        ([{"path": ["kites"]}], ("Anything", "Outdoor > KITES & Flight"), True),
    ],
)
def test_relevance_rules(clauses, product, expected):
    query = Query("q", "tune", "text", tuple(clauses))
    assert query.relevant(Product("id", *product)) is expected


def _catalog(folder: Path) -> Path:
    folder.mkdir()
    with (folder / "products.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        for row in PRODUCTS:
            writer.writerow([*row, "1", "0", "4.5"])
    return folder


def test_the_catalog_is_rewritten_and_ingest_reads_its_gaps(tmp_path: Path):
    catalog = _catalog(tmp_path / "cat") / "products.csv"
    filled = write_catalog(catalog, tmp_path / "out.csv")
    with (tmp_path / "out.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == len(PRODUCTS)
    assert filled == {"no_category": 1, "no_price": 1, "no_stock": 9}
    source = prepare_source(tmp_path / "out.csv", mapping=MAPPING, defaults=DEFAULTS, header=False)
    items = {}
    for record in read_records(source, Lines((tmp_path / "out.csv").open("rb"), offset=0, line=0)):
        assert isinstance(record, Item), record
        items[record.item_id] = record
    assert len(items) == len(PRODUCTS)
    assert items["p11"].category == "uncategorised"
    assert (items["p03"].price, items["p01"].stock, items["p02"].stock) == (0.01, 5, None)
    assert "Model Trains" in items["p01"].description


def test_the_suite_runs_on_a_small_catalog(tmp_path: Path, tiny_model_dir: Path):
    catalog = _catalog(tmp_path / "catalog")
    (tmp_path / "queries.yaml").write_text(QUERIES)
    suite = tmp_path / "search.yaml"
    suite.write_text(
        f"""
name: search-small
kind: search
datasets: [{{name: small, path: {catalog}}}]
params:
  k: 3
  queries: queries.yaml
  embedding_model: {tiny_model_dir}
  tune: {{lexical: [0.5, 2.0]}}
thresholds:
  - {{metric: ndcg@3, system: bm25, dataset: small/held-out, min: 0.5}}
"""
    )

    report = run_suite(suite, out_dir=tmp_path / "report")

    rows = {(row.dataset, row.system): row.metrics for row in report.rows}
    assert set(rows) == {
        (f"small/{half}", system)
        for half in ("tuning", "held-out", "fresh held-out", "second fresh held-out")
        for system in ("bm25", "dense", "hybrid")
    }
    for metrics in rows.values():
        for name in ("precision@3", "ndcg@3"):
            assert 0.0 <= metrics[f"{name}_ci_low"] <= metrics[name] <= metrics[f"{name}_ci_high"]
    # The words of these queries occur only in the relevant products' names or paths: BM25
    # ranks every relevant product first ("chess" has two, "wooden train" two, "kite" two).
    assert rows[("small/tuning", "bm25")]["ndcg@3"] == pytest.approx(1.0)
    assert report.passed
    details = json.loads((report.out_dir / "metrics.json").read_text())
    assert "tuned_weights" in json.dumps(details)
    # The report names the embedder the dense and hybrid systems used.
    assert "this suite embeds no text" not in (report.out_dir / "report.md").read_text()
    # Each held-out set's hybrid/BM25 ratio comes with its paired-bootstrap interval.
    tables = json.loads((report.out_dir / "metrics.json").read_text())["tables"]
    ratios = tables["small hybrid / baseline, NDCG@3 (paired bootstrap)"]
    assert {(r["queries"], r["baseline"]) for r in ratios} >= {("fresh held-out", "bm25")}
    # ... and the held-out sets pooled: the four queries no system was chosen on (c, d, e, f).
    pooled = {r["baseline"]: r for r in ratios if r["queries"] == "all held-out"}
    assert set(pooled) == {"bm25", "dense"} and pooled["bm25"]["n"] == 4
    for r in ratios:
        assert r["ci_low"] <= r["hybrid/baseline ndcg@3"] <= r["ci_high"]


def test_a_second_run_reuses_the_cached_shard_and_a_changed_catalog_does_not(
    tmp_path: Path, tiny_model_dir: Path
):
    catalog = _catalog(tmp_path / "catalog")
    (tmp_path / "queries.yaml").write_text(QUERIES)
    suite = tmp_path / "search.yaml"
    suite.write_text(
        f"""
name: search-cached
kind: search
datasets: [{{name: small, path: {catalog}}}]
params:
  k: 3
  queries: queries.yaml
  embedding_model: {tiny_model_dir}
  index_cache: cache
"""
    )

    def run(name: str) -> tuple[dict, dict]:
        report = run_suite(suite, out_dir=tmp_path / name)
        details = json.loads((report.out_dir / "metrics.json").read_text())
        rows = {(row.dataset, row.system): row.metrics for row in report.rows}
        return rows, json.dumps(details)

    first, first_details = run("first")
    shards = list((tmp_path / "cache").iterdir())
    assert len(shards) == 1 and (shards[0] / "ingested.json").exists()
    assert '"cached"' not in first_details

    second, second_details = run("second")
    assert '"cached"' in second_details  # no ingest this time
    assert second == first

    with (catalog / "products.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow(["p13", "Kite Reel", "Kites", "Hq", "5", "", "1", "0", "4"])
    _, third_details = run("third")
    assert '"cached"' not in third_details
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_select_served_scores_the_held_out_sets_with_the_served_weights(
    tmp_path: Path, tiny_model_dir: Path
):
    """`select: served`: the grid is scored on the tuning half (its table), but the held-out
    sets are scored with the served weights, not the grid's best point."""
    catalog = _catalog(tmp_path / "catalog")
    (tmp_path / "queries.yaml").write_text(QUERIES)

    def run(select: str) -> dict:
        suite = tmp_path / f"search-{select}.yaml"
        suite.write_text(
            f"""
name: search-select
kind: search
datasets: [{{name: small, path: {catalog}}}]
params:
  k: 3
  queries: queries.yaml
  embedding_model: {tiny_model_dir}
  select: {select}
  tune: {{lexical: [0.5, 2.0]}}
"""
        )
        report = run_suite(suite, out_dir=tmp_path / select)
        metrics = json.loads((report.out_dir / "metrics.json").read_text())
        assert len(metrics["tables"]["small fusion grid (tuning half)"]) == 2
        return metrics["details"]["small"]

    # Under DBSF `lexical` changes nothing: the points tie and the grid's first (0.5) is "best".
    best = run("best")
    assert (best["tuned_weights"], best["tuned_is_served"]) == ({"lexical": 0.5}, False)
    served = run("served")
    assert (served["tuned_weights"], served["tuned_is_served"]) == ({"lexical": 1.0}, True)
