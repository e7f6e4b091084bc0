"""What storing a batch of events costs, by the batch's size: the work `POST /v1/events` does in
its turn through the CPU gate (`api.routes.events._record`: refuse events about erased people,
store the rest, update their feature rows, attribute them to decisions), and the validation of
the raw events before it (`TypeAdapter(Event)`, on the loop for every batch).

On the demo world (seeded), for each size in `--sizes`, `--repeat` batches of fresh events
(new ids, stamped now, for demo users and items, as a site sends them while people browse),
a block of batches per size after a warm-up. Reports the median CPU time of the
calling thread (`time.thread_time`) per batch and per event, for the store and the validation.
`api.routes.events.ON_LOOP` (batches stored on the loop rather than in a worker thread) is read
off these figures: a batch on the loop holds it for its whole store.

    .venv/bin/python bench/events_cost.py [--sizes 1,4,16,64,256,1000] [--repeat 15] [--out F]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.factory import build_services, settle
from agents.reindex import start as start_service
from api.routes.events import _EVENT, ON_LOOP, _record
from bench.report import emit, product_settings

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 10  # batches of each size before the measured ones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,16,64,256,1000")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "events_cost.json")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    settings = product_settings(home=Path(tempfile.mkdtemp(prefix="attune-bench-events-")), seed=1)
    services = build_services(settings)
    start_service(services, settings.demo_dir)
    demo = settings.demo_dir
    users = [json.loads(line)["user_id"] for line in _lines(demo / "users.jsonl")]
    items = [json.loads(line)["item_id"] for line in _lines(demo / "items.jsonl")]
    rng = random.Random(1)
    made = 0

    def batch(size: int) -> list[dict[str, Any]]:
        nonlocal made
        made += 1
        now = datetime.now(UTC).isoformat()
        return [
            {
                "event_id": f"bench-events-{made}-{j}",
                "type": rng.choice(["view", "view", "view", "click", "add_to_cart"]),
                "ts": now,
                "user_id": rng.choice(users),
                "item_id": rng.choice(items),
            }
            for j in range(size)
        ]

    settle()
    store: dict[int, list[float]] = {size: [] for size in sizes}
    validate: dict[int, list[float]] = {size: [] for size in sizes}
    for size in sizes:
        # A block per size: a large batch leaves work to the next commit (SQLite checkpoints
        # its write-ahead log at the commit that passes 1,000 pages), which interleaved sizes
        # would charge to the small batch after it. SQLAlchemy compiles a statement per shape
        # (an IN list per length): each block starts with `WARM_UP` batches not counted.
        for n in range(WARM_UP + args.repeat):
            raw = batch(size)
            started = time.thread_time()
            events = [_EVENT.validate_python(event) for event in raw]
            validated = time.thread_time()
            _store_batch(services, events)
            if n >= WARM_UP:
                validate[size].append(validated - started)
                store[size].append(time.thread_time() - validated)
    emit(
        {
            "repeat": args.repeat,
            "on_loop": ON_LOOP,
            "sizes": {
                str(size): {
                    "store_ms": _ms(statistics.median(store[size])),
                    "store_ms_per_event": _ms(statistics.median(store[size]) / size),
                    "validate_ms": _ms(statistics.median(validate[size])),
                }
                for size in sizes
            },
        },
        args.out,
    )


def _store_batch(services: Any, events: list[Any]) -> None:
    results: list[Any] = [None] * len(events)
    kept, (outcomes, _) = _record(services, list(enumerate(events)), results)
    accepted = sum(outcome.status.value == "accepted" for outcome in outcomes)
    if len(kept) != len(events) or accepted != len(events):
        raise SystemExit(f"a batch of {len(events)} fresh events stored {accepted}")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    main()
