"""POST /v1/events: batches, validated event by event, stored exactly once by event id."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agents.privacy.rights import erased_among
from agents.rewards import rewarder
from agents.services import Services
from api.auth import EventsCaller
from api.deps import ServicesDep
from api.errors import field_errors
from api.gate import in_turn
from api.schemas import EventResult, EventsIn, EventsOut
from store.erasure import lock_for_writing
from store.events import EventStatus, Ingested, ingest_events
from store.schemas import Event

router = APIRouter(prefix="/v1", tags=["events"])
_EVENT = TypeAdapter(Event)
# Batches of up to this many events are stored on the event loop, longer ones in a worker thread
# (both in turn, `api.gate`). Storing costs about 1.3 ms a batch plus 0.3 ms an event
# (`bench/events_cost.py`: 1.6 ms for one event, 6.3 ms for 16, 23 ms for 64, 283 ms for 1,000),
# so a batch stored on the loop holds it for no longer than about two decisions. On PostgreSQL
# every batch is stored in a worker thread: storing locks the people's feature rows, and another
# worker process may hold them (a batch of 1,000 events holds its rows for about 0.3 s), a wait
# that must not hold the loop (`Database.shared`).
ON_LOOP = 16


@router.post("/events", response_model=EventsOut)
async def post_events(
    request: Request, body: EventsIn, services: ServicesDep, caller: EventsCaller
) -> EventsOut:
    """Record behavioural events; each is accepted, a duplicate, or rejected with the reason."""
    results: list[EventResult | None] = []
    valid: list[tuple[int, Event]] = []
    for index, raw in enumerate(body.events):
        try:
            event = _EVENT.validate_python(raw)
            if caller.bound_user is not None and event.user_id != caller.bound_user:
                results.append(
                    EventResult(
                        index=index,
                        event_id=event.event_id,
                        status="rejected",
                        reason=f"user_id: this API key acts for user {caller.bound_user!r} only",
                    )
                )
                continue
            valid.append((index, event))
            results.append(None)
        except ValidationError as error:
            reason = "; ".join(
                f"{e['field']}: {e['problem']}" for e in field_errors(error.errors())
            )
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            event_id = event_id if isinstance(event_id, str) else None
            results.append(
                EventResult(index=index, event_id=event_id, status="rejected", reason=reason)
            )
    # Stored in turn with decisions, ranks and other batches (`api.gate`): batches stored side
    # by side in worker threads waited for SQLite's one write lock, or were refused it and ran
    # again after a pause (p99 0.65 s at 8 connections). A batch of a few events is stored on
    # the loop; a longer one, or any on PostgreSQL, in a worker thread, still in turn, so that
    # the loop goes on reading requests meanwhile.
    in_thread = len(valid) > ON_LOOP or services.db.shared
    valid, (outcomes, attributed) = await in_turn(
        request, _record, services, valid, results, in_thread=in_thread
    )
    for (index, event), outcome in zip(valid, outcomes, strict=True):
        results[index] = EventResult(
            index=index,
            event_id=event.event_id,
            status=outcome.status.value,
            reason=outcome.reason,
            attributed_to=attributed.get(event.event_id),
        )
    done = [r for r in results if r is not None]
    out = EventsOut(
        accepted=sum(r.status == "accepted" for r in done),
        duplicates=sum(r.status == "duplicate" for r in done),
        rejected=sum(r.status == "rejected" for r in done),
        results=done,
    )
    for status, count in (
        ("accepted", out.accepted),
        ("duplicate", out.duplicates),
        ("rejected", out.rejected),
    ):
        services.metrics.events.labels(outcome=status).inc(count)
    return out


def _record(
    services: Services, valid: list[tuple[int, Event]], results: list[EventResult | None]
) -> tuple[list[tuple[int, Event]], tuple[list[Ingested], dict[str, str]]]:
    """The events not refused for an erased person, and their outcomes and attributions.

    The tombstones are read in the transaction that stores the events, after it has locked the
    events against an erasure (`store.erasure.lock_for_writing`): an erasure that commits while
    the batch is stored either finished first, and its tombstones are found, or waits for the
    batch and deletes its events. On SQLite, a batch whose read of the tombstones an erasure
    overtook is refused its write and runs again (`Database.transaction`)."""
    if not valid:
        return valid, ([], {})

    # An event naming its decision rewards it here: on SQLite, a concurrent writer can make
    # that transaction fail at once with 'database is locked'; it runs again, as the sweep does.
    def work(
        session: Session,
    ) -> tuple[list[tuple[int, Event]], tuple[list[Ingested], dict[str, str]]]:
        lock_for_writing(session, "events")
        kept = _refuse_erased(services, session, valid, results)
        events = [event for _, event in kept]
        if not events:
            return kept, ([], {})
        outcomes = ingest_events(session, events)
        new = [e for e, o in zip(events, outcomes, strict=True) if o.status is EventStatus.accepted]
        return kept, (outcomes, rewarder(services).attribute(session, new))

    try:
        return services.db.transaction(work)
    except IntegrityError:
        # A concurrent batch stored some of these ids first; the retry sees them as duplicates.
        return services.db.transaction(work)


def _refuse_erased(
    services: Services,
    session: Session,
    valid: list[tuple[int, Event]],
    results: list[EventResult | None],
) -> list[tuple[int, Event]]:
    """Reject, event by event, those about an erased person (their tombstone says so)."""
    erased = erased_among(
        services,
        session,
        [event.user_id for _, event in valid],
        [event.anonymous_id for _, event in valid],
    )
    kept = []
    for index, event in valid:
        reason = erased.reason(event.user_id, event.anonymous_id)
        if reason is None:
            kept.append((index, event))
        else:
            results[index] = EventResult(
                index=index, event_id=event.event_id, status="rejected", reason=reason
            )
    return kept
