"""A person's data across every store: export and erasure, audited without their identifiers.

The database rows go through `store.erasure`; the collaborative model's user factors are removed
from the model file; chat checkpoints are erased by every registered `eraser` (the chat graph
registers its own). Audit entries name the person by a keyed hash (HMAC-SHA-256 with a secret
kept in the home folder), so the audit log can confirm that a given id was erased without
holding the id itself. Erasure also leaves tombstones, by the same keyed hash, of the user id and
its anonymous ids: seeding, event ingest, profile writes, decisions and chat turns refuse them
afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from agents.services import Services, collab_folder
from retrieval.collab import CollabModel
from store.access import audit
from store.batch import erase_from_batches, export_batch_lines
from store.erasure import erase_person, export_person, find_person, lock_against_writers
from store.errors import Conflict
from store.jobs import erase_from_jobs
from store.rank import erase_rank_events, export_rank_events
from store.tombstones import add_tombstones, tombstoned


def subject_ref(services: Services, user_id: str) -> str:
    """A stable pseudonym of a user for the audit log: `user#<16 hex>`."""
    return "user#" + _keyed(_audit_key(services), user_id)


def anonymous_ref(services: Services, anonymous_id: str) -> str:
    """A stable pseudonym of an anonymous id, for tombstones: `anon#<16 hex>`."""
    return "anon#" + _keyed(_audit_key(services), anonymous_id)


def tombstone_ref(services: Services, user_id: str | None) -> str | None:
    """The key erasure leaves the user's tombstone under (`subject_ref`); None for no user."""
    return None if user_id is None else subject_ref(services, user_id)


def _audit_key(services: Services) -> bytes:
    path = services.settings.home / "audit.key"
    key = _KEYS.get(path)
    if key is not None:
        return key
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(_KEY_BYTES))
    key = bytes.fromhex(path.read_text().strip())
    if len(key) == _KEY_BYTES:  # not a file another caller has created but not yet written
        _KEYS[path] = key
    return key


# The audit key of each home, read once: a visitor's decision hashes their id with it
# (`anonymous_ref`), and the file never changes (tombstones could no longer be matched).
_KEYS: dict[Path, bytes] = {}
_KEY_BYTES = 32


def _keyed(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class ErasedIds:
    """Which of the identifiers asked about belong to erased people (see `erased_among`)."""

    user_ids: frozenset[str]
    anonymous_ids: frozenset[str]

    def reason(self, user_id: str | None, anonymous_id: str | None) -> str | None:
        """Why an event or record with these identifiers may not be stored, if it may not."""
        if user_id is not None and user_id in self.user_ids:
            return "user_id: this person was erased; nothing about them is stored again"
        if anonymous_id is not None and anonymous_id in self.anonymous_ids:
            return "anonymous_id: it belonged to an erased person; use a new anonymous id"
        return None


def erased_among(
    services: Services,
    session: Session | Connection,
    user_ids: Iterable[str | None] = (),
    anonymous_ids: Iterable[str | None] = (),
) -> ErasedIds:
    """The user ids and anonymous ids among these that erasure left a tombstone for."""
    key = _audit_key(services)
    users = {"user#" + _keyed(key, u): u for u in set(user_ids) if u is not None}
    anons = {"anon#" + _keyed(key, a): a for a in set(anonymous_ids) if a is not None}
    dead = tombstoned(session, [*users, *anons])
    return ErasedIds(
        frozenset(users[ref] for ref in dead if ref in users),
        frozenset(anons[ref] for ref in dead if ref in anons),
    )


def refuse_erased(
    services: Services,
    session: Session | Connection,
    user_id: str | None,
    anonymous_id: str | None,
) -> None:
    """A Conflict for a request about an erased person (their user id, or an anonymous id that
    was theirs) that would store them again: a decision's record, a chat thread — as their
    events would be (`POST /v1/events` refuses those)."""
    reason = erased_among(services, session, [user_id], [anonymous_id]).reason(
        user_id, anonymous_id
    )
    if reason is not None:
        raise Conflict(reason)


def export_user(services: Services, user_id: str, *, actor: str) -> dict[str, Any]:
    with services.db.session() as session:
        person = find_person(session, user_id)
        data = export_person(session, person)
        data["rank_events"] = export_rank_events(session, user_id)
        data["batch_recommendations"] = export_batch_lines(session, user_id)
        audit(session, actor=actor, action="user.export", target=subject_ref(services, user_id))
    model = services.tools.collab
    data["collaborative_factors"] = {
        key: vector.tolist()
        for key in person.subject_keys
        if model is not None and (vector := model.user_vector(key)) is not None
    }
    return data


def erase_user(services: Services, user_id: str, *, actor: str) -> dict[str, Any]:
    """Erase the person from every store; returns what was removed, by store."""
    with services.db.session() as session:
        # Locked before the person is read: a link, decision or event stored while the erasure
        # runs is either in what it reads, or waits for it (`store.erasure.erase_person`).
        lock_against_writers(session)
        person = find_person(session, user_id)
        erased = erase_person(session, person)
        # What keeps them erased: no later load (seed, events, profile writes) brings them back.
        add_tombstones(
            session,
            [
                subject_ref(services, user_id),
                *(anonymous_ref(services, a) for a in person.anonymous_ids),
            ],
        )
        jobs = erase_from_jobs(session, user_id)  # copy audiences that named them by id
        erase_from_batches(session, user_id)  # their lines of batch recommendation results
        erase_rank_events(session, user_id)  # ranks made for them, and what they taught
        audit(
            session,
            actor=actor,
            action="user.erase",
            target=subject_ref(services, user_id),
            **asdict(erased),
            job_requests=jobs,
        )
    services.db.compact()
    factors = erase_factors(services, person.subject_keys)
    checkpoints = sum(eraser(person.subject_keys) for eraser in services.erasers)
    return {
        **asdict(erased),
        "job_requests": jobs,
        "collaborative_factors": factors,
        "checkpoints": checkpoints,
    }


def erase_factors(services: Services, keys: list[str]) -> int:
    folder = collab_folder(services.settings)
    model = CollabModel.load(folder)
    if model is None:
        return 0
    trimmed, removed = model.without(keys)
    if removed:
        trimmed.save(folder)
        services.reload_collab()
    return removed
