"""Everything held about a person: exporting it, and erasing it from every table.

A person is their user id and every anonymous id linked to them. Erasure deletes, in one
transaction: the profile and consent, identity links, events (theirs and their linked anonymous
ids'), decisions and their rewards, their predictions (churn risk, next purchase), linear-bandit
observations of those decisions, API keys bound to them, and the features maintained from their
events. Beta posteriors are sums over many people and hold nothing of theirs. Stores
outside the database (the collaborative model's user factors; chat checkpoints) are erased by
the caller (`agents.privacy.rights`), which also writes the audit entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, and_, delete, or_, select, text
from sqlalchemy.orm import Session

from store.attribution import delete_for_decisions
from store.errors import NotFound
from store.features import forget_features
from store.models import (
    ApiKey,
    Attribution,
    BatchResultRow,
    Consent,
    DecisionRow,
    EventRow,
    IdentityLink,
    LinearObservation,
    PersonFeatures,
    PersonSequence,
    PredictionRow,
    RankEventRow,
    RewardRow,
    RewardSource,
    RewardWindow,
    User,
)
from store.predictions import erase_prediction, prediction_for
from store.sequences import forget_sequences


@dataclass(frozen=True)
class Person:
    user_id: str
    anonymous_ids: tuple[str, ...]
    device_ids: tuple[str, ...]

    @property
    def subject_keys(self) -> list[str]:
        return [f"user:{self.user_id}", *(f"anon:{a}" for a in self.anonymous_ids)]


def find_person(session: Session, user_id: str) -> Person:
    if session.get(User, user_id) is None:
        raise NotFound(f"user {user_id!r} does not exist")
    return person_of(session, user_id)


def person_of(session: Session, user_id: str) -> Person:
    """The user id and the ids linked to it, whether or not a user row is stored."""
    links = session.execute(
        select(IdentityLink.kind, IdentityLink.external_id).where(IdentityLink.user_id == user_id)
    ).all()
    return Person(
        user_id,
        tuple(sorted(e for k, e in links if k == "anonymous")),
        tuple(sorted(e for k, e in links if k == "device")),
    )


def _events_of(person: Person) -> Any:
    conditions = [EventRow.user_id == person.user_id]
    if person.anonymous_ids:
        conditions.append(EventRow.anonymous_id.in_(person.anonymous_ids))
    return or_(*conditions)


def _decisions_of(person: Person) -> Any:
    return or_(
        DecisionRow.user_id == person.user_id, DecisionRow.subject_key.in_(person.subject_keys)
    )


def export_person(session: Session, person: Person) -> dict[str, Any]:
    """Everything the database holds about the person, as JSON-able data."""
    user = session.get(User, person.user_id)
    assert user is not None
    consent = session.scalars(select(Consent).where(Consent.user_id == person.user_id))
    events = session.scalars(select(EventRow).where(_events_of(person)).order_by(EventRow.ts))
    decisions = list(
        session.scalars(
            select(DecisionRow).where(_decisions_of(person)).order_by(DecisionRow.created_at)
        )
    )
    ids = [d.decision_id for d in decisions]
    rewards = dict(
        session.execute(
            select(RewardRow.decision_id, RewardRow.reward).where(RewardRow.decision_id.in_(ids))
        ).all()
    )
    keys = session.scalars(select(ApiKey).where(ApiKey.subject_user_id == person.user_id))
    attributed: dict[str, list[dict[str, Any]]] = {}
    for a in session.scalars(
        select(Attribution).where(Attribution.decision_id.in_(ids)).order_by(Attribution.ts)
    ):
        attributed.setdefault(a.decision_id, []).append(
            {"event_id": a.event_id, "type": a.type, "ts": a.ts.isoformat(), "reward": a.reward}
        )
    sources = {
        r.decision_id: {"source": r.source, "event_ids": r.event_ids}
        for r in session.scalars(select(RewardSource).where(RewardSource.decision_id.in_(ids)))
    }
    windows = {
        w.decision_id: {
            "closes_at": w.closes_at.isoformat(),
            "offer_id": w.offer_id,
            "item_ids": w.item_ids,
        }
        for w in session.scalars(select(RewardWindow).where(RewardWindow.decision_id.in_(ids)))
    }
    maintained = {
        row.subject_key: {**row.state, "history": row.history}
        for row in session.scalars(
            select(PersonFeatures).where(PersonFeatures.subject_key.in_(person.subject_keys))
        )
    }
    return {
        "user_id": person.user_id,
        "profile": user.profile,
        "created_at": user.created_at.isoformat(),
        "consent": {c.purpose: c.granted for c in consent},
        "identity_links": {
            "anonymous": list(person.anonymous_ids),
            "device": list(person.device_ids),
        },
        "events": [
            {
                "event_id": e.event_id,
                "type": e.type,
                "ts": e.ts.isoformat(),
                "item_id": e.item_id,
                "anonymous_id": e.anonymous_id,
                "device_id": e.device_id,
                "value": e.value,
            }
            for e in events
        ],
        "decisions": [
            {
                "decision_id": d.decision_id,
                "created_at": d.created_at.isoformat(),
                "channel": d.channel,
                "offer_id": d.offer_id,
                "reward": rewards.get(d.decision_id),
                "reward_source": sources.get(d.decision_id),
                "attributed_events": attributed.get(d.decision_id, []),
                "open_window": windows.get(d.decision_id),
                "record": d.record,
            }
            for d in decisions
        ],
        "api_keys": [{"key_id": k.key_id, "name": k.name, "scopes": k.scopes} for k in keys],
        "predictions": asdict(p) if (p := prediction_for(session, person.user_id)) else None,
        "maintained_features": maintained,
    }


@dataclass(frozen=True)
class Erased:
    events: int
    decisions: int
    rewards: int
    observations: int
    identity_links: int
    api_keys: int


# On PostgreSQL, the tables an erasure locks against writers until it commits. A decision's
# INSERT checks the tombstones itself (`store.decisions.append_decision`); a batch of events and
# a profile write lock their table before they read them (`lock_for_writing`).
_GUARDED = (DecisionRow.__tablename__, EventRow.__tablename__, User.__tablename__)


def lock_for_writing(session: Session, table: str) -> None:
    """Take now, at the start of the caller's transaction, the lock its writes to `table` would
    take later: called before the writer reads the tombstones, so that an erasure in progress
    is waited for and its tombstones are read, and an erasure that starts meanwhile waits.

    On PostgreSQL, the table's ROW EXCLUSIVE lock (which an erasure's SHARE ROW EXCLUSIVE
    conflicts with, and writers' own do not: they do not wait for one another). On SQLite, the
    database's one write lock (`BEGIN IMMEDIATE`): the driver begins a transaction only at the
    first write, so the reads before it would otherwise run outside it, each on the data as it
    stood, and the write would follow an erasure that committed after them."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE"))
    elif dialect == "sqlite":
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")


