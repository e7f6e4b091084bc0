"""Users, their profiles and consent, and the identity links that merge anonymous ids into them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.errors import Conflict, NotFound
from store.models import Consent, IdentityLink, User
from store.schemas import Profile, Purpose, UserRecord
from store.sequences import forget_sequences


@dataclass(frozen=True)
class Subject:
    """Who a request is about: a known user, or an anonymous visitor not linked to one yet."""

    user_id: str | None
    anonymous_id: str | None

    @property
    def key(self) -> str:
        """A stable key for caps and logs: the user id, else the anonymous id, prefixed."""
        return f"user:{self.user_id}" if self.user_id else f"anon:{self.anonymous_id}"


def upsert_user(session: Session, record: UserRecord) -> None:
    """Create or replace a user's profile; consent purposes given in `record` are set, others kept."""
    user = session.get(User, record.user_id)
    profile = record.profile.model_dump(mode="json")
    if user is None:
        session.add(User(user_id=record.user_id, profile=profile))
    else:
        user.profile = profile
    set_consent(session, record.user_id, record.consent)


def set_consent(session: Session, user_id: str, consent: dict[Purpose, bool]) -> None:
    existing = {
        row.purpose: row
        for row in session.scalars(select(Consent).where(Consent.user_id == user_id))
    }
    for purpose, granted in consent.items():
        row = existing.get(purpose.value)
        if row is None:
            session.add(Consent(user_id=user_id, purpose=purpose.value, granted=granted))
        else:
            row.granted = granted


def get_user(session: Session, user_id: str) -> UserRecord:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} does not exist")
    return UserRecord(
        user_id=user.user_id,
        profile=Profile.model_validate(user.profile),
        consent=get_consent(session, user_id),
    )


def get_consent(session: Session, user_id: str) -> dict[Purpose, bool]:
    """Consent per purpose; a purpose never answered counts as not granted."""
    rows = session.scalars(select(Consent).where(Consent.user_id == user_id))
    granted = {Purpose(row.purpose): row.granted for row in rows}
    return {purpose: granted.get(purpose, False) for purpose in Purpose}


def user_exists(session: Session, user_id: str) -> bool:
    return session.get(User, user_id) is not None


class LinkOutcome(StrEnum):
    created = "created"  # the id was unlinked; it now belongs to the user
    unchanged = "unchanged"  # it already belonged to the user
    conflict = "conflict"  # it belongs to someone else, and still does
    moved = "moved"  # it belonged to someone else and was moved: an explicit merge


@dataclass(frozen=True)
class LinkResult:
    """What `link_identity` did. `previous_user_id` is for the audit log of a merge; never
    show it to a caller bound to one person."""

    outcome: LinkOutcome
    kind: str
    external_id: str
    user_id: str
    previous_user_id: str | None

    @property
    def linked(self) -> bool:
        return self.outcome is not LinkOutcome.conflict


def link_owner(session: Session, kind: str, external_id: str) -> str | None:
    """The user an anonymous or device id is linked to, or None if it is unlinked."""
    link = session.get(IdentityLink, (kind, external_id))
    return link.user_id if link is not None else None


def link_identity(
    session: Session, kind: str, external_id: str, user_id: str, *, move: bool = False
) -> LinkResult:
    """Link `external_id` (an anonymous or device id) to `user_id` if it is unlinked or already
    theirs. A link to another person is a conflict and is left as it is, unless `move` is set:
    moving a link moves that id's whole history to `user_id`, so only an explicit merge by an
    administrator may ask for it (never an event)."""
    link = session.get(IdentityLink, (kind, external_id))
    if link is None:
        session.add(IdentityLink(kind=kind, external_id=external_id, user_id=user_id))
        session.flush()  # later lookups in this transaction (the same batch) see the link
        if kind == "anonymous":
            # The user's features now count the anonymous id's history: rebuilt when next read.
            from store.features import forget_features  # store.features reads links from here

            forget_features(session, [f"user:{user_id}"])
            forget_sequences(session, [f"user:{user_id}"])
        return LinkResult(LinkOutcome.created, kind, external_id, user_id, None)
    previous = link.user_id
    if previous == user_id:
        return LinkResult(LinkOutcome.unchanged, kind, external_id, user_id, previous)
    if not move:
        return LinkResult(LinkOutcome.conflict, kind, external_id, user_id, previous)
    link.user_id = user_id
    if kind == "anonymous":
        # Both people's features change with the history that moved: rebuilt when next read.
        from store.features import forget_features  # store.features reads links from here

        forget_features(session, [f"user:{user_id}", f"user:{previous}"])
        forget_sequences(session, [f"user:{user_id}", f"user:{previous}"])
    return LinkResult(LinkOutcome.moved, kind, external_id, user_id, previous)


LINKED_ELSEWHERE = "anonymous_id: linked to another user; send it without user_id, or with theirs"


def resolve_subject(session: Session, user_id: str | None, anonymous_id: str | None) -> Subject:
    """A user id wins; an anonymous id linked to a user becomes that user; else it stays anonymous.

    A user id together with an anonymous id linked to another person is a Conflict: answering
    it would mix two people's histories in one decision.
    """
    if user_id is not None:
        if anonymous_id is not None and link_owner(session, "anonymous", anonymous_id) not in (
            None,
            user_id,
        ):
            raise Conflict(LINKED_ELSEWHERE)
        return Subject(user_id=user_id, anonymous_id=anonymous_id)
    if anonymous_id is not None:
        link = session.get(IdentityLink, ("anonymous", anonymous_id))
        if link is not None:
            return Subject(user_id=link.user_id, anonymous_id=anonymous_id)
    return Subject(user_id=None, anonymous_id=anonymous_id)


def linked_anonymous_ids(session: Session, user_id: str) -> list[str]:
    return list(
        session.scalars(
            select(IdentityLink.external_id).where(
                IdentityLink.user_id == user_id, IdentityLink.kind == "anonymous"
            )
        )
    )


def consenting_users(session: Session, purpose: str | None) -> set[str] | None:
    """The users who granted `purpose`; None when no purpose is asked (everyone counts)."""
    if not purpose:
        return None
    return set(
        session.scalars(select(Consent.user_id).where(Consent.purpose == purpose, Consent.granted))
    )


def anonymous_owners(session: Session) -> dict[str, str]:
    """Every linked anonymous id with the user it belongs to."""
    return dict(
        session.execute(
            select(IdentityLink.external_id, IdentityLink.user_id).where(
                IdentityLink.kind == "anonymous"
            )
        ).all()
    )


def count_users(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0
