"""GET and PUT /v1/users/{id}: a person's profile, consent and computed features."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from fastapi import APIRouter, Path

from api.deps import ServicesDep
from api.schemas import UserOut, UserUpdate
from store.errors import NotFound
from store.events import compute_features
from store.schemas import Identifier, UserRecord
from store.users import Subject, get_user, set_consent, upsert_user, user_exists

router = APIRouter(prefix="/v1", tags=["users"])
UserId = Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")


@router.get("/users/{user_id}", response_model=UserOut)
def read_user(services: ServicesDep, user_id: Identifier = UserId) -> UserOut:
    """A person's profile, consent per purpose and the features computed from their events."""
    with services.db.session() as session:
        record = get_user(session, user_id)
        features = compute_features(session, Subject(user_id, None), as_of=datetime.now(UTC))
    summary = asdict(features)
    summary["as_of"] = features.as_of.isoformat()
    summary["purchases"] = [[item, ts.isoformat()] for item, ts in features.purchases]
    return UserOut(
        user_id=user_id, profile=record.profile, consent=record.consent, features=summary
    )


@router.put("/users/{user_id}", response_model=UserOut)
def write_user(body: UserUpdate, services: ServicesDep, user_id: Identifier = UserId) -> UserOut:
    """Create or update a profile and set consent for the purposes given (others are kept)."""
    with services.db.session() as session:
        if body.profile is not None:
            upsert_user(
                session, UserRecord(user_id=user_id, profile=body.profile, consent=body.consent)
            )
        elif user_exists(session, user_id):
            set_consent(session, user_id, body.consent)
        else:
            raise NotFound(f"user {user_id!r} does not exist; send a profile to create it")
    return read_user(services, user_id)