def erase_person(session: Session, person: Person) -> Erased:
    """Delete every row about the person (in the caller's transaction).

    Writers are locked out first, until the caller commits (`lock_against_writers`; a caller
    that reads about the person before, as `agents.privacy.rights.erase_user` does, takes the
    lock before that read): a decision, a batch of events or a profile stored meanwhile either
    committed before (and is deleted here) or waits, and then finds the tombstones the caller
    adds. Without the lock, under READ COMMITTED on PostgreSQL, a write that began before the
    caller committed would not see the tombstones, nor would this DELETE see its rows; on
    SQLite, the reads before the first DELETE ran outside the transaction, and a decision
    logged between them and the DELETE was in no list."""
    lock_against_writers(session)
    events, decisions, rewards, observations = _erase_logged(
        session, _decisions_of(person), _events_of(person)
    )
    links = _deleted(session, delete(IdentityLink).where(IdentityLink.user_id == person.user_id))
    keys = _deleted(session, delete(ApiKey).where(ApiKey.subject_user_id == person.user_id))
    forget_features(session, person.subject_keys)
    forget_sequences(session, person.subject_keys)
    session.execute(delete(Consent).where(Consent.user_id == person.user_id))
    erase_prediction(session, person.user_id)
    session.execute(delete(User).where(User.user_id == person.user_id))
    return Erased(events, decisions, rewards, observations, links, keys)


