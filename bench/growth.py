"""How a decision's cost grows with the catalog and with the stored event history.

Two axes, one built home per level (issue 14): catalogs of `--items` items (with
`--item-level-events` events), and stored histories of `--events` events (over
`--event-level-items` items). Every home holds the demo's 240 people, offers and policy; its
synthetic items have random unit vectors (so 100k items need no embedding; a query still goes
through the embedding model), titles made of a small vocabulary so that queries match some of
them, and popularity skewed towards a few; its events are spread evenly over the people, at
random times in the last year, on items drawn with that skew. The collaborative vectors and the
item-item model are trained from the events, as seeding does, so a known person's decision
takes the path `make run` serves (the re-ranking of 200 candidates by their history).

Loading is in bulk: items and events are INSERTed through SQLAlchemy Core in large batches
(the catalog ingest's per-item upsert costs seconds per thousand items); items go to Qdrant
through the index's own `upsert`; each person's feature row is built by the store's own
rebuild (`store.features.read_features`, as after a migration). Each home is then checked
against the real write paths on a sample: the sampled people's items go through
`retrieval.catalog.ingest_items` and their events through `store.events.ingest_events` in
time-ordered batches, into a scratch store, and the item rows, event rows and feature rows must
be equal to the bulk home's (`verified` in the output; a difference stops the run).

At each level, for decisions without a query, with a query whose embedding is cached, and for
a new visitor (popularity):
- wall clock p50/p95, the scenarios interleaved in blocks (`--n` decisions each);
- what cannot be noise, over `--instrumented` more decisions: SQL statements per decision,
  each with SQLite's EXPLAIN QUERY PLAN (a SCAN of a table or a temporary B-tree is flagged)
  and the SQLite virtual-machine steps it ran (the progress handler, every 100 steps: a proxy
  for the rows it read), Qdrant calls per decision, and Python function calls per decision
  (cProfile) with the functions whose calls grew most between the smallest and largest level.
`growth` sums it up: what grew by more than `--grow` times from the smallest level to the
largest, and every statement whose plan scans a table or sorts (`flagged_statements`).
`interleaved` then times the levels of an axis side by side: every home open in one process,
decisions in turn (`--interleaved` rounds of 10 per level and scenario), CPU time per decision
and its ratio to the smallest level. Levels timed one after another get the host as it was at
the time, and on a shared machine that moves the p50 by more than the catalog or the history
do; these are the figures to compare across levels.

    .venv/bin/python bench/growth.py --help
    .venv/bin/python bench/growth.py                         # the issue's levels, ~10 min idle
    .venv/bin/python bench/growth.py --items 1000 --events 1000,10000 --n 20   # a quick look
    .venv/bin/python bench/growth.py --homes /tmp/growth-homes   # keep the built homes; a rerun
                                                                 # with the same flag reuses them

Prints JSON and writes it to `--out`. Set ATTUNE_EMBEDDING_EXPORT_DIR to where the ONNX export
of the embedding model is, or the query runs on torch.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import event, func, insert, select

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.retrain import fit_itemitem
from agents.seed import read_jsonl
from agents.services import Services, collab_folder
from agents.settings import PROJECT_ROOT
from bench.report import emit, product_settings
from bench.retrieve import CountingShard
from retrieval.catalog import ingest_items
from retrieval.collab import train
from retrieval.edge import EdgeIndex
from store.catalog import bump_catalog_version, refresh_popularity, upsert_offers
from store.db import Database
from store.events import ingest_events
from store.features import compute_features, person_features, read_features
from store.models import CatalogItem, DecisionRow, EventRow, PersonFeatures, PersonSequence
from store.person import read_person
from store.schemas import Channel, Event, Item, Offer, UserRecord
from store.sequences import fold_sequence
from store.users import Subject, upsert_user

DEMO = PROJECT_ROOT / "data" / "demo"
CATEGORIES = ["beauty", "books", "coffee_tea", "electronics", "home_kitchen", "outdoors",
              "pets", "sports", "toys", "wine"]  # fmt: skip
WORDS = ["kitchen", "coffee", "running", "shoes", "beans", "cat", "toys", "pan", "wine", "lamp",
         "garden", "book", "mug", "bag", "chair", "jacket", "tea", "ball", "brush", "bottle"]  # fmt: skip
KINDS = ["view"] * 6 + ["click"] * 3 + ["add_to_cart", "purchase"]
QUERIES = ["something for the kitchen", "strong coffee beans", "running shoes", "cat toys"]
SCENARIOS = ("no_query", "cached_query", "new_visitor")
BLOCK = 10  # decisions per block; the scenarios' blocks alternate
WORLD = 1  # bump when what a home holds changes: homes kept by `--homes` are rebuilt
NOW = datetime.now(UTC)


# -- building a home -------------------------------------------------------------------------


class RandomEmbedder:
    """Unit vectors drawn from each text's digest: ingest without a model, the same vector for
    the same text in the bulk home and in the scratch store that checks it."""

    name = "random"
    degraded: str | None = None

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [
            np.random.default_rng(int.from_bytes(hashlib.blake2b(t.encode()).digest()[:8])).normal(
                size=self.dim
            )
            for t in texts
        ]
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def synthetic_item(i: int) -> Item:
    return Item(
        item_id=f"itm_{i:07d}",
        title=f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]} {i}",
        category=CATEGORIES[i % len(CATEGORIES)],
        price=float(5 + (i * 37) % 200),
        stock=100,
    )


def catalog_row(item: Item) -> dict[str, Any]:
    """The `items` row `store.catalog.upsert_items` writes for a new item."""
    return {
        "item_id": item.item_id,
        "category": item.category,
        "price": item.price,
        "stock": item.stock,
        "min_age": item.min_age,
        "data": item.model_dump(mode="json"),
    }


def skewed(rng: np.random.Generator, items: int, size: int) -> np.ndarray:
    """Item numbers with a long tail: a few items draw most events, as in a shop."""
    return np.minimum((items * rng.random(size) ** 3).astype(np.int64), items - 1)


def load_items(services: Services, items: int) -> None:
    embedder = RandomEmbedder(services.embedder.dim)
    for start in range(0, items, 5000):
        batch = [synthetic_item(i) for i in range(start, min(start + 5000, items))]
        with services.db.session() as session:
            session.execute(insert(CatalogItem), [catalog_row(item) for item in batch])
            bump_catalog_version(session)
        for chunk in range(0, len(batch), 1000):
            part = batch[chunk : chunk + 1000]
            services.index.upsert(part, embedder.embed([item.text() for item in part]))


def event_rows(users: list[str], items: int, count: int, rng: np.random.Generator) -> Iterator:
    """`count` events in batches of 50,000 rows, round-robin over `users`."""
    for start in range(0, count, 50_000):
        n = min(50_000, count - start)
        seconds = rng.integers(0, 365 * 86400, size=n)
        item_ids = skewed(rng, items, n)
        kinds = rng.integers(0, len(KINDS), size=n)
        rows = []
        for j in range(n):
            kind = KINDS[int(kinds[j])]
            rows.append(
                {
                    "event_id": f"ev{start + j:08d}",
                    "type": kind,
                    "ts": NOW - timedelta(seconds=int(seconds[j])),
                    "user_id": users[(start + j) % len(users)],
                    "anonymous_id": None,
                    "device_id": None,
                    "item_id": f"itm_{int(item_ids[j]):07d}",
                    "value": 20.0 if kind == "purchase" else None,
                    "received_at": NOW,
                }
            )
        yield rows


def build_home(home: Path, items: int, events: int, seed: int) -> dict[str, Any]:
    """A home with the demo's people and offers, `items` items and `events` events, its models
    trained; returns how long each step took."""
    rng = np.random.default_rng(seed)
    took: dict[str, float] = {}
    started = time.perf_counter()
    services = build_services(product_settings(home=home, seed=1))
    users = list(read_jsonl(DEMO / "users.jsonl", UserRecord))
    with services.db.session() as session:
        for record in users:
            upsert_user(session, record)
        upsert_offers(session, read_jsonl(DEMO / "offers.jsonl", Offer))
    services.tools.offers.invalidate()
    load_items(services, items)
    took["items_s"] = time.perf_counter() - started
    started = time.perf_counter()
    user_ids = [r.user_id for r in users]
    for rows in event_rows(user_ids, items, events, rng):
        with services.db.session() as session:
            session.execute(insert(EventRow), rows)
    with services.db.session() as session:
        refresh_popularity(session)
    took["events_s"] = time.perf_counter() - started
    started = time.perf_counter()
    with services.db.session() as session:  # each person's row, built as after a migration
        for user_id in user_ids:
            read_features(session, Subject(user_id, None), as_of=NOW)
    sequence_rows(services, user_ids)
    took["feature_rows_s"] = time.perf_counter() - started
    started = time.perf_counter()
    train(
        services.db,
        services.index,
        collab_folder(services.settings),
        full=True,
        consent=services.policy.purpose_for("profiling"),
    )
    fit_itemitem(services)
    optimize = getattr(services.index, "optimize", None)
    if optimize is not None:
        optimize()
    took["models_s"] = time.perf_counter() - started
    services.close()
    return {k: round(v, 1) for k, v in took.items()}


def sequence_rows(services: Services, user_ids: list[str]) -> None:
    """Each person's history row (`store.sequences`), as their events stored through
    `ingest_events` leave it; a home built before the rows existed gets them here."""
    with services.db.session() as session:
        have = set(session.scalars(select(PersonSequence.subject_key)))
        for user_id in user_ids:
            key = f"user:{user_id}"
            if key not in have:
                session.add(
                    PersonSequence(subject_key=key, state=fold_sequence(session, key).dump())
                )


def verify(home: Path, people: int, rng: np.random.Generator) -> dict[str, Any]:
    """The bulk home equals what the real write paths make of the same data, on a sample:
    `people` people's items through `ingest_items` and their events through `ingest_events`
    (time order, batches of 1,000) into a scratch store; item, event and feature rows compared."""
    bulk = Database(f"sqlite:///{home / 'attune.db'}")
    users = list(read_jsonl(DEMO / "users.jsonl", UserRecord))
    sample = [users[int(i)] for i in rng.choice(len(users), size=people, replace=False)]
    ids = [u.user_id for u in sample]
    columns = [c for c in EventRow.__table__.columns if c.name != "received_at"]
    with bulk.session() as session:
        stored = session.execute(select(*columns).where(EventRow.user_id.in_(ids))).all()
        item_ids = sorted({row.item_id for row in stored})
        item_rows = {
            r.item_id: (r.category, r.price, r.stock, r.min_age, r.data)
            for r in session.scalars(select(CatalogItem).where(CatalogItem.item_id.in_(item_ids)))
        }
        bulk_states = {
            r.subject_key: (r.state, r.history)
            for r in session.scalars(
                select(PersonFeatures).where(
                    PersonFeatures.subject_key.in_([f"user:{u}" for u in ids])
                )
            )
        }
    bulk.engine.dispose()
    scratch_home = Path(tempfile.mkdtemp(prefix="attune-growth-check-"))
    try:
        scratch = Database(f"sqlite:///{scratch_home / 'attune.db'}")
        embedder = RandomEmbedder(8)
        with EdgeIndex(scratch_home / "index", dim=8) as index:
            ingest_items(
                scratch, embedder, index, (Item.model_validate(item_rows[i][4]) for i in item_ids)
            )
        with scratch.session() as session:
            for record in sample:
                upsert_user(session, record)
        incoming = sorted(
            (
                Event(
                    event_id=r.event_id,
                    type=r.type,
                    ts=r.ts.replace(tzinfo=UTC),
                    user_id=r.user_id,
                    item_id=r.item_id,
                    value=r.value,
                )
                for r in stored
            ),
            key=lambda e: (e.ts, e.event_id),
        )
        for start in range(0, len(incoming), 1000):
            with scratch.session() as session:
                ingest_events(session, incoming[start : start + 1000])
        with scratch.session() as session:
            ingested = sorted(session.execute(select(*columns)).all())
            ingested_items = {
                r.item_id: (r.category, r.price, r.stock, r.min_age, r.data)
                for r in session.scalars(select(CatalogItem))
            }
            states = {
                r.subject_key: (r.state, r.history) for r in session.scalars(select(PersonFeatures))
            }
        scratch.engine.dispose()
    finally:
        shutil.rmtree(scratch_home, ignore_errors=True)
    checks = {
        "items": ingested_items == item_rows,
        "events": ingested == sorted(stored),
        "feature_rows": states == bulk_states and len(states) == people,
    }
    if not all(checks.values()):
        raise SystemExit(f"{home}: the bulk load differs from ingest on a sample: {checks}")
    return {"people": people, "events": len(stored), "items": len(item_ids), **checks}


def home_for(root: Path, name: str, items: int, events: int, seed: int) -> tuple[Path, dict]:
    """The home of one level under `root`: reused when a complete one of the same world is
    there, built otherwise."""
    home = root / name
    marker = home / "growth-world.json"
    world = {"world": WORLD, "items": items, "events": events, "seed": seed}
    if marker.is_file() and json.loads(marker.read_text()).get("world_key") == world:
        return home, {"reused": True, **json.loads(marker.read_text())["built"]}
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    built = build_home(home, items, events, seed)
    built["verified"] = verify(home, 2, np.random.default_rng(seed))
    marker.write_text(json.dumps({"world_key": world, "built": built}))
    return home, {"reused": False, **built}


# -- measuring -------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
    }


def requests(users: list[str], rng: np.random.Generator) -> dict[str, Callable[[int], Any]]:
    def known(i: int, query: str | None) -> DecideRequest:
        return DecideRequest(channel=Channel.web, user_id=str(rng.choice(users)), query=query)

    return {
        "no_query": lambda i: known(i, None),
        "cached_query": lambda i: known(i, QUERIES[i % len(QUERIES)]),
        "new_visitor": lambda i: DecideRequest(channel=Channel.web, anonymous_id=f"anon-g{i}"),
    }


def timings(services: Services, users: list[str], n: int) -> dict[str, Any]:
    make = requests(users, np.random.default_rng(2))
    samples: dict[str, list[float]] = {name: [] for name in SCENARIOS}
    for block in range(max(1, n // BLOCK)):
        for name in SCENARIOS if block % 2 == 0 else SCENARIOS[::-1]:
            for i in range(BLOCK):
                request = make[name](block * BLOCK + i)
                started = time.perf_counter()
                decide(services, request)
                samples[name].append((time.perf_counter() - started) * 1000)
    return {name: percentiles(values) for name, values in samples.items()}


def interleaved(homes: dict[str, Path], rounds: int) -> dict[str, Any]:
    """CPU time per decision at every level of an axis, the levels' homes open side by side in
    this one process and measured in turn (blocks of `BLOCK` decisions per level and scenario,
    the order reversed every other round, the same people at every level): the host's drift
    moves every level alike, where the levels measured one after another (`timings`) each get
    the machine as it was then. CPU time (`time.thread_time`), so that waiting for a core does
    not count; `ratio` is each level's p50 over the smallest level's."""
    users = demo_user_ids()
    opened: dict[str, Services] = {}
    try:
        for level, home in homes.items():
            opened[level] = build_services(product_settings(home=home, seed=1))
            warm_up(opened[level], users)
        settle()
        samples: dict[str, dict[str, list[float]]] = {
            level: {name: [] for name in SCENARIOS} for level in homes
        }
        order = list(homes)
        for turn in range(rounds):
            for level in order if turn % 2 == 0 else order[::-1]:
                make = requests(users, np.random.default_rng(1000 + turn))
                for name in SCENARIOS:
                    for i in range(BLOCK):
                        request = make[name](turn * BLOCK + i)
                        started = time.thread_time()
                        decide(opened[level], request)
                        samples[level][name].append((time.thread_time() - started) * 1000)
    finally:
        for services in opened.values():
            services.close()
    smallest = order[0]
    return {
        "rounds": rounds,
        "decisions_per_level_and_scenario": rounds * BLOCK,
        "cpu_ms": {
            level: {
                name: {
                    **percentiles(values),
                    "ratio": round(
                        statistics.median(values) / statistics.median(samples[smallest][name]), 3
                    ),
                }
                for name, values in by_name.items()
            }
            for level, by_name in samples.items()
        },
    }


_IN_LIST = re.compile(r"\?(?:, \?)+")


def normalized(statement: str) -> str:
    """A statement's text with its expanded IN lists folded, so repeats group together."""
    return " ".join(_IN_LIST.sub("?…", statement).split())


