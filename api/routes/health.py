"""GET /healthz."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import SQLAlchemyError

from api.deps import ServicesDep
from api.schemas import HealthOut
from store.catalog import count_items
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
    indexed = services.index.count()
    try:
        with services.db.session() as session:
            stored = count_items(session)
    except (SQLAlchemyError, StorageFull, OSError):
        stored = 0  # already reported as the database not answering
    if indexed < stored:
        degraded.append(
            f"vectors: the index holds {indexed} of {stored} stored items; retrieval falls "
            "back to popularity (run 'attune reindex')"
        )
    if services.llm is not None and services.llm.breaker.state != "closed":
        degraded.append(
            f"llm: circuit breaker {services.llm.breaker.state} after repeated failures of the "
            "model server; the offline writer and plan answer meanwhile"
        )
    if storage is not None:
        degraded.append(f"storage: {storage}; writes answer 503 with Retry-After")
    degraded += services.drift.degraded()  # thresholds the latest drift check found crossed
    return HealthOut(
        status="degraded" if degraded else "ok",
        database=database,
        storage=database and storage is None,
        vector_backend=services.index.backend,
        indexed_items=indexed,
        embedder=services.embedder.name,
        pii=services.pii.mode,
        writer=services.writer.name,
        policy_version=services.policy.version,
        auth=services.settings.auth,
        degraded=degraded,
    )
