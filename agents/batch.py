"""Batch recommendations (as Amazon Personalize's batch inference jobs): a durable job that
decides for each person of a list and writes one JSON line per person.

Each line is a full decision (`agents.decide.run.decide`): items, the offer, and a `decision_id`
that `/v1/feedback` rewards, so a batch sent by email learns like a page view. A person who was
erased gets `"status": "erased"` (and the line names no one: the id is not kept), an id with no
profile `"status": "unknown"` with no items (a typo should not get someone else's mail); the
others `"status": "ok"`. The job runs in the copy job runners (`agents.copy.jobs`), is claimed,
beaten and resumed like a copy job, and its lines are saved in the transaction that marks it done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agents.decide.run import DecideRequest, decide
from agents.privacy.minimize import Minimizer
from agents.privacy.rights import erased_among
from agents.services import Services
from store.batch import erased_line, save_lines
from store.jobs import ClaimLost, add_progress, fail_job, finish_job
from store.schemas import Channel
from store.users import user_exists

log = logging.getLogger("attune.jobs")
KIND = "recommend"
ERASED = "<erased>"  # an erased person's place in a stored request: their id is not kept
PROGRESS_EVERY = 25


class BatchRequest(BaseModel):
    """What a batch job runs, as its row stores it: erased ids already replaced by ERASED."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[str] = Field(min_length=1)
    channel: Channel = Channel.web
    k: int = Field(10, ge=1, le=50)
    query: str | None = None


def stored_batch(services: Services, request: BatchRequest) -> dict[str, Any]:
    """The request as the job row keeps it: erased people's ids replaced, the query minimized."""
    with services.db.session() as session:
        erased = erased_among(services, session, request.user_ids).user_ids
    data = request.model_dump(mode="json")
    data["user_ids"] = [ERASED if u in erased else u for u in request.user_ids]
    if request.query is not None:
        data["query"] = Minimizer.for_services(services, [request.query]).text(request.query)
    return data


def run_batch(services: Services, job_id: str, request: BatchRequest, *, worker: str) -> None:
    """Run one claimed batch job to done (its lines saved with it) or failed."""
    try:
        lines = recommend_all(
            services,
            request,
            progress=lambda n: _progress(services, job_id, worker, n),
        )
        counts: dict[str, int] = {}
        for line in lines:
            counts[line["status"]] = counts.get(line["status"], 0) + 1
        with services.db.session() as session:
            save_lines(session, job_id, lines)
            add_progress(session, job_id, worker=worker, segments_done=1)
            finish_job(session, job_id, summary={"people": len(lines), **counts}, worker=worker)
    except ClaimLost:
        log.warning("batch job %s was claimed by another worker; this run is dropped", job_id)
    except Exception as error:
        log.exception("batch job %s failed", job_id)
        with services.db.session() as session:
            fail_job(session, job_id, f"{type(error).__name__}; see the service log", worker=worker)


def recommend_all(
    services: Services, request: BatchRequest, *, progress: Callable[[int], None]
) -> list[dict[str, Any]]:
    """One line per person, in the request's order."""
    with services.db.session() as session:
        # Erased since the job was accepted: checked again when it runs.
        erased = erased_among(services, session, request.user_ids).user_ids
    lines: list[dict[str, Any]] = []
    pending = 0
    for position, user_id in enumerate(request.user_ids):
        if user_id == ERASED or user_id in erased:
            lines.append(erased_line(position))
        else:
            lines.append(_line(services, request, position, user_id))
        pending += 1
        if pending == PROGRESS_EVERY:
            progress(pending)
            pending = 0
    if pending:
        progress(pending)
    return lines


def _line(services: Services, request: BatchRequest, position: int, user_id: str) -> dict[str, Any]:
    with services.db.session() as session:
        known = user_exists(session, user_id)
    if not known:
        return {"position": position, "user_id": user_id, "status": "unknown", "items": []}
    decision = decide(
        services,
        DecideRequest(channel=request.channel, user_id=user_id, query=request.query, k=request.k),
    )
    return {
        "position": position,
        "user_id": user_id,
        "status": "ok",
        "decision_id": decision.decision_id,
        "items": [
            {"item_id": c.item_id, "title": c.title, "score": round(c.score, 6)}
            for c in decision.items
        ],
        "offer_id": decision.offer.offer_id if decision.offer else None,
        "degraded": decision.degraded,
    }


def _progress(services: Services, job_id: str, worker: str, n: int) -> None:
    with services.db.session() as session:
        add_progress(session, job_id, worker=worker, members_scanned=n)