def calls_by_file(stats: pstats.Stats) -> list[tuple[tuple[str, str], int]]:
    """(file, function) and calls of the functions defined in store/features.py."""
    return [
        ((file, function), count)
        for (file, _, function), (_, count, *_rest) in stats.stats.items()  # type: ignore[attr-defined]
        if file.endswith(os.path.join("store", "features.py"))
    ]


@dataclass
class Counted:
    """What the instrumented decisions did, summed."""

    statements: Counter[str] = field(default_factory=Counter)
    vm_steps: Counter[str] = field(default_factory=Counter)
    example: dict[str, tuple[str, Any]] = field(default_factory=dict)
    qdrant: Counter[str] = field(default_factory=Counter)


def instrumented(services: Services, users: list[str], n: int) -> dict[str, Any]:
    """Per scenario, over `n` decisions: statements, VM steps, Qdrant calls, Python calls."""
    index = services.tools.index
    qdrant: Counter[str] = Counter()
    if hasattr(index, "_shard") and not isinstance(index._shard, CountingShard):
        index._shard = CountingShard(index._shard, qdrant)
    current = [""]
    counted = Counted(qdrant=qdrant)
    handled: dict[int, Any] = {}

    def step() -> int:
        counted.vm_steps[current[0]] += 100
        return 0

    def seen(
        conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        dbapi = conn.connection.dbapi_connection
        if id(dbapi) not in handled and hasattr(dbapi, "set_progress_handler"):
            dbapi.set_progress_handler(step, 100)
            handled[id(dbapi)] = dbapi
        key = normalized(statement)
        current[0] = key
        counted.statements[key] += 1
        counted.example.setdefault(key, (statement, parameters[0] if many else parameters))

    make = requests(users, np.random.default_rng(3))
    result: dict[str, Any] = {}
    event.listen(services.db.engine, "before_cursor_execute", seen)
    try:
        for name in SCENARIOS:
            counted.statements.clear()
            counted.vm_steps.clear()
            qdrant.clear()
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(n):
                decide(services, make[name](i))
            profiler.disable()
            stats = pstats.Stats(profiler)
            calls = {
                f"{Path(file).name}:{function}": count
                for (file, _, function), (_, count, *_rest) in stats.stats.items()  # type: ignore[attr-defined]
            }
            result[name] = {
                "sql_statements_per_decision": round(sum(counted.statements.values()) / n, 2),
                "sql_vm_steps_per_decision": round(sum(counted.vm_steps.values()) / n),
                "qdrant_calls_per_decision": round(sum(qdrant.values()) / n, 2),
                "qdrant_calls": {k: round(v / n, 2) for k, v in sorted(qdrant.items())},
                "python_calls_per_decision": round(stats.total_calls / n),  # type: ignore[attr-defined]
                # Calls of store/features.py's functions (the feature row's read: `_moment`,
                # `_days`, the comprehensions) per decision.
                "feature_calls_per_decision": round(
                    sum(c for (file, *_), c in calls_by_file(stats)) / n
                ),
                "statements": {
                    key: {
                        "per_decision": round(count / n, 2),
                        "vm_steps_per_decision": round(counted.vm_steps[key] / n),
                    }
                    for key, count in counted.statements.most_common()
                },
                "_calls": calls,
            }
    finally:
        event.remove(services.db.engine, "before_cursor_execute", seen)
        for dbapi in handled.values():
            dbapi.set_progress_handler(None, 100)
    result["_examples"] = dict(counted.example)
    return result


def plans(
    home: Path, examples: dict[str, tuple[str, Any]]
) -> tuple[dict[str, list[str]], set[str]]:
    """SQLite's EXPLAIN QUERY PLAN of each statement, with the parameters it ran with."""
    import sqlite3

    connection = sqlite3.connect(home / "attune.db")
    found: dict[str, Any] = {}
    try:
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
        for key, (statement, parameters) in examples.items():
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
                found[key] = []
                continue
            rows = connection.execute(
                f"EXPLAIN QUERY PLAN {statement}", parameters or ()
            ).fetchall()
            found[key] = [row[-1] for row in rows]
    finally:
        connection.close()
    return found, tables


def flags(plan: list[str], tables: set[str]) -> list[str]:
    """`scan <table>` for a full scan of a stored table or index (not of a subquery's rows or a
    constant row), `sort` for a temporary B-tree (rows gathered, then ordered)."""
    found = set()
    for line in plan:
        words = line.split()
        if words[:1] == ["SCAN"] and len(words) > 1 and words[1] in tables:
            found.add(f"scan {words[1]}")
        if line.startswith("USE TEMP B-TREE"):
            found.add("sort")
    return sorted(found)


def features_timings(services: Services, users: list[str], n: int) -> dict[str, float]:
    """Per person: reading the maintained row whole, reading what a decision reads of it (with
    the person, the purchases the policy asks for), and folding the raw events (at most 30)."""
    rng = np.random.default_rng(4)
    subjects = [Subject(str(rng.choice(users)), None) for _ in range(n)]
    since = services.policy.purchases_since(NOW)
    out = {}
    with services.db.connect() as connection:
        samples = []
        for subject in subjects:
            started = time.perf_counter()
            person = read_person(connection, subject.user_id, None)
            person_features(connection, person, as_of=NOW, purchases_since=since)
            samples.append((time.perf_counter() - started) * 1000)
        out["features_decision_read_p50_ms"] = round(statistics.median(samples), 3)
    with services.db.session() as session:
        for name, read, count in (
            ("features_maintained_row_p50_ms", read_features, n),
            ("features_folded_from_events_p50_ms", compute_features, min(n, 30)),
        ):
            samples = []
            for subject in subjects[:count]:
                started = time.perf_counter()
                read(session, subject, as_of=NOW)
                samples.append((time.perf_counter() - started) * 1000)
            out[name] = round(statistics.median(samples), 3)
    return out


def demo_user_ids() -> list[str]:
    return [r.user_id for r in read_jsonl(DEMO / "users.jsonl", UserRecord)]


def warm_up(services: Services, users: list[str]) -> None:
    """The cached scenario's queries embedded once, then decisions of every scenario: SQLite
    pages, lazy imports, the popularity cache."""
    for query in QUERIES:
        services.embedder.embed_query(query)
    make = requests(users, np.random.default_rng(1))
    for i in range(15):
        decide(services, make[SCENARIOS[i % 3]](i))


def measure(home: Path, n: int, n_instrumented: int) -> dict[str, Any]:
    services = build_services(product_settings(home=home, seed=1))
    users = demo_user_ids()
    with services.db.session() as session:  # a reused home keeps the decisions of earlier runs
        decisions_stored = session.scalar(select(func.count()).select_from(DecisionRow))
    with services.db.session() as session:  # rows of an earlier version rebuilt, as they would be
        for user_id in users:
            read_features(session, Subject(user_id, None), as_of=NOW)
    sequence_rows(services, users)
    warm_up(services, users)
    settle()
    result: dict[str, Any] = {"decisions_stored_before": decisions_stored}
    result["timings"] = timings(services, users, n)
    result.update(features_timings(services, users, 60))
    counts = instrumented(services, users, n_instrumented)
    services.close()
    examples = counts.pop("_examples")
    found, tables = plans(home, examples)
    for scenario in SCENARIOS:
        for key, info in counts[scenario]["statements"].items():
            info["plan"] = found.get(key, [])
            info["flags"] = flags(info["plan"], tables)
    result["counts"] = counts
    return result


# -- summing up ------------------------------------------------------------------------------


def growth(levels: dict[str, dict[str, Any]], ratio: float) -> dict[str, Any]:
    """What grew from the smallest level to the largest by more than `ratio`, and what scans."""
    if not levels:
        return {}
    first, last = levels[min(levels, key=int)], levels[max(levels, key=int)]
    grew: list[str] = []
    scans: dict[str, dict[str, list[str]]] = {}
    per_level = {}
    for scenario in SCENARIOS:
        a, b = first["counts"][scenario], last["counts"][scenario]
        per_level[scenario] = {
            metric: {level: levels[level]["counts"][scenario][metric] for level in levels}
            for metric in (
                "sql_statements_per_decision",
                "sql_vm_steps_per_decision",
                "qdrant_calls_per_decision",
                "python_calls_per_decision",
                "feature_calls_per_decision",
            )
        }
        for key, info in b["statements"].items():
            before = a["statements"].get(key, {}).get("vm_steps_per_decision", 0)
            after = info["vm_steps_per_decision"]
            if after > max(before, 100) * ratio:
                grew.append(f"{scenario}: SQL VM steps {before} -> {after}: {key[:160]}")
            if info["flags"]:
                scans.setdefault(key[:200], {"flags": info["flags"], "plan": info["plan"]})
        for function, calls in b["_calls"].items():
            before = a["_calls"].get(function, 0)
            n_after, n_before = calls, before
            if n_after > max(n_before, 50) * ratio:
                grew.append(f"{scenario}: Python calls of {function} {n_before} -> {n_after}")
    return {"per_level": per_level, "grew_more_than_ratio": grew, "flagged_statements": scans}


def strip_calls(levels: dict[str, dict[str, Any]]) -> None:
    for level in levels.values():
        for scenario in SCENARIOS:
            level["counts"][scenario].pop("_calls", None)


def axis(
    root: Path, kind: str, values: list[int], fixed: int, args: argparse.Namespace
) -> dict[str, Any]:
    levels: dict[str, dict[str, Any]] = {}
    for value in values:
        items, events = (value, fixed) if kind == "items" else (fixed, value)
        home, built = home_for(root, f"{kind}-{value}", items, events, seed=value)
        print(json.dumps({kind: value, "built": built}), file=sys.stderr, flush=True)
        if args.build_only:
            continue
        levels[str(value)] = {
            "items": items,
            "events": events,
            "events_per_person": round(events / 240),
            "load_average_before": [round(x, 2) for x in os.getloadavg()],
            "home": built,
            **measure(home, args.n, args.instrumented),
        }
        timing = levels[str(value)]["timings"]
        print(json.dumps({kind: value, **timing}), file=sys.stderr, flush=True)
    summary = growth(levels, args.grow)
    strip_calls(levels)
    result: dict[str, Any] = {"levels": levels, "growth": summary}
    if levels and args.interleaved:
        homes = {level: root / f"{kind}-{level}" for level in sorted(levels, key=int)}
        result["interleaved"] = interleaved(homes, args.interleaved)
        print(json.dumps({kind: "interleaved", **result["interleaved"]}), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Default run: 3 + 3 homes built (~1.2M events in all), 60 timed and 20 "
        "instrumented decisions per scenario and level; about 10 minutes on an idle 2-core "
        "machine, most of it building the 1M-event home. Homes are deleted at the end unless "
        "--homes names a folder to keep them in.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--items", default="1000,10000,100000", help="catalog sizes (items axis)")
    parser.add_argument("--item-level-events", type=int, default=20_000,
                        help="events stored at every catalog size")  # fmt: skip
    parser.add_argument("--events", default="1000,100000,1000000",
                        help="stored events (events axis); '' skips the axis")  # fmt: skip
    parser.add_argument("--event-level-items", type=int, default=1000,
                        help="catalog size at every event level")  # fmt: skip
    parser.add_argument("--n", type=int, default=60, help="timed decisions per scenario, level")
    parser.add_argument("--instrumented", type=int, default=20,
                        help="decisions per scenario and level that count statements and calls")  # fmt: skip
    parser.add_argument("--interleaved", type=int, default=20,
                        help="rounds of the levels measured side by side (CPU time); 0: none")  # fmt: skip
    parser.add_argument("--grow", type=float, default=2.0,
                        help="report a count that grew more than this many times")  # fmt: skip
    parser.add_argument("--homes", type=Path, default=None,
                        help="keep the built homes here and reuse them on the next run")  # fmt: skip
    parser.add_argument("--build-only", action="store_true",
                        help="build (and check) the homes of --homes, measure nothing")  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "growth.json"
    )
    args = parser.parse_args()
    if args.build_only and args.homes is None:
        parser.error("--build-only needs --homes (where to keep what it builds)")
    root = args.homes or Path(tempfile.mkdtemp(prefix="attune-growth-"))
    started = time.perf_counter()
    result: dict[str, Any] = {
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "scenarios": {
            "no_query": "a known person (one of the 240), no text: taste + item-item re-ranking",
            "cached_query": "a known person with one of 4 queries, its embedding cached",
            "new_visitor": "an anonymous id never seen: popularity",
        },
    }
    try:
        if args.items:
            values = [int(x) for x in args.items.split(",")]
            result["by_items"] = axis(root, "items", values, args.item_level_events, args)
        if args.events:
            values = [int(x) for x in args.events.split(",")]
            result["by_events"] = axis(root, "events", values, args.event_level_items, args)
    finally:
        if args.homes is None:
            shutil.rmtree(root, ignore_errors=True)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["wall_s"] = round(time.perf_counter() - started)
    emit(result, args.out)


if __name__ == "__main__":
    main()
