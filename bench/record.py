"""Bytes and writes per logged decision on the demo world: the stored record's JSON, the
database file, and the commits, flushes and statements a decision costs.

Runs `--n` decisions (users round-robin over web and app, every other one with query text),
reads each stored record back and prints JSON: the record's compact-JSON bytes (mean, p50, max),
the database's growth per decision (SQLite pages, WAL checkpointed), and per decision the
transactions committed (all, and those that wrote), ORM flushes, and SQL statements by kind
(rows inserted by table); writes it to `bench/results/record.json`. Pass `--home` with a seeded
home to skip seeding.

    .venv/bin/python bench/record.py [--n 200] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from agents.decide.record import RECORD_SCHEMA
from agents.decide.run import DecideRequest, decide
from agents.factory import build_services
from agents.reindex import start as start_service
from agents.services import Services
from agents.settings import Settings
from store.decisions import get_decision
from store.schemas import Channel

ROOT = Path(__file__).resolve().parents[1]


def db_bytes(services: Services) -> int:
    with services.db.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute(text("PRAGMA page_count")).scalar_one()
        free = connection.execute(text("PRAGMA freelist_count")).scalar_one()
        size = connection.execute(text("PRAGMA page_size")).scalar_one()
    return int((pages - free) * size)


class WriteCounter:
    """Counts what the database is asked to do: transactions committed (and those that wrote),
    ORM flushes, SQL statements by kind, and rows inserted by table."""

    def __init__(self, engine: Engine) -> None:
        self.counts: Counter[str] = Counter()
        self._wrote = False
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "before_cursor_execute", self._execute)
        event.listen(Session, "after_flush", self._flush)

    def _begin(self, _connection: Any) -> None:
        self._wrote = False

    def _commit(self, _connection: Any) -> None:
        self.counts["commits"] += 1
        self.counts["commits that wrote"] += self._wrote

    def _flush(self, _session: Any, _context: Any) -> None:
        self.counts["flushes"] += 1

    def _execute(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        words = statement.split(None, 3)
        verb = words[0].upper()
        self.counts[f"{verb} statements"] += 1
        if verb in {"INSERT", "UPDATE", "DELETE"}:
            self._wrote = True
        if verb == "INSERT":
            rows = len(params) if isinstance(params, list) else 1
            self.counts[f"rows inserted into {words[2].strip(chr(34))}"] += rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "record.json")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-record-"))
    services = build_services(Settings(home=home, seed=7))
    if args.home is None:
        start_service(services, ROOT / "data" / "demo")
    before = db_bytes(services)
    counter = WriteCounter(services.db.engine)
    writes: Counter[str] = Counter()
    sizes = []
    for i in range(args.n):
        request = DecideRequest(
            channel=Channel.web if i % 2 else Channel.app,
            user_id=f"u_{i % 400 + 1:04d}",
            query="something for the kitchen" if i % 4 < 2 else None,
        )
        counter.counts.clear()
        decision = decide(services, request)
        writes.update(counter.counts)
        with services.db.session() as session:
            record = get_decision(session, decision.decision_id).record
        sizes.append(len(json.dumps(record, separators=(",", ":")).encode()))
    growth = db_bytes(services) - before
    services.close()
    result = {
        "record_schema": RECORD_SCHEMA,
        "decisions": args.n,
        "record_bytes": {
            "mean": round(statistics.fmean(sizes)),
            "p50": round(statistics.median(sizes)),
            "max": max(sizes),
        },
        "db_bytes_per_decision": round(growth / args.n),
        "per_decision": {name: round(count / args.n, 2) for name, count in sorted(writes.items())},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
