"""API keys and the audit log.

A key reads `att_<key id>_<secret>`. Only the SHA-256 of the secret is stored: the secret has 256
bits of randomness, so a fast hash is enough (a slow password hash protects guessable secrets,
which these are not), and a lookup by key id costs one row. The plain key is shown once, when
it is created.

Delegation: a key bound to one person acts for that person only, and administration (keys, the
audit log, the catalog, everyone's data) is for no one person, so `admin` is never bound: such a
key is refused when made, and one made before this rule is not admin (`effective_scopes`). A key
mints keys only within what it holds: scopes it has, for the subject it has (a bound key, none
but its own).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from store.errors import NotFound
from store.models import ApiKey, AuditEntry, utcnow

SCOPES = ("decide", "chat", "copy", "events", "admin", "eval", "metrics", "reports")
# Scopes a key bound to one user never holds: administration, the service-wide metrics and
# reports (drift, experiments).
UNBINDABLE = frozenset({"admin", "metrics", "reports"})
PREFIX = "att"


class KeyRefused(ValueError):
    """A key that may not be made, with the field at fault; `beyond_issuer` when the issuing
    key asked for more than it holds (a permission problem, not a malformed request)."""

    def __init__(self, field: str, problem: str, *, beyond_issuer: bool = False) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.beyond_issuer = beyond_issuer


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    subject_user_id: str | None
    created_at: datetime
    revoked: bool

    @property
    def effective_scopes(self) -> tuple[str, ...]:
        """The scopes this key may use: a bound key never administers, whatever it was given."""
        if self.subject_user_id is None:
            return self.scopes
        return tuple(s for s in self.scopes if s not in UNBINDABLE)

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
    session: Session,
    *,
    name: str,
    scopes: Iterable[str],
    subject_user_id: str | None = None,
    issuer: KeyInfo | None = None,
) -> tuple[str, KeyInfo]:
    """A new key: (the plain key, to show once; what is stored about it).

    `issuer` is the key asking for it (None: the operator, through the command line or with
    authentication off). Raises KeyRefused for unknown scopes, a bound `admin`, or a key wider
    than its issuer.
    """
    scopes = tuple(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise KeyRefused("scopes", f"must be some of {', '.join(SCOPES)}; got {list(scopes)}")
    check_delegation(scopes, subject_user_id, issuer)
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


def check_delegation(
    scopes: tuple[str, ...], subject_user_id: str | None, issuer: KeyInfo | None
) -> None:
    """Raise KeyRefused unless a key with `scopes` for `subject_user_id` may be made by `issuer`."""
    bound_admin = sorted(UNBINDABLE.intersection(scopes))
    if subject_user_id is not None and bound_admin:
        raise KeyRefused(
            "scopes",
            f"{', '.join(repr(s) for s in bound_admin)} cannot be given to a key bound to a user "
            "(a bound key acts for one person; administration is for everyone): drop it, or "
            "make an unbound key",
        )
    if issuer is None:
        return
    beyond = [s for s in scopes if s not in issuer.effective_scopes]
    if beyond:
        raise KeyRefused(
            "scopes",
            f"a key can only grant scopes it holds; this key lacks {beyond} "
            f"(it has: {', '.join(issuer.effective_scopes)})",
            beyond_issuer=True,
        )
    if issuer.subject_user_id is not None and subject_user_id != issuer.subject_user_id:
        raise KeyRefused(
            "subject_user_id",
            f"a key bound to user {issuer.subject_user_id!r} can only make keys bound to them",
            beyond_issuer=True,
        )


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


_KEY_BY_ID = select(ApiKey.__table__).where(ApiKey.key_id == bindparam("key_id"))


def read_key(connection: Connection, presented: str) -> KeyInfo | None:
    """`verify_key` on a plain connection: one SELECT by primary key through SQLAlchemy Core,
    without an ORM session (a third of the Python calls, what the API checks on every request).
    Nothing is cached: the row is read at each call, so a key revoked by any process is refused
    by the next call of every process."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    row = connection.execute(_KEY_BY_ID, {"key_id": parts[1]}).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _digest(parts[2])):
        return None
    return _info(row)  # type: ignore[arg-type]  # a Core row has the same attributes


# The columns `check_key` unpacks, in this order.
_KEY_ROW = select(
    ApiKey.key_id,
    ApiKey.secret_hash,
    ApiKey.name,
    ApiKey.scopes,
    ApiKey.subject_user_id,
    ApiKey.created_at,
    ApiKey.revoked_at,
).where(ApiKey.key_id == bindparam("key_id"))


@dataclass
class _KeyRead:
    """`_KEY_ROW` as one dialect's SQL text, and how to convert each column the driver returns
    to what SQLAlchemy would return (worked out once, from the first result's description)."""

    sql: str
    positional: bool
    converters: tuple[Callable[[Any], Any] | None, ...] | None = None


_KEY_READS: dict[str, _KeyRead] = {}


def _key_read(dialect: Dialect) -> _KeyRead:
    found = _KEY_READS.get(dialect.name)
    if found is None:
        compiled = _KEY_ROW.compile(dialect=dialect)
        found = _KEY_READS.setdefault(
            dialect.name, _KeyRead(compiled.string, bool(compiled.positiontup))
        )
    return found


def check_key(engine: Engine, presented: str) -> KeyInfo | None:
    """`read_key` on a pooled DBAPI connection: the same SELECT by primary key, as the
    dialect's SQL text compiled once, on a driver cursor. The API runs it on every request with
    keys on, where a SQLAlchemy `Connection` around one SELECT (its setup, events, result
    metadata and reset) cost four times the read itself. Nothing is cached: a key revoked by
    any process is refused by the next call of every process. The pool checks the connection
    out and in as for any other use (PostgreSQL's pre-ping on checkout, a rollback on return)."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    dialect = engine.dialect
    read = _key_read(dialect)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(read.sql, (parts[1],) if read.positional else {"key_id": parts[1]})
            raw = cursor.fetchone()
            if raw is not None and read.converters is None:
                read.converters = tuple(
                    column.type.dialect_impl(dialect).result_processor(dialect, described[1])
                    for column, described in zip(
                        _KEY_ROW.selected_columns, cursor.description, strict=True
                    )
                )
        finally:
            cursor.close()
    finally:
        connection.close()  # back to the pool
    if raw is None or read.converters is None:
        return None
    key_id, secret_hash, name, scopes, subject, created_at, revoked_at = (
        value if convert is None else convert(value)
        for value, convert in zip(raw, read.converters, strict=True)
    )
    if revoked_at is not None or not hmac.compare_digest(secret_hash, _digest(parts[2])):
        return None
    return KeyInfo(key_id, name, tuple(scopes), subject, created_at, False)


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
