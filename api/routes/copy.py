"""POST /v1/copy: copy variants for marketers, per segment; and the variants as bandit arms."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from agents.copy.audience import audience_size
from agents.copy.campaign import Arm, register_variant, reward, save_result, serve
from agents.copy.graph import CopyRequestError, generate_copy, new_campaign_id, validate_request
from agents.copy.jobs import ASYNC_MEMBERS, JobRunner, minimizer, stored_request
from agents.copy.state import CopyRequest, CopyResult
from agents.services import Services
from api.auth import Caller, CopyCaller
from api.deps import ServicesDep
from api.schemas import (
    CopyAccepted,
    CopyFeedbackIn,
    CopyFeedbackOut,
    CopyServeIn,
    CopyServeOut,
    VariantArmOut,
)
from store.decisions import get_decision
from store.jobs import create_job, finish_job

router = APIRouter(prefix="/v1", tags=["copy"])
CampaignId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]


async def get_runner(request: Request) -> JobRunner | None:
    """The job runner of this API process (None with ATTUNE_JOBS_IN_API=false: `attune worker`
    processes run the jobs). A coroutine, so that FastAPI does not run it in its threadpool."""
    return getattr(request.app.state, "copy_jobs", None)


RunnerDep = Annotated[JobRunner | None, Depends(get_runner)]


@router.post(
    "/copy",
    response_model=CopyResult | CopyAccepted,
    responses={202: {"model": CopyAccepted, "description": "Accepted as a background job."}},
)
async def post_copy(
    body: CopyRequest,
    response: Response,
    services: ServicesDep,
    caller: CopyCaller,
    runner: RunnerDep,
) -> CopyResult | CopyAccepted:
    """Write checked, explained copy variants for each segment of an audience (large ones: 202 and a job)."""
    if caller.bound_user is not None:
        raise HTTPException(403, "an API key bound to one user cannot write copy for an audience")
    try:
        await run_in_threadpool(validate_request, services, body)
    except CopyRequestError as error:
        raise RequestValidationError(
            [
                {"loc": ("body", *p.loc), "msg": p.problem, "type": "value_error"}
                for p in error.problems
            ]
        ) from error
    segments = body.audience.resolved()
    size = await run_in_threadpool(audience_size, services.db, segments)
    campaign_id = new_campaign_id()
    if body.run_async or size > ASYNC_MEMBERS:
        await run_in_threadpool(_queue, services, body, campaign_id, caller, size, runner)
        response.status_code = 202
        return CopyAccepted(
            job_id=campaign_id,
            status="queued",
            members_total=size,
            status_url=f"/v1/jobs/{campaign_id}",
            results_url=f"/v1/jobs/{campaign_id}/results",
        )
    return await run_in_threadpool(_inline, services, body, campaign_id, caller, size)


def _queue(
    services: Services,
    body: CopyRequest,
    campaign_id: str,
    caller: Caller,
    size: int,
    runner: JobRunner | None,
) -> None:
    with services.db.session() as session:
        create_job(
            session,
            campaign_id,
            kind="copy",
            request=stored_request(services, body),
            created_by=caller.actor,
            worker=None,
            segments_total=len(body.audience.resolved()),
            members_total=size,
        )
    if runner is not None:
        runner.submit(campaign_id, body)


def _inline(
    services: Services, body: CopyRequest, campaign_id: str, caller: Caller, size: int
) -> CopyResult:
    """A small audience, written in the request; stored as a done job, so its variants can be
    downloaded and registered by the same id."""
    result = generate_copy(services, body, campaign_id=campaign_id)
    summary = save_result(
        services, result, register=body.register_arms, minimizer=minimizer(services, body)
    )
    with services.db.session() as session:
        create_job(
            session,
            campaign_id,
            kind="copy",
            request=stored_request(services, body),
            created_by=caller.actor,
            worker=None,
            segments_total=len(result.segments),
            members_total=size,
            status="running",
        )
        finish_job(session, campaign_id, summary=summary)
    return result


@router.post("/copy/{campaign_id}/variants/{variant_id}/register", response_model=VariantArmOut)
def post_register(
    campaign_id: CampaignId,
    services: ServicesDep,
    caller: CopyCaller,
    variant_id: str = Path(min_length=1, max_length=128),
) -> VariantArmOut:
    """Register a variant as a bandit arm of its segment, so feedback can pick the winner."""
    if caller.bound_user is not None:
        raise HTTPException(403, "an API key bound to one user cannot register a campaign's arms")
    arm, new = register_variant(services, campaign_id, variant_id)
    return _arm_out(arm, registered_now=new)


@router.post("/copy/{campaign_id}/serve", response_model=CopyServeOut)
def post_serve(
    campaign_id: CampaignId, body: CopyServeIn, services: ServicesDep, caller: CopyCaller
) -> CopyServeOut:
    """The variant to show this person: Thompson sampling over their segment's arms, logged."""
    caller.act_for(body.user_id, what="serving copy to this user")
    served = serve(services, campaign_id, body.user_id, segment=body.segment)
    variant = served.variant
    return CopyServeOut(
        decision_id=served.decision_id,
        campaign_id=campaign_id,
        segment=served.segment,
        variant_id=served.choice.variant_id,
        subject=variant.get("subject"),
        text=variant["text"],
        item_ids=variant["item_ids"],
        offer_id=variant.get("offer_id"),
        propensity=served.choice.propensity,
        probabilities=served.choice.probabilities,
    )


@router.post("/copy/{campaign_id}/feedback", response_model=CopyFeedbackOut)
def post_copy_feedback(
    campaign_id: CampaignId, body: CopyFeedbackIn, services: ServicesDep, caller: CopyCaller
) -> CopyFeedbackOut:
    """Reward a served variant (once per decision); 404 for a decision this campaign did not serve."""
    if caller.bound_user is not None:
        with services.db.session() as session:
            caller.act_for(get_decision(session, body.decision_id).user_id, what="this decision")
    arm = reward(services, campaign_id, body.decision_id, body.reward)
    return CopyFeedbackOut(
        decision_id=body.decision_id, reward=body.reward, arm=_arm_out(arm, registered_now=False)
    )


def _arm_out(arm: Arm, *, registered_now: bool) -> VariantArmOut:
    return VariantArmOut(
        campaign_id=arm.campaign_id,
        segment=arm.segment,
        variant_id=arm.variant_id,
        registered_now=registered_now,
        alpha=arm.alpha,
        beta=arm.beta,
        rewards_seen=arm.rewards_seen,
        estimate=round(arm.estimate, 4),
    )
