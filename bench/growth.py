"""How a decision's cost grows with the catalog and with the stored event history.

Builds synthetic worlds (the demo's people, offers and policy; synthetic items with random unit
vectors, so that 100k items need no embedding; the query still goes through the embedding model)
and measures, in process, the p50 of a decision without and with query text at each catalog size,
and at each number of stored events (spread evenly over the demo's 240 people, times over the
last year). At each event level it also times the two ways to get a person's features: the row
maintained as events arrive (`store.features.read_features`, what a decision reads) and folding
their raw events (`compute_features`, what a decision did before) — the latter grows with the
history, the former does not. Prints JSON and writes it to `--out`.

    .venv/bin/python bench/growth.py [--items 1000,10000,100000] [--events 1000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.seed import read_jsonl
from agents.services import Services
from agents.settings import PROJECT_ROOT, Settings
from store.catalog import refresh_popularity, upsert_items, upsert_offers
from store.features import compute_features, read_features
from store.models import EventRow, PersonFeatures
from store.schemas import Channel, Item, Offer, UserRecord
from store.users import Subject, upsert_user

DEMO = PROJECT_ROOT / "data" / "demo"
CATEGORIES = ["beauty", "books", "coffee_tea", "electronics", "home_kitchen", "outdoors",
              "pets", "sports", "toys", "wine"]  # fmt: skip
KINDS = ["view"] * 6 + ["click"] * 3 + ["add_to_cart", "purchase"]
QUERIES = ["something for the kitchen", "strong coffee beans", "running shoes", "cat toys"]
NOW = datetime.now(UTC)


def p50(samples: list[float]) -> float:
    return round(statistics.median(samples), 3)


def timed(n: int, call: Callable[[int], Any]) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def world(home: Path, items: int, rng: np.random.Generator) -> tuple[Services, list[str]]:
    """Services over a store with the demo's people and offers and `items` synthetic items."""
    services = build_services(Settings(home=home, seed=1))
    users = list(read_jsonl(DEMO / "users.jsonl", UserRecord))
    with services.db.session() as session:
        for record in users:
            upsert_user(session, record)
        upsert_offers(session, read_jsonl(DEMO / "offers.jsonl", Offer))
    services.tools.offers.invalidate()
    words = ["kitchen", "coffee", "running", "shoes", "beans", "cat", "toys", "pan", "wine"]
    for start in range(0, items, 1000):
        batch = [
            Item(
                item_id=f"itm_{i:07d}",
                title=f"{words[i % len(words)]} {words[(i * 7) % len(words)]} {i}",
                category=CATEGORIES[i % len(CATEGORIES)],
                price=float(5 + (i * 37) % 200),
                stock=100,
            )
            for i in range(start, min(start + 1000, items))
        ]
        vectors = rng.normal(size=(len(batch), services.embedder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with services.db.session() as session:
            upsert_items(session, batch)
        services.index.upsert(batch, vectors)
    return services, [r.user_id for r in users]


def add_events(
    services: Services,
    users: list[str],
    items: int,
    count: int,
    first: int,
    rng: np.random.Generator,
) -> None:
    """`count` more events, round-robin over `users`, at random times in the last year."""
    for start in range(first, first + count, 50_000):
        n = min(50_000, first + count - start)
        seconds = rng.integers(0, 365 * 86400, size=n)
        item_ids = rng.integers(0, items, size=n)
        kinds = rng.integers(0, len(KINDS), size=n)
        rows = []
        for j in range(n):
            kind = KINDS[int(kinds[j])]
            rows.append(
                {
                    "event_id": f"ev{start + j}",
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
        with services.db.session() as session:
            session.execute(insert(EventRow), rows)
    with services.db.session() as session:
        refresh_popularity(session)
        # Stored in bulk, not through ingest: the rows are rebuilt from the events when next
        # read, as after a migration.
        session.query(PersonFeatures).delete()
    with services.db.session() as session:
        for user_id in users:
            read_features(session, Subject(user_id, None), as_of=NOW)


def decisions(services: Services, users: list[str], n: int, rng: np.random.Generator) -> dict:
    def one(query: bool) -> Callable[[int], Any]:
        def call(i: int) -> None:
            decide(
                services,
                DecideRequest(
                    channel=Channel.web,
                    user_id=str(rng.choice(users)),
                    query=QUERIES[i % len(QUERIES)] if query else None,
                ),
            )

        return call

    for i in range(10):
        one(i % 2 == 0)(i)
    return {
        "decide_without_query_p50_ms": p50(timed(n, one(False))),
        "decide_with_query_p50_ms": p50(timed(n, one(True))),
    }


def features_timings(services: Services, subjects: list[Subject]) -> tuple[list, list]:
    """Per person: reading the maintained row, and folding the raw events (at most 30)."""
    with services.db.session() as session:
        maintained = timed(len(subjects), lambda i: read_features(session, subjects[i], as_of=NOW))
        folded = timed(
            min(len(subjects), 30), lambda i: compute_features(session, subjects[i], as_of=NOW)
        )
    return maintained, folded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="1000,10000,100000")
    parser.add_argument("--events", default="1000,100000,1000000")
    parser.add_argument("--n", type=int, default=100, help="decisions per measurement")
    parser.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "growth.json"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    result: dict[str, Any] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    settle()

    by_items = {}
    for items in (int(x) for x in args.items.split(",")):
        services, users = world(Path(tempfile.mkdtemp(prefix="attune-growth-")), items, rng)
        add_events(services, users, items, 5000, 0, rng)
        by_items[str(items)] = decisions(services, users, args.n, rng)
        services.close()
        print(json.dumps({"items": items, **by_items[str(items)]}), file=sys.stderr)
    result["by_items (5,000 events)"] = by_items

    by_events = {}
    services, users = world(Path(tempfile.mkdtemp(prefix="attune-growth-")), 1000, rng)
    stored = 0
    for events in (int(x) for x in args.events.split(",")):
        add_events(services, users, 1000, events - stored, stored, rng)
        stored = events
        subjects = [Subject(str(rng.choice(users)), None) for _ in range(args.n)]
        maintained, folded = features_timings(services, subjects)
        by_events[str(events)] = {
            "events_per_person": round(events / len(users)),
            "features_maintained_row_p50_ms": p50(maintained),
            "features_folded_from_events_p50_ms": p50(folded),
            **decisions(services, users, args.n, rng),
        }
        print(json.dumps({"events": events, **by_events[str(events)]}), file=sys.stderr)
    services.close()
    result["by_events (1,000 items)"] = by_events
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
