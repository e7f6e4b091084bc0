"""Background copy jobs, run by a small pool of threads inside the API process.

A job's state lives in the database (`store.jobs`), so any worker can report on it, but its work
runs in the process that accepted it: **a job dies with its process**. The pool's threads are
daemons, so stopping the process stops its jobs mid-way. Their rows stay `running` (or `queued`)
until someone notices: a runner starting up marks failed every active job whose owner process on
this host is gone, and every active job anywhere whose heartbeat is older than the staleness
window (a minute by default; running jobs beat every few seconds), and reading a job applies the
same staleness rule. So after a restart, the jobs that were running are reported failed, and
must be submitted again.

Since a job runs only where it was accepted, the request it runs travels in memory with its id;
the row keeps the request as stored text may be (`stored_request`: the brief's free text
minimized), for reading and for erasure, never for running.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import secrets
import socket
import threading
from datetime import timedelta
from typing import Any

from agents.copy.campaign import save_result
from agents.copy.graph import generate_copy
from agents.copy.state import CopyRequest
from agents.privacy.minimize import Minimizer
from agents.services import Services
from store.db import Database
from store.jobs import (
    active_jobs,
    add_progress,
    fail_job,
    fail_stale,
    finish_job,
    heartbeat,
    start_job,
)
from store.models import JobRow

log = logging.getLogger("attune.jobs")

ASYNC_MEMBERS = 500  # audiences that scan more people than this run as background jobs
HOST = socket.gethostname()


def worker_id() -> str:
    """This process, as job rows name their owner: host, pid and a token against pid reuse."""
    return f"{HOST}:{os.getpid()}:{_TOKEN}"


_TOKEN = secrets.token_hex(4)


class JobProgress:
    """Copy progress written to the job's row as SQL increments (safe from parallel branches)."""

    def __init__(self, db: Database, job_id: str) -> None:
        self._db = db
        self._job_id = job_id

    def scanned(self, n: int) -> None:
        with self._db.session() as session:
            add_progress(session, self._job_id, members_scanned=n)

    def segment_done(self) -> None:
        with self._db.session() as session:
            add_progress(session, self._job_id, segments_done=1)


class JobRunner:
    """A pool of daemon threads taking job ids from a queue; one runner per API process."""

    def __init__(
        self,
        services: Services,
        *,
        workers: int = 2,
        heartbeat_s: float = 5.0,
        stale_after_s: float = 60.0,
    ) -> None:
        self.services = services
        self.worker = worker_id()
        self.stale_after = timedelta(seconds=stale_after_s)
        self._heartbeat_s = heartbeat_s
        self._queue: queue.Queue[tuple[str, CopyRequest | None]] = queue.Queue()
        self._mine: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.recovered = self._fail_orphans()
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
        """Run the job `job_id` (already stored) on `request`, the caller's whole request."""
        with self._lock:
            self._mine.add(job_id)
        self._queue.put((job_id, request))

    def close(self) -> None:
        """Stop taking jobs; the job being run finishes or dies with the process."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(("", None))

    def _work(self) -> None:
        while not self._stop.is_set():
            job_id, request = self._queue.get()
            if not job_id or request is None:
                return
            try:
                run_job(self.services, job_id, request, worker=self.worker)
            finally:
                with self._lock:
                    self._mine.discard(job_id)

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            with self._lock:
                mine = list(self._mine)
            if mine:
                with self.services.db.session() as session:
                    heartbeat(session, mine)

    def _fail_orphans(self) -> int:
        """Mark failed the active jobs whose process is gone: on this host, a dead pid; anywhere,
        a stale heartbeat."""
        failed = 0
        with self.services.db.session() as session:
            for job_id in active_jobs(session):
                row = session.get(JobRow, job_id)
                if row is not None and _dead_here(row.worker):
                    fail_job(
                        session, job_id, "its worker process stopped (jobs die with their process)"
                    )
                    failed += 1
            failed += fail_stale(session, self.stale_after)
        if failed:
            log.warning("marked %d job(s) failed: their worker process stopped", failed)
        return failed


def run_job(services: Services, job_id: str, request: CopyRequest, *, worker: str) -> None:
    """Run one queued copy job to done or failed."""
    with services.db.session() as session:
        if not start_job(session, job_id, worker=worker):
            return  # taken by another worker, or no longer queued
    try:
        result = generate_copy(
            services, request, campaign_id=job_id, progress=JobProgress(services.db, job_id)
        )
        summary = save_result(
            services, result, register=request.register_arms, minimizer=minimizer(services, request)
        )
        with services.db.session() as session:
            finish_job(session, job_id, summary=summary)
    except Exception as error:
        # The job is marked failed with the error's kind only (messages can quote data); the
        # traceback goes to the service log.
        log.exception("copy job %s failed", job_id)
        with services.db.session() as session:
            fail_job(session, job_id, f"{type(error).__name__}; see the service log")


def minimizer(services: Services, request: CopyRequest) -> Minimizer:
    """The minimizer of a copy request's free text, the brief's goal. The must-say phrases are
    copy the marketer publishes on purpose, so their words are never masked in the variants."""
    brief = request.brief
    goal = Minimizer.for_services(services, [brief.goal])
    published = {w.casefold() for phrase in brief.must_say for w in re.findall(r"\w+", phrase)}
    return Minimizer(t for t in goal.tainted if t.casefold() not in published)


def stored_request(services: Services, request: CopyRequest) -> dict[str, Any]:
    """The request as a job row keeps it: the goal minimized."""
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
