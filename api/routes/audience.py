"""The copy studio's audience: a segment's live size and sample before writing, and who gets
which variant after (the export of recipients)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Response
from starlette.concurrency import run_in_threadpool

from agents.copy.preview import preview_audience, recipients
from api.auth import CopyCaller
from api.deps import ServicesDep
from api.routes.jobs import JobId, _job
from api.schemas import AudiencePreviewIn, AudiencePreviewOut, SegmentPreviewOut
from store.copy import get_variants
from store.errors import Conflict

router = APIRouter(prefix="/v1", tags=["copy"])
RECIPIENT_COLUMNS = ("segment", "variant_id", "user_id")


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


@router.get(
    "/jobs/{job_id}/recipients",
    response_class=Response,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "One line per person: their segment and the variant they get.",
        }
    },
)
def read_job_recipients(
    services: ServicesDep,
    caller: CopyCaller,
    job_id: str = JobId,
    format: Literal["jsonl", "csv"] = Query("jsonl", description="jsonl or csv"),
) -> Response:
    """Who gets which variant of a done copy job (its audience scanned now); 409 while it runs."""
    if caller.bound_user is not None:
        raise HTTPException(403, "an API key bound to one user cannot read a campaign's audience")
    with services.db.session() as session:
        job = _job(session, job_id, caller)
        if job.status != "done":
            raise Conflict(f"job {job_id!r} is {job.status}; recipients are ready when it is done")
        variants = get_variants(session, job_id)
    found = recipients(services, job_id, job.request, variants)
    disposition = {"Content-Disposition": f'attachment; filename="recipients-{job_id}.{format}"'}
    if format == "jsonl":
        body = "".join(json.dumps(asdict(r)) + "\n" for r in found)
        return Response(body, media_type="application/x-ndjson", headers=disposition)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RECIPIENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in found)
    return Response(out.getvalue(), media_type="text/csv", headers=disposition)
