"""Tombstones of erased people: keyed hashes of their user id and anonymous ids.

The store only keeps and looks up the hashes; the key, and so the hashing, belongs to the caller
(`agents.privacy.rights`), as for the audit log.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from store.models import Tombstone

_CHUNK = 500  # refs per query, well under any database's limit on bound parameters


def add_tombstones(session: Session, refs: Iterable[str]) -> None:
    """Record these refs as erased (in the caller's transaction); known refs are kept as they are."""
    wanted = set(refs)
    known = set(session.scalars(select(Tombstone.ref).where(Tombstone.ref.in_(wanted))))
    session.add_all(Tombstone(ref=ref) for ref in sorted(wanted - known))
    session.flush()


def tombstoned(session: Session | Connection, refs: Iterable[str]) -> set[str]:
    """Which of these refs name an erased identifier."""
    wanted = sorted(set(refs))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found.update(session.scalars(select(Tombstone.ref).where(Tombstone.ref.in_(chunk))))
    return found
