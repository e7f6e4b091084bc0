"""GET /healthz."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from api.deps import ServicesDep
from api.schemas import HealthOut
from store.errors import StorageFull

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def health(services: ServicesDep) -> HealthOut:
    """Whether each part answers, and which fallbacks are in use."""
    try:
        database = services.db.ping()
        storage = services.db.storage_problem()
    except (SQLAlchemyError, StorageFull, OSError):
        database, storage = False, None
    degraded = list(services.degraded) + ([] if database else ["database: not answering"])
    if storage is not None:
        degraded.append(f"storage: {storage}; writes answer 503 with Retry-After")
    return HealthOut(
        status="degraded" if degraded else "ok",
        database=database,
        storage=database and storage is None,
        vector_backend=services.index.backend,
        indexed_items=services.index.count(),
        embedder=services.embedder.name,
        pii=services.pii.mode,
        writer=services.writer.name,
        policy_version=services.policy.version,
        auth=services.settings.auth,
        degraded=degraded,
    )
