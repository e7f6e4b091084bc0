"""What the item-item re-ranking reads of a person's history, kept up to date as their events
arrive: one row per subject (`person_sequences`), read in one primary-key lookup whatever the
length of the history (`retrieval.sequence.person_history`).

The row holds a `SequenceState`: each distinct item the person touched, in the order they first
touched it, with the type of their latest event on it (EASE's row vector: the item's latest
weight), and the items and types of their latest `RECENT` events (the transitions read the
`last` of them). `history()` gives them back as a short history — the distinct items, then the
latest events (or the events alone while there are no more than `RECENT`) — from which
`ItemItemModel.inputs` reads exactly what it reads from the person's whole history: the same
items with the same latest weights in the same first-seen order, and the same latest items, as
long as the model knows `last` of the latest `RECENT` events' items (fewer only when most of
the person's latest 50 events are on items the model has never seen: then older distinct items
fill the transitions' votes). While a person has at most `DISTINCT` distinct items nothing is dropped; past
that, the item touched longest ago is (its row of EASE's vector), so the row and a decision's
read stay bounded. Up to 1,000 events this is bit for bit what the 1,000-event window read
before gave; beyond, the row holds up to 1,000 distinct items over the whole history where the
window held the items of the latest 1,000 events (on MovieLens, one rating per movie, both are
the latest 1,000 ratings).

Maintained as `store.features` maintains its row, in the transaction that stores the events
(`maintain_sequences`, beside `maintain_features`): an event newer than everything the row has
seen is added; anything else (an older event, an anonymous history joining a user at login, no
row yet) rebuilds the row from the raw events. A moved or new identity link and erasure delete
the rows (`forget_sequences`): the next event rebuilds them, and until then a decision reads the
raw events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from store.models import EventRow, IdentityLink, PersonSequence
from store.subjects import events_by_subject, rows_for_update

DISTINCT = 1000  # distinct items kept, the most recently touched
RECENT = 50  # latest events kept (the transitions read the `last` = 10 the model knows)
STATE_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _US


@dataclass
class SequenceState:
    """What the re-ranking reads of one subject's events, folded in time order."""

    count: int = 0
    newest: tuple[int, str] | None = None  # (microseconds, event id) of the newest event added
    # item -> [latest event type, when last touched (event number)]; in first-touched order
    items: dict[str, list[Any]] = field(default_factory=dict)
    recent: list[tuple[str, str]] = field(default_factory=list)  # (item, type), oldest first

    def accepts(self, micros: int, event_id: str) -> bool:
        """Whether an event can be added: it is newer than every event added so far."""
        return self.newest is None or (micros, event_id) > self.newest

    def add(self, item: str, kind: str, micros: int, event_id: str) -> None:
        self.count += 1
        self.newest = (micros, event_id)
        entry = self.items.get(item)
        if entry is None:
            self.items[item] = [kind, self.count]
            if len(self.items) > DISTINCT:  # drop the item touched longest ago
                oldest = min(self.items, key=lambda i: self.items[i][1])
                del self.items[oldest]
        else:
            entry[0], entry[1] = kind, self.count
        self.recent.append((item, kind))
        if len(self.recent) > RECENT:
            del self.recent[0]

    def history(self) -> list[tuple[str, str]]:
        """(item, event type), oldest first: each distinct item with its latest type in
        first-touched order, then the latest events; only the events when they are all."""
        if self.count <= len(self.recent):
            return list(self.recent)
        return [(item, entry[0]) for item, entry in self.items.items()] + self.recent

    def dump(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "count": self.count,
            "newest": list(self.newest) if self.newest is not None else None,
            "items": [[item, kind, touched] for item, (kind, touched) in self.items.items()],
            "recent": [list(pair) for pair in self.recent],
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> SequenceState | None:
        """The state a row holds; None for a row of another version (rebuilt)."""
        if data.get("v") != STATE_VERSION:
            return None
        newest = data["newest"]
        return cls(
            count=data["count"],
            newest=(newest[0], newest[1]) if newest is not None else None,
            items={item: [kind, touched] for item, kind, touched in data["items"]},
            recent=[(item, kind) for item, kind in data["recent"]],
        )


def stored_history(data: dict[str, Any]) -> list[tuple[str, str]] | None:
    """`SequenceState.history` straight from a row's stored state (None: another version)."""
    if data.get("v") != STATE_VERSION:
        return None
    recent = [(item, kind) for item, kind in data["recent"]]
    if data["count"] <= len(recent):
        return recent
    return [(item, kind) for item, kind, _ in data["items"]] + recent


def subject_key(user_id: str | None, anonymous_id: str | None) -> str | None:
    """The row that holds exactly the events `person_history` reads for these ids, or None (both
    ids sent: the anonymous one may not be linked to the user, so the raw events are read)."""
    if user_id and not anonymous_id:
        return f"user:{user_id}"
    if anonymous_id and not user_id:
        return f"anon:{anonymous_id}"
    return None


def _events_of(key: str) -> Any:
    kind, _, value = key.partition(":")
    if kind == "anon":
        return EventRow.anonymous_id == value
    linked = select(IdentityLink.external_id).where(
        IdentityLink.kind == "anonymous", IdentityLink.user_id == value
    )
    return or_(EventRow.user_id == value, EventRow.anonymous_id.in_(linked))


def fold_sequence(session: Session, key: str) -> SequenceState:
    """The subject's state folded from all their raw events, by time then event id (the order
    `person_history` reads them in)."""
    state = SequenceState()
    rows = session.execute(
        select(EventRow.item_id, EventRow.type, EventRow.ts, EventRow.event_id)
        .where(_events_of(key))
        .order_by(EventRow.ts, EventRow.event_id)
    )
    for item, kind, ts, event_id in rows:
        state.add(item, kind, _micros(ts), event_id)
    return state


def maintain_sequences(
    session: Session, events: Sequence[EventRow], linked_users: Iterable[str] = ()
) -> None:
    """Bring the rows of everyone `events` (just stored, flushed) are about up to date, in the
    caller's transaction; `linked_users` gained an anonymous history in the same batch and are
    rebuilt. The same subjects as `store.features.maintain_features`."""
    if not events:
        return
    by_key = events_by_subject(session, events)
    rebuild = {f"user:{u}" for u in linked_users}
    rows = rows_for_update(session, PersonSequence, by_key)
    for key in sorted(by_key):
        row = rows.get(key)
        state = SequenceState.load(row.state) if row is not None else None
        ordered = sorted(by_key[key], key=lambda e: (_micros(e.ts), e.event_id))
        first = ordered[0]
        if state is None or key in rebuild or not state.accepts(_micros(first.ts), first.event_id):
            state = fold_sequence(session, key)
        else:
            for e in ordered:
                state.add(e.item_id, e.type, _micros(e.ts), e.event_id)
        if row is None:
            session.add(PersonSequence(subject_key=key, state=state.dump()))
        else:
            row.state = state.dump()
    session.flush()


def forget_sequences(session: Session, keys: Iterable[str]) -> None:
    """Delete these subjects' rows (erasure, a new or moved link): the next event rebuilds them,
    and until then `person_history` reads the raw events."""
    keys = list(keys)
    if keys:
        session.execute(delete(PersonSequence).where(PersonSequence.subject_key.in_(keys)))
