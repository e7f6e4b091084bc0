"""Background jobs as rows: a state machine that any worker can run and any worker can answer for.

    queued ──claim──▶ running ──▶ done | failed
                         │
                         └─ its worker stops beating (killed, restarted) ─▶ claimed again

Workers take jobs with `claim_job`: one UPDATE conditioned on the state they read (a compare and
swap; on PostgreSQL the candidate row is also locked with `FOR UPDATE SKIP LOCKED`, so racing
workers pass over each other's rows), so two workers never run the same job. A running job's
worker refreshes its heartbeat; a running job whose heartbeat is older than the staleness window
belonged to a worker that is gone, and is claimed again from the start (its progress counters
reset). After `MAX_ATTEMPTS` claims a job that keeps losing its worker is failed instead.
Writes of a job's progress and end are conditioned on the worker holding it, so a worker that
lost its claim (paused past the window, say) cannot overwrite the run of the worker that took
over. Progress counters are single SQL increments (`members_scanned = members_scanned + :n`), so
the parallel branches of one job never lose an update.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, String, and_, func, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from store.errors import NotFound
from store.models import JobRow, utcnow

ACTIVE = ("queued", "running")
MAX_ATTEMPTS = 3
GAVE_UP = f"its worker stopped {MAX_ATTEMPTS} times before the job finished; see the worker logs"


class ClaimLost(Exception):
    """This worker no longer holds the job: another worker claimed it after a stale heartbeat."""


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    status: str
    request: dict[str, Any]
    created_by: str
    attempts: int
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


def get_job(session: Session, job_id: str) -> Job:
    """The job as stored (a running job whose worker is gone stays `running` until a worker
    claims it again)."""
    row = session.get(JobRow, job_id)
    if row is None:
        raise NotFound(f"job {job_id!r} does not exist")
    return Job(
        job_id=row.job_id,
        kind=row.kind,
        status=row.status,
        request=row.request,
        created_by=row.created_by,
        attempts=row.attempts,
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


def claim_job(session: Session, worker: str, *, stale_after: timedelta) -> Job | None:
    """Take the oldest job that is queued, or running with a stale heartbeat, for `worker`
    (queued/stale → running); None if there is none. Commit promptly: on PostgreSQL the row
    stays locked until then."""
    while True:
        limit = utcnow() - stale_after
        claimable = or_(
            JobRow.status == "queued",
            and_(
                JobRow.status == "running",
                or_(JobRow.heartbeat_at.is_(None), JobRow.heartbeat_at < limit),
            ),
        )
        candidate = (
            select(JobRow.job_id, JobRow.status, JobRow.heartbeat_at, JobRow.attempts)
            .where(claimable)
            .order_by(JobRow.created_at, JobRow.job_id)
            .limit(1)
        )
        if session.get_bind().dialect.name == "postgresql":
            candidate = candidate.with_for_update(skip_locked=True)
        found = session.execute(candidate).first()
        if found is None:
            return None
        job_id, status, beat, attempts = found
        same: list[ColumnElement[bool]] = [
            JobRow.job_id == job_id,
            JobRow.status == status,
            JobRow.attempts == attempts,
        ]
        same.append(JobRow.heartbeat_at.is_(None) if beat is None else JobRow.heartbeat_at == beat)
        now = utcnow()
        if attempts >= MAX_ATTEMPTS:
            session.execute(
                update(JobRow)
                .where(*same)
                .values(status="failed", error=GAVE_UP, finished_at=now, worker=None)
            )
            continue
        taken = session.execute(
            update(JobRow)
            .where(*same)
            .values(
                status="running",
                worker=worker,
                attempts=JobRow.attempts + 1,
                started_at=func.coalesce(JobRow.started_at, now),
                heartbeat_at=now,
                segments_done=0,
                members_scanned=0,
            )
        )
        if cast(CursorResult[Any], taken).rowcount:
            session.flush()
            return get_job(session, job_id)
        # Another worker changed the row between the read and the update (SQLite): look again.


def add_progress(
    session: Session,
    job_id: str,
    *,
    worker: str | None = None,
    members_scanned: int = 0,
    segments_done: int = 0,
) -> None:
    """Count progress (and beat); with `worker`, only while that worker holds the job."""
    where: list[ColumnElement[bool]] = [JobRow.job_id == job_id]
    if worker is not None:
        where += [JobRow.worker == worker, JobRow.status == "running"]
    done = session.execute(
        update(JobRow)
        .where(*where)
        .values(
            members_scanned=JobRow.members_scanned + members_scanned,
            segments_done=JobRow.segments_done + segments_done,
            heartbeat_at=utcnow(),
        )
    )
    if worker is not None and not cast(CursorResult[Any], done).rowcount:
        raise ClaimLost(job_id)


def heartbeat(session: Session, job_ids: list[str], *, worker: str | None = None) -> None:
    if job_ids:
        where: list[ColumnElement[bool]] = [JobRow.job_id.in_(job_ids), JobRow.status.in_(ACTIVE)]
        if worker is not None:
            where.append(JobRow.worker == worker)
        session.execute(update(JobRow).where(*where).values(heartbeat_at=utcnow()))


def finish_job(
    session: Session, job_id: str, *, summary: dict[str, Any], worker: str | None = None
) -> None:
    """Mark the job done; with `worker`, only if that worker still holds it (else `ClaimLost`,
    which rolls back the transaction: the variants saved with it are not kept twice)."""
    where: list[ColumnElement[bool]] = [JobRow.job_id == job_id]
    if worker is not None:
        where += [JobRow.worker == worker, JobRow.status == "running"]
    done = session.execute(
        update(JobRow)
        .where(*where)
        .values(status="done", summary=summary, finished_at=utcnow(), heartbeat_at=utcnow())
    )
    if worker is not None and not cast(CursorResult[Any], done).rowcount:
        raise ClaimLost(job_id)


def fail_job(session: Session, job_id: str, error: str, *, worker: str | None = None) -> None:
    where: list[ColumnElement[bool]] = [JobRow.job_id == job_id, JobRow.status.in_(ACTIVE)]
    if worker is not None:
        where.append(JobRow.worker == worker)
    session.execute(
        update(JobRow)
        .where(*where)
        .values(status="failed", error=error[:500], finished_at=utcnow())
    )


def requeue(session: Session, job_ids: list[str]) -> int:
    """Put running jobs back in the queue (their worker is known to be gone)."""
    if not job_ids:
        return 0
    done = session.execute(
        update(JobRow)
        .where(JobRow.job_id.in_(job_ids), JobRow.status == "running")
        .values(status="queued", worker=None)
    )
    return cast(CursorResult[Any], done).rowcount


def running_workers(session: Session) -> dict[str, str]:
    """Running job → the worker that holds it."""
    rows = session.execute(
        select(JobRow.job_id, JobRow.worker).where(
            JobRow.status == "running", JobRow.worker.is_not(None)
        )
    )
    return {job_id: worker for job_id, worker in rows if worker}


def queue_depth(session: Session) -> int:
    """Jobs waiting for a worker."""
    return int(
        session.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == "queued"))
        or 0
    )


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
