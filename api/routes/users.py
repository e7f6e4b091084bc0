"""A person's profile, consent and features; their data export; their erasure."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from agents.privacy.rights import erase_user, erased_among, export_user, subject_ref
from api.auth import AnyCaller
from api.deps import ServicesDep
from api.schemas import UserOut, UserUpdate
from store.access import audit
from store.erasure import lock_for_writing
from store.errors import Conflict, NotFound
from store.events import compute_features
from store.schemas import Identifier, UserRecord
from store.users import Subject, get_user, set_consent, upsert_user, user_exists

router = APIRouter(prefix="/v1", tags=["users"])
UserId = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")


@router.get("/users/{user_id}", response_model=UserOut)
def read_user(services: ServicesDep, caller: AnyCaller, user_id: Identifier = UserId) -> UserOut:
    """A person's profile, consent per purpose and the features computed from their events."""
    caller.may_read_user(user_id)
    return _user(services, user_id)


@router.put("/users/{user_id}", response_model=UserOut)
def write_user(
    body: UserUpdate, services: ServicesDep, caller: AnyCaller, user_id: Identifier = UserId
) -> UserOut:
    """Create or update a profile and set consent for the purposes given (others are kept)."""
    caller.may_read_user(user_id)
    with services.db.session() as session:
        # The tombstone is read under the write lock: an erasure committing meanwhile is
        # waited for and found, not overwritten by a profile that brings the person back.
        lock_for_writing(session, "users")
        if erased_among(services, session, [user_id]).user_ids:
            # Erasure is final: a person who comes back is a new user id, with new consent.
            raise Conflict(f"user_id: user {user_id!r} was erased and cannot be created again")
        if body.profile is not None:
            upsert_user(
                session, UserRecord(user_id=user_id, profile=body.profile, consent=body.consent)
            )
        elif user_exists(session, user_id):
            set_consent(session, user_id, body.consent)
        else:
            raise NotFound(f"user {user_id!r} does not exist; send a profile to create it")
        audit(
            session,
            actor=caller.actor,
            action="user.write",
            target=subject_ref(services, user_id),
            profile=body.profile is not None,
            consent={purpose.value: granted for purpose, granted in body.consent.items()},
        )
    return _user(services, user_id)


@router.get("/users/{user_id}/export")
async def export(services: ServicesDep, caller: AnyCaller, user_id: Identifier = UserId) -> Any:
    """Everything Attune holds about a person: profile, consent, links, events, decisions."""
    caller.may_read_user(user_id)
    return await run_in_threadpool(export_user, services, user_id, actor=caller.actor)


@router.delete("/users/{user_id}")
async def erase(services: ServicesDep, caller: AnyCaller, user_id: Identifier = UserId) -> Any:
    """Erase a person from every store; the response counts what was removed, by store."""
    caller.may_read_user(user_id)
    removed = await run_in_threadpool(erase_user, services, user_id, actor=caller.actor)
    return {"erased": True, "removed": removed}


def _user(services: Any, user_id: str) -> UserOut:
    with services.db.session() as session:
        record = get_user(session, user_id)
        features = compute_features(session, Subject(user_id, None), as_of=datetime.now(UTC))
    summary = asdict(features)
    summary["as_of"] = features.as_of.isoformat()
    summary["purchases"] = [[item, ts.isoformat()] for item, ts in features.purchases]
    return UserOut(
        user_id=user_id, profile=record.profile, consent=record.consent, features=summary
    )
