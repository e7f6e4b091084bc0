"""Behavioural events (exactly once by event id) and the features computed from them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from store.models import CatalogItem, EventRow, IdentityLink
from store.predictions import Prediction, prediction_for
from store.schemas import Event
from store.users import Subject, linked_anonymous_ids


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
        results.append(Ingested(EventStatus.accepted))
    session.add_all(rows)
    session.flush()
    return results


# How much each event type says about taste, and how fast it fades.
_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0}
_HALF_LIFE_DAYS = 30.0
_PRICE_BANDS = ((25.0, "low"), (100.0, "mid"), (math.inf, "high"))


@dataclass(frozen=True)
class Features:
    """What a person's events say about them, as of `as_of`."""

    as_of: datetime
    event_count: int = 0
    recency_days: float | None = None
    frequency_30d: int = 0
    monetary_total: float = 0.0
    purchase_count: int = 0
    days_since_last_purchase: float | None = None
    category_affinity: dict[str, float] = field(default_factory=dict)
    price_band: str | None = None
    recent_item_ids: tuple[str, ...] = ()
    purchases: tuple[tuple[str, datetime], ...] = ()  # (item id, when), newest first
    # Predictions `attune train` stored for the person (store.predictions); None: none yet.
    churn_risk: float | None = None
    next_purchase: dict[str, float] = field(default_factory=dict)  # category → probability
    predictions_version: str | None = None

    @property
    def is_cold(self) -> bool:
        return self.event_count == 0

    def purchased_since(self, moment: datetime) -> tuple[str, ...]:
        return tuple(dict.fromkeys(item for item, ts in self.purchases if ts >= moment))

    def top_categories(self, n: int = 3) -> list[str]:
        ranked = sorted(self.category_affinity.items(), key=lambda kv: (-kv[1], kv[0]))
        return [category for category, _ in ranked[:n]]


def compute_features(
    session: Session, subject: Subject, *, as_of: datetime, recent: int = 20
) -> Features:
    """Recency, frequency, monetary value, category affinity and price band from the subject's events.

    Events made anonymously before a login count for the user they were linked to.
    """
    conditions = []
    if subject.user_id is not None:
        conditions.append(EventRow.user_id == subject.user_id)
        anonymous = linked_anonymous_ids(session, subject.user_id)
        if anonymous:
            conditions.append(EventRow.anonymous_id.in_(anonymous))
    if subject.anonymous_id is not None:
        conditions.append(EventRow.anonymous_id == subject.anonymous_id)
    if not conditions:
        return Features(as_of=as_of)

    rows = session.execute(feature_rows(conditions, as_of)).all()
    features = fold_features([tuple(row) for row in rows], as_of=as_of, recent=recent)
    if subject.user_id is None:
        return features
    return with_prediction(features, prediction_for(session, subject.user_id))


def with_prediction(features: Features, prediction: Prediction | None) -> Features:
    """The features with the person's stored predictions added."""
    if prediction is None:
        return features
    return replace(
        features,
        churn_risk=prediction.churn_risk,
        next_purchase=prediction.next_purchase,
        predictions_version=prediction.model_version,
    )


def feature_rows(conditions: Sequence[Any], as_of: datetime, *owners: Any) -> Select[Any]:
    """Events matching any of `conditions` up to `as_of`, newest first, as the rows
    `fold_features` reads, after the `owners` columns (the batched query adds who they are)."""
    return (
        select(
            *owners,
            EventRow.type,
            EventRow.ts,
            EventRow.item_id,
            EventRow.value,
            CatalogItem.category,
            CatalogItem.price,
        )
        .join(CatalogItem, CatalogItem.item_id == EventRow.item_id, isouter=True)
        .where(or_(*conditions), EventRow.ts <= as_of)
        .order_by(EventRow.ts.desc())
    )


def fold_features(rows: Sequence[tuple], *, as_of: datetime, recent: int = 20) -> Features:
    """One person's events, newest first, as (type, ts, item_id, value, category, price) rows,
    folded into their features. `store.cohort` folds many people's rows with it too."""
    if not rows:
        return Features(as_of=as_of)

    affinity: dict[str, float] = {}
    prices: list[float] = []
    recent_ids: list[str] = []
    purchased: list[tuple[str, datetime]] = []
    monetary, frequency = 0.0, 0
    last_purchase: datetime | None = None
    for kind, ts, item_id, value, category, price in rows:
        age_days = (as_of - ts).total_seconds() / 86400
        if age_days <= 30:
            frequency += 1
        if category is not None:
            decay = 0.5 ** (age_days / _HALF_LIFE_DAYS)
            affinity[category] = affinity.get(category, 0.0) + _WEIGHTS[kind] * decay
        if price is not None:
            prices.append(price)
        if item_id not in recent_ids and len(recent_ids) < recent:
            recent_ids.append(item_id)
        if kind == "purchase":
            monetary += value or 0.0
            purchased.append((item_id, ts))
            last_purchase = last_purchase or ts
    total = sum(affinity.values()) or 1.0
    median_price = statistics.median(prices) if prices else None
    return Features(
        as_of=as_of,
        event_count=len(rows),
        recency_days=round((as_of - rows[0][1]).total_seconds() / 86400, 2),
        frequency_30d=frequency,
        monetary_total=round(monetary, 2),
        purchase_count=len(purchased),
        days_since_last_purchase=(
            round((as_of - last_purchase).total_seconds() / 86400, 2) if last_purchase else None
        ),
        category_affinity={k: round(v / total, 4) for k, v in affinity.items()},
        price_band=_band(median_price),
        recent_item_ids=tuple(recent_ids),
        purchases=tuple(purchased),
    )


def _band(price: float | None) -> str | None:
    if price is None:
        return None
    return next(name for ceiling, name in _PRICE_BANDS if price < ceiling)
