"""What a decision reads: statements and sessions per decision, and the reads old vs new (A/B).

Prints JSON. `per_decision`: ORM sessions opened, connections checked out of the pool,
statements executed (by first word) and the statements of each table (by the first FROM: the
person's SELECT counts as `catalog_version`, its first subquery's table), over `--n` decisions without a query on the demo world. `ab`: the
reads a decision made before `tools.reads` (resolve the subject; user, consent, feature row and
prediction through the ORM; exposures; bandit arms: four sessions) against what
`tools.reads.open_decision` reads now (one session, two statements), timed in alternating
blocks in this one process, so machine load hits both alike; medians of the block means.
`session6` is the reads of a decision as they were at b89debb (ORM sessions, statements built
per call, the catalog's version and the history read on their own); `new` as they are now.
`ab_open`: the CPU of `tools.reads.open_decision` as it was at b4f4f10 (`session7`: the person's
SELECT, then the offer state's with `expanding` IN lists, both through `connection.execute`)
against now (one prepared SELECT), in alternating blocks; both leave the same memo.

    .venv/bin/python bench/reads.py [--n 200] [--blocks 20] [--home HOME]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import Float, Integer, String, and_, bindparam, event, null, or_, select, union_all

from agents.decide.run import DecideRequest, decide
from agents.factory import build_services, settle
from agents.reindex import start as start_service
from agents.services import Services
from bench.report import product_settings
from retrieval.sequence import _HISTORY, person_history
from store.bandit import ArmState, read_offer_state
from store.db import Database
from store.errors import NotFound
from store.features import person_features, read_features
from store.models import (
    BanditArm,
    CatalogVersion,
    DecisionRow,
    EventRow,
    IdentityLink,
    UTCDateTime,
)
from store.person import _PERSON, Person, read_person
from store.predictions import Prediction
from store.schemas import Channel, Purpose, UserRecord, stored_profile
from store.users import Subject, get_user, resolve_subject
from tools.context import RunContext
from tools.offers import keep_offer_reads, offer_reads
from tools.profile import settle_profile
from tools.reads import open_decision

USERS = [f"u_{i:04d}" for i in range(1, 401)]
WEEK = timedelta(days=7)


def old_reads(db: Database, user_id: str, offer_ids: list[str], now: datetime) -> Any:
    """The store reads of a decision as they were before `tools.reads` (main at 67bfa70)."""
    with db.session() as session:
        subject = resolve_subject(session, user_id, None)
    with db.session() as session:
        try:
            record = get_user(session, user_id)
        except NotFound:
            record = None
        features = read_features(session, subject, as_of=now)
    with db.session() as session:
        shown = session.execute(
            select(DecisionRow.offer_id, DecisionRow.channel, DecisionRow.created_at).where(
                DecisionRow.subject_key == subject.key,
                DecisionRow.created_at >= now - WEEK,
                DecisionRow.offer_id.is_not(None),
            )
        ).all()
    with db.session() as session:
        rows = session.scalars(
            select(BanditArm).where(
                BanditArm.policy == "thompson",
                BanditArm.segment == "web",
                BanditArm.offer_id.in_(offer_ids),
            )
        )
        arms = {r.offer_id: ArmState(r.offer_id, r.alpha, r.beta, r.pulls) for r in rows}
    return record, features, shown, arms


def session6_reads(db: Database, user_id: str, offer_ids: list[str], now: datetime) -> Any:
    """The reads as `tools.reads.open_decision` and retrieval made them at b89debb: an ORM
    session, the offer state's UNION ALL and the history's SELECT built on every call, the
    catalog's version read on its own before popularity (JSON was read by `json.loads` then,
    which this cannot undo: both arms read it by orjson)."""
    with db.session() as session:
        person = read_person(session, user_id, None)
        features = person_features(session, person, as_of=now)
        decisions = DecisionRow.__table__
        shown_q = select(*_shown_columns()).where(
            decisions.c.subject_key == person.subject.key,
            decisions.c.created_at >= now - WEEK,
            decisions.c.offer_id.is_not(None),
        )
        arms_t = BanditArm.__table__
        arms_q = select(*_arm_columns()).where(
            or_(and_(arms_t.c.policy == "thompson", arms_t.c.segment == "web")),
            arms_t.c.offer_id.in_(offer_ids),
        )
        rows = session.execute(union_all(shown_q, arms_q)).all()
    with db.session() as session:
        linked = select(IdentityLink.external_id).where(
            IdentityLink.kind == "anonymous", IdentityLink.user_id == user_id
        )
        history = session.execute(
            select(EventRow.item_id, EventRow.type)
            .where(or_(EventRow.user_id == user_id, EventRow.anonymous_id.in_(linked)))
            .order_by(EventRow.ts.desc(), EventRow.event_id.desc())
            .limit(1000)
        ).all()
    with db.session() as session:
        version = session.scalar(select(CatalogVersion.version).where(CatalogVersion.id == 1))
    return person.record, features, rows, history, version  # fmt: skip


def new_reads(db: Database, user_id: str, offer_ids: list[str], now: datetime) -> Any:
    """The same reads as `tools.reads.open_decision` and retrieval make them now: one Core
    connection for the person (with the catalog's version) and the offer state, one for the
    history, every statement built once."""
    with db.connect() as connection:
        person = read_person(connection, user_id, None)
        features = person_features(connection, person, as_of=now)
        shown, arms = read_offer_state(
            connection, person.subject.key, now - WEEK, [("thompson", "web")], offer_ids
        )
    history = person_history(db, user_id, None)
    return person.record, features, shown, arms, history, person.catalog_version


def _shown_columns() -> list[Any]:
    """The offer state's columns of a shown decision, in the old arms' UNION ALL."""
    decisions = DecisionRow.__table__
    return [
        decisions.c.offer_id,
        decisions.c.channel,
        decisions.c.created_at,
        sa.cast(null(), String).label("policy"),
        sa.cast(null(), Float).label("alpha"),
        sa.cast(null(), Float).label("beta"),
        sa.cast(null(), Integer).label("pulls"),
    ]


def _arm_columns() -> list[Any]:
    """The offer state's columns of a bandit arm, in the old arms' UNION ALL."""
    arms = BanditArm.__table__
    return [
        arms.c.offer_id,
        arms.c.segment,
        sa.cast(null(), UTCDateTime),
        arms.c.policy,
        arms.c.alpha,
        arms.c.beta,
        arms.c.pulls,
    ]


def _session7_offer_state() -> Any:
    """`store.bandit.read_offer_state`'s UNION ALL as it was at b4f4f10: `expanding` IN lists."""
    decisions = DecisionRow.__table__
    arms = BanditArm.__table__
    shown = select(*_shown_columns()).where(
        decisions.c.subject_key == bindparam("subject_key"),
        decisions.c.created_at >= bindparam("since"),
        decisions.c.offer_id.is_not(None),
    )
    state = select(*_arm_columns()).where(
        arms.c.policy.in_(bindparam("policies", expanding=True)),
        arms.c.segment.in_(bindparam("segments", expanding=True)),
        arms.c.offer_id.in_(bindparam("offer_ids", expanding=True)),
    )
    return union_all(shown, state)


_SESSION7_OFFER_STATE = _session7_offer_state()


def session7_open(services: Services, user_id: str, now: datetime) -> Any:
    """`tools.reads.open_decision` as it was at b4f4f10: the person's SELECT and the offer
    state's (`expanding` IN lists) through `connection.execute`, on one Core connection."""
    deps = services.tools
    with deps.db.connect() as connection:
        values = {"user_id": user_id, "anonymous_id": None, "erased_ref": None}
        row = connection.execute(_PERSON, values).one()
        record = None
        if row.stored_user is not None:
            granted = row._mapping
            record = UserRecord(
                user_id=row.stored_user,
                profile=stored_profile(row.profile),
                consent={p: bool(granted[f"consent_{p.value}"]) for p in Purpose},
            )
        prediction = None
        if row.predicted_user is not None:
            prediction = Prediction(row.churn_risk, dict(row.next_purchase), row.model_version)
        person = Person(
            subject=Subject(row.user_id, None),
            owner=row.owner,
            record=record,
            feature_state=row.state,
            prediction=prediction,
            catalog_version=row.catalog or 0,
        )
        ctx = RunContext(deps=deps, subject=person.subject, channel=Channel.web, now=now)
        ctx.memo["catalog_version"] = person.catalog_version
        settle_profile(ctx, connection, person)
        query = offer_reads(deps, Channel.web, now)  # the same plan (no lifecycle segments)
        wanted = set(query.states)
        shown: list[Any] = []
        arms: dict[Any, Any] = {}
        for offer_id, where, at, policy, alpha, beta, pulls in connection.execute(
            _SESSION7_OFFER_STATE,
            {
                "subject_key": person.subject.key,
                "since": query.since,
                "policies": sorted({policy for policy, _ in wanted}),
                "segments": sorted({segment for _, segment in wanted}),
                "offer_ids": list(query.offer_ids),
            },
        ):
            if policy is None:
                shown.append((str(offer_id), where, at))
            elif (policy, where) in wanted:
                arms.setdefault((policy, where), {})[offer_id] = ArmState(
                    offer_id, alpha, beta, pulls
                )
    keep_offer_reads(ctx, query, replace(person, shown=shown, arms=arms))
    return ctx


def new_open(services: Services, user_id: str, now: datetime) -> Any:
    """`tools.reads.open_decision` now: one prepared statement."""
    return open_decision(services.tools, user_id, None, channel=Channel.web, now=now)


def ab_open(services: Services, blocks: int, per_block: int) -> dict[str, Any]:
    """CPU (`time.process_time`) of opening a decision, b4f4f10 against now, in alternating
    blocks in this process; and that both put the same facts in the request's memo."""
    now = datetime.now(UTC)
    rng = np.random.default_rng(4)
    cpu: dict[str, list[float]] = {"session7": [], "new": []}
    order = [("session7", session7_open), ("new", new_open)]
    for block in range(blocks):
        users = [str(u) for u in rng.choice(USERS, per_block)]
        for name, opened in order if block % 2 == 0 else order[::-1]:
            started = time.process_time()
            for user_id in users:
                opened(services, user_id, now)
            cpu[name].append((time.process_time() - started) / per_block * 1e6)
    for user_id in USERS:
        old, new = session7_open(services, user_id, now), new_open(services, user_id, now)
        assert old.subject == new.subject, user_id
        assert old.memo["profile"] == new.memo["profile"], user_id
        assert old.memo["features"] == new.memo["features"], user_id
        assert old.memo["exposures"] == new.memo["exposures"], user_id
        assert old.memo["arms"] == new.memo["arms"], user_id
    old_us, new_us = statistics.median(cpu["session7"]), statistics.median(cpu["new"])
    return {
        "blocks": blocks,
        "decisions_per_block": per_block,
        "session7_cpu_us_median": round(old_us, 1),
        "new_cpu_us_median": round(new_us, 1),
        "new_over_session7": round(new_us / old_us, 3),
        "same_memo_for_users": len(USERS),
    }


def per_decision(services: Services, n: int) -> dict[str, Any]:
    statements: collections.Counter[str] = collections.Counter()
    tables: collections.Counter[str] = collections.Counter()
    sessions = [0]
    checkouts = [0]

    def checkout(*_: Any) -> None:
        checkouts[0] += 1

    def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        words = statement.split()
        statements[words[0].upper()] += 1
        if words[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            after = {"SELECT": "FROM", "INSERT": "INTO", "UPDATE": "UPDATE", "DELETE": "FROM"}
            upper = [w.upper() for w in words]
            table = (
                words[upper.index(after[words[0].upper()]) + 1] if after[upper[0]] in upper else "?"
            )
            tables[f"{words[0].upper()} {table}"] += 1

    opened = services.db.session

    def counted() -> Any:
        sessions[0] += 1
        return opened()

    rng = np.random.default_rng(2)
    event.listen(services.db.engine, "before_cursor_execute", seen)
    event.listen(services.db.engine.pool, "checkout", checkout)
    services.db.session = counted  # type: ignore[method-assign]
    try:
        for _ in range(n):
            decide(services, DecideRequest(channel=Channel.web, user_id=str(rng.choice(USERS))))
    finally:
        services.db.session = opened  # type: ignore[method-assign]
        event.remove(services.db.engine, "before_cursor_execute", seen)
        event.remove(services.db.engine.pool, "checkout", checkout)
    return {
        "sessions": round(sessions[0] / n, 2),
        "connection_checkouts": round(checkouts[0] / n, 2),
        "statements": round(sum(statements.values()) / n, 2),
        "by_kind": {k: round(v / n, 2) for k, v in statements.most_common()},
        "by_table": {k: round(v / n, 2) for k, v in tables.most_common()},
    }


def ab(services: Services, blocks: int, per_block: int) -> dict[str, Any]:
    offer_ids = [o.offer_id for o in services.tools.offers.current()]
    now = datetime.now(UTC)
    rng = np.random.default_rng(3)
    times: dict[str, list[float]] = {"old": [], "session6": [], "new": []}
    for block in range(blocks):
        order = [("old", old_reads), ("session6", session6_reads), ("new", new_reads)]
        for name, reads in order if block % 2 == 0 else order[::-1]:
            users = [str(u) for u in rng.choice(USERS, per_block)]
            started = time.perf_counter()
            for user_id in users:
                reads(services.db, user_id, offer_ids, now)
            times[name].append((time.perf_counter() - started) / per_block * 1000)
    for user_id in USERS[:50]:  # both read the same facts
        old, new = (
            old_reads(services.db, user_id, offer_ids, now),
            new_reads(services.db, user_id, offer_ids, now),
        )
        assert old[0] == new[0] and old[1] == new[1] and sorted(old[2]) == sorted(new[2]), user_id
        assert old[3] == new[3].get(("thompson", "web"), {}), user_id
        previous = session6_reads(services.db, user_id, offer_ids, now)
        assert previous[0] == new[0] and previous[1] == new[1], user_id
        assert [tuple(row) for row in previous[3]][::-1] == [
            (item, kind) for item, kind in _kinds(services.db, user_id)
        ], user_id
    old_ms, new_ms = statistics.median(times["old"]), statistics.median(times["new"])
    session6_ms = statistics.median(times["session6"])
    return {
        "blocks": blocks,
        "decisions_per_block": per_block,
        "old_ms_median": round(old_ms, 3),
        "session6_ms_median": round(session6_ms, 3),
        "new_ms_median": round(new_ms, 3),
        "new_over_old": round(new_ms / old_ms, 3),
        "new_over_session6": round(new_ms / session6_ms, 3),
    }


def _kinds(db: Database, user_id: str) -> list[tuple[str, str]]:
    """The history `person_history` reads, with each event's type instead of its weight."""
    with db.connect() as connection:
        return [
            (item, kind)
            for item, kind in reversed(
                connection.execute(
                    _HISTORY[True, False], {"user_id": user_id, "anonymous_id": None, "limit": 1000}
                ).all()
            )
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--per-block", type=int, default=50)
    parser.add_argument("--home", type=Path, default=None)
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="attune-bench-reads-"))
    settings = product_settings(home=home, seed=1)
    services = build_services(settings)
    if args.home is None:
        start_service(services, settings.demo_dir)
    settle()
    for user_id in USERS:  # every feature row built: the steady state
        decide(services, DecideRequest(channel=Channel.web, user_id=user_id))
    result = {
        "per_decision": per_decision(services, args.n),
        "ab_open": ab_open(services, args.blocks, args.per_block),
        "ab": ab(services, args.blocks, args.per_block),
    }
    services.close()
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
