"""Batch recommendation results: one row per person of a job, in the order they were asked for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from store.models import BatchResultRow


def save_lines(session: Session, job_id: str, lines: Sequence[dict[str, Any]]) -> None:
    """Store a run's lines (each with its `position` and `user_id`), replacing an earlier run's."""
    session.execute(delete(BatchResultRow).where(BatchResultRow.job_id == job_id))
    session.add_all(
        BatchResultRow(
            job_id=job_id,
            position=line["position"],
            user_id=line["user_id"] or "",
            data=line,
        )
        for line in lines
    )
    session.flush()


def read_lines(session: Session, job_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(BatchResultRow.data)
        .where(BatchResultRow.job_id == job_id)
        .order_by(BatchResultRow.position)
    )
    return list(rows)


def export_batch_lines(session: Session, user_id: str) -> list[dict[str, Any]]:
    """A person's lines of batch recommendation jobs, with their job ids."""
    rows = session.execute(
        select(BatchResultRow.job_id, BatchResultRow.data).where(BatchResultRow.user_id == user_id)
    )
    return [{"job_id": job_id, **data} for job_id, data in rows]


def erase_from_batches(session: Session, user_id: str) -> int:
    """Replace a person's lines by an `erased` line that names no one; how many there were."""
    rows = session.scalars(select(BatchResultRow).where(BatchResultRow.user_id == user_id)).all()
    for row in rows:
        session.execute(
            update(BatchResultRow)
            .where(BatchResultRow.job_id == row.job_id, BatchResultRow.position == row.position)
            .values(user_id="", data=erased_line(row.position))
        )
    return len(rows)


def erased_line(position: int) -> dict[str, Any]:
    return {"position": position, "user_id": None, "status": "erased", "items": []}
