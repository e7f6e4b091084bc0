"""Reads about many people at once, for audience scans: a few SQL queries per page of people,
never one query per person.

`features_for` computes exactly what `store.events.compute_features` computes for one subject
(a test holds them equal on the demo world), for a whole page of users: their events and those
of the anonymous ids linked to them come back in one query, ordered newest first, and are folded
per person in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

# The event weights, half-life and price bands are compute_features' own, imported so the two
# can never disagree.
from store.events import Features, feature_rows, fold_features, with_prediction
from store.models import Consent, EventRow, IdentityLink, User
from store.predictions import predictions_for
from store.schemas import Purpose

PAGE = 500  # people per query; keeps every IN list far below SQLite's variable limit
_PURPOSES = frozenset(p.value for p in Purpose)


@dataclass(frozen=True)
class PersonFacts:
    """What an audience scan needs of a person's profile: no name, email, phone or address."""

    user_id: str
    birth_date: date | None
    locale: str | None
    consent: dict[Purpose, bool]

    def age_on(self, day: date) -> int | None:
        if self.birth_date is None:
            return None
        born = self.birth_date
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def user_id_page(session: Session, *, after: str = "", size: int = PAGE) -> list[str]:
    """The next `size` user ids after `after`, in order: keyset pages, stable while users are
    added, each read in its own short transaction by the caller."""
    return list(
        session.scalars(
            select(User.user_id).where(User.user_id > after).order_by(User.user_id).limit(size)
        )
    )


def people(session: Session, user_ids: Sequence[str]) -> dict[str, PersonFacts]:
    """Birth date, locale and consent of the users that exist, in two queries.

    Only the two profile fields are read out of the profile JSON, in SQL: the rest of the
    profile (PII) never leaves the database.
    """
    if not user_ids:
        return {}
    rows = session.execute(
        select(
            User.user_id,
            User.profile["birth_date"].as_string(),
            User.profile["locale"].as_string(),
        ).where(User.user_id.in_(user_ids))
    ).all()
    granted: dict[str, dict[Purpose, bool]] = {user_id: {} for user_id, _, _ in rows}
    for user_id, purpose, value in session.execute(
        select(Consent.user_id, Consent.purpose, Consent.granted).where(
            Consent.user_id.in_(list(granted))
        )
    ):
        if purpose in _PURPOSES:
            granted[user_id][Purpose(purpose)] = bool(value)
    return {
        user_id: PersonFacts(
            user_id=user_id,
            birth_date=date.fromisoformat(born) if born else None,
            locale=locale or None,
            # A purpose never answered counts as not granted, as in store.users.get_consent.
            consent={p: granted[user_id].get(p, False) for p in Purpose},
        )
        for user_id, born, locale in rows
    }


def features_for(
    session: Session, user_ids: Sequence[str], *, as_of: datetime, recent: int = 20
) -> dict[str, Features]:
    """`compute_features` for each user, in two queries for the whole list."""
    if not user_ids:
        return {}
    wanted = set(user_ids)
    owner_of_anonymous = dict(
        session.execute(
            select(IdentityLink.external_id, IdentityLink.user_id).where(
                IdentityLink.kind == "anonymous", IdentityLink.user_id.in_(list(wanted))
            )
        ).all()
    )
    conditions = [EventRow.user_id.in_(list(wanted))]
    if owner_of_anonymous:
        conditions.append(EventRow.anonymous_id.in_(list(owner_of_anonymous)))
    rows = session.execute(
        feature_rows(conditions, as_of, EventRow.user_id, EventRow.anonymous_id)
    ).all()
    by_person: dict[str, list[tuple]] = {}
    for user_id, anonymous_id, *event in rows:
        owners: set[str] = {user_id} & wanted if user_id is not None else set()
        if anonymous_id is not None and anonymous_id in owner_of_anonymous:
            owners.add(owner_of_anonymous[anonymous_id])
        for owner in owners:
            by_person.setdefault(owner, []).append(tuple(event))
    predicted = predictions_for(session, user_ids)
    return {
        user_id: with_prediction(
            fold_features(by_person.get(user_id, []), as_of=as_of, recent=recent),
            predicted.get(user_id),
        )
        for user_id in user_ids
    }
