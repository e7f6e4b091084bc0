"""API keys and the audit log.

A key reads `att_<key id>_<secret>`. Only the SHA-256 of the secret is stored: the secret has 256
bits of randomness, so a fast hash is enough (a slow password hash protects guessable secrets,
which these are not), and a lookup by key id costs one row. The plain key is shown once, when
it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.errors import NotFound
from store.models import ApiKey, AuditEntry, utcnow

SCOPES = ("decide", "chat", "copy", "events", "admin", "eval")
PREFIX = "att"


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    subject_user_id: str | None
    created_at: datetime
    revoked: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "subject_user_id": self.subject_user_id,
            "created_at": self.created_at.isoformat(),
            "revoked": self.revoked,
        }


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        row.key_id, row.name, tuple(row.scopes), row.subject_user_id, row.created_at,
        row.revoked_at is not None,
    )  # fmt: skip


def create_key(
    session: Session, *, name: str, scopes: Iterable[str], subject_user_id: str | None = None
) -> tuple[str, KeyInfo]:
    """A new key: (the plain key, to show once; what is stored about it)."""
    scopes = tuple(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {list(scopes)}")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = ApiKey(
        key_id=key_id,
        secret_hash=_digest(secret),
        name=name,
        scopes=list(scopes),
        subject_user_id=subject_user_id,
    )
    session.add(row)
    session.flush()
    return f"{PREFIX}_{key_id}_{secret}", _info(row)


def verify_key(session: Session, presented: str) -> KeyInfo | None:
    """The key's record if `presented` is a valid, unrevoked key; None otherwise."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    row = session.get(ApiKey, parts[1])
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _digest(parts[2])):
        return None
    return _info(row)


def revoke_key(session: Session, key_id: str) -> KeyInfo:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"API key {key_id!r} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return _info(row)


def list_keys(session: Session) -> list[KeyInfo]:
    return [_info(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at))]


def audit(session: Session, *, actor: str, action: str, target: str, **detail: Any) -> None:
    """Append one entry to the audit log, in the caller's transaction."""
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))


def audit_entries(session: Session, *, limit: int = 100) -> list[dict[str, Any]]:
    rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
    return [
        {
            "id": r.id,
            "at": r.at.isoformat(),
            "actor": r.actor,
            "action": r.action,
            "target": r.target,
            "detail": r.detail,
        }
        for r in rows
    ]
