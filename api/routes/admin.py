"""Administration: API keys and the audit log (scope `admin`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AdminCaller
from api.deps import ServicesDep
from store.access import SCOPES, audit, audit_entries, create_key, list_keys, revoke_key
from store.schemas import Identifier

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
    """Create a key; the response holds the plain key, shown this once only."""
    unknown = [s for s in body.scopes if s not in SCOPES]
    if unknown:
        raise HTTPException(422, f"scopes: unknown {unknown}; use some of {', '.join(SCOPES)}")
    with services.db.session() as session:
        plain, info = create_key(
            session, name=body.name, scopes=body.scopes, subject_user_id=body.subject_user_id
        )
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
