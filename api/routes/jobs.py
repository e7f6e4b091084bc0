"""GET /v1/jobs/{id} and its results: background copy jobs, answered by any worker."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal

from fastapi import APIRouter, Path, Query, Response

from agents.batch import KIND as BATCH_KIND
from agents.copy.recipients import recipients
from agents.copy.state import CopyRequest
from api.auth import Caller, CopyCaller
from api.deps import ServicesDep
from api.schemas import JobOut, JobProgressOut
from store.batch import read_lines
from store.copy import get_variants
from store.errors import Conflict, NotFound
from store.jobs import Job, get_job

router = APIRouter(prefix="/v1", tags=["jobs"])
JobId = Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
CSV_COLUMNS = (
    "campaign_id",
    "segment",
    "segment_size",
    "variant_id",
    "channel",
    "subject",
    "text",
    "item_ids",
    "offer_id",
    "checks_passed",
    "writer",
    "degraded",
    "explanation",
)


@router.get("/jobs/{job_id}", response_model=JobOut)
def read_job(services: ServicesDep, caller: CopyCaller, job_id: str = JobId) -> JobOut:
    """A job's status and progress: segments done of total, people scanned of total."""
    with services.db.session() as session:
        job = _job(session, job_id, caller)
    return JobOut(
        job_id=job.job_id,
        kind=job.kind,
        status=job.status,
        progress=JobProgressOut(
            segments_done=job.segments_done,
            segments_total=job.segments_total,
            members_scanned=job.members_scanned,
            members_total=job.members_total,
        ),
        created_at=job.created_at.isoformat(),
        started_at=job.started_at.isoformat() if job.started_at else None,
        finished_at=job.finished_at.isoformat() if job.finished_at else None,
        error=job.error,
        summary=job.summary,
        results_url=f"/v1/jobs/{job.job_id}/results",
    )


@router.get(
    "/jobs/{job_id}/results",
    response_class=Response,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "One line per variant.",
        }
    },
)
def read_job_results(
    services: ServicesDep,
    caller: CopyCaller,
    job_id: str = JobId,
    format: Literal["jsonl", "csv"] = Query("jsonl", description="jsonl or csv"),
) -> Response:
    """A done job's variants, one per line, as JSON Lines or CSV; 409 while it runs."""
    with services.db.session() as session:
        job = _job(session, job_id, caller)
    if job.status != "done":
        raise Conflict(f"job {job_id!r} is {job.status}; results are ready when it is done")
    if job.kind == BATCH_KIND:
        return _batch_results(services, job_id, format)
    with services.db.session() as session:
        variants = get_variants(session, job_id)
    disposition = {"Content-Disposition": f'attachment; filename="copy-{job_id}.{format}"'}
    if format == "jsonl":
        body = "".join(json.dumps({"campaign_id": job_id, **v}) + "\n" for v in variants)
        return Response(body, media_type="application/x-ndjson", headers=disposition)
    return Response(_csv(job_id, variants), media_type="text/csv", headers=disposition)


@router.get(
    "/jobs/{job_id}/recipients",
    response_class=Response,
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "One line per person: the segment and the variant they get.",
        }
    },
)
def read_job_recipients(
    services: ServicesDep,
    caller: CopyCaller,
    job_id: str = JobId,
    format: Literal["jsonl", "csv"] = Query("jsonl", description="jsonl or csv"),
) -> Response:
    """A done copy job's send list: which person gets which variant (consent as of now)."""
    with services.db.session() as session:
        job = _job(session, job_id, caller)
    if job.kind != "copy":
        raise Conflict(f"job {job_id!r} is a {job.kind} job; recipients are for copy jobs")
    if job.status != "done":
        raise Conflict(f"job {job_id!r} is {job.status}; recipients are ready when it is done")
    rows = list(recipients(services, job_id, CopyRequest.model_validate(job.request)))
    disposition = {"Content-Disposition": f'attachment; filename="recipients-{job_id}.{format}"'}
    if format == "jsonl":
        body = "".join(json.dumps(row) + "\n" for row in rows)
        return Response(body, media_type="application/x-ndjson", headers=disposition)
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=("user_id", "segment", "variant_id", "subject"), lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows({**row, "subject": row["subject"] or ""} for row in rows)
    return Response(out.getvalue(), media_type="text/csv", headers=disposition)


def _batch_results(services: Any, job_id: str, format: str) -> Response:
    """A batch recommendation job's lines: one per person, in the order they were asked for."""
    with services.db.session() as session:
        lines = read_lines(session, job_id)
    disposition = {
        "Content-Disposition": f'attachment; filename="recommendations-{job_id}.{format}"'
    }
    if format == "jsonl":
        body = "".join(json.dumps(line) + "\n" for line in lines)
        return Response(body, media_type="application/x-ndjson", headers=disposition)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["position", "user_id", "status", "decision_id", "item_ids", "offer_id"])
    for line in lines:
        writer.writerow(
            [
                line["position"],
                line["user_id"] or "",
                line["status"],
                line.get("decision_id") or "",
                " ".join(i["item_id"] for i in line["items"]),
                line.get("offer_id") or "",
            ]
        )
    return Response(out.getvalue(), media_type="text/csv", headers=disposition)


def _job(session: Any, job_id: str, caller: Caller) -> Job:
    """The job, if this caller may see it: its creator or an admin (others get a 404)."""
    job = get_job(session, job_id)
    if job.created_by != caller.actor and not caller.has("admin"):
        raise NotFound(f"job {job_id!r} does not exist")
    return job


def _csv(job_id: str, variants: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for v in variants:
        writer.writerow(
            {
                "campaign_id": job_id,
                "segment": v["segment"],
                "segment_size": v.get("segment_size"),
                "variant_id": v["variant_id"],
                "channel": v["channel"],
                "subject": v.get("subject") or "",
                "text": v["text"],
                "item_ids": " ".join(v["item_ids"]),
                "offer_id": v.get("offer_id") or "",
                "checks_passed": v["checks_passed"],
                "writer": v["writer"],
                "degraded": "; ".join(v["degraded"]),
                "explanation": v["explanation"]["summary"],
            }
        )
    return out.getvalue()
