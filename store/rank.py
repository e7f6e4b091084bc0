"""Rank events: what a Personalizer-style rank chose, until it is activated and rewarded.

A rank event holds, per slot, the chosen action's id, its probability and its hashed feature
vector — never the caller's raw features. It is rewarded at most once per slot (a repeat of the
same value is answered again, another value is a conflict) and only while it has not expired;
a deferred event must be activated before its rewards count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from store.errors import Conflict, NotFound
from store.models import LinearObservation, RankEventRow, utcnow


@dataclass(frozen=True)
class RankEvent:
    event_id: str
    created_by: str
    user_id: str | None
    policy: str
    slots: list[dict[str, Any]]
    activated: bool
    created_at: datetime
    expires_at: datetime


def add_rank_event(
    session: Session,
    event_id: str,
    *,
    created_by: str,
    user_id: str | None,
    policy: str,
    slots: list[dict[str, Any]],
    activated: bool,
    window: timedelta,
) -> RankEvent:
    """Store a new rank event; 409 if the id is taken."""
    if session.get(RankEventRow, event_id) is not None:
        raise Conflict(f"event_id: {event_id!r} was already ranked; send a new event id")
    now = utcnow()
    row = RankEventRow(
        event_id=event_id,
        created_by=created_by,
        user_id=user_id,
        policy=policy,
        slots=slots,
        activated=activated,
        created_at=now,
        expires_at=now + window,
    )
    session.add(row)
    session.flush()
    return _event(row)


def get_rank_event(session: Session, event_id: str, *, for_update: bool = False) -> RankEvent:
    """The stored event; NotFound for an unknown one, Conflict once it has expired."""
    return _event(_row(session, event_id, for_update=for_update))


def activate(session: Session, event_id: str, window: timedelta) -> RankEvent:
    """Mark a deferred event shown: its rewards count from now, for `window`. Idempotent."""
    row = _row(session, event_id, for_update=True)
    if not row.activated:
        row.activated = True
        row.expires_at = utcnow() + window
    return _event(row)


def record_slot_rewards(
    session: Session, event_id: str, rewards: dict[str, float]
) -> tuple[RankEvent, list[dict[str, Any]]]:
    """Record a reward per slot id; returns the event and the slots newly rewarded (with their
    vectors, for the model). A slot rewarded before with the same value is left as it is (a
    retried request); with another value it is a Conflict, and nothing is written.

    Raises:
        NotFound: unknown event, or a slot id the event does not have.
        Conflict: expired, not activated, or rewarded before with another value.
    """
    row = _row(session, event_id, for_update=True)
    if not row.activated:
        raise Conflict(
            f"event {event_id!r} is not activated: POST /v1/rank/{event_id}/activate once the "
            "ranking is shown, then reward it"
        )
    by_id = {slot["slot_id"]: slot for slot in row.slots}
    for slot_id, value in rewards.items():
        if slot_id not in by_id:
            raise NotFound(f"slot_id: event {event_id!r} has no slot {slot_id!r}")
        earlier = by_id[slot_id].get("reward")
        if earlier is not None and earlier != value:
            raise Conflict(
                f"slot {slot_id!r} of event {event_id!r} was rewarded {earlier} already; "
                "an event's reward is final"
            )
    fresh = []
    slots = []
    for slot in row.slots:
        if slot["slot_id"] in rewards and slot.get("reward") is None:
            slot = {**slot, "reward": rewards[slot["slot_id"]]}
            fresh.append(slot)
        slots.append(slot)
    row.slots = slots  # a new list, so that the JSON column is written
    return _event(row), fresh


def erase_rank_events(session: Session, user_id: str) -> int:
    """Delete a person's rank events and what their rewards taught the model."""
    ids = list(
        session.scalars(select(RankEventRow.event_id).where(RankEventRow.user_id == user_id))
    )
    if not ids:
        return 0
    session.execute(
        delete(LinearObservation).where(
            LinearObservation.decision_id.in_([observation_id(i, n) for i in ids for n in range(8)])
        )
    )
    session.execute(delete(RankEventRow).where(RankEventRow.event_id.in_(ids)))
    return len(ids)


def export_rank_events(session: Session, user_id: str) -> list[dict[str, Any]]:
    """A person's rank events: what was chosen for them, when, and its reward."""
    rows = session.scalars(
        select(RankEventRow)
        .where(RankEventRow.user_id == user_id)
        .order_by(RankEventRow.created_at)
    )
    return [
        {
            "event_id": row.event_id,
            "created_at": row.created_at.isoformat(),
            "activated": row.activated,
            "slots": [
                {k: slot.get(k) for k in ("slot_id", "action_id", "probability", "reward")}
                for slot in row.slots
            ],
        }
        for row in rows
    ]


def observation_id(event_id: str, slot_index: int) -> str:
    """The id a slot's reward is stored under among the linear bandit's observations."""
    return event_id if slot_index == 0 else f"{event_id}/{slot_index}"


def _row(session: Session, event_id: str, *, for_update: bool = False) -> RankEventRow:
    query = select(RankEventRow).where(RankEventRow.event_id == event_id)
    if for_update:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise NotFound(f"event_id: no rank event {event_id!r}")
    if row.expires_at <= utcnow():
        raise Conflict(
            f"event_id: rank event {event_id!r} expired at {row.expires_at.isoformat()}; "
            "rewards must arrive within ATTUNE_RANK_REWARD_WINDOW_S of the rank (or activation)"
        )
    return row


def _event(row: RankEventRow) -> RankEvent:
    return RankEvent(
        event_id=row.event_id,
        created_by=row.created_by,
        user_id=row.user_id,
        policy=row.policy,
        slots=list(row.slots),
        activated=row.activated,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )
