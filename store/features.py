"""A person's features, kept up to date as their events arrive: one row per subject.

A decision reads one row (`read_features`) instead of folding the person's whole history, so its
cost does not grow with the events stored. The row holds a `FeatureState`: what the features need
of every event seen so far (counts, sums, the category weights decayed to the newest event, the
recent items, the purchases, the prices' multiset, the timestamps of the last 30 days), from
which the features at any moment after the newest event follow exactly. It is stored in two
columns: `state`, what a decision reads — bounded whatever the history: the last 31 days'
timestamps (`frequency_30d` bisects them), the purchases of the last `RECENT_PURCHASE_DAYS` (the
suppression rules bisect them, `Purchases.since`), the price band settled — and `history`, every
purchase and the prices' multiset, read to maintain the row, by the similar-items route (which
excludes everything bought), and by a decision only when a policy looks further back.

Folding raw events (`compute_features`, the reference) replays them through the same
`FeatureState.add` in the same order — by time, then event id — so the maintained row and the
fold agree to the last bit (`tests/test_features.py` checks it on random event streams). The row
is brought up to date in the transaction that stores the events (`maintain_features`): an event
newer than everything the row has seen is added to it; anything else — an event older than the
newest, an anonymous history joining a user at login — rebuilds the row from the raw events.
What would make a row stale otherwise deletes it, and the next read or event rebuilds it: an
explicit merge of identity links, a catalog item changing its category or price (the features
use the catalog's), and erasure. A row whose newest event lies after the moment asked about (an
event stamped in the future) is not used: the fold answers.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, delete, literal, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from store.db import is_retryable, orm_session
from store.models import CatalogItem, EventRow, IdentityLink, PersonFeatures
from store.person import Person
from store.predictions import Prediction, prediction_for
from store.subjects import events_by_subject, rows_for_update
from store.users import Subject, link_owner, linked_anonymous_ids

log = logging.getLogger("attune.features")

_table = PersonFeatures.__table__

# How much each event type says about taste, and how fast it fades.
WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0}
HALF_LIFE_DAYS = 30.0
PRICE_BANDS = ((25.0, "low"), (100.0, "mid"), (math.inf, "high"))
RECENT = 20  # distinct recent items kept
FREQUENCY_DAYS = 30  # `frequency_30d` counts the events of this many days
# The purchases of this many days before the newest event are kept in the part of the row a
# decision reads (as long as the demo policy's suppression window); a policy looking further
# back reads the full list too (`person_features`, `purchases_since`).
RECENT_PURCHASE_DAYS = 90
STATE_VERSION = 2  # a row of another version is rebuilt from the events
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_DAY_US = 86_400_000_000
# `_days(as_of, t) <= FREQUENCY_DAYS` holds exactly when `as_of` is at most this many µs after
# `t`: the difference D µs is an exact integer; `total_seconds()` rounds D / 10**6 correctly and
# `/ 86400` rounds again, both monotonically, and at D = 30 days both are exact (2,592,000 s;
# 30.0), while at D = 30 days + 1 µs the quotient exceeds 30 by 1.2e-11, far above a float's
# spacing there (3.6e-15): so the float test is true up to and including 30 days, false after.
_FREQUENCY_US = FREQUENCY_DAYS * _DAY_US


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
    purchases: Purchases = field(default_factory=lambda: Purchases())  # newest first, all
    # Predictions `attune train` stored for the person (store.predictions); None: none yet.
    churn_risk: float | None = None
    next_purchase: dict[str, float] = field(default_factory=dict)  # category → probability
    predictions_version: str | None = None

    @property
    def is_cold(self) -> bool:
        return self.event_count == 0

    def purchased_since(self, moment: datetime) -> tuple[str, ...]:
        return self.purchases.since(moment)

    def top_categories(self, n: int = 3) -> list[str]:
        ranked = sorted(self.category_affinity.items(), key=lambda kv: (-kv[1], kv[0]))
        return [category for category, _ in ranked[:n]]


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _moment(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _days(as_of: datetime, micros: int) -> float:
    return (as_of - _moment(micros)).total_seconds() / 86400


@dataclass(frozen=True)
class Purchases:
    """A person's purchases: item ids and times (µs since 1970), oldest first, complete from
    `complete_from` µs on (None: all of them; a decision reads only the recent ones).

    Iterating gives (item id, when) newest first, all of them; `since` bisects, so what a
    decision asks of them costs the same whatever their number, and makes no datetime."""

    items: tuple[str, ...] = ()
    times: tuple[int, ...] = ()
    complete_from: int | None = None

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, datetime]]) -> Purchases:
        """All of a person's purchases, given as (item id, when); equal times newest first."""
        ordered = sorted(pairs, key=lambda pair: pair[1], reverse=True)[::-1]
        return cls(tuple(item for item, _ in ordered), tuple(_micros(ts) for _, ts in ordered))

    def __len__(self) -> int:
        return len(self.times)

    def __iter__(self) -> Iterator[tuple[str, datetime]]:
        self._need(None)
        return zip(reversed(self.items), map(_moment, reversed(self.times)), strict=True)

    def covers(self, moment: datetime | None) -> bool:
        """Whether every purchase at or after `moment` (None: ever) is here."""
        if self.complete_from is None:
            return True
        return moment is not None and _micros(moment) >= self.complete_from

    def since(self, moment: datetime) -> tuple[str, ...]:
        """The distinct items bought at or after `moment`, newest first."""
        self._need(moment)
        start = bisect_left(self.times, _micros(moment))
        return tuple(dict.fromkeys(reversed(self.items[start:])))

    def bought(self) -> tuple[str, ...]:
        """Every distinct item bought, newest first."""
        self._need(None)
        return tuple(dict.fromkeys(reversed(self.items)))

    def _need(self, moment: datetime | None) -> None:
        if not self.covers(moment):
            raise ValueError(
                f"these purchases are complete from {self.complete_from} µs only: read the "
                "features with `purchases_since` early enough"
            )


