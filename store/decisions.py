"""The decision log, rewards, and the exposures that frequency caps count; pruning by age."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    String,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.attribution import delete_for_decisions
from store.errors import Conflict, NotFound
from store.models import DecisionRow, LinearObservation, RewardRow, RewardWindow, Tombstone
from store.prepared import Prepared

# Built once: its cache key is memoized on the object, so SQLAlchemy finds the statement's
# compiled form for each dialect in the engine's cache without building or hashing it again;
# on a Core connection (the decision graph's write) it is sent as its SQL text, compiled once
# per dialect (`store.prepared`).
_INSERT_DECISION = insert(cast(Table, DecisionRow.__table__))
_DECISION_COLUMNS = (
    "decision_id",
    "subject_key",
    "user_id",
    "channel",
    "segment",
    "offer_id",
    "created_at",
    "record",
)
_PREPARED_DECISION = Prepared(_INSERT_DECISION, _DECISION_COLUMNS)
# A logged decision's attribution window (`store.attribution`), written with it (`append_decision`).
_WINDOWS = cast(Table, RewardWindow.__table__)
_WINDOW_COLUMNS = (
    "decision_id",
    "subject_key",
    "opened_at",
    "closes_at",
    "offer_id",
    "item_ids",
    "default_reward",
)
_DECISIONS = cast(Table, DecisionRow.__table__)


def _values(table: Table, columns: tuple[str, ...]) -> dict[str, Any]:
    return {name: bindparam(name, type_=table.c[name].type) for name in columns}


# The decision graph's INSERT: its row only while neither of the tombstone keys sent
# (`user_ref`, `anonymous_ref`: the keyed hashes `agents.privacy.rights` computes, NULL for none)
# names an erased identifier. A person erased after the decision read them, and before it was
# logged, is not stored again (`append_decision`).
_ERASED = exists().where(
    Tombstone.ref.in_(
        [bindparam("user_ref", type_=String), bindparam("anonymous_ref", type_=String)]
    )
)
_KEPT_DECISION = insert(_DECISIONS).from_select(
    list(_DECISION_COLUMNS),
    select(
        *(value.label(name) for name, value in _values(_DECISIONS, _DECISION_COLUMNS).items())
    ).where(~_ERASED),
)
_PREPARED_KEPT = Prepared(_KEPT_DECISION)
_PREPARED_WINDOW = Prepared(insert(_WINDOWS), _WINDOW_COLUMNS)

# PostgreSQL takes both rows in one statement, the decision's INSERT as a data-modifying WITH
# (run once, to completion, whether or not the outer statement reads it; the window's foreign
# key is checked at the end of the statement, when the decision's row is there): one round
# trip to the server instead of two. The window is selected from the decision's RETURNING, so
# a decision the tombstones kept out opens no window either. SQLite has no INSERT inside WITH,
# and no round trip to save (it runs in the process): there, the two prepared INSERTs, one
# after the other, the window's only if the decision's added its row.
_KEPT = _KEPT_DECISION.returning(_DECISIONS.c.decision_id).cte("decision")
_PREPARED_BOTH = Prepared(
    insert(_WINDOWS)
    .from_select(
        list(_WINDOW_COLUMNS),
        select(
            _KEPT.c.decision_id,
            *(value.label(name) for name, value in _values(_WINDOWS, _WINDOW_COLUMNS[1:]).items()),
        ),
    )
    .add_cte(_KEPT)
)


def log_decision(
    session: Session | Connection,
    *,
    decision_id: str,
    subject_key: str,
    user_id: str | None,
    channel: str,
    segment: str,
    offer_id: str | None,
    created_at: datetime,
    record: dict[str, Any],
) -> None:
    """Append one decision. `record` must already be free of PII: the store does not redact.

    One INSERT, sent at once in the caller's transaction (a Core statement, not an ORM object
    left for the unit of work to flush): rows that refer to the decision can follow it in the
    same transaction without a flush, and nothing is kept in the session for a write-only path.
    A session works as a Core connection does (through the session, which flushes what it
    holds first). The decision graph writes its decisions with `append_decision`.
    """
    values = {
        "decision_id": decision_id,
        "subject_key": subject_key,
        "user_id": user_id,
        "channel": channel,
        "segment": segment,
        "offer_id": offer_id,
        "created_at": created_at,
        "record": record,
    }
    if isinstance(session, Session):
        session.execute(_INSERT_DECISION, values)
    else:
        _PREPARED_DECISION.execute(session, values)


def append_decision(connection: Connection, values: Mapping[str, Any]) -> bool:
    """Append one decision and open its attribution window, in the caller's transaction: the
    values of both rows by column name (`decision_id`, `subject_key` and `offer_id` are the
    same in both), and `user_ref` and `anonymous_ref`, the tombstone keys of the person it is
    about (None: none). `record` must already be free of PII: the store does not redact.

    Whether the rows were added: none are when a tombstone names either key. The decision read
    the person before the graph ran, and an erasure may commit in between (in a worker thread
    beside the loop, in another process, during an LLM writer's seconds); the check is part of
    the INSERT, so no erasure commits between the check and the row. An erasure first locks
    writers out (`store.erasure.lock_against_writers`: the decision table on PostgreSQL, the
    database's write lock on SQLite), so that this INSERT either commits before the erasure
    reads the person's decisions, or waits for it and sees its tombstones.

    Every statement is compiled once per dialect and sent as its SQL text on the connection's
    DBAPI cursor (`store.prepared`, `Prepared.send`):
    on PostgreSQL, one statement for both rows; on SQLite, the decision's INSERT, then the
    window's (which refers to it).
    """
    if connection.dialect.name == "postgresql":
        return _PREPARED_BOTH.send(connection, values) > 0
    if _PREPARED_KEPT.send(connection, values) == 0:
        return False
    _PREPARED_WINDOW.send(connection, values)
    return True


def get_decision(session: Session, decision_id: str) -> DecisionRow:
    row = session.get(DecisionRow, decision_id)
    if row is None:
        raise NotFound(f"decision {decision_id!r} does not exist")
    return row


def get_reward(session: Session, decision_id: str) -> float | None:
    row = session.get(RewardRow, decision_id)
    return None if row is None else row.reward


def offer_exposures(
    session: Session, subject_key: str, since: datetime
) -> list[tuple[str, str, int]]:
    """(offer id, channel, times shown) for this subject since `since`."""
    rows = session.execute(
        select(DecisionRow.offer_id, DecisionRow.channel, func.count())
        .where(
            DecisionRow.subject_key == subject_key,
            DecisionRow.created_at >= since,
            DecisionRow.offer_id.is_not(None),
        )
        .group_by(DecisionRow.offer_id, DecisionRow.channel)
    )
    return [(str(offer_id), channel, count) for offer_id, channel, count in rows]


def record_reward(session: Session, decision_id: str, reward: float) -> DecisionRow:
    """Attach the one reward a decision can have; a second one is a Conflict."""
    decision = get_decision(session, decision_id)
    if decision.offer_id is None:
        raise Conflict(f"decision {decision_id!r} showed no offer, so it cannot be rewarded")
    try:
        with session.begin_nested():
            session.add(RewardRow(decision_id=decision_id, reward=reward))
    except IntegrityError as error:
        raise Conflict(f"decision {decision_id!r} was already rewarded") from error
    return decision


@dataclass(frozen=True)
class Pruned:
    decisions: int
    rewards: int
    observations_unlinked: int


def prune_decisions(session: Session, before: datetime, *, batch: int = 5000) -> Pruned:
    """Delete one batch of the decisions logged before `before`, with their rewards (call until
    it returns 0 decisions). Bandit state is kept whole: Beta posteriors are sums that hold no
    decision, and the linear bandits' observations stay but lose their decision id, so that no
    row points at a decision that is gone (and an observation is no longer tied to a person)."""
    ids = list(
        session.scalars(
            select(DecisionRow.decision_id).where(DecisionRow.created_at < before).limit(batch)
        )
    )
    if not ids:
        return Pruned(0, 0, 0)
    delete_for_decisions(session, ids)  # their attribution windows, attributions, sources
    rewards = _count(session.execute(delete(RewardRow).where(RewardRow.decision_id.in_(ids))))
    unlinked = _count(
        session.execute(
            update(LinearObservation)
            .where(LinearObservation.decision_id.in_(ids))
            .values(decision_id=None)
        )
    )
    decisions = _count(session.execute(delete(DecisionRow).where(DecisionRow.decision_id.in_(ids))))
    return Pruned(decisions, rewards, unlinked)


def _count(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def offer_exposure_times(
    session: Session, subject_key: str, since: datetime
) -> list[tuple[str, str, datetime]]:
    """(offer id, channel, when) of each offer shown to this subject since `since`: what
    several frequency caps count in one read."""
    decisions = DecisionRow.__table__  # columns through Core: no ORM entities to load
    rows = session.execute(
        select(decisions.c.offer_id, decisions.c.channel, decisions.c.created_at).where(
            decisions.c.subject_key == subject_key,
            decisions.c.created_at >= since,
            decisions.c.offer_id.is_not(None),
        )
    )
    return [(str(offer_id), channel, at) for offer_id, channel, at in rows]
