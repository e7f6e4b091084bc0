"""POST /v1/recommendations/batch: recommendations for a list of people, as a durable job."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from agents.batch import KIND, BatchRequest, stored_batch
from agents.copy.graph import new_campaign_id
from agents.services import Services
from api.auth import Caller, CopyCaller
from api.deps import ServicesDep
from api.schemas import BatchAccepted, BatchRecommendIn
from store.jobs import create_job

router = APIRouter(prefix="/v1", tags=["batch"])


@router.post("/recommendations/batch", response_model=BatchAccepted, status_code=202)
async def post_batch_recommendations(
    body: BatchRecommendIn,
    services: ServicesDep,
    caller: CopyCaller,
    request: Request,
) -> BatchAccepted:
    """Queue recommendations for each person; one JSON line per person at the results URL."""
    if caller.bound_user is not None:
        raise HTTPException(403, "an API key bound to one user cannot run a batch over people")
    batch = BatchRequest(user_ids=body.user_ids, channel=body.channel, k=body.k, query=body.query)
    job_id = await run_in_threadpool(_queue, services, batch, caller)
    runner = request.app.state.copy_jobs
    if runner is not None:
        runner.wake()
    return BatchAccepted(
        job_id=job_id,
        status="queued",
        people=len(body.user_ids),
        status_url=f"/v1/jobs/{job_id}",
        results_url=f"/v1/jobs/{job_id}/results",
    )


def _queue(services: Services, batch: BatchRequest, caller: Caller) -> str:
    job_id = new_campaign_id()
    with services.db.session() as session:
        create_job(
            session,
            job_id,
            kind=KIND,
            request=stored_batch(services, batch),
            created_by=caller.actor,
            worker=None,
            segments_total=1,
            members_total=len(batch.user_ids),
        )
    return job_id