@dataclass
class FeatureState:
    """Everything the features need of the events seen so far, in the order they were added.

    Events must be added in order (`key`: time, then event id); the category weights are
    decayed to the newest event, so a later read at any moment divides the same factor out.
    Stored in two parts: what a decision reads (`dump`: counts, sums, the last 31 days' times,
    the recent purchases, the price band settled), bounded whatever the person's history, and
    the rest (`dump_history`: every purchase, the prices' multiset), read only when needed.
    """

    count: int = 0
    newest: tuple[int, str] | None = None  # (timestamp in µs since 1970, event id)
    window: list[int] = field(default_factory=list)  # timestamps of the last ~30 days, ascending
    affinity: dict[str, float] = field(default_factory=dict)
    monetary: float = 0.0
    bought_items: list[str] = field(default_factory=list)  # every purchase, oldest first
    bought_times: list[int] = field(default_factory=list)  # their µs, ascending
    recent: list[str] = field(default_factory=list)  # distinct items, newest first
    prices: dict[str, int] = field(default_factory=dict)  # repr(price) → events
    band: str | None = None

    def accepts(self, ts_us: int, event_id: str) -> bool:
        """Whether an event can be added: it comes after everything added so far."""
        return self.newest is None or (ts_us, event_id) > self.newest

    def add(
        self,
        kind: str,
        ts_us: int,
        event_id: str,
        item_id: str,
        value: float | None,
        category: str | None,
        price: float | None,
    ) -> None:
        if self.newest is not None and ts_us > self.newest[0]:
            decay = 0.5 ** ((ts_us - self.newest[0]) / _DAY_US / HALF_LIFE_DAYS)
            self.affinity = {c: v * decay for c, v in self.affinity.items()}
        self.newest = (ts_us, event_id)
        self.count += 1
        # One day to spare: only what is older than the newest event by more than 31 days can
        # never count again.
        horizon = ts_us - (FREQUENCY_DAYS + 1) * _DAY_US
        self.window = [t for t in self.window if t >= horizon] + [ts_us]
        if category is not None:
            self.affinity[category] = self.affinity.get(category, 0.0) + WEIGHTS[kind]
        if price is not None:
            self.prices[repr(float(price))] = self.prices.get(repr(float(price)), 0) + 1
        if item_id in self.recent:
            self.recent.remove(item_id)
        self.recent = [item_id, *self.recent[: RECENT - 1]]
        if kind == "purchase":
            self.monetary += value or 0.0
            self.bought_items.append(item_id)
            self.bought_times.append(ts_us)

    def settle(self) -> None:
        """Recompute what depends on the whole multiset of prices (after a run of `add`)."""
        self.band = _band(_median(self.prices))

    def features(self, as_of: datetime, recent: int = RECENT) -> Features:
        """The features at `as_of`, which must not be before the newest event."""
        if self.newest is None:
            return Features(as_of=as_of)
        return _features(
            as_of,
            recent,
            count=self.count,
            newest=self.newest[0],
            window=self.window,
            affinity=self.affinity,
            monetary=self.monetary,
            purchase_count=len(self.bought_times),
            purchases=Purchases(tuple(self.bought_items), tuple(self.bought_times)),
            recent_items=self.recent,
            band=self.band,
        )

    def dump(self) -> dict[str, Any]:
        """The part a decision reads: the purchases since `RECENT_PURCHASE_DAYS` before the
        newest event (and the last one, however old), and from when on they are complete."""
        times = self.bought_times
        start = 0
        if self.newest is not None and times:
            start = bisect_left(times, self.newest[0] - RECENT_PURCHASE_DAYS * _DAY_US)
            start = min(start, len(times) - 1)
        return {
            "v": STATE_VERSION,
            "count": self.count,
            "newest": list(self.newest) if self.newest else None,
            "window": self.window,
            "affinity": self.affinity,
            "monetary": self.monetary,
            "purchases": len(times),
            "bought_items": self.bought_items[start:],
            "bought_times": times[start:],
            "complete_from": times[start - 1] + 1 if start else None,
            "recent": self.recent,
            "band": self.band,
        }

    def dump_history(self) -> dict[str, Any]:
        """The rest: every purchase and the prices' multiset (what `add` and `settle` need)."""
        return {
            "v": STATE_VERSION,
            "newest": list(self.newest) if self.newest else None,
            "bought_items": self.bought_items,
            "bought_times": self.bought_times,
            "prices": self.prices,
        }

    @classmethod
    def load(cls, data: dict[str, Any], history: dict[str, Any] | None) -> FeatureState | None:
        """The state `dump` and `dump_history` stored; None when it is of another version."""
        if data.get("v") != STATE_VERSION or history is None or history.get("v") != STATE_VERSION:
            return None
        newest = data["newest"]
        return cls(
            count=data["count"],
            newest=(newest[0], newest[1]) if newest else None,
            window=list(data["window"]),
            affinity=dict(data["affinity"]),
            monetary=data["monetary"],
            bought_items=list(history["bought_items"]),
            bought_times=list(history["bought_times"]),
            recent=list(data["recent"]),
            prices=dict(history["prices"]),
            band=data["band"],
        )


