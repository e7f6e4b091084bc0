"""Durable copy jobs: rows in the database (`store.jobs`) run by worker loops.

A job is accepted by the API as a `queued` row. Worker loops claim queued rows one at a time
(an atomic compare-and-swap; `SKIP LOCKED` on PostgreSQL), so two workers never run the same job.
They run in the API process by default (`ATTUNE_JOBS_IN_API`), or in `attune worker` processes,
any number of them. A running job's worker beats every few seconds; when a worker dies (kill -9,
a restart, a crash), its running jobs are claimed again and run from the start: at once by a
runner starting on the same host (the owner's pid is gone), else by any runner once the
heartbeat is older than `ATTUNE_JOB_STALE_AFTER_S`. The progress counters restart with the run;
a run's variants are saved in the transaction that marks the job done, and only while its worker
still holds it, so a job's variants are stored once.

What a job runs is its row's request: the brief's goal as stored, minimized (words outside the
catalog's vocabulary masked). The process that accepted the job also keeps the whole request in
memory, and when it runs the job itself it runs that; a job resumed or run elsewhere runs the
stored request.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import threading
from datetime import timedelta
from typing import Any

from agents import batch
from agents.copy.campaign import save_result
from agents.copy.graph import generate_copy
from agents.copy.state import CopyRequest
from agents.privacy.minimize import Minimizer
from agents.services import Services
from store.db import Database
from store.jobs import (
    ClaimLost,
    Job,
    add_progress,
    claim_job,
    fail_job,
    finish_job,
    get_job,
    heartbeat,
    requeue,
    running_workers,
)

log = logging.getLogger("attune.jobs")

ASYNC_MEMBERS = 500  # audiences that scan more people than this run as background jobs
HOST = socket.gethostname()


def worker_id() -> str:
    """This process, as job rows name their owner: host, pid and a token against pid reuse."""
    return f"{HOST}:{os.getpid()}:{_TOKEN}"


_TOKEN = secrets.token_hex(4)


class JobProgress:
    """Copy progress written to the job's row as SQL increments (safe from parallel branches),
    while this worker holds the job."""

    def __init__(self, db: Database, job_id: str, worker: str | None = None) -> None:
        self._db = db
        self._job_id = job_id
        self._worker = worker

    def scanned(self, n: int) -> None:
        with self._db.session() as session:
            add_progress(session, self._job_id, worker=self._worker, members_scanned=n)

    def segment_done(self) -> None:
        with self._db.session() as session:
            add_progress(session, self._job_id, worker=self._worker, segments_done=1)


class JobRunner:
    """Worker loops (threads) that claim copy jobs from the database and run them, and a
    heartbeat for the jobs they hold. One per API process (unless ATTUNE_JOBS_IN_API=false) or
    per `attune worker`."""

    def __init__(
        self,
        services: Services,
        *,
        workers: int = 2,
        heartbeat_s: float | None = None,
        stale_after_s: float | None = None,
        poll_s: float = 1.0,
        worker: str | None = None,
    ) -> None:
        self.services = services
        self.worker = worker or worker_id()  # as job rows name their worker
        self.stale_after = timedelta(seconds=stale_after_s or services.settings.job_stale_after_s)
        # Several beats fit in the staleness window, so a live worker is never taken for gone.
        self._heartbeat_s = heartbeat_s or min(5.0, self.stale_after.total_seconds() / 6)
        self._poll_s = poll_s
        self._requests: dict[str, CopyRequest] = {}  # accepted here: the whole request
        self._mine: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.recovered = self._requeue_orphans()
        self._threads = [
            threading.Thread(target=self._work, name=f"copy-job-{i}", daemon=True)
            for i in range(workers)
        ]
        self._threads.append(
            threading.Thread(target=self._beat, name="copy-job-heartbeat", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    def submit(self, job_id: str, request: CopyRequest) -> None:
        """Wake the loops for the job `job_id` (already stored, queued), accepted here with
        `request`, the caller's whole request."""
        with self._lock:
            self._requests[job_id] = request
        self._wake.set()

    def wake(self) -> None:
        """Wake the loops for a job stored as queued that they run from its row alone."""
        self._wake.set()

    def close(self) -> None:
        """Stop claiming jobs; a job being run finishes (or, if the process dies first, is
        claimed again by another worker)."""
        self._stop.set()
        self._wake.set()

    def wait(self) -> None:
        """Block until `close` (for `attune worker`)."""
        while not self._stop.wait(1.0):
            pass

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                with self.services.db.session() as session:
                    job = claim_job(session, self.worker, stale_after=self.stale_after)
            except Exception:
                log.exception("could not claim a copy job; trying again")
                job = None
            if job is None:
                self._wake.wait(self._poll_s)
                self._wake.clear()
                self._forget_others()
                continue
            with self._lock:
                self._mine.add(job.job_id)
                request = self._requests.pop(job.job_id, None)
            try:
                self._run(job, request)
            finally:
                with self._lock:
                    self._mine.discard(job.job_id)

    def _run(self, job: Job, request: CopyRequest | None) -> None:
        if job.attempts > 1:
            log.warning("copy job %s: run %d (its worker stopped before)", job.job_id, job.attempts)
        else:
            log.info("copy job %s: running", job.job_id)
        if job.kind == batch.KIND:  # batch recommendations share the runners and the table
            try:
                batch_request = batch.BatchRequest.model_validate(job.request)
            except ValueError as error:
                with self.services.db.session() as session:
                    fail_job(
                        session,
                        job.job_id,
                        f"the stored request is not valid ({type(error).__name__})",
                        worker=self.worker,
                    )
                return
            batch.run_batch(self.services, job.job_id, batch_request, worker=self.worker)
            return
        if request is None:
            try:
                request = CopyRequest.model_validate(job.request)
            except ValueError as error:
                with self.services.db.session() as session:
                    fail_job(
                        session,
                        job.job_id,
                        f"the stored request is not valid ({type(error).__name__})",
                        worker=self.worker,
                    )
                return
        run_job(self.services, job.job_id, request, worker=self.worker)

    def _forget_others(self) -> None:
        """Drop the requests of jobs accepted here that another worker has taken."""
        with self._lock:
            waiting = list(self._requests)
        if not waiting:
            return
        with self.services.db.session() as session:
            gone = [j for j in waiting if _status(session, j) != "queued"]
        with self._lock:
            for job_id in gone:
                self._requests.pop(job_id, None)

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            with self._lock:
                mine = list(self._mine)
            if mine:
                try:
                    with self.services.db.session() as session:
                        heartbeat(session, mine, worker=self.worker)
                except Exception:
                    log.exception("copy job heartbeat failed")

    def _requeue_orphans(self) -> int:
        """Queue again the running jobs whose worker process on this host is gone (a stale
        heartbeat is enough anywhere else: `claim_job` takes those)."""
        with self.services.db.session() as session:
            orphans = [j for j, w in running_workers(session).items() if _dead_here(w)]
            requeued = requeue(session, orphans)
        if requeued:
            log.warning("queued %d copy job(s) again: their worker process stopped", requeued)
        return requeued


