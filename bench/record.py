"""Bytes and writes per logged decision on the demo world: the stored record's JSON, the
database file, and the commits, flushes and statements a decision costs.

Runs `--n` decisions (users round-robin over web and app, every other one with query text),
reads each stored record back and prints JSON: the record's compact-JSON bytes (mean, p50, max),
the database's growth per decision (SQLite pages, WAL checkpointed), and per decision the
transactions committed (all, and those that wrote), ORM flushes, and SQL statements by kind
(rows inserted by table); writes it to `bench/results/record.json`. Pass `--home` with a seeded
home to skip seeding.

With `--ab-blocks N`, also the CPU of a decision's write as it was at b4f4f10 against now,
in N alternating blocks of the first 100 decisions' writes, each arm on its own copy of the
database (`write_ab`).

    .venv/bin/python bench/record.py [--n 200] [--home DIR] [--ab-blocks 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, insert, text
from sqlalchemy.orm import Session

from agents.decide import graph
from agents.decide.record import RECORD_SCHEMA
from agents.decide.run import DecideRequest, decide
from agents.factory import build_services
from agents.reindex import start as start_service
from agents.services import Services
from bench.report import product_settings
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


_SESSION7_INDEX = "CREATE INDEX ix_decisions_subject_key ON decisions (subject_key)"


def write_ab(services: Services, records: list[tuple[Any, ...]], blocks: int) -> dict[str, Any]:
    """CPU (`time.process_time`) of a decision's write, as it was at b4f4f10 (`session7`: both
    INSERTs through `connection.execute`, into a `decisions` table that also kept an index on
    the subject alone) against now (`agents.decide.record.log_record`), in alternating blocks
    in this process, each arm on its own copy of the database."""
    from agents.decide.record import log_record
    from store.db import Database
    from store.decisions import _INSERT_DECISION
    from store.models import RewardWindow

    folder = Path(tempfile.mkdtemp(prefix="attune-bench-write-"))
    with services.db.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    source = Path(str(services.db.engine.url.database))
    databases = {}
    for name in ("session7", "new"):
        shutil.copy(source, folder / f"{name}.db")
        databases[name] = Database(f"sqlite:///{folder / name}.db")
    with databases["session7"].engine.begin() as connection:
        connection.exec_driver_sql(_SESSION7_INDEX)

    def session7(run: Any, decision_id: str, choice: Any, record: dict[str, Any]) -> None:
        offer_id = choice.offer_id if choice else None

        def write(connection: Any) -> None:
            connection.execute(
                _INSERT_DECISION,
                {
                    "decision_id": decision_id,
                    "subject_key": run.subject.key,
                    "user_id": run.subject.user_id,
                    "channel": run.channel.value,
                    "segment": choice.segment if choice else run.channel.value,
                    "offer_id": offer_id,
                    "created_at": run.now,
                    "record": record,
                },
            )
            rules = run.deps.policy.policy.rewards
            connection.execute(
                insert(RewardWindow),
                {
                    "decision_id": decision_id,
                    "subject_key": run.subject.key,
                    "opened_at": run.now,
                    "closes_at": run.now + timedelta(hours=rules.window_hours),
                    "offer_id": offer_id,
                    "item_ids": [c["item_id"] for c in record["retrieval"]["candidates"]],
                    "default_reward": rules.default,
                },
            )

        databases["session7"].core_transaction(write)

    def new(run: Any, decision_id: str, choice: Any, record: dict[str, Any]) -> None:
        log_record(
            replace(run, deps=replace(run.deps, db=databases["new"])), decision_id, choice, record
        )

    cpu: dict[str, list[float]] = {"session7": [], "new": []}
    order = [("session7", session7), ("new", new)]
    for block in range(blocks):
        for name, write in order if block % 2 == 0 else order[::-1]:
            started = time.process_time()
            for run, _, choice, record in records:
                write(run, uuid.uuid4().hex, choice, record)
            cpu[name].append((time.process_time() - started) / len(records) * 1e6)
    for database in databases.values():
        database.dispose()
    shutil.rmtree(folder)
    old_us, new_us = statistics.median(cpu["session7"]), statistics.median(cpu["new"])
    return {
        "blocks": blocks,
        "writes_per_block": len(records),
        "session7_cpu_us_median": round(old_us, 1),
        "new_cpu_us_median": round(new_us, 1),
        "new_over_session7": round(new_us / old_us, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--ab-blocks", type=int, default=0, help="write A/B blocks (0: none)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "record.json")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-record-"))
    services = build_services(product_settings(home=home, seed=7))
    if args.home is None:
        start_service(services, ROOT / "data" / "demo")
    before = db_bytes(services)
    counter = WriteCounter(services.db.engine)
    written: list[tuple[Any, ...]] = []
    logged = graph.log_record

    def keep(*args: Any) -> None:
        written.append(args)
        logged(*args)

    graph.log_record = keep  # type: ignore[assignment]
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
    graph.log_record = logged
    ab = write_ab(services, written[:100], args.ab_blocks) if args.ab_blocks else None
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
    if ab is not None:
        result["write_ab"] = ab
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
