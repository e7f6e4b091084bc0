"""GET /healthz."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from api.deps import ServicesDep
from api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def health(services: ServicesDep) -> HealthOut:
    """Whether each part answers, and which fallbacks are in use."""
    try:
        database = services.db.ping()
    except SQLAlchemyError:
        database = False
    degraded = list(services.degraded) + ([] if database else ["database: not answering"])
    return HealthOut(
        status="degraded" if degraded else "ok",
        database=database,
        vector_backend=services.index.backend,
        indexed_items=services.index.count(),
        embedder=services.embedder.name,
        pii=services.pii.mode,
        writer=services.writer.name,
        policy_version=services.policy.version,
        auth=services.settings.auth,
        degraded=degraded,
    )
