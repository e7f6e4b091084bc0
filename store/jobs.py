"""Background jobs as rows: status and progress in the database, so that any worker can answer.

Progress counters are single SQL increments (`members_scanned = members_scanned + :n`), so the
parallel branches of one job never lose an update. A running job's worker refreshes its
heartbeat; a job whose heartbeat is older than the staleness window belonged to a process that
died (a job dies with its process), and `fail_stale` marks it failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, String, func, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from store.errors import NotFound
from store.models import JobRow, utcnow

ACTIVE = ("queued", "running")
LOST = "the worker process stopped before the job finished (jobs die with their process)"


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    status: str
    request: dict[str, Any]
    created_by: str
    segments_total: int
    segments_done: int
    members_total: int
    members_scanned: int
    summary: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def create_job(
    session: Session,
    job_id: str,
    *,
    kind: str,
    request: dict[str, Any],
    created_by: str,
    worker: str | None,
    segments_total: int,
    members_total: int,
    status: str = "queued",
) -> None:
    """A new job row; `worker` is the process that will run it (the one that accepted it)."""
    now = utcnow()
    session.add(
        JobRow(
            job_id=job_id,
            kind=kind,
            status=status,
            request=request,
            created_by=created_by,
            worker=worker,
            segments_total=segments_total,
            members_total=members_total,
            created_at=now,
            heartbeat_at=now,
        )
    )


def get_job(session: Session, job_id: str, *, stale_after: timedelta | None = None) -> Job:
    """The job; with `stale_after`, an active job without a recent heartbeat is failed first."""
    if stale_after is not None:
        fail_stale(session, stale_after, job_id=job_id)
    row = session.get(JobRow, job_id)
    if row is None:
        raise NotFound(f"job {job_id!r} does not exist")
    return Job(
        job_id=row.job_id,
        kind=row.kind,
        status=row.status,
        request=row.request,
        created_by=row.created_by,
        segments_total=row.segments_total,
        segments_done=row.segments_done,
        members_total=row.members_total,
        members_scanned=row.members_scanned,
        summary=row.summary,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def start_job(session: Session, job_id: str, *, worker: str) -> bool:
    """Queued → running, for this worker; False if another worker took it or it is no longer queued."""
    now = utcnow()
    taken = session.execute(
        update(JobRow)
        .where(JobRow.job_id == job_id, JobRow.status == "queued")
        .values(status="running", worker=worker, started_at=now, heartbeat_at=now)
    )
    return bool(cast(CursorResult[Any], taken).rowcount)


def add_progress(
    session: Session, job_id: str, *, members_scanned: int = 0, segments_done: int = 0
) -> None:
    session.execute(
        update(JobRow)
        .where(JobRow.job_id == job_id)
        .values(
            members_scanned=JobRow.members_scanned + members_scanned,
            segments_done=JobRow.segments_done + segments_done,
            heartbeat_at=utcnow(),
        )
    )


def heartbeat(session: Session, job_ids: list[str]) -> None:
    if job_ids:
        session.execute(
            update(JobRow)
            .where(JobRow.job_id.in_(job_ids), JobRow.status.in_(ACTIVE))
            .values(heartbeat_at=utcnow())
        )


def finish_job(session: Session, job_id: str, *, summary: dict[str, Any]) -> None:
    session.execute(
        update(JobRow)
        .where(JobRow.job_id == job_id)
        .values(status="done", summary=summary, finished_at=utcnow(), heartbeat_at=utcnow())
    )


def fail_job(session: Session, job_id: str, error: str) -> None:
    session.execute(
        update(JobRow)
        .where(JobRow.job_id == job_id, JobRow.status.in_(ACTIVE))
        .values(status="failed", error=error[:500], finished_at=utcnow())
    )


def fail_stale(session: Session, stale_after: timedelta, *, job_id: str | None = None) -> int:
    """Mark failed every active job whose heartbeat is older than `stale_after`."""
    limit = utcnow() - stale_after
    where = [
        JobRow.status.in_(ACTIVE),
        or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < limit),
    ]
    if job_id is not None:
        where.append(JobRow.job_id == job_id)
    failed = session.execute(
        update(JobRow).where(*where).values(status="failed", error=LOST, finished_at=utcnow())
    )
    return cast(CursorResult[Any], failed).rowcount


def active_jobs(session: Session) -> list[str]:
    return list(session.scalars(select(JobRow.job_id).where(JobRow.status.in_(ACTIVE))))


def count_active(session: Session) -> dict[str, int]:
    """How many jobs are queued and running, for the metrics' queue depth."""
    rows = session.execute(
        select(JobRow.status, func.count()).where(JobRow.status.in_(ACTIVE)).group_by(JobRow.status)
    )
    return {status: count for status, count in rows}


def erase_from_jobs(session: Session, user_id: str) -> int:
    """Remove a person's id from every stored job request (an audience named by user ids);
    returns how many jobs named them. The job stays readable for the rest of its audience."""
    named = session.scalars(
        select(JobRow).where(sql_cast(JobRow.request, String).contains(f'"{user_id}"'))
    )
    count = 0
    for row in named:
        request = _without_id(row.request, user_id)
        if request != row.request:
            row.request = request  # a new value, so the JSON column is written back
            count += 1
    return count


def _without_id(value: Any, user_id: str) -> Any:
    if isinstance(value, dict):
        return {key: _without_id(item, user_id) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_id(item, user_id) for item in value if item != user_id]
    return value
