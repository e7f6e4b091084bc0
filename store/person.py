"""Everything a decision reads about one person, in one statement.

`read_person` resolves who a request is about — the user id sent, else the user the anonymous id
is linked to — and reads, in the same SELECT, their profile, their consent per purpose, their
maintained feature row (`store.features`) and their stored prediction (`store.predictions`),
and, along with them, the catalog's version (`store.catalog.catalog_version`), which the
popularity cache is checked against. It reads columns through SQLAlchemy Core, no ORM objects:
the statement is built once, here, so SQLAlchemy computes its cache key once per process and
finds its compiled form in the engine's cache; a request pays one round trip and the conversion
of a few columns. Nothing is cached between requests: every call reads the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, String, bindparam, case, func, literal, select
from sqlalchemy.orm import Session

from store.models import (
    CatalogVersion,
    Consent,
    IdentityLink,
    PersonFeatures,
    PredictionRow,
    User,
)
from store.predictions import Prediction
from store.schemas import Purpose, UserRecord, stored_profile
from store.users import Subject

_users = User.__table__
_consents = Consent.__table__
_links = IdentityLink.__table__
_features = PersonFeatures.__table__
_predictions = PredictionRow.__table__
_catalog = CatalogVersion.__table__


def _person_statement() -> Any:
    anonymous_id = bindparam("anonymous_id", type_=String)
    owner = (
        select(_links.c.user_id)
        .where(_links.c.kind == "anonymous", _links.c.external_id == anonymous_id)
        .scalar_subquery()
    )
    who = select(
        func.coalesce(bindparam("user_id", type_=String), owner).label("user_id"),
        owner.label("owner"),
    ).subquery("who")
    # The maintained row's key: `Subject.key` of the resolved subject.
    key = case(
        (who.c.user_id.is_not(None), literal("user:") + who.c.user_id),
        else_=literal("anon:") + anonymous_id,
    )
    consent = [
        select(_consents.c.granted)
        .where(_consents.c.user_id == who.c.user_id, _consents.c.purpose == purpose.value)
        .scalar_subquery()
        .label(f"consent_{purpose.value}")
        for purpose in Purpose
    ]
    catalog_version = (
        select(_catalog.c.version).where(_catalog.c.id == 1).scalar_subquery().label("catalog")
    )
    return select(
        who.c.user_id,
        who.c.owner,
        _users.c.user_id.label("stored_user"),
        _users.c.profile,
        _features.c.state,
        _predictions.c.user_id.label("predicted_user"),
        _predictions.c.churn_risk,
        _predictions.c.next_purchase,
        _predictions.c.model_version,
        catalog_version,
        *consent,
    ).select_from(
        who.outerjoin(_users, _users.c.user_id == who.c.user_id)
        .outerjoin(_features, _features.c.subject_key == key)
        .outerjoin(_predictions, _predictions.c.user_id == who.c.user_id)
    )


_PERSON = _person_statement()


@dataclass(frozen=True)
class Person:
    """One person as a decision reads them."""

    subject: Subject  # the user id sent, else the anonymous id's owner; else the anonymous id
    owner: str | None  # the user the anonymous id sent is linked to, if one was sent and is
    record: UserRecord | None  # None: no stored user (an anonymous visitor, or unknown id)
    feature_state: dict[str, Any] | None  # the maintained row of `subject.key`; None: none yet
    prediction: Prediction | None
    catalog_version: int = 0  # read along (`store.catalog.catalog_version`); not about them

    @property
    def consent(self) -> dict[Purpose, bool]:
        """Consent per purpose; nobody stored has granted anything."""
        return self.record.consent if self.record else {purpose: False for purpose in Purpose}


def read_person(
    session: Session | Connection, user_id: str | None, anonymous_id: str | None
) -> Person:
    """Who (`user_id`, `anonymous_id`) is and what is stored about them, in one SELECT.

    The anonymous id's owner is returned, not checked: a user id sent with an anonymous id
    linked to someone else is the caller's Conflict to raise (`store.users.resolve_subject`).
    """
    row = session.execute(_PERSON, {"user_id": user_id, "anonymous_id": anonymous_id}).one()
    subject = Subject(user_id=row.user_id, anonymous_id=anonymous_id)
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
    return Person(
        subject=subject,
        owner=row.owner,
        record=record,
        feature_state=row.state,
        prediction=prediction,
        catalog_version=row.catalog or 0,
    )
