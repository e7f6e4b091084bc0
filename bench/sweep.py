"""What the once-per-database erasure sweep (`agents.privacy.sweep`) costs at start, by how many
identifiers the database holds rows under.

The demo world as `make run` starts it, plus `--visitors` synthetic events, each from an
anonymous id of its own (the worst case: every event a new visitor, each id hashed and looked
up), and one person erased through `erase_user` (so that tombstones exist and the sweep runs).
For each level the sweep is run `--repeat` times (its `maintenance` row deleted before each)
and its wall time reported (median, min, max), with the identifiers it checked. Events are
inserted in bulk through SQLAlchemy Core.

    .venv/bin/python bench/sweep.py [--visitors 10000,100000,1000000] [--repeat 3] [--out F]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, insert, select
from sqlalchemy import func as sql

from agents.privacy.rights import erase_user
from agents.privacy.sweep import sweep_erased
from bench.report import demo_service, emit
from store.models import EventRow, Maintenance

BATCH = 20_000


def add_visitors(services: Any, start: int, count: int) -> None:
    now = datetime.now(UTC)
    table = EventRow.__table__
    assert isinstance(table, Table)
    for first in range(start, start + count, BATCH):
        rows = [
            {
                "event_id": f"bench-sweep-{n}",
                "type": "view",
                "ts": now,
                "user_id": None,
                "anonymous_id": f"anon_bench_{n:08d}",
                "device_id": None,
                "item_id": "itm_00001",
                "value": None,
                "received_at": now,
            }
            for n in range(first, min(first + BATCH, start + count))
        ]
        with services.db.engine.begin() as connection:
            connection.execute(insert(table), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/sweep.json"))
    args = parser.parse_args()
    services, users = demo_service(prefix="attune-bench-sweep-")
    erase_user(services, users[0], actor="bench")
    levels: dict[str, Any] = {}
    added = 0
    for target in (int(v) for v in args.visitors.split(",")):
        add_visitors(services, added, target - added)
        added = target
        with services.db.session() as session:
            events = session.scalar(select(sql.count()).select_from(EventRow))
        seconds, checked = [], None
        for _ in range(args.repeat):
            with services.db.session() as session:
                session.execute(delete(Maintenance))
            began = time.perf_counter()
            swept = sweep_erased(services, actor="bench")
            seconds.append(time.perf_counter() - began)
            assert swept is not None
            checked = swept["identifiers_checked"]
        levels[str(target)] = {
            "events": events,
            "identifiers_checked": checked,
            "seconds": {
                "median": round(statistics.median(seconds), 3),
                "min": round(min(seconds), 3),
                "max": round(max(seconds), 3),
            },
        }
        print(target, levels[str(target)], flush=True)
    services.close()
    emit({"repeat": args.repeat, "levels": levels}, args.out)


if __name__ == "__main__":
    main()
