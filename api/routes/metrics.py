"""GET /metrics: the Prometheus exposition of this process (of all workers in multiprocess mode)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from agents.metrics import CONTENT_TYPE, Readings
from agents.services import Services
from api.auth import MetricsCaller
from api.deps import ServicesDep
from store.jobs import count_active

router = APIRouter(tags=["metrics"])

EXPOSITION: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text format; every label from a fixed vocabulary, no PII.",
        "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=Response, responses=EXPOSITION)
async def metrics(services: ServicesDep, caller: MetricsCaller) -> Response:
    """Request latency, decisions, fallbacks, LLM calls, rewards, events and copy jobs."""
    body = await run_in_threadpool(_scrape, services)
    return Response(body, media_type=CONTENT_TYPE)


def _scrape(services: Services) -> bytes:
    def job_counts() -> dict[str, int]:
        with services.db.session() as session:
            return count_active(session)

    def breaker_state() -> str | None:
        return services.llm.breaker.state if services.llm is not None else None

    return services.metrics.scrape(Readings(job_counts=job_counts, breaker_state=breaker_state))
