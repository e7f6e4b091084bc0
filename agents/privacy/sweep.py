"""Rows about erased people that older code stored after their erasure: found and erased, once
per database.

Until session 26 a request about a person that was under way when they were erased could store
them again (its decision's record, a batch of their events, their profile:
`tests/test_erasure_race.py`), and until session 23 a decision about an erased visitor stored
their feature row and its record. Decisions and events refuse such people now, but what was
stored stays at rest. Tombstones hold keyed hashes only, so those rows can be found only by
hashing every identifier the database holds rows under and looking the hashes up among the
tombstones. `sweep_erased` does that at start (`agents.reindex.start`), once per database: table
`maintenance` records that it ran, with what it removed (counts; no identifier), and the audit
log gets an `erasure.sweep` entry when it removed anything. A database without tombstones has
nothing to sweep, and is marked as swept all the same. On PostgreSQL, workers starting together
sweep once (an advisory lock); the identifiers are read and hashed without holding writers up,
and writers about people wait, as for an erasure, only while the matches are deleted.

The hashing is the service's (`agents.privacy.rights`, the audit key), hence here and not in a
migration, which runs without the key.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agents.privacy.rights import anonymous_ref, erase_factors, erased_among
from agents.services import Services
from store.access import audit
from store.batch import erase_from_batches
from store.erasure import (
    erase_person,
    erase_visitors,
    lock_against_writers,
    person_of,
    stored_identifiers,
)
from store.jobs import erase_from_jobs
from store.models import Maintenance, Tombstone
from store.rank import erase_rank_events
from store.tombstones import add_tombstones

log = logging.getLogger("attune.privacy")

TASK = "erasure-sweep-1"  # the row of table `maintenance` that says the sweep ran
LOCK_KEY = 0x4174_7475_6E66  # the sweep's advisory lock on PostgreSQL (migrations use ...6E65)
_CHUNK = 500  # anonymous ids per DELETE, well under any database's limit on bound parameters


def sweep_erased(services: Services, *, actor: str = "attune") -> dict[str, Any] | None:
    """Erase, from every store, what the database holds under erased identifiers, unless the
    sweep has run on it: what was removed (counts), or None when it had run."""
    with services.db.session() as session:
        if session.get(Maintenance, TASK) is not None:
            return None
    with services.db.session() as session:
        if session.get_bind().dialect.name == "postgresql":
            # Workers starting together sweep once: the others wait here, then find the row.
            session.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
        if session.get(Maintenance, TASK) is not None:
            return None
        any_tombstone = session.scalars(select(Tombstone.ref).limit(1)).first() is not None
        users, anonymous = stored_identifiers(session) if any_tombstone else (set(), set())
        found = erased_among(services, session, users, anonymous)
        erased_users, erased_anonymous = sorted(found.user_ids), sorted(found.anonymous_ids)
        detail: dict[str, Any] = {
            "identifiers_checked": len(users) + len(anonymous),
            "users": len(erased_users),
            "anonymous_ids": len(erased_anonymous),
        }
        if erased_users or erased_anonymous:
            detail.update(_erase(services, session, erased_users, erased_anonymous, actor))
        session.add(Maintenance(task=TASK, detail=detail))
    if erased_users or erased_anonymous:
        services.db.compact()
        log.warning(
            "erased what older code had stored after their erasure about %s people and %s "
            "anonymous ids (%s events, %s decisions)",
            len(erased_users), len(erased_anonymous), detail["events"], detail["decisions"],
        )  # fmt: skip
    return detail


def _erase(
    services: Services, session: Session, users: list[str], anonymous: list[str], actor: str
) -> dict[str, int]:
    """Erase these users and anonymous ids, in the caller's transaction (and, before it
    commits, their collaborative factors and chat threads: should the start fail before the
    commit, the sweep runs again and finds the rows); what was removed."""
    # Only now, with something to delete, are writers about people held up, as by an erasure.
    lock_against_writers(session)
    removed: Counter[str] = Counter()
    linked: set[str] = set()
    for user_id in users:
        person = person_of(session, user_id)
        # Ids older code linked to them after their erasure are theirs: erased, tombstoned.
        linked.update(person.anonymous_ids)
        removed.update(asdict(erase_person(session, person)))
        removed["job_requests"] += erase_from_jobs(session, user_id)
        removed["batch_lines"] += erase_from_batches(session, user_id)
        removed["rank_events"] += erase_rank_events(session, user_id)
    add_tombstones(session, [anonymous_ref(services, a) for a in sorted(linked)])
    for start in range(0, len(anonymous), _CHUNK):
        removed.update(asdict(erase_visitors(session, anonymous[start : start + _CHUNK])))
    keys = [*(f"user:{u}" for u in users), *(f"anon:{a}" for a in sorted({*anonymous, *linked}))]
    removed["collaborative_factors"] = erase_factors(services, keys)
    removed["checkpoints"] = sum(erase(keys) for erase in services.erasers)
    audit(
        session,
        actor=actor,
        action="erasure.sweep",
        target="tombstones",
        users=len(users),
        anonymous_ids=len(anonymous),
        **removed,
    )
    return dict(removed)
