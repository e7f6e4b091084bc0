"""Everything a decision reads about one person, in one statement.

`read_person` resolves who a request is about — the user id sent, else the user the anonymous id
is linked to — and reads, in the same SELECT, their profile, their consent per purpose, their
maintained feature row (`store.features`) and their stored prediction (`store.predictions`),
and, along with them, the catalog's version (`store.catalog.catalog_version`), which the
popularity cache is checked against; given an `OfferStateQuery`, the offers shown to them within
the frequency caps and the bandit arms too, in a UNION ALL (`store.bandit.offer_state_selects`);
when asked, their history row (`store.sequences`) and whether the anonymous id sent belonged to
an erased person (its tombstone, by the keyed hash the caller computes: `erased_ref`).
It reads columns through SQLAlchemy Core, no ORM objects: each statement is built once, here,
compiled once per dialect and sent as its SQL text (`store.prepared`); a request pays one round
trip and the conversion of the few columns it reads. Nothing is cached between requests: every
call reads the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    Connection,
    String,
    bindparam,
    case,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.orm import Session

from store.bandit import OFFER_STATE_COLUMNS, ArmState, OfferStateQuery, offer_state_selects
from store.models import (
    CatalogVersion,
    Consent,
    IdentityLink,
    PersonFeatures,
    PersonSequence,
    PredictionRow,
    Tombstone,
    User,
)
from store.predictions import Prediction
from store.prepared import Prepared
from store.schemas import Address, Profile, Purpose, UserRecord, stored_profile
from store.users import Subject

_users = User.__table__
_consents = Consent.__table__
_links = IdentityLink.__table__
_features = PersonFeatures.__table__
_predictions = PredictionRow.__table__
_catalog = CatalogVersion.__table__
_sequences = PersonSequence.__table__
_tombstones = Tombstone.__table__


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


def _person_statement(history: bool = False) -> Any:
    owner = _owner()
    who = select(
        func.coalesce(bindparam("user_id", type_=String), owner).label("user_id"),
        owner.label("owner"),
    ).subquery("who")
    key = _key(who.c.user_id)  # the maintained rows' key
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
    joined = (
        who.outerjoin(_users, _users.c.user_id == who.c.user_id)
        .outerjoin(_features, _features.c.subject_key == key)
        .outerjoin(_predictions, _predictions.c.user_id == who.c.user_id)
    )
    columns = [
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
    ]
    if history:
        # The history row of the same key (`store.sequences`), which is the one
        # `retrieval.sequence.person_history` reads when one id resolves them.
        joined = joined.outerjoin(_sequences, _sequences.c.subject_key == key)
        columns.append(_sequences.c.state.label("history"))
    # The tombstone of the anonymous id sent, by its keyed hash (`erased_ref`, computed by the
    # caller, which holds the key): NULL unless it belonged to an erased person.
    erased = (
        select(_tombstones.c.ref)
        .where(_tombstones.c.ref == bindparam("erased_ref", type_=String))
        .scalar_subquery()
        .label("erased")
    )
    columns.append(erased)
    return select(*columns).select_from(joined)


_PERSON = _person_statement()
_PERSON_HISTORY = _person_statement(history=True)
_CONSENT_AT = 10  # where the consent columns start, one per `Purpose`
_HISTORY_AT = _CONSENT_AT + len(Purpose)  # the history row's column, when read
# Then the tombstone's column, last of the person's columns: at _HISTORY_AT, or after history.


def _decision_statement(shape: tuple[bool, bool, int, int, int]) -> Any:
    """The person's SELECT (with their history row when `shape` starts with True; alone when
    it reads nothing else) followed, in a UNION ALL, by the offer state's (`OfferStateQuery` of
    the rest of `shape`): the person's row ends with a NULL for each of the offer state's
    columns and the offer state's rows start with a NULL for each of the person's, so the
    person's row is the one whose `offer_id` is NULL. The exposures are those of the subject
    the statement resolves (`_key`), as the person's feature row is."""
    history, offers = shape[0], shape[1:]
    base = _PERSON_HISTORY if history else _PERSON
    if offers == _NO_OFFERS:
        return base
    person = base.add_columns(
        *(sa.cast(null(), type_).label(name) for name, type_ in OFFER_STATE_COLUMNS)
    )
    subject_key = _key(func.coalesce(bindparam("user_id", type_=String), _owner()))
    pad = [column.type for column in base.selected_columns]
    return union_all(person, *offer_state_selects(subject_key, offers, pad))