def _features(
    as_of: datetime,
    recent: int,
    *,
    count: int,
    newest: int,
    window: list[int],
    affinity: dict[str, float],
    monetary: float,
    purchase_count: int,
    purchases: Purchases,
    recent_items: list[str],
    band: str | None,
) -> Features:
    """The features at `as_of` of a state or of its stored part: a fixed number of steps (two
    datetimes, a bisection) plus the categories and the recent items, whatever the history."""
    total = sum(affinity.values()) or 1.0
    last_purchase = purchases.times[-1] if purchases.times else None
    return Features(
        as_of=as_of,
        event_count=count,
        recency_days=round(_days(as_of, newest), 2),
        frequency_30d=len(window) - bisect_left(window, _micros(as_of) - _FREQUENCY_US),
        monetary_total=round(monetary, 2),
        purchase_count=purchase_count,
        days_since_last_purchase=(
            round(_days(as_of, last_purchase), 2) if last_purchase is not None else None
        ),
        category_affinity={k: round(v / total, 4) for k, v in affinity.items()},
        price_band=band,
        recent_item_ids=tuple(recent_items[:recent]),
        purchases=purchases,
    )


def _stored_features(data: dict[str, Any], as_of: datetime) -> Features:
    """The features at `as_of` from a row's stored part (`FeatureState.dump`), with its recent
    purchases only; nothing in it is converted or copied but the recent purchases."""
    newest = data["newest"]
    if newest is None:
        return Features(as_of=as_of)
    return _features(
        as_of,
        RECENT,
        count=data["count"],
        newest=newest[0],
        window=data["window"],
        affinity=data["affinity"],
        monetary=data["monetary"],
        purchase_count=data["purchases"],
        purchases=Purchases(
            tuple(data["bought_items"]), tuple(data["bought_times"]), data["complete_from"]
        ),
        recent_items=data["recent"],
        band=data["band"],
    )


