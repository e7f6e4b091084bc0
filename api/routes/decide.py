"""POST /v1/decide."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from agents.decide.run import DecideRequest, decide
from api.auth import DecideCaller
from api.deps import ServicesDep
from api.schemas import DecideIn, DecideOut, ItemOut, OfferOut

router = APIRouter(prefix="/v1", tags=["decide"])


@router.post("/decide", response_model=DecideOut)
async def post_decide(body: DecideIn, services: ServicesDep, caller: DecideCaller) -> DecideOut:
    """Choose items and an offer for a person, with copy and an explanation."""
    caller.act_for(
        body.user_id,
        what="a decision about "
        + ("an anonymous visitor" if body.user_id is None else "this user"),
    )
    await run_in_threadpool(caller.act_for_anonymous, services, body.user_id, body.anonymous_id)
    request = DecideRequest(
        channel=body.channel,
        user_id=body.user_id,
        anonymous_id=body.anonymous_id,
        query=body.query,
        context=body.context,
        k=body.k,
    )
    decision = await run_in_threadpool(decide, services, request)
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
