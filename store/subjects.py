"""Which subjects' maintained rows a batch of stored events concerns.

`store.features` and `store.sequences` each keep one row per subject (`user:<id>`,
`anon:<id>`) up to date as events arrive, and both must agree on whose rows an event touches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import EventRow, IdentityLink

Row = TypeVar("Row")


def events_by_subject(session: Session, events: Sequence[EventRow]) -> dict[str, list[EventRow]]:
    """`events` grouped by every subject key they belong to: their user id, their anonymous id,
    and the user that anonymous id is linked to (one statement, for the links)."""
    anonymous = {e.anonymous_id for e in events if e.anonymous_id is not None}
    owner = (
        dict(
            session.execute(
                select(IdentityLink.external_id, IdentityLink.user_id).where(
                    IdentityLink.kind == "anonymous", IdentityLink.external_id.in_(anonymous)
                )
            ).all()
        )
        if anonymous
        else {}
    )
    by_key: dict[str, list[EventRow]] = {}
    for event in events:
        keys = set()
        if event.user_id is not None:
            keys.add(f"user:{event.user_id}")
        if event.anonymous_id is not None:
            keys.add(f"anon:{event.anonymous_id}")
            if event.anonymous_id in owner:
                keys.add(f"user:{owner[event.anonymous_id]}")
        for key in keys:
            by_key.setdefault(key, []).append(event)
    return by_key


def rows_for_update(session: Session, model: type[Row], keys: Iterable[str]) -> dict[str, Row]:
    """The existing rows of `model` (keyed by `subject_key`) for these subjects, locked until the
    caller's transaction ends (`FOR UPDATE` on PostgreSQL), by subject key."""
    column: Any = model.subject_key  # type: ignore[attr-defined]
    found = session.scalars(select(model).where(column.in_(sorted(keys))).with_for_update())
    return {row.subject_key: row for row in found}  # type: ignore[attr-defined]
