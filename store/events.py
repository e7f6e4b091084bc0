"""Behavioural events (exactly once by event id); the features they make are kept up to date in
`store.features` as they are stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

# Re-exported: the features were computed here before they were maintained in store.features.
from store.features import (
    Features,
    compute_features,
    feature_rows,
    fold_features,
    maintain_features,
    with_prediction,
)
from store.models import EventRow, IdentityLink
from store.schemas import Event
from store.sequences import maintain_sequences

__all__ = [
    "EventStatus",
    "Features",
    "Ingested",
    "compute_features",
    "feature_rows",
    "fold_features",
    "ingest_events",
    "with_prediction",
]


class EventStatus(StrEnum):
    accepted = "accepted"
    duplicate = "duplicate"
    rejected = "rejected"


@dataclass(frozen=True)
class Ingested:
    """What became of one event; a rejection says why, naming the field."""

    status: EventStatus
    reason: str | None = None


# The identity links an event claims: (link kind, the event's field).
_CLAIMS = (("anonymous", "anonymous_id"), ("device", "device_id"))


def ingest_events(session: Session, events: Sequence[Event]) -> list[Ingested]:
    """Store events not seen before and learn identity links; one result per event, in order.

    An event id already stored, or repeated earlier in the same batch, is a duplicate and is not
    stored again. An event with a user id links its anonymous and device ids to that user when
    they are unlinked or already theirs; if either is linked to another person, the event is
    rejected whole and no link moves (an event never merges people: see
    `store.users.link_identity`). Concurrent batches racing on one id surface as an
    IntegrityError at commit, which the caller retries: the second pass sees the winner's rows
    as duplicates.
    """
    ids = [event.event_id for event in events]
    stored = set(session.scalars(select(EventRow.event_id).where(EventRow.event_id.in_(ids))))
    # Every link the batch claims, read in one query per kind (not one per event: on a database
    # across the network that was two round trips per event), then kept up to date as the
    # batch links new ids.
    owners: dict[tuple[str, str], str] = {}
    for kind, attribute in _CLAIMS:
        values = {v for e in events if e.user_id is not None and (v := getattr(e, attribute))}
        if values:
            owners.update(
                ((kind, external_id), user_id)
                for external_id, user_id in session.execute(
                    select(IdentityLink.external_id, IdentityLink.user_id).where(
                        IdentityLink.kind == kind, IdentityLink.external_id.in_(values)
                    )
                )
            )
    results: list[Ingested] = []
    rows: list[Any] = []
    linked: set[str] = set()  # users who gained an anonymous id (and its history) in the batch
    for event in events:
        if event.event_id in stored:
            results.append(Ingested(EventStatus.duplicate))
            continue
        owner = event.user_id
        claims = [
            (kind, field, value)
            for kind, field in _CLAIMS
            if owner is not None and (value := getattr(event, field)) is not None
        ]
        taken = [
            field for kind, field, value in claims if owners.get((kind, value)) not in (None, owner)
        ]
        if taken:
            reason = "; ".join(
                f"{field}: linked to another user; an event never moves a link" for field in taken
            )
            results.append(Ingested(EventStatus.rejected, reason))
            continue
        stored.add(event.event_id)
        rows.append(
            EventRow(
                event_id=event.event_id,
                type=event.type.value,
                ts=event.ts,
                user_id=event.user_id,
                anonymous_id=event.anonymous_id,
                device_id=event.device_id,
                item_id=event.item_id,
                value=event.value,
            )
        )
        if owner is not None:
            for kind, _, value in claims:
                if (kind, value) not in owners:  # unlinked: it becomes the user's
                    owners[kind, value] = owner
                    rows.append(IdentityLink(kind=kind, external_id=value, user_id=owner))
                    if kind == "anonymous":
                        linked.add(owner)
        results.append(Ingested(EventStatus.accepted))
    session.add_all(rows)
    session.flush()
    maintain_features(session, [r for r in rows if isinstance(r, EventRow)], linked)
    maintain_sequences(session, [r for r in rows if isinstance(r, EventRow)], linked)
    return results