def erase_visitors(session: Session, anonymous_ids: Sequence[str]) -> Erased:
    """Delete every row about these anonymous ids as visitors: the decisions logged about them,
    their events made while not logged in, their links to any user, the features kept from
    them (in the caller's transaction, locked as `erase_person` locks). For rows about an erased
    person's anonymous ids that older code stored after the erasure (`agents.privacy.sweep`).
    An event that names a user who was not erased beside one of these ids is that user's, and
    is kept; the features of a user one of these ids was linked to are rebuilt on their next
    read, without the visitor's history."""
    lock_against_writers(session)
    keys = [f"anon:{a}" for a in anonymous_ids]
    owners = session.scalars(
        select(IdentityLink.user_id).where(
            IdentityLink.kind == "anonymous", IdentityLink.external_id.in_(anonymous_ids)
        )
    ).all()
    events, decisions, rewards, observations = _erase_logged(
        session,
        DecisionRow.subject_key.in_(keys),
        and_(EventRow.anonymous_id.in_(anonymous_ids), EventRow.user_id.is_(None)),
    )
    links = _deleted(
        session,
        delete(IdentityLink).where(
            IdentityLink.kind == "anonymous", IdentityLink.external_id.in_(anonymous_ids)
        ),
    )
    forget_features(session, [*keys, *(f"user:{u}" for u in owners)])
    forget_sequences(session, [*keys, *(f"user:{u}" for u in owners)])
    return Erased(events, decisions, rewards, observations, links, 0)


def lock_against_writers(session: Session) -> None:
    """The lock an erasure holds until it commits (see `erase_person`), taken before it reads
    anything about the person: on PostgreSQL the guarded tables' SHARE ROW EXCLUSIVE lock; on
    SQLite the database's write lock (`BEGIN IMMEDIATE`, unless the caller's transaction has
    begun: it then holds it already, or holds nothing yet and the driver would refuse a second
    BEGIN), since the driver begins a transaction only at the first write, and reads before it
    (who is linked to the person, which decisions are theirs) would see the data as it stood,
    not as it is when the deletes run. Taking it twice is harmless."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text(f"LOCK TABLE {', '.join(_GUARDED)} IN SHARE ROW EXCLUSIVE MODE"))
    elif dialect == "sqlite":
        raw = session.connection().connection.dbapi_connection
        if raw is not None and not raw.in_transaction:
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")


def _erase_logged(
    session: Session, decisions_where: Any, events_where: Any
) -> tuple[int, int, int, int]:
    """Delete the decisions matching `decisions_where` with everything that refers to them,
    and the events matching `events_where` with their attributions: how many events,
    decisions, rewards and linear-bandit observations went."""
    decision_ids = list(session.scalars(select(DecisionRow.decision_id).where(decisions_where)))
    delete_for_decisions(session, decision_ids)  # attribution windows, attributions, sources
    rewards = _deleted(session, delete(RewardRow).where(RewardRow.decision_id.in_(decision_ids)))
    observations = _deleted(
        session, delete(LinearObservation).where(LinearObservation.decision_id.in_(decision_ids))
    )
    decisions = _deleted(
        session, delete(DecisionRow).where(DecisionRow.decision_id.in_(decision_ids))
    )
    session.execute(
        delete(Attribution).where(
            Attribution.event_id.in_(select(EventRow.event_id).where(events_where))
        )
    )
    events = _deleted(session, delete(EventRow).where(events_where))
    return events, decisions, rewards, observations


def stored_identifiers(session: Session) -> tuple[set[str], set[str]]:
    """Every user id and every anonymous id the database holds rows under, in any table that
    names a person (the sweep hashes each of them to find erased people's)."""
    users: set[str] = set()
    for column in (
        User.user_id,
        EventRow.user_id,
        DecisionRow.user_id,
        IdentityLink.user_id,
        Consent.user_id,
        ApiKey.subject_user_id,
        PredictionRow.user_id,
        RankEventRow.user_id,
        BatchResultRow.user_id,
    ):
        users.update(
            session.scalars(select(column).where(column.is_not(None), column != "").distinct())
        )
    anonymous: set[str] = {
        a for a in session.scalars(select(EventRow.anonymous_id).distinct()) if a is not None
    }
    anonymous.update(
        session.scalars(
            select(IdentityLink.external_id).where(IdentityLink.kind == "anonymous").distinct()
        )
    )
    for key_column in (
        DecisionRow.subject_key,
        PersonFeatures.subject_key,
        PersonSequence.subject_key,
    ):
        for key in session.scalars(select(key_column).distinct()):
            kind, _, value = key.partition(":")
            if value and kind in ("user", "anon"):
                (users if kind == "user" else anonymous).add(value)
    anonymous.discard("")
    return users, anonymous


def _deleted(session: Session, statement: Delete) -> int:
    """Run a DELETE; how many rows it removed."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount
