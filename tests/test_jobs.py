"""Durable jobs on both dialects: the claim is atomic, a job whose worker is gone is claimed
again from the start, a worker that lost its claim cannot write over the new run, and worker
loops racing on many jobs run each exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update

import agents.copy.jobs as copy_jobs
from agents.copy.jobs import JobRunner
from agents.copy.state import CopyRequest
from agents.settings import Settings
from store.db import Database
from store.jobs import (
    GAVE_UP,
    ClaimLost,
    add_progress,
    claim_job,
    create_job,
    finish_job,
    get_job,
    queue_depth,
)
from store.models import JobRow, utcnow

MINUTE = timedelta(minutes=1)
REQUEST = CopyRequest.model_validate(
    {
        "brief": {"goal": "coffee for the season", "categories": ["coffee_tea"]},
        "channel": "push",
        "audience": {"user_ids": ["u_0001"]},
        "variants": 1,
    }
).json_dump()


def _queue(db: Database, *job_ids: str) -> None:
    with db.session() as session:
        for job_id in job_ids:
            create_job(
                session,
                job_id,
                kind="copy",
                request=REQUEST,
                created_by="local",
                worker=None,
                segments_total=1,
                members_total=1,
            )


def _age(db: Database, job_id: str) -> None:
    """Make the job's heartbeat an hour old, as if its worker had stopped beating."""
    with db.session() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.job_id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )


def test_a_queued_job_is_claimed_once(database_url: str) -> None:
    db = Database(database_url)
    _queue(db, "j1")
    with db.session() as session:
        assert queue_depth(session) == 1
        job = claim_job(session, "w1", stale_after=MINUTE)
    assert job is not None and job.job_id == "j1" and job.status == "running"
    assert job.attempts == 1 and job.started_at is not None
    with db.session() as session:
        assert claim_job(session, "w2", stale_after=MINUTE) is None  # fresh heartbeat: held
        assert queue_depth(session) == 0
        assert session.get(JobRow, "j1").worker == "w1"  # type: ignore[union-attr]
    db.dispose()


def test_a_job_whose_worker_stopped_is_claimed_again_from_the_start(database_url: str) -> None:
    """Stale heartbeat → claimed by another worker, progress reset; the first worker, should
    it come back, can neither count progress nor finish the job any more."""
    db = Database(database_url)
    _queue(db, "j1")
    with db.session() as session:
        claim_job(session, "w1", stale_after=MINUTE)
    with db.session() as session:
        add_progress(session, "j1", worker="w1", members_scanned=5, segments_done=1)
    _age(db, "j1")
    with db.session() as session:
        again = claim_job(session, "w2", stale_after=MINUTE)
    assert again is not None and again.job_id == "j1"
    assert (again.attempts, again.members_scanned, again.segments_done) == (2, 0, 0)
    with pytest.raises(ClaimLost), db.session() as session:
        add_progress(session, "j1", worker="w1", members_scanned=1)
    with pytest.raises(ClaimLost), db.session() as session:
        finish_job(session, "j1", summary={"by": "w1"}, worker="w1")
    with db.session() as session:
        finish_job(session, "j1", summary={"by": "w2"}, worker="w2")
    with db.session() as session:
        job = get_job(session, "j1")
    assert job.status == "done" and job.summary == {"by": "w2"}
    db.dispose()


def test_a_job_whose_worker_keeps_stopping_is_failed_in_the_end(database_url: str) -> None:
    db = Database(database_url)
    _queue(db, "doomed")
    for worker in ("w1", "w2", "w3"):
        _age(db, "doomed")
        with db.session() as session:
            assert claim_job(session, worker, stale_after=MINUTE) is not None
    _age(db, "doomed")
    with db.session() as session:
        assert claim_job(session, "w4", stale_after=MINUTE) is None
    with db.session() as session:
        job = get_job(session, "doomed")
    assert job.status == "failed" and job.error == GAVE_UP and job.attempts == 3
    db.dispose()


def test_worker_loops_racing_run_each_job_exactly_once(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two job runners (each its own engine, as two processes would have), three loops each,
    on one database with 60 queued jobs: every job is run once, by one worker, and done."""
    jobs = [f"race-{n:03d}" for n in range(60)]
    runs: list[tuple[str, str]] = []
    lock = threading.Lock()

    def fake_run(services: Any, job_id: str, request: CopyRequest, *, worker: str) -> None:
        assert request.audience.user_ids == ["u_0001"]  # the stored request, read back
        with lock:
            runs.append((job_id, worker))
        time.sleep(0.002)
        with services.db.session() as session:
            finish_job(session, job_id, summary={"by": worker}, worker=worker)

    monkeypatch.setattr(copy_jobs, "run_job", fake_run)
    setup = Database(database_url)
    _queue(setup, *jobs)
    settings = Settings(home=tmp_path)
    engines = [Database(database_url), Database(database_url)]
    runners = [
        JobRunner(
            SimpleNamespace(db=db, settings=settings),  # type: ignore[arg-type]
            workers=3,
            poll_s=0.02,
            worker=f"w{n}",
        )
        for n, db in enumerate(engines)
    ]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with setup.session() as session:
                if all(get_job(session, j).status == "done" for j in jobs):
                    break
            time.sleep(0.05)
    finally:
        for runner in runners:
            runner.close()
        for runner in runners:
            runner.join(10)
    counts = Counter(job_id for job_id, _ in runs)
    assert sorted(counts) == jobs and set(counts.values()) == {1}, counts.most_common(3)
    with setup.session() as session:
        done = {j: get_job(session, j) for j in jobs}
    assert all(job.status == "done" and job.attempts == 1 for job in done.values())
    by_worker = dict(runs)
    assert all(done[j].summary == {"by": by_worker[j]} for j in jobs)
    print(f"runs per worker: {Counter(worker for _, worker in runs)}")
    for db in (*engines, setup):
        db.dispose()
