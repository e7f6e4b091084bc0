"""Offer bandit speed: choose() latency and throughput, and linear state refresh from the store.

Prints JSON and writes it to `bench/results/bandit.json`:

- Thompson sampling (12 offers, 1,000 propensity draws) and LinTS (12 of the 27 demo offers,
  dim 59, 1,000 draws): p50/p99 of one `choose()` and decisions per second in a tight loop;
- `store.linear.load_state` over 100,000 stored observations on a SQLite file: a full read, the
  first read through an `ObservationCache`, and cached refreshes with 0 and 100 new rows.

Run with `.venv/bin/python bench/bandit.py [--n 2000] [--observations 100000]`. Figures depend on
the machine; compare ratios between runs, not single numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert

from store.bandit import ArmState
from store.db import Database
from store.linear import LinearState, ObservationCache, load_state
from store.models import LinearObservation, utcnow
from tools.bandit import ThompsonSampling
from tools.bandit_priors import bandit_priors
from tools.linear import LinearThompson
from tools.offer_features import OfferFeatures

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
PERSON = {
    "channel": "web",
    "recency_days": 4.0,
    "frequency_30d": 6,
    "price_band": "mid",
    "category_affinity": {"kitchen": 0.5, "books": 0.3, "wine": 0.2},
}


def timings(call: Callable[[], Any], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    ordered = np.array(samples)
    return {
        "n": n,
        "p50_ms": round(float(np.percentile(ordered, 50)), 3),
        "p99_ms": round(float(np.percentile(ordered, 99)), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


def throughput(call: Callable[[], Any], seconds: float = 2.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        count += 1
    return round(count / (time.perf_counter() - start), 1)


def bench_choose(n: int) -> dict[str, Any]:
    offers = [json.loads(line) for line in (DEMO / "offers.jsonl").read_text().splitlines()]
    space = OfferFeatures(o["offer_id"] for o in offers)
    rng = np.random.default_rng(0)
    eligible = offers[:12]

    arms = {
        o["offer_id"]: ArmState(
            o["offer_id"], float(1 + rng.integers(0, 60)), float(19 + rng.integers(0, 900)), 0
        )
        for o in eligible
    }
    thompson = ThompsonSampling(np.random.default_rng(1), draws=1000)

    state = LinearState.empty(space.dim, 1.0, bandit_priors({}, space, default=(1, 19)).linear)
    for _ in range(2000):  # a state that has learned something
        offer = eligible[int(rng.integers(12))]
        state = state.updated(space.vector(PERSON, offer), float(rng.random() < 0.05))
    lints = LinearThompson(np.random.default_rng(1))

    def choose_lints() -> None:
        # Building the feature vectors is part of a decision's cost, so it is timed too.
        lints.choose(space.contexts(PERSON, eligible), state)

    return {
        "thompson": {
            "arms": 12,
            "draws": 1000,
            **timings(lambda: thompson.choose(arms), n),
            "decisions_per_s": throughput(lambda: thompson.choose(arms)),
        },
        "lints": {
            "arms": 12,
            "dim": space.dim,
            "draws": lints.config.draws,
            **timings(choose_lints, n),
            "decisions_per_s": throughput(choose_lints),
        },
    }


def bench_refresh(observations: int, home: Path) -> dict[str, Any]:
    db = Database(f"sqlite:///{home / 'bandit-bench.db'}")
    dim, rng = 59, np.random.default_rng(2)
    # Rows spread over the past ten days, as a live system would have them, so the cache's
    # settle window holds only the most recent ones.
    now = utcnow()
    with db.session() as session:
        for first in range(0, observations, 10_000):
            count = min(10_000, observations - first)
            xs = (rng.random((count, dim)) < 0.2).astype(float)
            session.execute(
                insert(LinearObservation),
                [
                    {
                        "policy": "lints",
                        "segment": "all",
                        "x": x.tolist(),
                        "reward": float(rng.random() < 0.05),
                        "created_at": now
                        - timedelta(days=10) * (1 - (first + i) / observations)
                        - timedelta(minutes=5),
                    }
                    for i, x in enumerate(xs)
                ],
            )

    def load(cache: ObservationCache | None = None) -> LinearState:
        with db.session() as session:
            return load_state(session, "lints", "all", dim, 1.0, cache=cache)

    def add(count: int) -> None:
        with db.session() as session:
            session.execute(
                insert(LinearObservation),
                [
                    {"policy": "lints", "segment": "all", "x": [1.0] * dim, "reward": 1.0}
                    for _ in range(count)
                ],
            )

    start = time.perf_counter()
    full = load()
    full_ms = (time.perf_counter() - start) * 1000
    cache = ObservationCache()
    start = time.perf_counter()
    load(cache)
    first_ms = (time.perf_counter() - start) * 1000
    unchanged = timings(lambda: load(cache), 50)
    new_rows = []
    for _ in range(20):
        add(100)
        start = time.perf_counter()
        state = load(cache)
        new_rows.append((time.perf_counter() - start) * 1000)
    assert state.observations == full.observations + 2000 == observations + 2000
    db.dispose()
    return {
        "observations": observations,
        "dim": dim,
        "full_load_ms": round(full_ms, 1),
        "cached_first_load_ms": round(first_ms, 1),
        "cached_refresh_no_new_rows": unchanged,
        "cached_refresh_100_new_rows_p50_ms": round(float(np.median(new_rows)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="timed choose() calls per bandit")
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/bandit.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="attune-bandit-bench-") as home:
        result = {
            "choose": bench_choose(args.n),
            "load_state": bench_refresh(args.observations, Path(home)),
        }
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