_NO_OFFERS = (False, 0, 0, 0)
# Each statement built once, by shape, and run on the DBAPI cursor (`Prepared.fetch`): the
# decision's one read, where SQLAlchemy's execution of the compiled statement (parameters,
# type processors of every column of every row, result metadata) cost more than SQLite.
_DECISION: dict[tuple[bool, bool, int, int, int], Prepared] = {}
_UNREAD: Any = object()


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
    # Read along when asked (`history=True`): the state of the history row of `key`
    # (`store.sequences`), None when there is none; else `_UNREAD`.
    history: dict[str, Any] | None = _UNREAD
    # Whether the anonymous id sent belonged to an erased person (asked with `erased_ref`).
    erased: bool = False

    @property
    def consent(self) -> dict[Purpose, bool]:
        """Consent per purpose; nobody stored has granted anything."""
        return self.record.consent if self.record else {purpose: False for purpose in Purpose}

    @property
    def history_read(self) -> bool:
        """Whether their history row was read with them (`history`)."""
        return self.history is not _UNREAD

    @property
    def key(self) -> str:
        """The key of the maintained rows read with them (`feature_state`, `history`)."""
        user_id = self.subject.user_id
        return f"user:{user_id}" if user_id is not None else f"anon:{self.subject.anonymous_id}"


def read_person(
    session: Session | Connection,
    user_id: str | None,
    anonymous_id: str | None,
    offers: OfferStateQuery | None = None,
    *,
    history: bool = False,
    erased_ref: str | None = None,
) -> Person:
    """Who (`user_id`, `anonymous_id`) is and what is stored about them, in one SELECT; with
    `offers`, the offers shown to them and the bandit arms too, with `history`, their history
    row (`store.sequences`), and with `erased_ref` (the anonymous id's tombstone key,
    `agents.privacy.rights.anonymous_ref`), whether it belonged to an erased person, in the same
    SELECT.

    The anonymous id's owner is returned, not checked: a user id sent with an anonymous id
    linked to someone else is the caller's Conflict to raise (`store.users.resolve_subject`).
    """
    connection = session.connection() if isinstance(session, Session) else session
    query = offers or _NO_QUERY
    shape = (history, *query.shape)
    prepared = _DECISION.get(shape)
    if prepared is None:
        prepared = _DECISION.setdefault(shape, Prepared(_decision_statement(shape)))
    values = {"user_id": user_id, "anonymous_id": anonymous_id, "erased_ref": erased_ref}
    rows, conversions = prepared.fetch(connection, values | query.params())
    at = _HISTORY_AT + history + 1  # where the offer state's columns start
    found: list[Any] | None = None
    state = []
    for raw in rows:
        if len(raw) == at or raw[at] is None:  # the person's row
            found = list(raw[:at])
            for i, convert in conversions:
                if i < at:
                    found[i] = convert(found[i])
        else:
            state.append(_converted(raw, at, conversions))
    assert found is not None, "the person's SELECT returns one row, whoever they are"
    (
        resolved, owner, stored_user, profile, feature_state, predicted_user, churn_risk,
        next_purchase, model_version, catalog,
    ) = found[:_CONSENT_AT]  # fmt: skip
    shown, arms = query.rows(state) if state else ([], {})
    record = None
    if stored_user is not None:
        # Read back from the store, where only validated records are written: built, not
        # validated again (`_profile`).
        consent = found[_CONSENT_AT:_HISTORY_AT]
        record = UserRecord.model_construct(
            user_id=stored_user,
            profile=_profile(profile),
            consent={p: bool(granted) for p, granted in zip(Purpose, consent, strict=True)},
        )
    prediction = None
    if predicted_user is not None:
        prediction = Prediction(churn_risk, dict(next_purchase), model_version)
    return Person(
        subject=Subject(user_id=resolved, anonymous_id=anonymous_id),
        owner=owner,
        record=record,
        feature_state=feature_state,
        prediction=prediction,
        catalog_version=catalog or 0,
        shown=shown,
        arms=arms,
        history=found[_HISTORY_AT] if history else _UNREAD,
        erased=found[at - 1] is not None,
    )


_NO_QUERY = OfferStateQuery(None, (), ())


def _converted(raw: Sequence[Any], at: int, conversions: Sequence[tuple[int, Any]]) -> list[Any]:
    """The offer state's columns of one row (from `at` on), converted."""
    row = list(raw[at:])
    for i, convert in conversions:
        if i >= at:
            row[i - at] = convert(row[i - at])
    return row


_PROFILE_KEYS = Profile.model_fields.keys()
_ADDRESS_KEYS = Address.model_fields.keys()


def _profile(data: dict[str, Any]) -> Profile:
    """A profile read back from the store, equal to `Profile.model_validate(data)`, built
    without validating it again: the store holds only what `store.users.upsert_user` wrote,
    a validated `Profile`'s `model_dump(mode="json")`, every field present, the birth date
    in ISO form (parsing it again was a tenth of the CPU of a decision's reads). Anything
    else — a row of another shape — is parsed by `stored_profile`, as before."""
    if data.keys() != _PROFILE_KEYS:
        return stored_profile(data)
    born, address = data["birth_date"], data["address"]
    if address is not None:
        if type(address) is not dict or address.keys() != _ADDRESS_KEYS:
            return stored_profile(data)
        address = Address.model_construct(**address)
    if born is not None:
        if type(born) is not str:
            return stored_profile(data)
        born = date.fromisoformat(born)
    return Profile.model_construct(**{**data, "birth_date": born, "address": address})
