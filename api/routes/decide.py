"""POST /v1/decide."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from agents.decide.run import DecideRequest, decide
from agents.services import Services
from agents.writing.writer import OfflineWriter
from api.auth import Caller, DecideCaller
from api.gate import in_turn
from api.schemas import DecideIn, DecideOut, ItemOut, OfferOut

router = APIRouter(prefix="/v1", tags=["decide"])


@router.post("/decide", response_model=DecideOut)
async def post_decide(request: Request, body: DecideIn, caller: DecideCaller) -> DecideOut:
    """Choose items and an offer for a person, with copy and an explanation."""
    # The services off the app's state, not through `ServicesDep`: FastAPI solves each
    # sub-dependency on every request (its parameters, its cache key), about 120 Python calls
    # for an attribute read on the hottest route.
    services: Services = request.app.state.services
    caller.act_for(
        body.user_id,
        what="a decision about "
        + ("an anonymous visitor" if body.user_id is None else "this user"),
    )
    if isinstance(services.writer, OfflineWriter):
        # No model to wait for: a decision is a few milliseconds of work that never waits on
        # the network, so it runs here. A worker thread would add a hop and contend for the GIL
        # with this loop; with an LLM the writer waits on the network, and that wait must not
        # hold the loop. One at a time, first come first served, with the loop free to read
        # and accept between two decisions (`api.gate`).
        return await in_turn(request, _decide, services, caller, body)
    return await run_in_threadpool(_decide, services, caller, body)


def _decide(services: Services, caller: Caller, body: DecideIn) -> DecideOut:
    caller.act_for_anonymous(services, body.user_id, body.anonymous_id)
    request = DecideRequest(
        channel=body.channel,
        user_id=body.user_id,
        anonymous_id=body.anonymous_id,
        query=body.query,
        context=body.context,
        k=body.k,
    )
    decision = decide(services, request)
    return DecideOut(
        decision_id=decision.decision_id,
        channel=body.channel,
        items=[ItemOut.of(c) for c in decision.items],
        offer=OfferOut.of(decision.offer, decision.choice),
        content=decision.content,
        explanation=decision.explanation,
        degraded=decision.degraded,
        policy_version=decision.policy_version,
    )
