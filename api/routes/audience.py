"""The copy studio's audience: a segment's live size and sample before writing. (Who gets which
variant after is `GET /v1/jobs/{id}/recipients`, in `api.routes.jobs`.)"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from agents.copy.preview import preview_audience
from api.auth import CopyCaller
from api.deps import ServicesDep
from api.schemas import AudiencePreviewIn, AudiencePreviewOut, SegmentPreviewOut

router = APIRouter(prefix="/v1", tags=["copy"])


@router.post("/copy/audience", response_model=AudiencePreviewOut)
async def post_audience_preview(
    body: AudiencePreviewIn, services: ServicesDep, caller: CopyCaller
) -> AudiencePreviewOut:
    """Each segment's members for copy on a channel now (consent included), with a sample of ids."""
    if caller.bound_user is not None:
        raise HTTPException(403, "an API key bound to one user cannot read an audience")
    found = await run_in_threadpool(
        preview_audience, services, body.channel, body.audience, sample=body.sample
    )
    rules = {s.name: s.describe() for s in body.audience.resolved()}
    return AudiencePreviewOut(
        channel=body.channel,
        segments=[
            SegmentPreviewOut(
                name=a.name,
                rule=rules[a.name],
                size=a.size,
                excluded=dict(a.excluded),
                unknown_user_ids=a.unknown_ids,
                sample=a.members,
            )
            for a in found
        ],
    )