def _median(counts: dict[str, int]) -> float | None:
    """`statistics.median` of the multiset {price: how many times}, without expanding it."""
    total = sum(counts.values())
    if not total:
        return None
    wanted = {(total - 1) // 2, total // 2}  # the middle position(s), counted from 0
    found: list[float] = []
    seen = 0
    for price in sorted(float(p) for p in counts):
        n = counts[repr(price)]
        found += [price] * sum(1 for w in wanted if seen <= w < seen + n)
        seen += n
    return found[0] if len(found) == 1 else (found[0] + found[1]) / 2


def _band(price: float | None) -> str | None:
    if price is None:
        return None
    return next(name for ceiling, name in PRICE_BANDS if price < ceiling)


# -- folding raw events (the reference) ------------------------------------------------------


def feature_rows(conditions: Sequence[Any], as_of: datetime | None, *owners: Any) -> Select[Any]:
    """Events matching any of `conditions` (up to `as_of`, when given), as the rows
    `fold_features` reads — (type, ts, item_id, value, category, price, event_id) — after the
    `owners` columns (the batched query adds who they are)."""
    query = (
        select(
            *owners,
            EventRow.type,
            EventRow.ts,
            EventRow.item_id,
            EventRow.value,
            CatalogItem.category,
            CatalogItem.price,
            EventRow.event_id,
        )
        .join(CatalogItem, CatalogItem.item_id == EventRow.item_id, isouter=True)
        .where(or_(*conditions))
    )
    return query.where(EventRow.ts <= as_of) if as_of is not None else query


def fold_state(rows: Iterable[Sequence[Any]]) -> FeatureState:
    """One person's events, as `feature_rows` rows in any order, replayed into a state."""
    state = FeatureState()
    keyed = sorted(((_micros(row[1]), row[6]), row) for row in rows)
    for (ts_us, event_id), (kind, _, item_id, value, category, price, _) in keyed:
        state.add(kind, ts_us, event_id, item_id, value, category, price)
    state.settle()
    return state


def fold_features(rows: Sequence[Sequence[Any]], *, as_of: datetime, recent: int = 20) -> Features:
    """One person's events (`feature_rows` rows, any order, none after `as_of`) folded into
    their features. `store.cohort` folds many people's rows with it too."""
    return fold_state(rows).features(as_of, recent)


def _conditions(session: Session, subject: Subject) -> list[Any]:
    conditions = []
    if subject.user_id is not None:
        conditions.append(EventRow.user_id == subject.user_id)
        anonymous = linked_anonymous_ids(session, subject.user_id)
        if anonymous:
            conditions.append(EventRow.anonymous_id.in_(anonymous))
    if subject.anonymous_id is not None:
        conditions.append(EventRow.anonymous_id == subject.anonymous_id)
    return conditions


def compute_features(
    session: Session, subject: Subject, *, as_of: datetime, recent: int = 20
) -> Features:
    """Recency, frequency, monetary value, category affinity and price band from the subject's
    raw events, folded now (the reference `read_features` must equal).

    Events made anonymously before a login count for the user they were linked to.
    """
    conditions = _conditions(session, subject)
    if not conditions:
        features = Features(as_of=as_of)
    else:
        rows = session.execute(feature_rows(conditions, as_of)).all()
        features = fold_features(rows, as_of=as_of, recent=recent)
    return _predicted(session, subject, features)


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


def _predicted(session: Session, subject: Subject, features: Features) -> Features:
    if subject.user_id is None:
        return features
    return with_prediction(features, prediction_for(session, subject.user_id))


# -- the maintained row ----------------------------------------------------------------------


def _subject_of(key: str) -> Subject:
    kind, _, value = key.partition(":")
    return Subject(user_id=value, anonymous_id=None) if kind == "user" else Subject(None, value)


def _maintained_key(session: Session, subject: Subject) -> str | None:
    """The row that holds exactly this subject's events, or None when none does (a user id sent
    with an anonymous id that is not linked to them: that pair is folded)."""
    if subject.user_id is None:
        return subject.key if subject.anonymous_id is not None else None
    if (
        subject.anonymous_id is not None
        and link_owner(session, "anonymous", subject.anonymous_id) != subject.user_id
    ):
        return None
    return f"user:{subject.user_id}"


def read_features(
    session: Session, subject: Subject, *, as_of: datetime, purchases_since: datetime | None = None
) -> Features:
    """The subject's features at `as_of`: from their maintained row (built from the raw events
    and stored, the first time); equal to `compute_features` — but for `purchases`, which hold
    at least those since `purchases_since` (None: all of them, as `compute_features`)."""
    key = _maintained_key(session, subject)
    if key is None:
        return compute_features(session, subject, as_of=as_of)
    row = session.get(PersonFeatures, key)
    stored, history = (row.state, row.history) if row is not None else (None, None)
    features = _from_row(session, key, stored, as_of, purchases_since, history)
    if features is None:
        return compute_features(session, subject, as_of=as_of)
    return _predicted(session, subject, features)


def person_features(
    session: Session | Connection,
    person: Person,
    *,
    as_of: datetime,
    purchases_since: datetime | None = None,
) -> Features:
    """`read_features` for a person `store.person.read_person` read: their maintained row and
    prediction came with them, so reading costs no statement unless the row must be rebuilt
    (in an ORM session on `session`'s transaction, when it is a Core connection) or purchases
    older than the row's recent ones are asked for (`purchases_since`: one more SELECT)."""
    subject = person.subject
    if subject.user_id is None and subject.anonymous_id is None:
        return Features(as_of=as_of)
    if (
        subject.user_id is not None
        and subject.anonymous_id is not None
        and person.owner != subject.user_id
    ):
        # A user id with an anonymous id not linked to them: no one row holds that pair's
        # events, so it is folded (as `_maintained_key` says).
        with orm_session(session) as orm:
            return compute_features(orm, subject, as_of=as_of)
    features = _from_row(session, subject.key, person.feature_state, as_of, purchases_since)
    if features is None:
        with orm_session(session) as orm:
            return compute_features(orm, subject, as_of=as_of)
    return with_prediction(features, person.prediction) if subject.user_id else features


def purchased_items(session: Session, subject: Subject, *, as_of: datetime) -> tuple[str, ...]:
    """Every distinct item the subject bought up to `as_of`, newest first: the whole of
    `read_features(...).purchases`, without reading the person's prediction."""
    key = _maintained_key(session, subject)
    features = None
    if key is not None:
        row = session.get(PersonFeatures, key)
        stored, history = (row.state, row.history) if row is not None else (None, None)
        features = _from_row(session, key, stored, as_of, None, history)
    if features is None:
        features = compute_features(session, subject, as_of=as_of)
    return features.purchases.bought()


def _from_row(
    session: Session | Connection,
    key: str,
    stored: dict[str, Any] | None,
    as_of: datetime,
    purchases_since: datetime | None = None,
    history: dict[str, Any] | None = None,
) -> Features | None:
    """The features at `as_of` from the row `key` (`stored`: its state, None when there is
    none, and then it is rebuilt and stored; `history`: its full part, when read along); None
    when only the fold can answer. Their purchases go back at least to `purchases_since`
    (None: all of them): when the row's recent ones do not, the row is read again, whole."""
    if stored is None or stored.get("v") != STATE_VERSION:
        with orm_session(session) as orm:
            state = _rebuilt(orm, [key])[key]
            try:
                with orm.begin_nested():
                    orm.merge(
                        PersonFeatures(
                            subject_key=key, state=state.dump(), history=state.dump_history()
                        )
                    )
            except IntegrityError:
                pass  # another request stored it first; both folded the same events
            except OperationalError as error:
                # Another connection wrote since this transaction's first read (SQLite refuses
                # a reader turned writer at once; busy_timeout cannot help it): the row is the
                # fold kept for later, and a later read stores it. The fold answers now.
                if not is_retryable(error):
                    raise
                log.info("a person's features were folded but not stored this time: %s", error.orig)
        if state.newest is not None and state.newest[0] > _micros(as_of):
            return None
        return state.features(as_of)
    if stored["newest"] is not None and stored["newest"][0] > _micros(as_of):
        # An event stamped after `as_of`: the row cannot leave it out; the fold can.
        return None
    features = _stored_features(stored, as_of)
    if features.purchases.covers(purchases_since):
        return features
    if history is None:
        # Both parts again, in one statement: the row may have changed since `stored` was read.
        row = session.execute(
            select(_table.c.state, _table.c.history).where(_table.c.subject_key == key)
        ).one_or_none()
        if row is None or row.state.get("v") != STATE_VERSION or row.history is None:
            return None
        stored, history = row.state, row.history
        if stored["newest"] is not None and stored["newest"][0] > _micros(as_of):
            return None
        features = _stored_features(stored, as_of)
    every = Purchases(tuple(history["bought_items"]), tuple(history["bought_times"]))
    return replace(features, purchases=every)


def _rebuilt(session: Session, keys: Sequence[str]) -> dict[str, FeatureState]:
    """Each subject's state folded from their raw events (all of them, whatever their time)."""
    states = {}
    for key in keys:
        conditions = _conditions(session, _subject_of(key))
        rows = session.execute(feature_rows(conditions, None)).all() if conditions else []
        states[key] = fold_state(rows)
    return states


def maintain_features(
    session: Session, events: Sequence[EventRow], linked_users: Iterable[str] = ()
) -> None:
    """Bring the rows of everyone `events` (just stored, flushed) are about up to date, in the
    caller's transaction; `linked_users` gained an anonymous history in the same batch and are
    rebuilt."""
    if not events:
        return
    by_key = events_by_subject(session, events)
    rebuild = {f"user:{u}" for u in linked_users}
    rows = rows_for_update(session, PersonFeatures, by_key)
    items = {e.item_id for e in events}
    catalog = {
        item_id: (category, price)
        for item_id, category, price in session.execute(
            select(CatalogItem.item_id, CatalogItem.category, CatalogItem.price).where(
                CatalogItem.item_id.in_(items)
            )
        )
    }
    stale = []
    for key in sorted(by_key):
        row = rows.get(key)
        state = FeatureState.load(row.state, row.history) if row is not None else None
        ordered = sorted(by_key[key], key=lambda e: (_micros(e.ts), e.event_id))
        first = ordered[0]
        if state is None or key in rebuild or not state.accepts(_micros(first.ts), first.event_id):
            stale.append(key)
            continue
        for e in ordered:
            category, price = catalog.get(e.item_id, (None, None))
            state.add(e.type, _micros(e.ts), e.event_id, e.item_id, e.value, category, price)
        state.settle()
        assert row is not None
        row.state, row.history = state.dump(), state.dump_history()
    for key, state in _rebuilt(session, stale).items():
        row = rows.get(key)
        if row is None:
            session.add(
                PersonFeatures(subject_key=key, state=state.dump(), history=state.dump_history())
            )
        else:
            row.state, row.history = state.dump(), state.dump_history()
    session.flush()


def forget_features(session: Session, keys: Iterable[str]) -> None:
    """Delete these subjects' rows (erasure, a moved link): the next read rebuilds them."""
    keys = list(keys)
    if keys:
        session.execute(delete(PersonFeatures).where(PersonFeatures.subject_key.in_(keys)))


def forget_features_of_items(session: Session, item_ids: Sequence[str]) -> None:
    """Delete the rows of everyone with an event on these items (whose category or price
    changed, or who were new to the catalog): their features read the catalog's."""
    if not item_ids:
        return
    on_items = EventRow.item_id.in_(list(item_ids))
    users = select(literal("user:") + EventRow.user_id).where(
        on_items, EventRow.user_id.is_not(None)
    )
    visitors = select(EventRow.anonymous_id).where(on_items, EventRow.anonymous_id.is_not(None))
    anonymous = select(literal("anon:") + EventRow.anonymous_id).where(
        on_items, EventRow.anonymous_id.is_not(None)
    )
    owners = select(literal("user:") + IdentityLink.user_id).where(
        IdentityLink.kind == "anonymous", IdentityLink.external_id.in_(visitors)
    )
    session.execute(
        delete(PersonFeatures).where(
            or_(
                PersonFeatures.subject_key.in_(users),
                PersonFeatures.subject_key.in_(anonymous),
                PersonFeatures.subject_key.in_(owners),
            )
        )
    )