def _status(session: Any, job_id: str) -> str | None:
    try:
        return get_job(session, job_id).status
    except Exception:
        return None


def run_job(services: Services, job_id: str, request: CopyRequest, *, worker: str) -> None:
    """Run one claimed copy job to done or failed; its variants are saved in the transaction
    that marks it done, and only while `worker` still holds it."""

    def finish(session: Any, summary: dict[str, Any]) -> None:
        finish_job(session, job_id, summary=summary, worker=worker)

    try:
        result = generate_copy(
            services, request, campaign_id=job_id, progress=JobProgress(services.db, job_id, worker)
        )
        save_result(
            services,
            result,
            register=request.register_arms,
            minimizer=minimizer(services, request),
            then=finish,
        )
    except ClaimLost:
        log.warning("copy job %s was claimed by another worker; this run is dropped", job_id)
    except Exception as error:
        # The job is marked failed with the error's kind only (messages can quote data); the
        # traceback goes to the service log. If another worker holds it now, nothing changes.
        log.exception("copy job %s failed", job_id)
        with services.db.session() as session:
            fail_job(session, job_id, f"{type(error).__name__}; see the service log", worker=worker)


def minimizer(services: Services, request: CopyRequest) -> Minimizer:
    """The minimizer of a copy request's free text, the brief's goal. The must-say phrases are
    copy the marketer publishes on purpose, so their words are never masked in the variants."""
    brief = request.brief
    goal = Minimizer.for_services(services, [brief.goal])
    published = {w.casefold() for phrase in brief.must_say for w in re.findall(r"\w+", phrase)}
    return Minimizer(t for t in goal.tainted if t.casefold() not in published)


def stored_request(services: Services, request: CopyRequest) -> dict[str, Any]:
    """The request as a job row keeps it (and as a job resumed elsewhere runs it): the goal
    minimized."""
    data = request.json_dump()
    goal = Minimizer.for_services(services, [request.brief.goal])
    data["brief"]["goal"] = goal.text(request.brief.goal)
    return data


def _dead_here(worker: str | None) -> bool:
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    pid, _, token = rest.partition(":")
    if host != HOST or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return token != _TOKEN
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a live process of another user
    return False
