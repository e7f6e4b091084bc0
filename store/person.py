"""Everything a decision reads about one person, in one statement.

`read_person` resolves who a request is about — the user id sent, else the user the anonymous id
is linked to — and reads, in the same SELECT, their profile, their consent per purpose, their
maintained feature row (`store.features`) and their stored prediction (`store.predictions`),
and, along with them, the catalog's version (`store.catalog.catalog_version`), which the
popularity cache is checked against; given an `OfferStateQuery`, the offers shown to them within
the frequency caps and the bandit arms too, in a UNION ALL (`store.bandit.offer_state_selects`).
It reads columns through SQLAlchemy Core, no ORM objects: each statement is built once, here,
compiled once per dialect and sent as its SQL text (`store.prepared`); a request pays one round
trip and the conversion of the few columns it reads. Nothing is cached between requests: every
call reads the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, String, bindparam, case, func, literal, null, select, union_all
from sqlalchemy.orm import Session

from store.bandit import OFFER_STATE_COLUMNS, ArmState, OfferStateQuery, offer_state_selects
from store.models import (
    CatalogVersion,
    Consent,
    IdentityLink,
    PersonFeatures,
    PredictionRow,
    User,
)
from store.predictions import Prediction
from store.prepared import Prepared
from store.schemas import Purpose, UserRecord, stored_profile
from store.users import Subject

_users = User.__table__
_consents = Consent.__table__
_links = IdentityLink.__table__
_features = PersonFeatures.__table__
_predictions = PredictionRow.__table__
_catalog = CatalogVersion.__table__


def _owner() -> Any:
    """The user the anonymous id sent is linked to (NULL: none, or none sent)."""
    return (
        select(_links.c.user_id)
        .where(
            _links.c.kind == "anonymous",
            _links.c.external_id == bindparam("anonymous_id", type_=String),
        )
        .scalar_subquery()
    )


def _key(user_id: Any) -> Any:
    """`Subject.key` of the subject `user_id` (an expression) resolves to."""
    return case(
        (user_id.is_not(None), literal("user:") + user_id),
        else_=literal("anon:") + bindparam("anonymous_id", type_=String),
    )


def _person_statement() -> Any:
    owner = _owner()
    who = select(
        func.coalesce(bindparam("user_id", type_=String), owner).label("user_id"),
        owner.label("owner"),
    ).subquery("who")
    key = _key(who.c.user_id)  # the maintained row's key
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


def _decision_statement(shape: tuple[bool, int, int, int]) -> Any:
    """The person's SELECT (alone when `shape` reads nothing else) followed, in a UNION ALL, by the offer state's (`OfferStateQuery`
    of this `shape`): the person's row ends with a NULL for each of the offer state's columns
    and the offer state's rows start with a NULL for each of the person's, so the person's row
    is the one whose `offer_id` is NULL. The exposures are those of the subject the statement
    resolves (`_key`), as the person's feature row is."""
    if shape == _PERSON_ONLY:
        return _PERSON
    person = _PERSON.add_columns(
        *(sa.cast(null(), type_).label(name) for name, type_ in OFFER_STATE_COLUMNS)
    )
    subject_key = _key(func.coalesce(bindparam("user_id", type_=String), _owner()))
    pad = [column.type for column in _PERSON.selected_columns]
    return union_all(person, *offer_state_selects(subject_key, shape, pad))


_PERSON_ONLY = (False, 0, 0, 0)
_NAMES = [column.key for column in _PERSON.selected_columns]
# Each statement built once, by shape, and sent as its SQL text (`store.prepared`): the
# decision's one read, where SQLAlchemy's execution of the compiled statement (parameters,
# type processors of every column of every row, result metadata) cost more than SQLite.
_DECISION: dict[tuple[bool, int, int, int], Prepared] = {}


@dataclass(frozen=True)
class Person:
    """One person as a decision reads them."""

    subject: Subject  # the user id sent, else the anonymous id's owner; else the anonymous id
    owner: str | None  # the user the anonymous id sent is linked to, if one was sent and is
    record: UserRecord | None  # None: no stored user (an anonymous visitor, or unknown id)
    feature_state: dict[str, Any] | None  # the maintained row of `subject.key`; None: none yet
    prediction: Prediction | None
    catalog_version: int = 0  # read along (`store.catalog.catalog_version`); not about them
    # Read along when asked (`OfferStateQuery`): offers shown to them, and bandit arms.
    shown: list[tuple[str, str, datetime]] = field(default_factory=list)
    arms: dict[tuple[str, str], dict[str, ArmState]] = field(default_factory=dict)

    @property
    def consent(self) -> dict[Purpose, bool]:
        """Consent per purpose; nobody stored has granted anything."""
        return self.record.consent if self.record else {purpose: False for purpose in Purpose}


def read_person(
    session: Session | Connection,
    user_id: str | None,
    anonymous_id: str | None,
    offers: OfferStateQuery | None = None,
) -> Person:
    """Who (`user_id`, `anonymous_id`) is and what is stored about them, in one SELECT; with
    `offers`, the offers shown to them and the bandit arms too, in the same SELECT.

    The anonymous id's owner is returned, not checked: a user id sent with an anonymous id
    linked to someone else is the caller's Conflict to raise (`store.users.resolve_subject`).
    """
    connection = session.connection() if isinstance(session, Session) else session
    query = offers or OfferStateQuery(None, (), ())
    shape = query.shape
    prepared = _DECISION.get(shape)
    if prepared is None:
        prepared = _DECISION.setdefault(shape, Prepared(_decision_statement(shape)))
    values = {"user_id": user_id, "anonymous_id": anonymous_id} | query.params()
    result = prepared.execute(connection, values)
    converters = prepared.converters(connection, result)
    at = len(_NAMES)  # where the offer state's columns start
    found = None
    state = []
    for raw in result.fetchall():
        if len(raw) == at or raw[at] is None:  # the person's row
            found = [
                value if convert is None else convert(value)
                for value, convert in zip(raw[:at], converters, strict=False)
            ]
        else:
            state.append(
                [
                    value if convert is None else convert(value)
                    for value, convert in zip(raw[at:], converters[at:], strict=True)
                ]
            )
    assert found is not None, "the person's SELECT returns one row, whoever they are"
    row = SimpleNamespace(**dict(zip(_NAMES, found, strict=True)))
    shown, arms = query.rows(state)
    subject = Subject(user_id=row.user_id, anonymous_id=anonymous_id)
    record = None
    if row.stored_user is not None:
        granted = vars(row)
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
        shown=shown,
        arms=arms,
    )
