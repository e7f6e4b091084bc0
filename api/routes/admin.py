"""Administration: API keys, identity merges and the audit log (scope `admin`, never bound)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from agents.privacy.rights import subject_ref
from api.auth import AdminCaller
from api.deps import ServicesDep
from store.access import (
    SCOPES,
    KeyRefused,
    audit,
    audit_entries,
    create_key,
    list_keys,
    revoke_key,
)
from store.errors import Conflict
from store.schemas import Identifier
from store.users import link_identity

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, description=f"Some of: {', '.join(SCOPES)}.")
    subject_user_id: Identifier | None = Field(
        None, description="Bind the key to this user: it may act for them only."
    )


@router.post("/keys", status_code=201)
def post_key(body: KeyIn, services: ServicesDep, caller: AdminCaller) -> dict[str, Any]:
    """Create a key, never wider than the caller's own; the plain key is shown this once only."""
    unknown = [s for s in body.scopes if s not in SCOPES]
    if unknown:
        raise HTTPException(422, f"scopes: unknown {unknown}; use some of {', '.join(SCOPES)}")
    with services.db.session() as session:
        try:
            plain, info = create_key(
                session,
                name=body.name,
                scopes=body.scopes,
                subject_user_id=body.subject_user_id,
                issuer=caller.key,
            )
        except KeyRefused as refused:
            raise HTTPException(403 if refused.beyond_issuer else 422, str(refused)) from refused
        audit(session, actor=caller.actor, action="key.create", target=f"key:{info.key_id}",
              scopes=list(info.scopes), bound=info.subject_user_id is not None)  # fmt: skip
    return {"key": plain, **info.to_json()}


@router.get("/keys")
def get_keys(services: ServicesDep, caller: AdminCaller) -> list[dict[str, Any]]:
    with services.db.session() as session:
        return [info.to_json() for info in list_keys(session)]


@router.delete("/keys/{key_id}")
def delete_key(key_id: str, services: ServicesDep, caller: AdminCaller) -> dict[str, Any]:
    """Revoke a key: it stops working at once, for every worker."""
    with services.db.session() as session:
        info = revoke_key(session, key_id)
        audit(session, actor=caller.actor, action="key.revoke", target=f"key:{key_id}")
    return info.to_json()


@router.get("/audit")
def get_audit(
    services: ServicesDep, caller: AdminCaller, limit: int = Query(100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """The newest audit entries first."""
    with services.db.session() as session:
        return audit_entries(session, limit=limit)


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["anonymous", "device"]
    external_id: Identifier
    user_id: Identifier
    move: bool = Field(
        False,
        description="Move the id from the person it is linked to now, with its whole history "
        "(a merge). Without it, a link to someone else is a 409.",
    )


class LinkOut(BaseModel):
    kind: str
    external_id: str
    user_id: str
    outcome: Literal["created", "unchanged", "moved"]


@router.post("/links", response_model=LinkOut)
def post_link(body: LinkIn, services: ServicesDep, caller: AdminCaller) -> LinkOut:
    """Link an anonymous or device id to a user; `move` merges it away from its current owner."""
    with services.db.session() as session:
        result = link_identity(session, body.kind, body.external_id, body.user_id, move=body.move)
        if not result.linked:
            raise Conflict(
                'external_id: linked to another user; send "move": true to move it, with '
                "its history, to this user"
            )
        audit(
            session,
            actor=caller.actor,
            action=f"link.{result.outcome.value}",
            target=subject_ref(services, body.user_id),
            kind=body.kind,
            previous=(
                subject_ref(services, result.previous_user_id) if result.previous_user_id else None
            ),
        )
    return LinkOut(
        kind=result.kind,
        external_id=result.external_id,
        user_id=result.user_id,
        outcome=result.outcome.value,
    )
